package fs

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
)

// requireFUSE skips the test when it cannot mount (no /dev/fuse, not
// root), or fails it when CI=true, where skipping would hide the suite.
func requireFUSE(t *testing.T) {
	t.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = "mount tests need root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		reason = "no /dev/fuse"
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: not skipping)", reason)
	}
	t.Skip(reason)
}

// logBuffer collects log output of a mount, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testFS is one mounted kmsfs for a test.
type testFS struct {
	cipher, mnt string
	cfg         cipherdir.Config
	keys        *fakeKeys
	log         *logBuffer
	root        *root
}

// waitReleased waits until the kernel has released every handle (RELEASE
// is sent asynchronously after close), so the next open unwraps its key.
func (tf *testFS) waitReleased(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tf.root.mu.Lock()
		n := len(tf.root.contents)
		tf.root.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d files still open", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mountFS initialises a CIPHERDIR, mounts it and unmounts it at cleanup.
func mountFS(t *testing.T, edit ...func(*Options)) *testFS {
	t.Helper()
	requireFUSE(t)
	tf := &testFS{cipher: t.TempDir(), mnt: t.TempDir(), keys: newFakeKeys(), log: &logBuffer{}}
	cfg, err := cipherdir.NewConfig(cipherdir.KMSLocal, tf.keys.keyID, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := cipherdir.WriteConfig(tf.cipher, cfg); err != nil {
		t.Fatal(err)
	}
	tf.cfg = cfg
	opts := Options{CipherDir: tf.cipher, Config: cfg, Keys: tf.keys,
		Logger: slog.New(slog.NewTextHandler(tf.log, nil))}
	for _, e := range edit {
		e(&opts)
	}
	srv, r, err := mount(tf.mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	tf.root = r
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			syscall.Unmount(tf.mnt, syscall.MNT_DETACH)
		}
		srv.Wait()
	})
	return tf
}

