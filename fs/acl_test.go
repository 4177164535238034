package fs

import (
	"syscall"
	"testing"
)

// TestUmaskInMode checks that every umask travels through the mode of a
// CREATE, MKDIR or MKNOD request intact, leaving type and permission bits
// alone, and that nothing travels when the kernel applied the umask.
func TestUmaskInMode(t *testing.T) {
	modes := []uint32{0, 0o7777, syscall.S_IFREG | 0o666, syscall.S_IFDIR | 0o1777, syscall.S_IFIFO | 0o4755,
		syscall.S_IFSOCK | 0o777}
	on := &rawFS{caps: &kernelCaps{dontMask: true}}
	off := &rawFS{caps: &kernelCaps{}}
	for _, mode := range modes {
		for umask := uint32(0); umask <= 0o777; umask++ {
			plain, got, carried := splitUmask(on.withUmask(mode, umask))
			if plain != mode || got != umask || !carried {
				t.Fatalf("mode %o umask %o: split into %o, %o, %v", mode, umask, plain, got, carried)
			}
			if m := off.withUmask(mode, umask); m != mode {
				t.Fatalf("kernel applied the umask: mode %o became %o", mode, m)
			}
		}
		if plain, _, carried := splitUmask(mode); plain != mode || carried {
			t.Fatalf("mode %o without umask: split into %o, carried %v", mode, plain, carried)
		}
	}
}

// TestNewModeFinalPerm checks the mode a new entry ends with: exactly perm
// without a default ACL; with one, the permission bits the backing
// filesystem derived plus the set-ID and sticky bits asked for.
func TestNewModeFinalPerm(t *testing.T) {
	for _, c := range []struct {
		m          newMode
		st, create uint32
		final      uint32
	}{
		{newMode{perm: 0o640}, 0o600, 0o600, 0o640},
		{newMode{perm: 0o4755}, 0o600, 0o600, 0o4755},
		{newMode{perm: 0o666, inherit: true}, 0o464, 0o666, 0o464},
		{newMode{perm: 0o2775, inherit: true}, 0o750, 0o775, 0o2750},
		{newMode{perm: 0o1777, inherit: true}, 0o1755, 0o777, 0o1755},
	} {
		if got := c.m.createPerm(0o600); got != c.create {
			t.Errorf("%+v: createPerm %o, want %o", c.m, got, c.create)
		}
		if got := c.m.finalPerm(c.st); got != c.final {
			t.Errorf("%+v after creation with %o: finalPerm %o, want %o", c.m, c.st, got, c.final)
		}
	}
}
