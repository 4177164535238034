package cipherdir

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/names"
)

// newNamesKeys returns the names keys of a fresh random names key.
func newNamesKeys(t *testing.T) *names.Keys {
	t.Helper()
	key := make([]byte, names.KeySize)
	rand.Read(key)
	k, err := names.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openDir opens dir as an O_PATH directory descriptor closed with the test.
func openDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// listDir returns the names in dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestDirIDFile(t *testing.T) {
	k := newNamesKeys(t)
	dir := t.TempDir()
	fd := openDir(t, dir)

	if _, err := ReadDirID(fd, k); !errors.Is(err, ErrNoDirID) {
		t.Fatalf("missing ID file: %v, want ErrNoDirID", err)
	}
	id := names.NewDirID()
	if err := WriteDirID(fd, k, id); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDirID(fd, k)
	if err != nil || got != id {
		t.Fatalf("ReadDirID = %v, %v; want %v", got, err, id)
	}
	if err := WriteDirID(fd, k, names.NewDirID()); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second WriteDirID: %v, want EEXIST", err)
	}

	p := filepath.Join(dir, names.DirIDFileName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	rewrite := func(b []byte) {
		t.Helper()
		os.Remove(p)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	flipped := slices.Clone(b)
	flipped[10] ^= 1 // in the ID
	rewrite(flipped)
	if _, err := ReadDirID(fd, k); !errors.Is(err, names.ErrAuthentication) {
		t.Errorf("edited ID: %v, want ErrAuthentication", err)
	}
	rewrite(b[:len(b)-1])
	if _, err := ReadDirID(fd, k); !errors.Is(err, names.ErrCorrupt) {
		t.Errorf("cut ID file: %v, want ErrCorrupt", err)
	}
	rewrite(append(slices.Clone(b), 0))
	if _, err := ReadDirID(fd, k); !errors.Is(err, names.ErrCorrupt) {
		t.Errorf("ID file with a byte appended: %v, want ErrCorrupt", err)
	}
	rewrite(newNamesKeys(t).MarshalDirID(id)) // another filesystem's
	if _, err := ReadDirID(fd, k); !errors.Is(err, names.ErrAuthentication) {
		t.Errorf("foreign ID file: %v, want ErrAuthentication", err)
	}

	// A symlink or a directory in its place is refused, never followed.
	os.Remove(p)
	other := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(other, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, p); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDirID(fd, k); err == nil || errors.Is(err, ErrNoDirID) {
		t.Errorf("symlinked ID file: %v, want an error", err)
	}
	os.Remove(p)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDirID(fd, k); err == nil || errors.Is(err, ErrNoDirID) {
		t.Errorf("ID file that is a directory: %v, want an error", err)
	}
}

func TestWriteRootDirID(t *testing.T) {
	k := newNamesKeys(t)
	fd := openDir(t, t.TempDir())
	if err := WriteRootDirID(fd, k); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDirID(fd, k); err != nil {
		t.Fatal(err)
	}
}

func TestRepairDirID(t *testing.T) {
	k := newNamesKeys(t)
	dir := t.TempDir()
	fd := openDir(t, dir)
	id, err := RepairDirID(fd, k)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ReadDirID(fd, k); err != nil || got != id {
		t.Fatalf("after repair: %v, %v; want %v", got, err, id)
	}
	// A second repair (another mount racing the first) loses the link
	// with EEXIST and uses the ID that is there.
	id2, err := RepairDirID(fd, k)
	if err != nil || id2 != id {
		t.Fatalf("second repair: %v, %v; want the first's %v", id2, err, id)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{names.DirIDFileName}) {
		t.Errorf("directory holds %q, want the ID file only (no temporaries)", got)
	}
	// A bad ID file is not replaced: the repair reports it.
	p := filepath.Join(dir, names.DirIDFileName)
	os.Remove(p)
	if err := os.WriteFile(p, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RepairDirID(fd, k); !errors.Is(err, names.ErrCorrupt) {
		t.Errorf("repair over a bad ID file: %v, want ErrCorrupt", err)
	}
}

func TestHasUserEntriesAndClearInternal(t *testing.T) {
	k := newNamesKeys(t)
	dir := t.TempDir()
	fd := openDir(t, dir)
	if err := WriteDirID(fd, k, names.NewDirID()); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("l", 200)
	enc, err := k.EncryptName(names.NewDirID(), long)
	if err != nil {
		t.Fatal(err)
	}
	if err := EnsureSidecar(fd, enc); err != nil { // an orphan sidecar
		t.Fatal(err)
	}
	tmpFile, tmpDir := TempName(), TempName()
	if err := os.WriteFile(filepath.Join(dir, tmpFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, tmpDir), 0o700); err != nil {
		t.Fatal(err)
	}
	tfd := openDir(t, filepath.Join(dir, tmpDir))
	if err := WriteDirID(tfd, k, names.NewDirID()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "foreign.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if has, err := HasUserEntries(fd); err != nil || has {
		t.Fatalf("HasUserEntries = %v, %v; want false", has, err)
	}
	if err := ClearInternal(fd); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{"foreign.txt"}) {
		t.Errorf("after ClearInternal: %q, want only the foreign file", got)
	}

	short, _, err := EntryName(k, names.NewDirID(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, short), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if has, err := HasUserEntries(fd); err != nil || !has {
		t.Errorf("with a short entry: HasUserEntries = %v, %v; want true", has, err)
	}
	os.Remove(filepath.Join(dir, short))
	if err := os.Mkdir(filepath.Join(dir, names.HashedName(enc)), 0o755); err != nil {
		t.Fatal(err)
	}
	if has, err := HasUserEntries(fd); err != nil || !has {
		t.Errorf("with a hashed entry: HasUserEntries = %v, %v; want true", has, err)
	}
}

func TestEnsureSidecar(t *testing.T) {
	k := newNamesKeys(t)
	dir := t.TempDir()
	fd := openDir(t, dir)
	enc, err := k.EncryptName(names.NewDirID(), strings.Repeat("s", 170))
	if err != nil {
		t.Fatal(err)
	}
	hashed := names.HashedName(enc)
	p := filepath.Join(dir, names.SidecarName(hashed))
	if err := EnsureSidecar(fd, enc); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadSidecar(fd, hashed); err != nil || got != enc {
		t.Fatalf("ReadSidecar = %q, %v", got, err)
	}
	// A valid sidecar is kept as it is (same inode).
	var before, after unix.Stat_t
	unix.Stat(p, &before)
	if err := EnsureSidecar(fd, enc); err != nil {
		t.Fatal(err)
	}
	unix.Stat(p, &after)
	if before.Ino != after.Ino {
		t.Error("a valid sidecar was rewritten")
	}
	// A bad one (cut, or another name's) is replaced.
	for _, bad := range [][]byte{names.MarshalSidecar(enc)[:100], []byte("KMSL"), {}} {
		os.Remove(p)
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadSidecar(fd, hashed); err == nil {
			t.Fatalf("bad sidecar %q read without error", bad)
		}
		if err := EnsureSidecar(fd, enc); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadSidecar(fd, hashed); err != nil || got != enc {
			t.Fatalf("after EnsureSidecar over a bad one: %q, %v", got, err)
		}
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{names.SidecarName(hashed)}) {
		t.Errorf("directory holds %q, want the sidecar only", got)
	}
}

func TestDecryptEntry(t *testing.T) {
	k := newNamesKeys(t)
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	os.Mkdir(a, 0o755)
	os.Mkdir(b, 0o755)
	afd, bfd := openDir(t, a), openDir(t, b)
	aid, bid := names.NewDirID(), names.NewDirID()
	for _, c := range []struct {
		name string
		long bool
	}{{"short.txt", false}, {strings.Repeat("é", 100), true}} {
		backing, long, err := EntryName(k, aid, c.name)
		if err != nil {
			t.Fatal(err)
		}
		if (long != "") != c.long || (c.long && backing != names.HashedName(long)) {
			t.Fatalf("EntryName(%q) = %q, %q", c.name, backing, long)
		}
		if long != "" {
			if err := EnsureSidecar(afd, long); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(a, backing), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := DecryptEntry(afd, k, aid, backing)
		if err != nil || got != c.name {
			t.Errorf("DecryptEntry(%q) = %q, %v; want %q", backing, got, err, c.name)
		}
		// Moved to another directory (with its sidecar): the name is
		// bound to a's ID.
		if err := os.Rename(filepath.Join(a, backing), filepath.Join(b, backing)); err != nil {
			t.Fatal(err)
		}
		if long != "" {
			os.Rename(filepath.Join(a, names.SidecarName(backing)), filepath.Join(b, names.SidecarName(backing)))
		}
		if _, err := DecryptEntry(bfd, k, bid, backing); !errors.Is(err, names.ErrAuthentication) {
			t.Errorf("%q moved to another directory: %v, want ErrAuthentication", backing, err)
		}
		if long != "" {
			os.Remove(filepath.Join(b, names.SidecarName(backing)))
			if _, err := DecryptEntry(bfd, k, bid, backing); !errors.Is(err, unix.ENOENT) {
				t.Errorf("hashed entry without sidecar: %v, want ENOENT", err)
			}
		}
	}
	for _, internal := range []string{names.DirIDFileName, TempName(), "foreign.txt", names.TargetsDirName} {
		if _, err := DecryptEntry(afd, k, aid, internal); !errors.Is(err, names.ErrEncoding) {
			t.Errorf("DecryptEntry(%q): %v, want ErrEncoding", internal, err)
		}
	}
}

func TestTargets(t *testing.T) {
	k := newNamesKeys(t)
	dir := t.TempDir()
	root := openDir(t, dir)
	short := "../lib/libfoo.so.1"
	longest := strings.Repeat("d/", names.MaxTargetLen/2) + "x" // 4,095 bytes
	if len(longest) != names.MaxTargetLen {
		t.Fatal(len(longest))
	}
	for _, target := range []string{short, strings.Repeat("t", 735), strings.Repeat("t", 736), longest} {
		link, err := WriteTarget(root, k, target)
		if err != nil {
			t.Fatal(err)
		}
		if len(link) > names.MaxBackingTargetLen {
			t.Errorf("backing target of %d bytes", len(link))
		}
		file, long := names.TargetFileName(link)
		if long != (len(target) > 735) {
			t.Errorf("%d-byte target: long form %v", len(target), long)
		}
		got, err := ReadTarget(root, k, link)
		if err != nil || got != target {
			t.Errorf("ReadTarget of a %d-byte target: %d bytes, %v", len(target), len(got), err)
		}
		if !long {
			if err := RemoveTarget(root, link); err != nil {
				t.Error(err)
			}
			continue
		}
		p := filepath.Join(dir, names.TargetsDirName, file)
		if fi, err := os.Stat(filepath.Join(dir, names.TargetsDirName)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want mode 0700", names.TargetsDirName, fi.Mode(), err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-1] ^= 1
		os.Remove(p)
		os.WriteFile(p, b, 0o644)
		if _, err := ReadTarget(root, k, link); !errors.Is(err, names.ErrHashMismatch) {
			t.Errorf("edited long-target file: %v, want ErrHashMismatch", err)
		}
		if err := RemoveTarget(root, link); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("RemoveTarget left %s: %v", file, err)
		}
		if _, err := ReadTarget(root, k, link); !errors.Is(err, unix.ENOENT) {
			t.Errorf("missing long-target file: %v, want ENOENT", err)
		}
		if err := RemoveTarget(root, link); err != nil {
			t.Errorf("second RemoveTarget: %v, want nil", err)
		}
	}
	if got := listDir(t, filepath.Join(dir, names.TargetsDirName)); len(got) != 0 {
		t.Errorf("%s holds %q after every RemoveTarget", names.TargetsDirName, got)
	}
	if _, err := ReadTarget(root, k, "not-base64!"); !errors.Is(err, names.ErrEncoding) {
		t.Errorf("bad link: %v, want ErrEncoding", err)
	}
}
