package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

// testClock is a settable clock shared by the Stores of a test.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *testClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

const day = 24 * time.Hour

// privateDir returns a new empty directory of mode 0700, as Open wants a
// keystore directory: t.TempDir makes its directories 0777 &^ umask.
func privateDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "keystore")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// openStore opens a Store in dir with a cheap scrypt cost and clk.
func openStore(t testing.TB, dir string, clk *testClock, mod ...func(*Options)) *Store {
	t.Helper()
	opts := Options{ScryptLogN: 4, Now: clk.Now}
	for _, m := range mod {
		m(&opts)
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustCreateKey(t testing.TB, s *Store, in CreateKeyInput) KeyMetadata {
	t.Helper()
	m, err := s.CreateKey(context.Background(), in)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return m
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(privateDir(t), "ks")
	openStore(t, dir, newTestClock())
	for name, want := range map[string]os.FileMode{".": 0o700 | os.ModeDir, RootKeyFileName: 0o600, KeystoreFileName: 0o600, LockFileName: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, RootKeyFileName)); fi.Size() != rootKeySize {
		t.Errorf("root.key is %d bytes", fi.Size())
	}
}

// TestKeystoreDirMustBePrivate checks that Open refuses a keystore
// directory group or others can reach, or that another user owns, saying
// how to fix it (issue 10, item 10), and creates a missing one 0700.
func TestKeystoreDirMustBePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	openStore(t, dir, newTestClock())
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("new keystore directory: %v, %v; want 0700", fi.Mode(), err)
	}
	for _, mode := range []os.FileMode{0o750, 0o705, 0o777} {
		dir := privateDir(t)
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, Options{ScryptLogN: 4})
		wantErr(t, fmt.Sprintf("Open of a %04o directory", mode), err, ErrInsecureKeystoreDir)
		if !strings.Contains(err.Error(), "chmod 700 "+dir) {
			t.Errorf("error %q does not say how to fix it", err)
		}
	}
	if os.Geteuid() != 0 {
		return // only root can give a directory away
	}
	dir = privateDir(t)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{ScryptLogN: 4})
	wantErr(t, "Open of another user's directory", err, ErrInsecureKeystoreDir)
}

func TestRootKeyPermissions(t *testing.T) {
	dir := privateDir(t)
	s := openStore(t, dir, newTestClock())
	mustCreateKey(t, s, CreateKeyInput{})
	s.Close()
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620} {
		if err := os.Chmod(filepath.Join(dir, RootKeyFileName), mode); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, Options{})
		wantErr(t, "Open with loose root.key", err, ErrInsecureRootKey)
		if !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("error %q does not say how to fix it", err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, RootKeyFileName), 0o400); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open with 0400 root.key: %v", err)
	}
	s2.Close()
	// A keystore whose root.key vanished is refused, not silently re-keyed.
	if err := os.Remove(filepath.Join(dir, RootKeyFileName)); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{})
	wantErr(t, "Open without root.key", err, ErrWrongRootKey)
	// Another root.key does not open the keystore.
	if err := os.WriteFile(filepath.Join(dir, RootKeyFileName), make([]byte, rootKeySize), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{})
	wantErr(t, "Open with another root.key", err, ErrWrongRootKey)
}