func (tf *testFS) path(name string) string    { return filepath.Join(tf.mnt, name) }
func (tf *testFS) backing(name string) string { return filepath.Join(tf.cipher, name) }

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// checkBacking asserts that the backing file of name carries a valid key
// record, has the size its plaintext needs and contains no 16-byte run of
// the plaintext.
func (tf *testFS) checkBacking(t *testing.T, name string, plain []byte) {
	t.Helper()
	b, err := os.ReadFile(tf.backing(name))
	if err != nil {
		t.Fatal(err)
	}
	if want := chunk.CiphertextSize(int64(len(plain)), tf.cfg.ChunkSize); int64(len(b)) != want {
		t.Errorf("%s: backing size %d, want %d", name, len(b), want)
	}
	// Sample up to 64 runs spread over the plaintext (scanning every run
	// of a large file would be quadratic).
	step := max(16, (len(plain)/64)&^15)
	for i := 0; i+16 <= len(plain); i += step {
		run := plain[i : i+16]
		if bytes.Count(run, run[:1]) == 16 {
			continue // a run of one repeated byte may occur by chance (zeros)
		}
		if bytes.Contains(b, run) {
			t.Fatalf("%s: backing file contains plaintext at plaintext offset %d", name, i)
		}
	}
	info, err := cipherdir.FileInfo(tf.backing(name))
	if err != nil {
		t.Fatalf("%s: cipherdir.FileInfo: %v", name, err)
	}
	if info.KeyID != tf.keys.keyID || info.KeyMaterialID != "m1" || info.ChunkSize != tf.cfg.ChunkSize ||
		info.PlaintextSize != int64(len(plain)) || len(info.FileID) != 32 {
		t.Errorf("%s: cipherdir.FileInfo = %+v", name, info)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCreateWriteReadReopen(t *testing.T) {
	tf := mountFS(t)
	for _, size := range []int{0, 1, 4095, 4096, 4097, 100000, 1 << 20} {
		name := "f" + string(rune('a'+size%26))
		name = filepath.Base(name) + "-" + strings.Repeat("x", size%7)
		data := randBytes(t, size)
		if err := os.WriteFile(tf.path(name), data, 0o640); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, tf.path(name)); !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back %d bytes, differ", size, len(got))
		}
		fi, err := os.Stat(tf.path(name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != int64(size) || fi.Mode().Perm() != 0o640&^currentUmask() {
			t.Errorf("size %d: stat size %d mode %v", size, fi.Size(), fi.Mode())
		}
		tf.checkBacking(t, name, data)
	}
	// Random-offset overwrites across chunk edges, then a fresh open.
	data := randBytes(t, 50000)
	if err := os.WriteFile(tf.path("rw"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(tf.path("rw"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{0, 4090, 8192, 12000, 49990} {
		patch := randBytes(t, 100)
		if _, err := f.WriteAt(patch, int64(off)); err != nil {
			t.Fatal(err)
		}
		n := copy(data[off:], patch)
		data = append(data, patch[n:]...)
	}
	f.Close()
	if got := readFile(t, tf.path("rw")); !bytes.Equal(got, data) {
		t.Fatal("overwrites not read back")
	}
	tf.checkBacking(t, "rw", data)
}

func currentUmask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

func TestHolesFarPastEOF(t *testing.T) {
	tf := mountFS(t)
	f, err := os.Create(tf.path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head, tail := []byte("head"), []byte("tail")
	f.Write(head)
	const far = 64 << 20
	if _, err := f.WriteAt(tail, far); err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	if fi.Size() != far+4 {
		t.Fatalf("size %d, want %d", fi.Size(), far+4)
	}
	buf := make([]byte, 10000)
	if _, err := f.ReadAt(buf, 32<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Fatal("hole does not read as zeros")
	}
	got := make([]byte, 8)
	f.ReadAt(got[:4], 0)
	f.ReadAt(got[4:], far)
	if string(got) != "headtail" {
		t.Fatalf("got %q", got)
	}
	var st syscall.Stat_t
	syscall.Stat(tf.backing("sparse"), &st)
	if st.Blocks*512 > 1<<20 {
		t.Errorf("backing file uses %d bytes: holes were written out", st.Blocks*512)
	}
}

func TestTruncate(t *testing.T) {
	tf := mountFS(t)
	data := randBytes(t, 10000)
	os.WriteFile(tf.path("t"), data, 0o600)
	// By path: shrink to mid-chunk, then grow.
	if err := os.Truncate(tf.path("t"), 5000); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, tf.path("t")); !bytes.Equal(got, data[:5000]) {
		t.Fatal("shrink by path")
	}
	if err := os.Truncate(tf.path("t"), 9000); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, data[:5000]...), make([]byte, 4000)...)
	if got := readFile(t, tf.path("t")); !bytes.Equal(got, want) {
		t.Fatal("grow by path")
	}
	tf.checkBacking(t, "t", want)
	// By handle.
	f, err := os.OpenFile(tf.path("t"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != 4096 {
		t.Fatalf("ftruncate size %d", fi.Size())
	}
	if err := f.Truncate(20000); err != nil {
		t.Fatal(err)
	}
	want = append(append([]byte{}, data[:4096]...), make([]byte, 20000-4096)...)
	got := make([]byte, 20000)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("grow by handle")
	}
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(tf.backing("t")); fi.Size() != chunk.DataOffset {
		t.Fatalf("truncate to 0 left backing size %d, want the header only", fi.Size())
	}
}

func TestAppend(t *testing.T) {
	tf := mountFS(t)
	os.WriteFile(tf.path("log"), []byte("one\n"), 0o600)
	var want []byte
	want = append(want, "one\n"...)
	for _, line := range []string{"two\n", strings.Repeat("3", 5000) + "\n", "four\n"} {
		f, err := os.OpenFile(tf.path("log"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(line); err != nil {
			t.Fatal(err)
		}
		f.Close()
		want = append(want, line...)
	}
	// pwrite on an O_APPEND descriptor still appends (Linux semantics).
	f, _ := os.OpenFile(tf.path("log"), os.O_RDWR|os.O_APPEND, 0)
	if _, err := syscall.Pwrite(int(f.Fd()), []byte("five\n"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want = append(want, "five\n"...)
	// O_APPEND switched on after open with fcntl counts too.
	f, _ = os.OpenFile(tf.path("log"), os.O_WRONLY, 0)
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFL, unix.O_APPEND); err != nil {
		t.Fatal(err)
	}
	f.WriteString("six\n")
	f.Close()
	want = append(want, "six\n"...)
	if got := readFile(t, tf.path("log")); !bytes.Equal(got, want) {
		t.Fatalf("append: got %q...", got[:min(len(got), 40)])
	}
	tf.checkBacking(t, "log", want)
}

func TestOTrunc(t *testing.T) {
	tf := mountFS(t)
	os.WriteFile(tf.path("f"), randBytes(t, 9000), 0o600)
	f, err := os.OpenFile(tf.path("f"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Fatalf("size after O_TRUNC %d", fi.Size())
	}
	if fi, _ := os.Stat(tf.backing("f")); fi.Size() != chunk.DataOffset {
		t.Fatalf("backing size after O_TRUNC %d, want header only", fi.Size())
	}
	f.WriteString("again")
	f.Close()
	if got := readFile(t, tf.path("f")); string(got) != "again" {
		t.Fatalf("got %q", got)
	}
	tf.checkBacking(t, "f", []byte("again"))
}

func TestRenameFlags(t *testing.T) {
	tf := mountFS(t)
	os.WriteFile(tf.path("a"), []byte("A"), 0o600)
	os.WriteFile(tf.path("b"), []byte("B"), 0o600)
	os.Mkdir(tf.path("d"), 0o755)
	if err := unix.Renameat2(unix.AT_FDCWD, tf.path("a"), unix.AT_FDCWD, tf.path("b"), unix.RENAME_NOREPLACE); err != unix.EEXIST {
		t.Fatalf("RENAME_NOREPLACE over existing: %v", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tf.path("a"), unix.AT_FDCWD, tf.path("b"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	if string(readFile(t, tf.path("a"))) != "B" || string(readFile(t, tf.path("b"))) != "A" {
		t.Fatal("RENAME_EXCHANGE did not swap")
	}
	if err := os.Rename(tf.path("a"), tf.path("d/a2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tf.path("b"), tf.path("d/a2")); err != nil {
		t.Fatal(err)
	}
	if string(readFile(t, tf.path("d/a2"))) != "A" {
		t.Fatal("rename over existing")
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tf.path("d/a2"), unix.AT_FDCWD, tf.path("c"), unix.RENAME_NOREPLACE); err != nil {
		t.Fatal(err)
	}
	if string(readFile(t, tf.path("c"))) != "A" {
		t.Fatal("RENAME_NOREPLACE to a new name")
	}
	if err := os.Rename(tf.path("c"), tf.path(cipherdir.ConfigName)); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("rename onto the config name: %v, want EPERM", err)
	}
}

func TestHardLinks(t *testing.T) {
	tf := mountFS(t)
	os.WriteFile(tf.path("orig"), []byte("shared"), 0o600)
	os.Mkdir(tf.path("dir"), 0o700)
	if err := os.Link(tf.path("orig"), tf.path("dir/link")); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(tf.path("dir/link"), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(" content")
	f.Close()
	if got := string(readFile(t, tf.path("orig"))); got != "shared content" {
		t.Fatalf("through the other name: %q", got)
	}
	var s1, s2 syscall.Stat_t
	syscall.Stat(tf.path("orig"), &s1)
	syscall.Stat(tf.path("dir/link"), &s2)
	if s1.Ino != s2.Ino || s1.Nlink != 2 {
		t.Fatalf("inodes %d %d nlink %d", s1.Ino, s2.Ino, s1.Nlink)
	}
	i1, _ := cipherdir.FileInfo(tf.backing("orig"))
	i2, _ := cipherdir.FileInfo(tf.backing("dir/link"))
	if i1.FileID != i2.FileID || i1.FileID == "" {
		t.Fatalf("file IDs %q %q", i1.FileID, i2.FileID)
	}
	os.Remove(tf.path("orig"))
	if got := string(readFile(t, tf.path("dir/link"))); got != "shared content" {
		t.Fatalf("after unlinking the first name: %q", got)
	}
}

func TestSymlinks(t *testing.T) {
	tf := mountFS(t)
	os.Mkdir(tf.path("dir"), 0o755)
	os.WriteFile(tf.path("dir/file"), []byte("x"), 0o600)
	if err := os.Symlink("dir", tf.path("ldir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", tf.path("dangling")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(tf.path("ldir")); err != nil || got != "dir" {
		t.Fatalf("readlink %q %v", got, err)
	}
	if string(readFile(t, tf.path("ldir/file"))) != "x" {
		t.Fatal("through symlink")
	}
	fi, err := os.Lstat(tf.path("dangling"))
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("lstat %v %v", fi, err)
	}
	long := strings.Repeat("a/", 2000) + "b"
	if err := os.Symlink(long, tf.path("long")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Readlink(tf.path("long")); got != long {
		t.Fatal("long target")
	}
	// A symlink in the backing tree is never followed where the plaintext
	// operation would not: a backing symlink to the outside stays a link.
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600)
	os.Symlink(outside, tf.backing("escape"))
	if fi, err := os.Lstat(tf.path("escape")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("backing symlink: %v %v", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(outside, "x")); err == nil {
		t.Fatal("unexpected")
	}
}

func TestMkdirModes(t *testing.T) {
	tf := mountFS(t)
	for _, mode := range []os.FileMode{0o151, 0o700, 0o755, 0} {
		p := tf.path("d" + mode.String())
		if err := syscall.Mkdir(p, uint32(mode)); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := mode &^ currentUmask(); fi.Mode().Perm() != want {
			t.Errorf("mkdir %o: mode %o, want %o", mode, fi.Mode().Perm(), want)
		}
	}
	os.Mkdir(tf.path("sg"), 0o755)
	if err := syscall.Chmod(tf.path("sg"), 0o2755); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(tf.path("sg/child"), 0o755)
	if fi, _ := os.Lstat(tf.path("sg/child")); fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("directory in a set-group-ID directory lost S_ISGID: %v", fi.Mode())
	}
	if err := os.Chmod(tf.path("sg"), 0o711); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(tf.path("sg")); fi.Mode().Perm() != 0o711 {
		t.Errorf("chmod: %v", fi.Mode())
	}
	if err := os.Chown(tf.path("sg"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Lstat(tf.path("sg"), &st)
	if st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("chown: %d:%d", st.Uid, st.Gid)
	}
	d, err := os.Open(tf.path("sg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Errorf("fsync of a directory: %v", err)
	}
	d.Close()
	if err := os.Remove(tf.path("sg")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir of non-empty: %v", err)
	}
}

func TestConfigHidden(t *testing.T) {
	tf := mountFS(t)
	if _, err := os.Stat(tf.path(cipherdir.ConfigName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat config: %v", err)
	}
	if err := os.WriteFile(tf.path(cipherdir.ConfigName), []byte("x"), 0o600); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("create config: %v, want EPERM", err)
	}
	os.WriteFile(tf.path("visible"), nil, 0o600)
	names, err := os.ReadDir(tf.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0].Name() != "visible" {
		t.Fatalf("root lists %v", names)
	}
	// Only the root hides the name.
	os.Mkdir(tf.path("sub"), 0o755)
	if err := os.WriteFile(tf.path("sub/"+cipherdir.ConfigName), []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cipherdir.LoadConfig(tf.cipher); err != nil {
		t.Fatalf("config damaged: %v", err)
	}
}

func TestXattrHiding(t *testing.T) {
	tf := mountFS(t)
	p := tf.path("f")
	os.WriteFile(p, []byte("data"), 0o600)
	if err := unix.Setxattr(p, "user.color", []byte("blue"), 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if n, err := unix.Getxattr(p, "user.color", buf); err != nil || string(buf[:n]) != "blue" {
		t.Fatalf("getxattr %q %v", buf[:n], err)
	}
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	if list := string(buf[:n]); list != "user.color\x00" {
		t.Fatalf("listxattr %q", list)
	}
	if sz, err := unix.Listxattr(p, nil); err != nil || sz != len("user.color\x00") {
		t.Fatalf("listxattr size %d %v", sz, err)
	}
	if _, err := unix.Getxattr(p, KeyXattr, buf); err != unix.ENODATA {
		t.Fatalf("getxattr key: %v, want ENODATA", err)
	}
	if err := unix.Setxattr(p, KeyXattr, []byte("x"), 0); err != unix.EPERM {
		t.Fatalf("setxattr key: %v, want EPERM", err)
	}
	if err := unix.Setxattr(p, "user.kmsfs.other", []byte("x"), 0); err != unix.EPERM {
		t.Fatalf("setxattr user.kmsfs.other: %v, want EPERM", err)
	}
	if err := unix.Removexattr(p, KeyXattr); err != unix.EPERM {
		t.Fatalf("removexattr key: %v, want EPERM", err)
	}
	if err := unix.Removexattr(p, "user.color"); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(p, "security.capability", buf); err != unix.ENODATA {
		t.Fatalf("security.capability: %v", err)
	}
	if _, err := unix.Lgetxattr(tf.backing("f"), KeyXattr, make([]byte, maxRecordSize)); err != nil {
		t.Fatalf("backing key xattr gone: %v", err)
	}
	if string(readFile(t, p)) != "data" {
		t.Fatal("content")
	}
	// Directories carry user xattrs too.
	os.Mkdir(tf.path("d"), 0o755)
	if err := unix.Setxattr(tf.path("d"), "user.d", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
}

// TestMmap reads and writes a file through a shared mapping. The mapping
// is used in a child process: a page fault on a FUSE file blocks its OS
// thread, which would stall this process's garbage collector while it
// serves the mount (go-fuse's documented deadlock).
func TestMmap(t *testing.T) {
	tf := mountFS(t)
	data := randBytes(t, 3*4096+100)
	os.WriteFile(tf.path("m"), data, 0o600)
	runMmapChild(t, tf.path("m"))
	copy(data[4000:], "written through mmap")
	if got := readFile(t, tf.path("m")); !bytes.Equal(got, data) {
		t.Fatal("mmap write not read back")
	}
	tf.checkBacking(t, "m", data)
}

// runMmapChild writes "written through mmap" at offset 4000 of the file p
// through a shared mapping in a child process (TestMmapChild). Mappings of
// files on our mounts never happen in the test process itself: a page fault
// on a FUSE mapping served by this very process can deadlock the Go runtime
// (the faulting thread is not at a safe point, and the server goroutines
// that would answer it wait for the garbage collector).
func runMmapChild(t *testing.T, p string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMmapChild$", "-test.v")
	cmd.Env = append(os.Environ(), "KMSFS_MMAP_FILE="+p)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestMmapChild") {
		t.Fatalf("mmap child: %v\n%s", err, out)
	}
}

// TestMmapChild is the child process of runMmapChild: it checks that the mapping
// shows the file (whose size it is given) and writes through it.
func TestMmapChild(t *testing.T) {
	p := os.Getenv("KMSFS_MMAP_FILE")
	if p == "" {
		t.Skip("runs as TestMmap's child")
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// An O_APPEND descriptor opened last is the one the kernel picks for
	// writeback; the mapped write must still land in place.
	af, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer af.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m, want) {
		t.Fatal("mapping differs from read(2)")
	}
	copy(m[4000:], "written through mmap")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(m); err != nil {
		t.Fatal(err)
	}
}

func TestFallocate(t *testing.T) {
	tf := mountFS(t)
	f, err := os.Create(tf.path("fa"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("abc")
	fd := int(f.Fd())
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != 3 {
		t.Fatalf("KEEP_SIZE changed size to %d", fi.Size())
	}
	var st syscall.Stat_t
	syscall.Stat(tf.backing("fa"), &st)
	if st.Blocks*512 < 1<<20 {
		t.Errorf("KEEP_SIZE reserved only %d bytes", st.Blocks*512)
	}
	if err := unix.Fallocate(fd, 0, 0, 10000); err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != 10000 {
		t.Fatalf("mode 0 size %d, want 10000", fi.Size())
	}
	want := append([]byte("abc"), make([]byte, 9997)...)
	if got := readFile(t, tf.path("fa")); !bytes.Equal(got, want) {
		t.Fatal("content after fallocate")
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096); err != unix.EOPNOTSUPP {
		t.Fatalf("punch hole: %v, want EOPNOTSUPP", err)
	}
	tf.checkBacking(t, "fa", want)
}

func TestLseek(t *testing.T) {
	tf := mountFS(t)
	f, _ := os.Create(tf.path("s"))
	defer f.Close()
	f.WriteAt([]byte("x"), 100000)
	fd := int(f.Fd())
	if off, err := unix.Seek(fd, 10, unix.SEEK_DATA); err != nil || off != 10 {
		t.Fatalf("SEEK_DATA %d %v", off, err)
	}
	if off, err := unix.Seek(fd, 10, unix.SEEK_HOLE); err != nil || off != 100001 {
		t.Fatalf("SEEK_HOLE %d %v", off, err)
	}
	if _, err := unix.Seek(fd, 100001, unix.SEEK_DATA); err != unix.ENXIO {
		t.Fatalf("SEEK_DATA at EOF: %v", err)
	}
}

func TestMknod(t *testing.T) {
	tf := mountFS(t)
	if err := unix.Mkfifo(tf.path("fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(tf.path("fifo"))
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("fifo: %v %v", fi, err)
	}
	if err := unix.Mknod(tf.path("sock"), unix.S_IFSOCK|0o600, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(tf.path("reg"), unix.S_IFREG|0o600, 0); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tf.path("reg"), []byte("via mknod"), 0o600)
	if string(readFile(t, tf.path("reg"))) != "via mknod" {
		t.Fatal("regular file made by mknod")
	}
	tf.checkBacking(t, "reg", []byte("via mknod"))
}

// TestNoPassthrough proves the kernel never reads the backing file
// directly: the handle type has no PassthroughFd, and a read through a
// real mount (as root, where go-fuse would register passthrough) returns
// plaintext, never ciphertext.
func TestNoPassthrough(t *testing.T) {
	var h gofs.FileHandle = &handle{}
	if _, ok := h.(gofs.FilePassthroughFder); ok {
		t.Fatal("handle implements FilePassthroughFder")
	}
	tf := mountFS(t)
	data := []byte(strings.Repeat("plaintext that must come back as written. ", 200))
	os.WriteFile(tf.path("p"), data, 0o600)
	f, err := os.Open(tf.path("p"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes that are not the plaintext (ciphertext passthrough?)", len(got))
	}
	tf.checkBacking(t, "p", data)
}

func TestLongPaths(t *testing.T) {
	tf := mountFS(t)
	// Walk down with openat so no single path passed to the kernel gets
	// near PATH_MAX, while the backing path exceeds it.
	dirfd, err := unix.Open(tf.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	comp := strings.Repeat("d", 250)
	for i := 0; i < 20; i++ { // 20 * 251 bytes > 4096
		if err := unix.Mkdirat(dirfd, comp, 0o755); err != nil {
			t.Fatalf("depth %d: %v", i, err)
		}
		next, err := unix.Openat(dirfd, comp, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(dirfd)
		if err != nil {
			t.Fatalf("depth %d: %v", i, err)
		}
		dirfd = next
	}
	defer unix.Close(dirfd)
	fd, err := unix.Openat(dirfd, "file", unix.O_CREAT|unix.O_RDWR|unix.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(fd, []byte("deep"))
	unix.Close(fd)
	fd, err = unix.Openat(dirfd, "file", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	n, _ := unix.Read(fd, buf)
	unix.Close(fd)
	if string(buf[:n]) != "deep" {
		t.Fatalf("read %q", buf[:n])
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, "file", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Size != 4 {
		t.Fatalf("stat: %v size %d", err, st.Size)
	}
}

func TestReadOnly(t *testing.T) {
	tf := mountFS(t)
	// Put a file in the tree through a first mount, then mount read-only.
	os.WriteFile(tf.path("f"), []byte("ro"), 0o600)
	ro := t.TempDir()
	srv, err := Mount(ro, Options{CipherDir: tf.cipher, Config: tf.cfg, Keys: tf.keys, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Unmount(); srv.Wait() })
	if string(readFile(t, filepath.Join(ro, "f"))) != "ro" {
		t.Fatal("read on ro mount")
	}
	if err := os.WriteFile(filepath.Join(ro, "g"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("create on ro mount: %v", err)
	}
	if _, err := os.OpenFile(filepath.Join(ro, "f"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("open for writing on ro mount: %v", err)
	}
}

func TestKeyServiceFailures(t *testing.T) {
	tf := mountFS(t)
	os.WriteFile(tf.path("f"), []byte("secret"), 0o600)
	tf.waitReleased(t)
	tf.keys.setDisabled(true)
	if _, err := os.ReadFile(tf.path("f")); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("open with disabled key: %v, want EACCES", err)
	}
	if err := os.WriteFile(tf.path("g"), nil, 0o600); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("create with disabled key: %v, want EACCES", err)
	}
	if _, err := os.Lstat(tf.backing("g")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed create left a backing file: %v", err)
	}
	if !strings.Contains(tf.log.String(), "key service failure") {
		t.Errorf("no log line for the key service failure: %q", tf.log.String())
	}
	if strings.Count(tf.log.String(), "\n") != 2 {
		t.Errorf("want one log line per failure, got %q", tf.log.String())
	}
	tf.keys.setDisabled(false)
	if string(readFile(t, tf.path("f"))) != "secret" {
		t.Fatal("after re-enabling")
	}
}

func TestTamperedChunk(t *testing.T) {
	tf := mountFS(t)
	data := randBytes(t, 3*4096)
	os.WriteFile(tf.path("f"), data, 0o600)
	b, _ := os.ReadFile(tf.backing("f"))
	off := chunk.DataOffset + 4096 + chunk.Overhead + 100 // inside chunk 1
	b[off] ^= 1
	os.WriteFile(tf.backing("f"), b, 0o600)
	f, err := os.Open(tf.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatalf("chunk 0: %v", err)
	}
	// Bypass the page cache's readahead: the failing chunk is read on its own.
	if _, err := f.ReadAt(buf, 4096); !errors.Is(err, syscall.EIO) {
		t.Fatalf("tampered chunk: %v, want EIO", err)
	}
	if log := tf.log.String(); !strings.Contains(log, "content authentication failed") || !strings.Contains(log, "chunk=1") {
		t.Errorf("log: %q", log)
	}
}

func TestKeyCachedWhileOpen(t *testing.T) {
	tf := mountFS(t)
	os.WriteFile(tf.path("f"), []byte("x"), 0o600)
	tf.waitReleased(t)
	_, d0 := tf.keys.counts()
	var files []*os.File
	for i := 0; i < 5; i++ {
		f, err := os.Open(tf.path("f"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	_, d1 := tf.keys.counts()
	if d1-d0 != 1 {
		t.Errorf("5 concurrent opens made %d Decrypt calls, want 1", d1-d0)
	}
	for _, f := range files {
		f.Close()
	}
}

func TestEmptyBackingFile(t *testing.T) {
	tf := mountFS(t)
	// A file created outside kmsfs (or a crash before the header): empty.
	os.WriteFile(tf.backing("outside"), nil, 0o644)
	if got := readFile(t, tf.path("outside")); len(got) != 0 {
		t.Fatalf("read %q", got)
	}
	f, err := os.OpenFile(tf.path("outside"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("now encrypted")
	f.Close()
	if string(readFile(t, tf.path("outside"))) != "now encrypted" {
		t.Fatal("content")
	}
	tf.checkBacking(t, "outside", []byte("now encrypted"))
	// A non-empty backing file without a key record is damaged: EIO.
	os.WriteFile(tf.backing("plain"), []byte("not kmsfs content at all, longer than a header......."), 0o644)
	if _, err := os.ReadFile(tf.path("plain")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("file without key record: %v, want EIO", err)
	}
}

// TestCallerOwnership checks, with allow_other (and so
// default_permissions), that entries made by another user belong to that
// user with the mode asked for after its umask, and that it cannot read a
// root-only file.
func TestCallerOwnership(t *testing.T) {
	tf := mountFS(t, func(o *Options) { o.AllowOther = true })
	// The test's temporary directories are root-only; open the way.
	for _, d := range []string{filepath.Dir(tf.mnt), tf.cipher} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(tf.path("private"), []byte("root only"), 0o600)
	script := `umask 027; cd "$1" && echo hi > f && mkdir d && ln -s target l && mkfifo p && ` +
		`chmod 0751 d && if cat private 2>/dev/null; then echo READ-PRIVATE; fi`
	cmd := exec.Command("/bin/sh", "-c", script, "sh", tf.mnt)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 8765}}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "READ-PRIVATE") {
		t.Fatalf("as uid 4321: %v\n%s", err, out)
	}
	for name, mode := range map[string]uint32{"f": 0o640, "d": 0o751, "l": 0o777, "p": 0o640} {
		var st syscall.Stat_t
		if err := syscall.Lstat(tf.path(name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 4321 || st.Gid != 8765 || st.Mode&0o7777 != mode {
			t.Errorf("%s: owner %d:%d mode %o, want 4321:8765 %o", name, st.Uid, st.Gid, st.Mode&0o7777, mode)
		}
		var bst syscall.Stat_t
		syscall.Lstat(tf.backing(name), &bst)
		if bst.Uid != 4321 || bst.Gid != 8765 {
			t.Errorf("%s: backing owner %d:%d", name, bst.Uid, bst.Gid)
		}
	}
	if string(readFile(t, tf.path("f"))) != "hi\n" {
		t.Fatal("content")
	}
}

// TestKillSetID: the mount handles killing set-ID bits itself
// (CAP_HANDLE_KILLPRIV_V2), so a write or truncate by a user without
// CAP_FSETID must clear set-user-ID, and set-group-ID when group execute
// is set, exactly as on a local file system; root's writes keep them.
func TestKillSetID(t *testing.T) {
	tf := mountFS(t, func(o *Options) { o.AllowOther = true })
	for _, d := range []string{filepath.Dir(tf.mnt), tf.cipher} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]struct{ mode, want uint32 }{
		"write-suid-sgid":  {0o6775, 0o775},  // both go: group execute is set
		"write-sgid-nox":   {0o2765, 0o2765}, // no group execute: the bit stays
		"truncate-suid":    {0o4777, 0o777},
		"write-plain":      {0o666, 0o666},
		"root-write-keeps": {0o4777, 0o4777},
		"append-suid-sgid": {0o6777, 0o777},
		"ftruncate-suid":   {0o4777, 0o777},
	}
	for name, f := range files {
		p := tf.path(name)
		if err := os.WriteFile(p, []byte("original"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 4321, 8765); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, os.FileMode(f.mode&0o777)|modeBits(f.mode)); err != nil {
			t.Fatal(err)
		}
	}
	script := `cd "$1" && printf x | dd of=write-suid-sgid conv=notrunc status=none && ` +
		`printf x | dd of=write-sgid-nox conv=notrunc status=none && ` +
		`truncate -s 3 truncate-suid && printf x | dd of=write-plain conv=notrunc status=none && ` +
		`echo more >> append-suid-sgid && ` +
		`python3 -c 'import os; fd = os.open("ftruncate-suid", os.O_WRONLY); os.ftruncate(fd, 2)'`
	cmd := exec.Command("/bin/sh", "-c", script, "sh", tf.mnt)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 8765}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid 4321: %v\n%s", err, out)
	}
	if err := os.WriteFile(tf.path("root-write-keeps"), []byte("root"), 0); err != nil {
		t.Fatal(err)
	}
	for name, f := range files {
		var st syscall.Stat_t
		if err := syscall.Stat(tf.path(name), &st); err != nil {
			t.Fatal(err)
		}
		var bst syscall.Stat_t
		if err := syscall.Stat(tf.backing(name), &bst); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != f.want || bst.Mode&0o7777 != f.want {
			t.Errorf("%s: mode %o (backing %o), want %o", name, st.Mode&0o7777, bst.Mode&0o7777, f.want)
		}
	}
}

// modeBits turns the set-ID and sticky bits of a numeric mode into
// os.FileMode bits.
func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// TestParallelWriters has writers on separate descriptors fill adjacent,
// chunk-unaligned regions of one file while readers read it: without the
// per-inode content lock, read-modify-writes of shared edge chunks would
// lose data.
func TestParallelWriters(t *testing.T) {
	tf := mountFS(t)
	const writers, region, piece = 4, 30001, 997
	want := randBytes(t, writers*region)
	if err := os.WriteFile(tf.path("p"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for w := 0; w < writers; w++ {
		wg.Add(2)
		go func(w int) {
			defer wg.Done()
			f, err := os.OpenFile(tf.path("p"), os.O_WRONLY, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for off := w * region; off < (w+1)*region; off += piece {
				end := min(off+piece, (w+1)*region)
				if _, err := f.WriteAt(want[off:end], int64(off)); err != nil {
					errs <- err
					return
				}
			}
		}(w)
		go func() {
			defer wg.Done()
			f, err := os.Open(tf.path("p"))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := make([]byte, 8192)
			for i := 0; i < 20; i++ {
				if _, err := f.ReadAt(buf, int64(i*3000)); err != nil && err != io.EOF {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := readFile(t, tf.path("p")); !bytes.Equal(got, want) {
		t.Fatal("parallel writes lost data")
	}
	tf.checkBacking(t, "p", want)
}

func TestMountRejectsBadOptions(t *testing.T) {
	cfg, err := cipherdir.NewConfig(cipherdir.KMSLocal, "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := Mount(t.TempDir(), Options{CipherDir: dir, Config: cfg}); err == nil {
		t.Error("mounted without a key service")
	}
	bad := cfg
	bad.ChunkSize = 3
	if _, err := Mount(t.TempDir(), Options{CipherDir: dir, Config: bad, Keys: newFakeKeys()}); err == nil {
		t.Error("mounted with an invalid config")
	}
	if _, err := Mount(t.TempDir(), Options{CipherDir: filepath.Join(dir, "missing"), Config: cfg, Keys: newFakeKeys()}); err == nil {
		t.Error("mounted a missing CIPHERDIR")
	}
}

// TestKeyRecordBoundToFile checks that a key record copied from another
// file of the same tree is refused: the encryption context names the file
// ID in the header, so the unwrap fails and the read gives EIO.
func TestKeyRecordBoundToFile(t *testing.T) {
	tf := mountFS(t)
	os.WriteFile(tf.path("a"), []byte("file a"), 0o600)
	os.WriteFile(tf.path("b"), []byte("file b"), 0o600)
	tf.waitReleased(t)
	rec := make([]byte, maxRecordSize)
	n, err := unix.Lgetxattr(tf.backing("a"), KeyXattr, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(tf.backing("b"), KeyXattr, rec[:n], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(tf.path("b")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("file with another file's key record: %v, want EIO", err)
	}
	if string(readFile(t, tf.path("a"))) != "file a" {
		t.Fatal("the record's own file")
	}
}
