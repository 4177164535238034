// Test harness of package fs, shared by every *_test.go file here:
// mountFS mounts a fresh CIPHERDIR in-process with fake keys, testFS gives
// its paths (plaintext and backing) and checks, and runMmapChild maps a
// mounted file in a child process.

package fs

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/internal/testlog"
	"github.com/kmsfs/kmsfs/names"
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

// testFS is one mounted kmsfs for a test.
type testFS struct {
	cipher, mnt string
	cfg         cipherdir.Config
	keys        *fakeKeys
	log         *testlog.Buffer
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
	tf := &testFS{cipher: t.TempDir(), mnt: t.TempDir(), keys: newFakeKeys(), log: &testlog.Buffer{}}
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

// withNames makes mountFS's tree an encrypted-names (v2) one: a random
// names key and the root's ID file, as kmsfs init writes them.
func withNames(t *testing.T) func(*Options) {
	return func(o *Options) {
		t.Helper()
		k, err := names.New(randBytes(t, names.KeySize))
		if err != nil {
			t.Fatal(err)
		}
		root, err := cipherdir.OpenRoot(o.CipherDir)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(root)
		if err := cipherdir.WriteRootDirID(root, k); err != nil {
			t.Fatal(err)
		}
		o.Names = k
	}
}

func (tf *testFS) path(name string) string { return filepath.Join(tf.mnt, name) }

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

func currentUmask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
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
		t.Skip("runs as runMmapChild's child process")
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