func TestPassphraseMode(t *testing.T) {
	dir := privateDir(t)
	clk := newTestClock()
	pass := func(p string) func(*Options) { return func(o *Options) { o.Passphrase = []byte(p) } }
	s := openStore(t, dir, clk, pass("correct horse"))
	k := mustCreateKey(t, s, CreateKeyInput{Description: "pp"})
	ctx := context.Background()
	dk, err := s.GenerateDataKey(ctx, k.KeyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, RootKeyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("passphrase keystore made a root.key: %v", err)
	}
	s2 := openStore(t, dir, clk, pass("correct horse"))
	u, err := s2.Decrypt(ctx, dk.Wrapped.Blob, "", nil)
	if err != nil || !bytes.Equal(u.Plaintext, dk.Plaintext) {
		t.Fatalf("Decrypt after reopen: %v", err)
	}
	// The salt and cost are kept across saves: a write and a reopen still work.
	mustCreateKey(t, s2, CreateKeyInput{})
	s2.Close()
	openStore(t, dir, clk, pass("correct horse")).Close()

	_, err = Open(dir, Options{Passphrase: []byte("wrong"), ScryptLogN: 4})
	wantErr(t, "wrong passphrase", err, ErrWrongPassphrase)
	if !strings.Contains(err.Error(), "wrong passphrase") {
		t.Errorf("unclear error %q", err)
	}
	_, err = Open(dir, Options{})
	wantErr(t, "no passphrase", err, ErrKeystoreMode)

	other := privateDir(t)
	openStore(t, other, clk).Close()
	_, err = Open(other, Options{Passphrase: []byte("x")})
	wantErr(t, "passphrase on a root.key keystore", err, ErrKeystoreMode)
}

