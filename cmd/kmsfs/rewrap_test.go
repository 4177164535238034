package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// lifecycleTree is a CIPHERDIR on a local keystore whose backing files
// are written directly (no FUSE), for rewrap and rekey tests. Its names
// are plaintext (init --plaintext-names): the files are written under
// their own names.
type lifecycleTree struct {
	te    *testEnv
	dir   string
	cfg   cipherdir.Config
	store *local.Store
}

func newLifecycleTree(t *testing.T) *lifecycleTree {
	t.Helper()
	ks := filepath.Join(t.TempDir(), "keystore")
	te := newTestEnv(map[string]string{"KMSFS_KEYSTORE": ks, "HOME": "/nonexistent"})
	dir := filepath.Join(t.TempDir(), "c")
	if code := runCmd(t, te, "init", "--plaintext-names", dir); code != ExitOK {
		t.Fatalf("init: exit %d", code)
	}
	cfg, err := cipherdir.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	store, err := local.Open(ks, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return &lifecycleTree{te: te, dir: dir, cfg: cfg, store: store}
}

// write makes the backing file name with plaintext data as the mount
// would: a new data key, its record in the xattr, header and chunks.
func (lt *lifecycleTree) write(t *testing.T, name string, data []byte) {
	t.Helper()
	h, err := chunk.NewHeader(lt.cfg.ChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := lt.store.GenerateDataKey(context.Background(), lt.cfg.KeyID, keysvc.FileContext(lt.cfg.FilesystemID, h.FileID.String()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := chunk.NewCipher(dk.Plaintext, h, nil) // no compression
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(lt.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fsetxattr(int(f.Fd()), cipherdir.KeyXattr, dk.Wrapped.MarshalRecord(), 0); err != nil {
		t.Skipf("user xattrs unsupported here: %v", err)
	}
	if _, err := chunk.NewFile(f, c).WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
}

// read decrypts the backing file name.
func (lt *lifecycleTree) read(t *testing.T, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(lt.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := cipherdir.LoadKey(context.Background(), lt.store, cipherdir.NewTrust(context.Background(), lt.store, lt.cfg, nil), lt.cfg, nil, int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	cf := chunk.NewFile(f, k.Cipher)
	size, err := cf.Size()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, size)
	if _, err := cf.ReadAt(buf, 0); err != nil && size > 0 {
		t.Fatal(err)
	}
	return buf
}

func (lt *lifecycleTree) material(t *testing.T, name string) string {
	t.Helper()
	info, err := cipherdir.FileInfo(filepath.Join(lt.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return info.KeyMaterialID
}

var summaryRE = regexp.MustCompile(`(\d+) files seen, (\d+) (?:rewrapped|to rewrap), (\d+) already current, (\d+) skipped, (\d+) failed`)

func summary(t *testing.T, out string) string {
	t.Helper()
	m := summaryRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in %q", out)
	}
	return strings.Join(m[1:], " ")
}

func TestRewrapCommand(t *testing.T) {
	lt := newLifecycleTree(t)
	files := map[string][]byte{"a": []byte("alpha"), "d/b": bytes.Repeat([]byte("b"), 10000), "d/e/c": {1}}
	for name, data := range files {
		lt.write(t, name, data)
	}
	if err := os.Link(filepath.Join(lt.dir, "a"), filepath.Join(lt.dir, "d", "a-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lt.dir, "empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", filepath.Join(lt.dir, "sym")); err != nil {
		t.Fatal(err)
	}
	if code := runCmd(t, lt.te, "key", "rotate", lt.cfg.KeyID); code != ExitOK {
		t.Fatal("rotate failed")
	}
	if code := runCmd(t, lt.te, "rewrap", "--dry-run", lt.dir); code != ExitOK || summary(t, lt.te.stdout.String()) != "4 3 0 1 0" {
		t.Errorf("dry run: exit %d, %q; want 4 seen, 3 to rewrap, 1 skipped", code, lt.te.stdout.String())
	}
	old := lt.material(t, "a")
	if code := runCmd(t, lt.te, "rewrap", "--jobs", "2", lt.dir); code != ExitOK || summary(t, lt.te.stdout.String()) != "4 3 0 1 0" {
		t.Errorf("rewrap: exit %d, %q", code, lt.te.stdout.String())
	}
	newest := lt.material(t, "a")
	if newest == old {
		t.Errorf("rewrap left the key material at %s", old)
	}
	for name, data := range files {
		if got := lt.read(t, name); !bytes.Equal(got, data) {
			t.Errorf("%s after rewrap: %q", name, got)
		}
		if m := lt.material(t, name); m != newest {
			t.Errorf("%s: key material %s, want %s", name, m, newest)
		}
	}
	if code := runCmd(t, lt.te, "rewrap", lt.dir); code != ExitOK || summary(t, lt.te.stdout.String()) != "4 0 3 1 0" {
		t.Errorf("second rewrap: exit %d, %q; want all current", code, lt.te.stdout.String())
	}

	// A damaged record fails that file only: exit 8, the file named.
	if err := unix.Setxattr(filepath.Join(lt.dir, "d", "b"), cipherdir.KeyXattr, []byte("KMSKjunk"), 0); err != nil {
		t.Fatal(err)
	}
	runCmd(t, lt.te, "key", "rotate", lt.cfg.KeyID)
	if code := runCmd(t, lt.te, "rewrap", lt.dir); code != ExitIncomplete || !strings.Contains(lt.te.stderr.String(), filepath.Join("d", "b")) ||
		summary(t, lt.te.stdout.String()) != "4 2 0 1 1" {
		t.Errorf("rewrap with a damaged record: exit %d, stdout %q, stderr %q", code, lt.te.stdout.String(), lt.te.stderr.String())
	}

	// The destination key must be usable before anything is touched.
	if code := runCmd(t, lt.te, "rewrap", "--key", "alias/nonexistent", lt.dir); code != ExitKeyService {
		t.Errorf("rewrap --key of a missing key: exit %d, want %d", code, ExitKeyService)
	}
	for _, bad := range [][]string{{"rewrap", "--jobs", "0", lt.dir}, {"rewrap", "--to-kms", "aws", lt.dir}, {"rewrap"}} {
		if code := runCmd(t, lt.te, bad...); code != ExitUsage {
			t.Errorf("%q: exit %d, want %d", bad, code, ExitUsage)
		}
	}
}

func TestRekeyCommand(t *testing.T) {
	lt := newLifecycleTree(t)
	data := bytes.Repeat([]byte("0123456789"), 2000)
	lt.write(t, "f", data)
	p := filepath.Join(lt.dir, "f")
	if err := os.Link(p, filepath.Join(lt.dir, "g")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.keep", []byte("me"), 0); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2019, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := cipherdir.FileInfo(p)
	if code := runCmd(t, lt.te, "rekey", p); code != ExitOK || !strings.Contains(lt.te.stdout.String(), "rekeyed ") {
		t.Fatalf("rekey: exit %d", code)
	}
	after, _ := cipherdir.FileInfo(p)
	if after.FileID == before.FileID {
		t.Errorf("rekey kept file ID %s", before.FileID)
	}
	if got := lt.read(t, "f"); !bytes.Equal(got, data) {
		t.Errorf("content changed by rekey")
	}
	var a, b unix.Stat_t
	if err := unix.Stat(p, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(lt.dir, "g"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 2 || a.Mode&0o7777 != 0o600 || a.Mtim.Nano() != mt.UnixNano() {
		t.Errorf("after rekey: ino %d/%d nlink %d mode %o mtime %v", a.Ino, b.Ino, a.Nlink, a.Mode, time.Unix(a.Mtim.Unix()))
	}
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(p, "user.keep", buf); err != nil || string(buf[:n]) != "me" {
		t.Errorf("user.keep after rekey: %q, %v", buf[:n], err)
	}
	entries, _ := os.ReadDir(lt.dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), cipherdir.RekeyTempMarker) {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	if code := runCmd(t, lt.te, "rekey", filepath.Join(t.TempDir(), "nothing")); code == ExitOK {
		t.Errorf("rekey of a missing file succeeded")
	}
}

func TestProgressLines(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, "rewrap", 10)
	p.add(4)
	p.printf("kmsfs: rewrap: %s: %v\n", "x", fmt.Errorf("boom"))
	p.mu.Lock()
	p.drawLocked()
	p.mu.Unlock()
	p.stop()
	out := buf.String()
	if !strings.Contains(out, "kmsfs: rewrap: x: boom\n") || !regexp.MustCompile(`rewrap: 4/10 files \(40%\), \d+ files/s, ETA `).MatchString(out) {
		t.Errorf("progress output %q", out)
	}
	if strings.Contains(out, "\r") {
		t.Errorf("progress to a non-terminal redraws in place: %q", out)
	}
}
