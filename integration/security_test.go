package integration

import (
	"bytes"
	"errors"
	"os"
	osexec "os/exec"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestNoPassthrough proves end to end that the kernel never reads backing
// files on our behalf: as root (where go-fuse's loopback would get kernel
// FUSE passthrough), a cold read through the mount by read(2), O_DIRECT and
// mmap returns the plaintext, never the ciphertext.
func TestNoPassthrough(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	fs := newFS(t)
	want := bytes.Repeat([]byte("plaintext must come from the daemon. "), 8000)[:256<<10]
	mustWrite(t, fs.Path("p"), want)
	fs.Remount() // drop the page cache: reads must go through the daemon
	backing := mustRead(t, fs.Backing("p"))
	if bytes.Contains(backing, want[:64]) {
		t.Fatalf("backing file holds plaintext")
	}
	checkContent(t, fs.Path("p"), want)

	// O_DIRECT bypasses the page cache; with an aligned buffer.
	fd, err := unix.Open(fs.Path("p"), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, syscall.EINVAL):
		t.Logf("O_DIRECT not supported: %v", err)
	case err != nil:
		t.Fatal(err)
	default:
		buf := alignedBuffer(64<<10, 4096)
		n, err := unix.Pread(fd, buf, 64<<10)
		unix.Close(fd)
		if err != nil || n != len(buf) {
			t.Fatalf("O_DIRECT pread: %d, %v", n, err)
		}
		if !bytes.Equal(buf, want[64<<10:128<<10]) {
			t.Errorf("O_DIRECT read is not the plaintext")
		}
	}

	f, err := os.Open(fs.Path("p"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if !bytes.Equal(m, want) {
		t.Errorf("mmap read is not the plaintext (first difference at %d)", firstDiff(m, want))
	}
}

// alignedBuffer returns n bytes aligned to align, for O_DIRECT.
func alignedBuffer(n, align int) []byte {
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & uintptr(align-1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n]
}

// TestTamper edits backing files while unmounted and checks the precise
// result of each edit after mounting again. Chunk size 4096, so a backing
// chunk is 4124 bytes after the 56-byte header and the 456-byte key-record
// slot.
func TestTamper(t *testing.T) {
	t.Parallel()
	const cs, sealed, header = 4096, 4096 + 28, 512
	fs := newFS(t, WithChunkSize(cs))
	r := newRand(11)
	files := map[string][]byte{}
	for _, name := range []string{"flip", "swap", "xattr-copy", "header", "donor", "intact"} {
		files[name] = randomBytes(r, 4*cs)
		mustWrite(t, fs.Path(name), files[name])
	}
	ids := map[string]string{}
	for name := range files {
		ids[name] = fileIDOf(t, fs.Backing(name))
	}
	fs.Unmount()

	// flip: one byte in the middle of chunk 1.
	editBacking(t, fs.Backing("flip"), func(b []byte) { b[header+sealed+sealed/2] ^= 0x01 })
	// swap: chunks 1 and 2 change places.
	editBacking(t, fs.Backing("swap"), func(b []byte) {
		c1 := append([]byte(nil), b[header+sealed:header+2*sealed]...)
		copy(b[header+sealed:], b[header+2*sealed:header+3*sealed])
		copy(b[header+2*sealed:], c1)
	})
	// header: one bit of the file ID.
	editBacking(t, fs.Backing("header"), func(b []byte) { b[20] ^= 0x80 })
	// xattr-copy: the wrapped key of another file.
	donor, err := lgetXattr(fs.Backing("donor"), keyXattr)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(fs.Backing("xattr-copy"), keyXattr, donor, 0); err != nil {
		t.Fatal(err)
	}

	fs.Mount()
	// readChunk reads chunk i of name and returns the errno (0 on success,
	// after checking the bytes).
	readChunk := func(name string, i int) syscall.Errno {
		t.Helper()
		f, err := os.Open(fs.Path(name))
		if err != nil {
			return errnoOf(err)
		}
		defer f.Close()
		buf := make([]byte, cs)
		n, err := f.ReadAt(buf, int64(i*cs))
		if err != nil {
			return errnoOf(err)
		}
		if n != cs || !bytes.Equal(buf, files[name][i*cs:(i+1)*cs]) {
			t.Errorf("%s chunk %d: read %d bytes that differ from what was written", name, i, n)
		}
		return 0
	}
	expect := func(name string, want map[int]syscall.Errno) {
		t.Helper()
		// Later chunks first, so that readahead from an earlier good chunk
		// cannot mask anything.
		for i := 3; i >= 0; i-- {
			if got := readChunk(name, i); got != want[i] {
				t.Errorf("%s: reading chunk %d: errno %v, want %v", name, i, errName(got), errName(want[i]))
			}
		}
	}
	expect("intact", map[int]syscall.Errno{})
	expect("donor", map[int]syscall.Errno{})
	expect("flip", map[int]syscall.Errno{1: syscall.EIO})
	expect("swap", map[int]syscall.Errno{1: syscall.EIO, 2: syscall.EIO})
	expect("header", map[int]syscall.Errno{0: syscall.EIO, 1: syscall.EIO, 2: syscall.EIO, 3: syscall.EIO})
	expect("xattr-copy", map[int]syscall.Errno{0: syscall.EIO, 1: syscall.EIO, 2: syscall.EIO, 3: syscall.EIO})

	// Small reads inside and across the damaged chunk fail too.
	f, err := os.Open(fs.Path("flip"))
	if err != nil {
		t.Fatal(err)
	}
	for _, rng := range [][2]int{{cs + 10, 10}, {cs - 5, 10}, {0, 4 * cs}} {
		if _, err := f.ReadAt(make([]byte, rng[1]), int64(rng[0])); !errors.Is(err, syscall.EIO) {
			t.Errorf("flip: ReadAt(off %d, len %d): %v, want EIO", rng[0], rng[1], err)
		}
	}
	f.Close()
	if _, err := os.ReadFile(fs.Path("flip")); !errors.Is(err, syscall.EIO) {
		t.Errorf("flip: reading the whole file: %v, want EIO", err)
	}

	log := fs.Log()
	for _, name := range []string{"flip", "swap"} {
		if !strings.Contains(log, ids[name]) {
			t.Errorf("the daemon log has no line naming file ID %s of the tampered file %q", ids[name], name)
		}
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, ids["flip"]) {
			t.Logf("log: %s", line)
			break
		}
	}
}

// editBacking applies edit to the bytes of a backing file in place.
func editBacking(t testing.TB, path string, edit func([]byte)) {
	t.Helper()
	b := mustRead(t, path)
	edit(b)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
}

// errName renders an errno for messages, 0 as "none".
func errName(e syscall.Errno) string {
	if e == 0 {
		return "none"
	}
	return unix.ErrnoName(e)
}

// asUser runs a shell command as uid/gid 4242 and returns its output.
func asUser(t testing.TB, script string) (string, error) {
	t.Helper()
	cmd := osexec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const otherUID = 4242

// TestAllowOther checks access by another user: none at all without
// --allow-other; with it, the kernel's default_permissions checks apply, so
// a root daemon never lets a user read or change what modes forbid, and files
// the user creates are the user's, with the user's umask applied once.
func TestAllowOther(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	requireTool(t, "sh")
	fs := newFS(t)
	// Let the other user reach the mount point.
	for _, d := range []string{tempRoot, fs.dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(fs.Path("public"), []byte("public data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fs.Path("private"), []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(fs.Path("shared"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fs.Path("shared"), 0o777); err != nil {
		t.Fatal(err)
	}
	if out, err := asUser(t, "cat "+fs.Path("public")); err == nil {
		t.Errorf("another user read the mount without --allow-other: %q", out)
	}

	fs.Remount("--allow-other")
	if out, err := asUser(t, "cat "+fs.Path("public")); err != nil || out != "public data" {
		t.Errorf("other user reading a 0644 file: %q, %v", out, err)
	}
	for what, script := range map[string]string{
		"read a 0600 root file":         "cat " + fs.Path("private"),
		"write a 0644 root file":        "echo x >> " + fs.Path("public"),
		"create in a 0755 root dir":     "echo x > " + fs.Path("mine"),
		"chmod a root file":             "chmod 666 " + fs.Path("public"),
		"truncate a root file":          "truncate -s 0 " + fs.Path("public"),
		"remove a root file (0755 dir)": "rm -f " + fs.Path("public"),
	} {
		if out, err := asUser(t, script); err == nil {
			t.Errorf("other user could %s: %q", what, out)
		}
	}
	checkContent(t, fs.Path("public"), []byte("public data"))
	checkContent(t, fs.Path("private"), []byte("root only"))

	if out, err := asUser(t, "umask 027 && echo mine > "+fs.Path("shared", "mine")+" && mkdir "+fs.Path("shared", "d")); err != nil {
		t.Fatalf("other user creating in a 0777 dir: %v\n%s", err, out)
	}
	for name, mode := range map[string]uint32{"mine": 0o640, "d": 0o750} {
		var st syscall.Stat_t
		if err := syscall.Stat(fs.Path("shared", name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != otherUID || st.Gid != otherUID || st.Mode&0o7777 != mode {
			t.Errorf("%s created by uid %d under umask 027: owner %d:%d mode %o; want %d:%d %o",
				name, otherUID, st.Uid, st.Gid, st.Mode&0o7777, otherUID, otherUID, mode)
		}
		var bst syscall.Stat_t
		if err := syscall.Stat(fs.Backing("shared", name), &bst); err == nil && bst.Uid != otherUID {
			t.Errorf("backing %s owned by %d, want %d", name, bst.Uid, otherUID)
		}
	}
	if out, err := asUser(t, "cat "+fs.Path("shared", "mine")); err != nil || out != "mine\n" {
		t.Errorf("other user reading its own file: %q, %v", out, err)
	}
}