func TestPassphraseDefaultCostRecorded(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(makePassphraseKeystore(t, 5), KeystoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	h, _, _, err := parseKeystoreFile(raw)
	if err != nil || h.mode != modePassphrase || h.logN != 5 || h.r != scryptR || h.p != scryptP {
		t.Fatalf("header %+v, %v", h, err)
	}
}

func makePassphraseKeystore(t *testing.T, logN int) string {
	dir := privateDir(t)
	s, err := Open(dir, Options{Passphrase: []byte("p"), ScryptLogN: logN})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return dir
}

func TestKeystoreHoldsNoPlaintext(t *testing.T) {
	dir := privateDir(t)
	s := openStore(t, dir, newTestClock())
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{Description: "very-recognisable-description"})
	if err := s.CreateAlias(ctx, "alias/recognisable-alias", k.KeyID); err != nil {
		t.Fatal(err)
	}
	var material []byte
	s.mu.RLock()
	material = append(material, s.data.Keys[k.KeyID].Versions[0].Material...)
	s.mu.RUnlock()
	raw, err := os.ReadFile(filepath.Join(dir, KeystoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range [][]byte{material, []byte("very-recognisable"), []byte("recognisable-alias"), []byte(k.KeyID)} {
		if bytes.Contains(raw, needle) {
			t.Fatalf("keystore.kms contains %q in the clear", needle)
		}
	}
	for _, e := range mustReadDir(t, dir) {
		if strings.Contains(e, ".tmp-") {
			t.Fatalf("temp file %s left behind", e)
		}
	}
}

func mustReadDir(t *testing.T, dir string) []string {
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestPersistenceAcrossOpen(t *testing.T) {
	dir := privateDir(t)
	clk := newTestClock()
	ctx := context.Background()
	s := openStore(t, dir, clk)
	k := mustCreateKey(t, s, CreateKeyInput{Description: "d", Tags: map[string]string{"team": "fs"}})
	if err := s.CreateAlias(ctx, "alias/p", k.ARN); err != nil {
		t.Fatal(err)
	}
	dk, err := s.GenerateDataKey(ctx, "alias/p", keysvc.EncryptionContext{"a": "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RotateKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openStore(t, dir, clk)
	m, err := s2.DescribeKeyMetadata(ctx, "alias/p")
	if err != nil || m.KeyID != k.KeyID || m.Description != "d" || m.KeyMaterialCount != 2 {
		t.Fatalf("after reopen: %+v, %v", m, err)
	}
	u, err := s2.Decrypt(ctx, dk.Wrapped.Blob, "alias/p", keysvc.EncryptionContext{"a": "b"})
	if err != nil || !bytes.Equal(u.Plaintext, dk.Plaintext) || u.KeyMaterialID != k.CurrentKeyMaterialID {
		t.Fatalf("Decrypt after reopen: %+v, %v", u, err)
	}
	tags, err := s2.ListResourceTags(ctx, k.KeyID)
	if err != nil || tags["team"] != "fs" {
		t.Fatalf("tags %v, %v", tags, err)
	}
}

func TestHotPathDoesNotReparse(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{RotationPeriodDays: 365})
	dk, err := s.GenerateDataKey(ctx, k.KeyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	before := s.loads
	s.mu.RUnlock()
	for range 100 {
		if _, err := s.GenerateDataKey(ctx, k.KeyID, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Decrypt(ctx, dk.Wrapped.Blob, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.RLock()
	after := s.loads
	s.mu.RUnlock()
	if after != before {
		t.Fatalf("hot path parsed the keystore %d times", after-before)
	}
}

func TestCloseZeroesMaterial(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	k := mustCreateKey(t, s, CreateKeyInput{})
	s.mu.RLock()
	m := s.data.Keys[k.KeyID].Versions[0].Material
	root := s.rootKey
	s.mu.RUnlock()
	s.Close()
	if !bytes.Equal(m, make([]byte, len(m))) || !bytes.Equal(root, make([]byte, len(root))) {
		t.Fatal("Close left key material in memory")
	}
	_, err := s.GenerateDataKey(context.Background(), k.KeyID, nil)
	if err == nil {
		t.Fatal("closed Store still works")
	}
}

func TestCancelledContext(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	k := mustCreateKey(t, s, CreateKeyInput{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GenerateDataKey(ctx, k.KeyID, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("GenerateDataKey with a cancelled context: %v", err)
	}
	if _, err := s.CreateKey(ctx, CreateKeyInput{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateKey with a cancelled context: %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	_, err := Open(privateDir(t), Options{ScryptLogN: 40})
	wantErr(t, "scrypt cost", err, keysvc.ErrInvalidArgument)
	_, err = Open(privateDir(t), Options{Passphrase: []byte{}})
	wantErr(t, "empty passphrase", err, keysvc.ErrInvalidArgument)
}

func TestVanishedKeystoreIsAnError(t *testing.T) {
	dir := privateDir(t)
	s := openStore(t, dir, newTestClock())
	k := mustCreateKey(t, s, CreateKeyInput{})
	if err := os.Remove(filepath.Join(dir, KeystoreFileName)); err != nil {
		t.Fatal(err)
	}
	_, err := s.GenerateDataKey(context.Background(), k.KeyID, nil)
	wantErr(t, "GenerateDataKey after keystore.kms vanished", err, keysvc.ErrUnavailable)
	_, err = s.CreateKey(context.Background(), CreateKeyInput{})
	wantErr(t, "CreateKey after keystore.kms vanished", err, keysvc.ErrUnavailable)
}

func TestOtherStoreChangesAreSeen(t *testing.T) {
	dir := privateDir(t)
	clk := newTestClock()
	a, b := openStore(t, dir, clk), openStore(t, dir, clk)
	ctx := context.Background()
	k := mustCreateKey(t, a, CreateKeyInput{})
	if err := b.DisableKey(ctx, k.KeyID); err != nil {
		t.Fatalf("b does not see a's key: %v", err)
	}
	_, err := a.GenerateDataKey(ctx, k.KeyID, nil)
	wantErr(t, "a after b disabled the key", err, keysvc.ErrDisabled)
}

func TestInspect(t *testing.T) {
	empty := privateDir(t)
	if info, err := Inspect(empty); err != nil || info.Exists {
		t.Fatalf("Inspect(empty) = %+v, %v", info, err)
	}
	plain := privateDir(t)
	openStore(t, plain, newTestClock()).Close()
	if info, err := Inspect(plain); err != nil || !info.Exists || info.Passphrase {
		t.Fatalf("Inspect(root.key keystore) = %+v, %v", info, err)
	}
	if info, err := Inspect(makePassphraseKeystore(t, 6)); err != nil || !info.Exists || !info.Passphrase || info.ScryptLogN != 6 {
		t.Fatalf("Inspect(passphrase keystore) = %+v, %v", info, err)
	}
	bad := privateDir(t)
	if err := os.WriteFile(filepath.Join(bad, KeystoreFileName), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Inspect(bad)
	wantErr(t, "Inspect(junk)", err, ErrCorruptKeystore)
}
