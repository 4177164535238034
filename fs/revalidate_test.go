package fs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
)

// failingKeys is fakeKeys whose Decrypt can be made to fail with any error.
type failingKeys struct {
	*fakeKeys
	mu   sync.Mutex
	fail error
}

func (f *failingKeys) set(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

func (f *failingKeys) Decrypt(ctx context.Context, blob []byte, keyID string, ec keysvc.EncryptionContext) (keysvc.Unwrapped, error) {
	f.mu.Lock()
	err := f.fail
	f.mu.Unlock()
	if err != nil {
		return keysvc.Unwrapped{}, err
	}
	return f.fakeKeys.Decrypt(ctx, blob, keyID, ec)
}

// TestRevalidate drives revalidate directly (no FUSE): a confirmed key is
// not asked about again within the interval; an outage keeps the file in
// service; a disabled key is refused with EACCES, logged once, and the
// file works again once the key does; a key record swapped for another
// file's is refused.
func TestRevalidate(t *testing.T) {
	dir := t.TempDir()
	keys := &failingKeys{fakeKeys: newFakeKeys()}
	cfg, err := cipherdir.NewConfig(cipherdir.KMSLocal, keys.keyID, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := cipherdir.WriteConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	var logMu sync.Mutex
	rn, err := newRoot(Options{CipherDir: dir, Config: cfg, Keys: keys, KeyRecheck: time.Hour,
		Logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return log.Write(p)
		}), nil))})
	if err != nil {
		t.Fatal(err)
	}
	r := rn.r
	defer r.close()
	ctx := context.Background()

	// Two backing files made as createFile makes them.
	mk := func(name string) *os.File {
		ci, rec, err := r.newKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if err := unix.Fsetxattr(int(f.Fd()), KeyXattr, rec, 0); err != nil {
			t.Fatal(err)
		}
		hb, err := ci.MarshalHeader()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(hb, 0); err != nil {
			t.Fatal(err)
		}
		return f
	}
	f, other := mk("f"), mk("other")
	c, err := r.acquire(ctx, 1, f)
	if err != nil {
		t.Fatal(err)
	}
	_, before := keys.counts()
	if err := r.revalidate(ctx, c, f); err != nil {
		t.Fatalf("fresh key: %v", err)
	}
	if _, after := keys.counts(); after != before {
		t.Errorf("a key confirmed at open was asked about again within the interval")
	}

	due := func() { c.check.mu.Lock(); c.check.next = time.Time{}; c.check.mu.Unlock() }
	due()
	keys.set(keysvc.ErrUnavailable)
	if err := r.revalidate(ctx, c, f); err != nil {
		t.Errorf("outage: %v, want the file kept in service", err)
	}
	if err := r.revalidate(ctx, c, f); err != nil {
		t.Errorf("outage, second operation: %v", err)
	}

	due()
	keys.set(keysvc.ErrDisabled)
	for range 3 {
		err := r.revalidate(ctx, c, f)
		if errnoOf(err) != syscall.EACCES || r.errno("read", err) != syscall.EACCES {
			t.Errorf("disabled key: %v (errno %v), want EACCES", err, errnoOf(err))
		}
	}
	logMu.Lock()
	if n := strings.Count(log.String(), "data key revoked"); n != 1 {
		t.Errorf("%d 'data key revoked' log lines, want 1:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "key="+keys.keyID) || !strings.Contains(log.String(), "state=") {
		t.Errorf("the revocation log line names no key or state:\n%s", log.String())
	}
	logMu.Unlock()
	// An outage while revoked keeps the refusal.
	due()
	keys.set(keysvc.ErrUnavailable)
	if err := r.revalidate(ctx, c, f); !errors.Is(err, keysvc.ErrDisabled) {
		t.Errorf("outage while revoked: %v, want the refusal kept", err)
	}

	due()
	keys.set(nil)
	if err := r.revalidate(ctx, c, f); err != nil {
		t.Errorf("key enabled again: %v", err)
	}

	// A re-wrapped record (what rewrap writes: the same data key in a new
	// blob) is confirmed and adopted.
	buf := make([]byte, maxRecordSize)
	n, err := unix.Fgetxattr(int(f.Fd()), KeyXattr, buf)
	if err != nil {
		t.Fatal(err)
	}
	wk, err := keysvc.ParseRecord(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	ec := r.encryptionContext(c.cipher.Header().FileID)
	uw, err := keys.Decrypt(ctx, wk.Blob, wk.KeyID, ec)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, keys.aead.NonceSize())
	nonce[0] = 1
	wk.Blob = keys.aead.Seal(nonce, nonce, uw.Plaintext, keys.aad(ec))
	if err := unix.Fsetxattr(int(f.Fd()), KeyXattr, wk.MarshalRecord(), 0); err != nil {
		t.Fatal(err)
	}
	due()
	if err := r.revalidate(ctx, c, f); err != nil {
		t.Errorf("a re-wrapped record: %v", err)
	}
	if !bytes.Equal(c.check.blob, wk.Blob) {
		t.Errorf("the re-wrapped record was not adopted")
	}

	// Another file's key record (valid, but for another file ID) is not
	// this file's key.
	n, err = unix.Fgetxattr(int(other.Fd()), KeyXattr, buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fsetxattr(int(f.Fd()), KeyXattr, buf[:n], 0); err != nil {
		t.Fatal(err)
	}
	due()
	if err := r.revalidate(ctx, c, f); err != nil {
		t.Errorf("a swapped key record is an integrity failure, not a revocation: %v", err)
	}
	logMu.Lock()
	if !strings.Contains(log.String(), "cannot re-validate") {
		t.Errorf("a swapped key record was not logged:\n%s", log.String())
	}
	logMu.Unlock()
	r.release(c)
}

type writerFunc func(p []byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }
