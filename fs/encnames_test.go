package fs

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/names"
)

// Tests of an encrypted-names (v2) mount: names, directory IDs, long
// names, symlink targets and user attributes, and what tampering with
// the backing tree does.

// longName returns a name of n bytes (n ≤ 255) that is unlike any other
// in the test: a prefix and filler.
func longName(prefix string, n int) string {
	return prefix + strings.Repeat("x", n-len(prefix))
}

// listDir returns the sorted names in a directory (of the mount or of
// the backing tree).
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// grepBacking fails the test if any backing name, symlink target, file
// content or attribute (name or value) contains one of the secrets.
func grepBacking(t *testing.T, dir string, secrets []string) {
	t.Helper()
	check := func(what, where string, b []byte) {
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s of %s contains the plaintext %q", what, where, s)
			}
		}
	}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		check("name", p, []byte(fi.Name()))
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			check("symlink target", p, []byte(l))
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			check("content", p, b)
		}
		buf := make([]byte, 64<<10)
		n, _ := unix.Llistxattr(p, buf)
		check("attribute names", p, buf[:n])
		for _, a := range bytes.Split(buf[:n], []byte{0}) {
			if len(a) == 0 {
				continue
			}
			v := make([]byte, 64<<10)
			m, _ := unix.Lgetxattr(p, string(a), v)
			check("attribute value", p, v[:max(m, 0)])
		}
		return nil
	})
}

func TestEncryptedNamesRoundTrip(t *testing.T) {
	tf := mountFS(t, withNames(t))
	long := longName("long-", 255)
	deep := longName("deep-", 200)
	target4095 := strings.Repeat("t/", 2047) + "z" // 4,095 bytes
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(tf.path("payroll-2026-q3.xlsx"), []byte("salary-table"), 0o600))
	must(os.Mkdir(tf.path("secret-dir"), 0o755))
	must(os.WriteFile(tf.path("secret-dir/inner-name.txt"), []byte("x"), 0o600))
	must(os.Mkdir(tf.path("secret-dir/"+deep), 0o755))
	must(os.WriteFile(tf.path("secret-dir/"+deep+"/"+long), []byte("long"), 0o600))
	must(os.Symlink("../pointed-at-target", tf.path("short-link")))
	must(os.Symlink(target4095, tf.path("long-link")))
	must(os.Link(tf.path("payroll-2026-q3.xlsx"), tf.path("secret-dir/hard-linked-name")))
	must(unix.Setxattr(tf.path("payroll-2026-q3.xlsx"), "user.classification", []byte("confidential-value"), 0))
	must(unix.Setxattr(tf.path("secret-dir"), "user."+longName("attrname-", 200), []byte("dir-attr-value"), 0))

	if got, want := listDir(t, tf.mnt), []string{"long-link", "payroll-2026-q3.xlsx", "secret-dir", "short-link"}; !equal(got, want) {
		t.Fatalf("root lists %q, want %q", got, want)
	}
	if got, want := listDir(t, tf.path("secret-dir")), []string{deep, "hard-linked-name", "inner-name.txt"}; !equal(got, want) {
		t.Fatalf("secret-dir lists %q, want %q", got, want)
	}
	// "." and ".." are listed as on any file system (ls -a).
	if out, err := exec.Command("ls", "-a", tf.path("secret-dir/"+deep)).Output(); err != nil || string(out) != ".\n..\n"+long+"\n" {
		t.Fatalf("ls -a: %q %v", out, err)
	}
	if got := listDir(t, tf.path("secret-dir/"+deep)); !equal(got, []string{long}) {
		t.Fatalf("deep dir lists %q", got)
	}
	for link, want := range map[string]string{"short-link": "../pointed-at-target", "long-link": target4095} {
		got, err := os.Readlink(tf.path(link))
		if err != nil || got != want {
			t.Fatalf("readlink %s: %d bytes, %v; want %d bytes", link, len(got), err, len(want))
		}
		fi, err := os.Lstat(tf.path(link))
		if err != nil || fi.Size() != int64(len(want)) {
			t.Fatalf("lstat %s: size %d, %v; want %d (the plaintext target's length)", link, fi.Size(), err, len(want))
		}
	}
	b, err := os.ReadFile(tf.path("secret-dir/hard-linked-name"))
	if err != nil || string(b) != "salary-table" {
		t.Fatalf("hard link reads %q, %v", b, err)
	}
	buf := make([]byte, 100)
	n, err := unix.Getxattr(tf.path("payroll-2026-q3.xlsx"), "user.classification", buf)
	if err != nil || string(buf[:n]) != "confidential-value" {
		t.Fatalf("getxattr %q %v", buf[:max(n, 0)], err)
	}
	// Size probes and ERANGE answer the plaintext sizes.
	if n, err := unix.Getxattr(tf.path("payroll-2026-q3.xlsx"), "user.classification", nil); err != nil || n != len("confidential-value") {
		t.Fatalf("getxattr size probe: %d %v", n, err)
	}
	if _, err := unix.Getxattr(tf.path("payroll-2026-q3.xlsx"), "user.classification", make([]byte, 3)); err != syscall.ERANGE {
		t.Fatalf("getxattr into 3 bytes: %v, want ERANGE", err)
	}
	// The hard link shares the attribute (one inode, one file ID).
	if n, err := unix.Getxattr(tf.path("secret-dir/hard-linked-name"), "user.classification", buf); err != nil || string(buf[:n]) != "confidential-value" {
		t.Fatalf("getxattr through the hard link: %v", err)
	}
	list := make([]byte, 1000)
	n, err = unix.Listxattr(tf.path("secret-dir"), list)
	if err != nil || string(list[:n]) != "user."+longName("attrname-", 200)+"\x00" {
		t.Fatalf("listxattr of the directory: %q %v", list[:max(n, 0)], err)
	}
	if sz, err := unix.Listxattr(tf.path("secret-dir"), nil); err != nil || sz != n {
		t.Fatalf("listxattr size probe %d %v, want %d", sz, err, n)
	}
	if _, err := unix.Listxattr(tf.path("secret-dir"), make([]byte, 10)); err != syscall.ERANGE {
		t.Fatalf("listxattr into 10 bytes: %v, want ERANGE", err)
	}
	// A value too large after encryption: E2BIG, as the kernel gives for
	// a value over XATTR_SIZE_MAX.
	if err := unix.Setxattr(tf.path("payroll-2026-q3.xlsx"), "user.big", make([]byte, 65510), 0); err != syscall.E2BIG {
		t.Fatalf("setxattr of 65,510 bytes: %v, want E2BIG", err)
	}
	// Names too long for NAME_MAX are refused as on any file system.
	if err := os.WriteFile(tf.path(longName("n", 256)), nil, 0o600); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("256-byte name: %v, want ENAMETOOLONG", err)
	}

	grepBacking(t, tf.cipher, []string{"payroll", "secret-dir", "inner-name", "deep-", "long-", "hard-linked",
		"pointed-at", "t/t/", "classification", "confidential", "attrname", "dir-attr", "salary"})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestEncryptedNamesRemove checks that unlink, rmdir and rename leave no
// sidecar, ID file or long-target file behind.
func TestEncryptedNamesRemove(t *testing.T) {
	tf := mountFS(t, withNames(t))
	long := longName("L", 255)
	for _, step := range []func() error{
		func() error { return os.Mkdir(tf.path("d"), 0o755) },
		func() error { return os.WriteFile(tf.path("d/"+long), nil, 0o600) },
		func() error { return os.Symlink(strings.Repeat("a", 3000), tf.path("d/ln")) },
		func() error { return os.Mkdir(tf.path(long), 0o755) },
		func() error { return os.Rename(tf.path("d/"+long), tf.path("d/short")) },
		func() error { return os.Rename(tf.path("d/short"), tf.path("d/"+long)) },
		func() error { return os.Remove(tf.path("d/" + long)) },
		func() error { return os.Remove(tf.path("d/ln")) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(tf.path("d")); err != nil {
		t.Fatalf("rmdir of the emptied directory: %v", err)
	}
	if err := os.Remove(tf.path(long)); err != nil {
		t.Fatalf("rmdir of a long-named directory: %v", err)
	}
	// Only the root's ID file, the config and the (now empty) directory
	// of long targets remain.
	got := listDir(t, tf.cipher)
	if want := []string{cipherdir.ConfigName, names.DirIDFileName, names.TargetsDirName}; !equal(got, want) {
		t.Fatalf("backing root holds %q, want %q", got, want)
	}
	if left := listDir(t, tf.backing(names.TargetsDirName)); len(left) != 0 {
		t.Fatalf("long-target files left: %q", left)
	}
	// A directory with an entry is not empty.
	os.Mkdir(tf.path("full"), 0o755)
	os.WriteFile(tf.path("full/f"), nil, 0o600)
	if err := os.Remove(tf.path("full")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of a full directory: %v, want ENOTEMPTY", err)
	}
	// ...and keeps its ID: its entry is still readable.
	if got := listDir(t, tf.path("full")); !equal(got, []string{"f"}) {
		t.Fatalf("after a failed rmdir the directory lists %q", got)
	}
}

// TestEncryptedNamesTamper moves and edits backing entries behind the
// mount's back: what does not decrypt in its directory is left out of the
// listing and logged, never shown as a garbage name.
func TestEncryptedNamesTamper(t *testing.T) {
	tf := mountFS(t, withNames(t))
	os.Mkdir(tf.path("a"), 0o755)
	os.Mkdir(tf.path("b"), 0o755)
	os.WriteFile(tf.path("a/moved"), []byte("m"), 0o600)
	os.WriteFile(tf.path("a/edited"), []byte("e"), 0o600)
	os.WriteFile(tf.path("a/"+longName("side", 200)), []byte("s"), 0o600)
	os.WriteFile(tf.path("a/kept"), []byte("k"), 0o600)

	// Find the backing directories and entries by their content's
	// absence of names: decrypt them through the mount's own keys.
	k := tf.root.names
	ba, bb := backingOf(t, tf, "a"), backingOf(t, tf, "b")
	idA := readID(t, k, ba)
	enc := func(name string) string {
		b, _, err := cipherdir.EntryName(k, idA, name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Moved to another directory: fails authentication there.
	if err := os.Rename(filepath.Join(ba, enc("moved")), filepath.Join(bb, enc("moved"))); err != nil {
		t.Fatal(err)
	}
	// Edited: one character changed.
	e := enc("edited")
	c := byte('A')
	if e[5] == 'A' {
		c = 'B'
	}
	flipped := e[:5] + string(c) + e[6:]
	if err := os.Rename(filepath.Join(ba, e), filepath.Join(ba, flipped)); err != nil {
		t.Fatal(err)
	}
	// A long name's sidecar deleted.
	h := enc(longName("side", 200))
	if err := os.Remove(filepath.Join(ba, names.SidecarName(h))); err != nil {
		t.Fatal(err)
	}
	// A foreign plaintext file dropped into the backing directory.
	os.WriteFile(filepath.Join(ba, "dropped.txt"), nil, 0o600)

	// The kernel caches entries for a second; list through a fresh open.
	if got := listDir(t, tf.path("a")); !equal(got, []string{"kept"}) {
		t.Fatalf("a lists %q, want only kept", got)
	}
	if got := listDir(t, tf.path("b")); len(got) != 0 {
		t.Fatalf("b lists %q, want nothing", got)
	}
	if !strings.Contains(tf.log.String(), "does not decrypt") {
		t.Fatalf("no log line about undecryptable names:\n%s", tf.log.String())
	}
	// A tampered ID file: the directory's entries cannot be read (EIO).
	os.Mkdir(tf.path("c"), 0o755)
	os.WriteFile(tf.path("c/x"), nil, 0o600)
	bc := backingOf(t, tf, "c")
	idFile := filepath.Join(bc, names.DirIDFileName)
	b, _ := os.ReadFile(idFile)
	b[10] ^= 1
	os.Chmod(idFile, 0o644)
	if err := os.WriteFile(idFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// A new mount of the same tree reads the ID afresh.
	tf2 := remount(t, tf)
	if _, err := os.ReadDir(tf2.path("c")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("listing a directory with a forged ID: %v, want EIO", err)
	}
	if _, err := os.Stat(tf2.path("c/x")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("lookup in a directory with a forged ID: %v, want EIO", err)
	}
}

// TestEncryptedNamesEmptyDirWithoutID: a crash during rmdir can leave an
// empty directory without ID file. It lists empty, and the first create
// gives it a fresh ID.
func TestEncryptedNamesEmptyDirWithoutID(t *testing.T) {
	tf := mountFS(t, withNames(t))
	os.Mkdir(tf.path("e"), 0o755)
	be := backingOf(t, tf, "e")
	tf2 := remount(t, tf)
	if err := os.Remove(filepath.Join(be, names.DirIDFileName)); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, tf2.path("e")); len(got) != 0 {
		t.Fatalf("lists %q", got)
	}
	if _, err := os.Stat(tf2.path("e/nothing")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("lookup: %v, want ENOENT", err)
	}
	if err := os.WriteFile(tf2.path("e/new"), []byte("n"), 0o600); err != nil {
		t.Fatalf("create in the repaired directory: %v", err)
	}
	if got := listDir(t, tf2.path("e")); !equal(got, []string{"new"}) {
		t.Fatalf("lists %q after create", got)
	}
	if _, err := os.Stat(filepath.Join(be, names.DirIDFileName)); err != nil {
		t.Fatalf("no ID file after the repair: %v", err)
	}
}

// TestEncryptedXattrBinding copies an attribute's backing value to another
// file and to another attribute name: both fail authentication (EIO).
func TestEncryptedXattrBinding(t *testing.T) {
	tf := mountFS(t, withNames(t))
	os.WriteFile(tf.path("f1"), []byte("1"), 0o600)
	os.WriteFile(tf.path("f2"), []byte("2"), 0o600)
	if err := unix.Setxattr(tf.path("f1"), "user.a", []byte("value-a"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(tf.path("f2"), "user.b", []byte("value-b"), 0); err != nil {
		t.Fatal(err)
	}
	k := tf.root.names
	b1, b2 := backingOf(t, tf, "f1"), backingOf(t, tf, "f2")
	obj := func(p string) names.ObjectID {
		info, err := cipherdir.FileInfo(p)
		if err != nil {
			t.Fatal(err)
		}
		id, err := hex.DecodeString(info.FileID)
		if err != nil || len(id) != 16 {
			t.Fatalf("file ID %q: %v", info.FileID, err)
		}
		return names.ObjectID(id)
	}
	xa, _ := k.XattrBackingName(obj(b1), "user.a")
	xb2, _ := k.XattrBackingName(obj(b2), "user.b")
	val := make([]byte, 1000)
	n, err := unix.Getxattr(b1, xa, val)
	if err != nil {
		t.Fatal(err)
	}
	// f1's value of user.a planted as f2's user.b.
	if err := unix.Setxattr(b2, xb2, val[:n], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(tf.path("f2"), "user.b", make([]byte, 100)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a value moved to another file and attribute: %v, want EIO", err)
	}
	// f1's user.a planted as f2's user.a (same name, other file).
	xa2, _ := k.XattrBackingName(obj(b2), "user.a")
	unix.Setxattr(b2, xa2, val[:n], 0)
	if _, err := unix.Getxattr(tf.path("f2"), "user.a", make([]byte, 100)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a value copied to another file: %v, want EIO", err)
	}
	// Removal works and leaves nothing.
	if err := unix.Removexattr(tf.path("f1"), "user.a"); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(tf.path("f1"), "user.a", nil); !errors.Is(err, syscall.ENODATA) {
		t.Fatalf("after removexattr: %v, want ENODATA", err)
	}
}

// backingOf returns the backing path of a plaintext path in the mount,
// resolved with the mount's own names key.
func backingOf(t *testing.T, tf *testFS, rel string) string {
	t.Helper()
	dir := tf.cipher
	for _, part := range strings.Split(rel, "/") {
		id := readID(t, tf.root.names, dir)
		b, _, err := cipherdir.EntryName(tf.root.names, id, part)
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(dir, b)
	}
	return dir
}

func readID(t *testing.T, k *names.Keys, dir string) names.DirID {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, names.DirIDFileName))
	if err != nil {
		t.Fatal(err)
	}
	id, err := k.ParseDirID(b)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// remount mounts tf's tree a second time (a fresh daemon, cold caches)
// with the same keys; the mount goes at cleanup.
func remount(t *testing.T, tf *testFS) *testFS {
	t.Helper()
	tf2 := &testFS{cipher: tf.cipher, mnt: t.TempDir(), cfg: tf.cfg, keys: tf.keys, log: tf.log}
	opts := Options{CipherDir: tf.cipher, Config: tf.cfg, Keys: tf.keys, Names: tf.root.names,
		Logger: tf.root.log, Shared: tf.root.shared}
	srv, r, err := mount(tf2.mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	tf2.root = r
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			syscall.Unmount(tf2.mnt, syscall.MNT_DETACH)
		}
		srv.Wait()
	})
	return tf2
}
