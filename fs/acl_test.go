package fs

import (
	"encoding/binary"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
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
		// The owner's rw- the daemon needs is added at creation and
		// taken back after: a default ACL with u::rwx gives r--.
		{newMode{perm: 0o444, inherit: true}, 0o644, 0o644, 0o444},
	} {
		if got := c.m.createPerm(0o600); got != c.create {
			t.Errorf("%+v: createPerm %o, want %o", c.m, got, c.create)
		}
		if got := c.m.finalPerm(c.st); got != c.final {
			t.Errorf("%+v after creation with %o: finalPerm %o, want %o", c.m, c.st, got, c.final)
		}
	}
}

// aclXattr encodes a POSIX ACL in the kernel's xattr form (version 2,
// then tag, permissions and ID per entry, little-endian).
func aclXattr(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

// TestDefaultACLInheritance checks, on plaintext-names (v1) and
// encrypted-names (v2) trees, that a file and a directory made under a
// default ACL take the ACL masked by the requested mode (the process's
// umask, which is also the daemon's, plays no part), and that the
// directory inherits the default ACL; v2 makes directories under a
// temporary name first, which must inherit the same way. Not parallel:
// the umask belongs to the whole test process.
func TestDefaultACLInheritance(t *testing.T) {
	const (
		userObj, user, groupObj, mask, other = 0x01, 0x02, 0x04, 0x10, 0x20
		noID                                 = 0xffffffff
	)
	def := aclXattr([3]uint32{userObj, 5, noID}, [3]uint32{user, 6, 65534}, [3]uint32{groupObj, 7, noID},
		[3]uint32{mask, 7, noID}, [3]uint32{other, 5, noID})
	old := syscall.Umask(0o722)
	defer syscall.Umask(old)
	for _, v2 := range []bool{false, true} {
		name, edit := "v1", []func(*Options){}
		if v2 {
			name, edit = "v2", []func(*Options){withNames(t)}
		}
		t.Run(name, func(t *testing.T) {
			tf := mountFS(t, edit...)
			if !tf.root.caps.posixACL || !tf.root.caps.dontMask {
				t.Skipf("the kernel did not grant FUSE_POSIX_ACL and FUSE_DONT_MASK: %+v", tf.root.caps)
			}
			d := tf.path("d")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Setxattr(d, xattrACLDefault, def, 0); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(tf.path("d/f"), nil, 0o666); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(tf.path("d/sub"), 0o777); err != nil {
				t.Fatal(err)
			}
			for p, want := range map[string]uint32{"d/f": 0o464, "d/sub": 0o575} {
				var st unix.Stat_t
				if err := unix.Stat(tf.path(p), &st); err != nil {
					t.Fatal(err)
				}
				if st.Mode&0o7777 != want {
					t.Errorf("%s: mode %o, want %o", p, st.Mode&0o7777, want)
				}
				if sz, err := unix.Getxattr(tf.path(p), xattrACLAccess, nil); err != nil || sz == 0 {
					t.Errorf("%s: access ACL: %d bytes, %v", p, sz, err)
				}
			}
			got := make([]byte, len(def))
			if n, err := unix.Getxattr(tf.path("d/sub"), xattrACLDefault, got); err != nil || string(got[:n]) != string(def) {
				t.Errorf("d/sub: default ACL %x, %v; want %x", got, err, def)
			}
		})
	}
}
