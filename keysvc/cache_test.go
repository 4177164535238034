package keysvc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/internal/secmem"
)

// fakeService unwraps by deriving the "plaintext" from the blob, counts
// calls, and can be made to block or fail.
type fakeService struct {
	decrypts atomic.Int64
	gens     atomic.Int64
	gate     chan struct{} // when non-nil, Decrypt waits for it
	fail     atomic.Pointer[error]
}

func fakePlain(blob []byte) []byte {
	s := sha256.Sum256(blob)
	return s[:]
}

func (f *fakeService) Decrypt(ctx context.Context, blob []byte, keyID string, ec EncryptionContext) (Unwrapped, error) {
	f.decrypts.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return Unwrapped{}, ctx.Err()
		}
	}
	if e := f.fail.Load(); e != nil {
		return Unwrapped{}, *e
	}
	return Unwrapped{Plaintext: fakePlain(blob), KeyID: "arn:k", KeyMaterialID: "m1"}, nil
}

func (f *fakeService) GenerateDataKey(ctx context.Context, keyID string, ec EncryptionContext) (DataKey, error) {
	n := f.gens.Add(1)
	blob := []byte(fmt.Sprintf("blob-%d", n))
	return DataKey{Plaintext: fakePlain(blob), Wrapped: WrappedKey{KeyID: "arn:k", KeyMaterialID: "m1", Blob: blob}}, nil
}

func (f *fakeService) ReEncrypt(ctx context.Context, blob []byte, src string, ec EncryptionContext, dest string) (WrappedKey, error) {
	return WrappedKey{KeyID: dest, Blob: blob}, nil
}

func (f *fakeService) DescribeKey(ctx context.Context, keyID string) (KeyInfo, error) {
	return KeyInfo{KeyID: keyID}, nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// entryPlaintext is the test hook into the cache internals: it returns the
// cache's own plaintext slice for (blob, ec, keyID), or nil.
func entryPlaintext(c *Cache, blob []byte, ec EncryptionContext, keyID string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[makeCacheKey(blob, ec, keyID)]; ok {
		return e.value.Plaintext
	}
	return nil
}

var testEC = EncryptionContext{ContextFilesystemID: "fs", ContextFileID: "f"}

func TestCacheHitMakesNoCall(t *testing.T) {
	svc := &fakeService{}
	c := NewCache(svc, CacheOptions{})
	defer c.Close()
	ctx := context.Background()
	blob := []byte("blob-a")
	for i := range 3 {
		u, err := c.Decrypt(ctx, blob, "arn:k", testEC)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(u.Plaintext, fakePlain(blob)) || u.KeyID != "arn:k" || u.KeyMaterialID != "m1" {
			t.Fatalf("call %d: wrong answer %+v", i, u)
		}
		Zero(u.Plaintext) // the caller's copy; must not affect the cache
	}
	if n := svc.decrypts.Load(); n != 1 {
		t.Fatalf("KMS Decrypt calls = %d, want 1", n)
	}
	st := c.Stats()
	if st.Hits != 2 || st.Misses != 1 || st.KMSCalls != 1 || st.Entries != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestCacheKeyIncludesContextAndKeyID(t *testing.T) {
	svc := &fakeService{}
	c := NewCache(svc, CacheOptions{})
	defer c.Close()
	ctx := context.Background()
	blob := []byte("blob-a")
	calls := []struct {
		ec    EncryptionContext
		keyID string
	}{
		{EncryptionContext{"ab": "c"}, ""},
		{EncryptionContext{"a": "bc"}, ""},
		{EncryptionContext{"a": "bc"}, "arn:k"},
		{nil, ""},
	}
	for _, call := range calls {
		if _, err := c.Decrypt(ctx, blob, call.keyID, call.ec); err != nil {
			t.Fatal(err)
		}
	}
	if n := svc.decrypts.Load(); n != int64(len(calls)) {
		t.Fatalf("KMS calls = %d, want %d (each context/key ID its own entry)", n, len(calls))
	}
	if _, err := c.Decrypt(ctx, blob, "", EncryptionContext{}); err != nil { // empty == nil
		t.Fatal(err)
	}
	if n := svc.decrypts.Load(); n != int64(len(calls)) {
		t.Fatalf("empty context missed the nil-context entry")
	}
}

func TestCacheGenerateDataKeyPrimes(t *testing.T) {
	svc := &fakeService{}
	c := NewCache(svc, CacheOptions{})
	defer c.Close()
	ctx := context.Background()
	dk, err := c.GenerateDataKey(ctx, "alias/x", testEC)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), dk.Plaintext...)
	Zero(dk.Plaintext)
	for _, id := range []string{"alias/x", "arn:k"} {
		u, err := c.Decrypt(ctx, dk.Wrapped.Blob, id, testEC)
		if err != nil || !bytes.Equal(u.Plaintext, want) {
			t.Fatalf("Decrypt(%s) = %v, %v", id, u.Plaintext, err)
		}
	}
	if n := svc.decrypts.Load(); n != 0 {
		t.Fatalf("KMS Decrypt calls = %d, want 0", n)
	}
}

func TestCacheExpiry(t *testing.T) {
	svc := &fakeService{}
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	c := NewCache(svc, CacheOptions{MaxAge: time.Minute, Now: clk.Now})
	defer c.Close()
	ctx := context.Background()
	blob := []byte("blob-a")
	if _, err := c.Decrypt(ctx, blob, "", testEC); err != nil {
		t.Fatal(err)
	}
	old := entryPlaintext(c, blob, testEC, "")
	clk.Advance(59 * time.Second)
	if _, err := c.Decrypt(ctx, blob, "", testEC); err != nil {
		t.Fatal(err)
	}
	if n := svc.decrypts.Load(); n != 1 {
		t.Fatalf("young entry re-asked: %d calls", n)
	}
	clk.Advance(time.Second)
	if _, err := c.Decrypt(ctx, blob, "", testEC); err != nil {
		t.Fatal(err)
	}
	if n := svc.decrypts.Load(); n != 2 {
		t.Fatalf("expired entry not re-asked: %d calls", n)
	}
	if !bytes.Equal(old, make([]byte, len(old))) {
		t.Fatal("expired plaintext was not zeroed")
	}
}

func TestCacheSweepZeroesIdleEntries(t *testing.T) {
	svc := &fakeService{}
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	c := NewCache(svc, CacheOptions{MaxAge: time.Minute, Now: clk.Now})
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Decrypt(ctx, []byte("idle"), "", nil); err != nil {
		t.Fatal(err)
	}
	idle := entryPlaintext(c, []byte("idle"), nil, "")
	clk.Advance(2 * time.Minute)
	if _, err := c.Decrypt(ctx, []byte("other"), "", nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(idle, make([]byte, len(idle))) || c.Stats().Entries != 1 {
		t.Fatal("idle expired entry survived a sweep")
	}
}

func TestCacheEvictionZeroes(t *testing.T) {
	svc := &fakeService{}
	c := NewCache(svc, CacheOptions{MaxEntries: 2})
	defer c.Close()
	ctx := context.Background()
	a, b, d := []byte("a"), []byte("b"), []byte("d")
	for _, blob := range [][]byte{a, b} {
		if _, err := c.Decrypt(ctx, blob, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	pa, pb := entryPlaintext(c, a, nil, ""), entryPlaintext(c, b, nil, "")
	if _, err := c.Decrypt(ctx, a, "", nil); err != nil { // a is now most recent
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, d, "", nil); err != nil { // evicts b
		t.Fatal(err)
	}
	if !bytes.Equal(pb, make([]byte, len(pb))) {
		t.Fatal("evicted plaintext not zeroed")
	}
	if bytes.Equal(pa, make([]byte, len(pa))) || entryPlaintext(c, b, nil, "") != nil {
		t.Fatal("LRU evicted the wrong entry")
	}
	st := c.Stats()
	if st.Entries != 2 || st.Evictions != 1 {
		t.Fatalf("stats = %+v", st)
	}
	c.Close()
	if !bytes.Equal(pa, make([]byte, len(pa))) {
		t.Fatal("Close did not zero entries")
	}
	if _, err := c.Decrypt(ctx, a, "", nil); err != nil { // passes through after Close
		t.Fatal(err)
	}
	if c.Stats().Entries != 0 {
		t.Fatal("closed cache stored an entry")
	}
}

func TestCacheCoalescesConcurrentMisses(t *testing.T) {
	svc := &fakeService{gate: make(chan struct{})}
	c := NewCache(svc, CacheOptions{})
	defer c.Close()
	ctx := context.Background()
	const n = 16
	var wg sync.WaitGroup
	results := make([][]byte, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			u, err := c.Decrypt(ctx, []byte("same"), "", testEC)
			results[i], errs[i] = u.Plaintext, err
		})
	}
	// Wait until every goroutine has missed, then let the one call finish.
	for c.Stats().Misses < n {
		time.Sleep(time.Millisecond)
	}
	close(svc.gate)
	wg.Wait()
	if got := svc.decrypts.Load(); got != 1 {
		t.Fatalf("KMS calls = %d, want 1", got)
	}
	for i := range n {
		if errs[i] != nil || !bytes.Equal(results[i], fakePlain([]byte("same"))) {
			t.Fatalf("goroutine %d: %x, %v", i, results[i], errs[i])
		}
		for j := range i {
			if &results[i][0] == &results[j][0] {
				t.Fatal("two callers share one plaintext slice")
			}
		}
	}
}

func TestCacheErrorsNotCached(t *testing.T) {
	svc := &fakeService{}
	boom := fmt.Errorf("no way: %w", ErrAccessDenied)
	svc.fail.Store(&boom)
	c := NewCache(svc, CacheOptions{})
	defer c.Close()
	ctx := context.Background()
	for range 2 {
		if _, err := c.Decrypt(ctx, []byte("x"), "", nil); !errors.Is(err, ErrAccessDenied) {
			t.Fatalf("err = %v", err)
		}
	}
	svc.fail.Store(nil)
	if _, err := c.Decrypt(ctx, []byte("x"), "", nil); err != nil {
		t.Fatal(err)
	}
	if n := svc.decrypts.Load(); n != 3 {
		t.Fatalf("KMS calls = %d, want 3", n)
	}
}

func TestCacheWaiterSurvivesLeaderCancel(t *testing.T) {
	svc := &fakeService{gate: make(chan struct{})}
	c := NewCache(svc, CacheOptions{})
	defer c.Close()
	leaderCtx, cancel := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := c.Decrypt(leaderCtx, []byte("x"), "", nil)
		leaderErr <- err
	}()
	for c.Stats().Misses < 1 {
		time.Sleep(time.Millisecond)
	}
	waiter := make(chan error, 1)
	go func() {
		_, err := c.Decrypt(context.Background(), []byte("x"), "", nil)
		waiter <- err
	}()
	for c.Stats().Misses < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader err = %v", err)
	}
	close(svc.gate) // the retry (now leading) goes through
	if err := <-waiter; err != nil {
		t.Fatalf("waiter err = %v", err)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	c := NewCache(&fakeService{}, CacheOptions{})
	defer c.Close()
	ctx := context.Background()
	blob := bytes.Repeat([]byte{1}, 112)
	ec := EncryptionContext{ContextFilesystemID: "0123456789abcdef0123456789abcdef", ContextFileID: "0123456789abcdef0123456789abcdef"}
	if _, err := c.Decrypt(ctx, blob, "arn:k", ec); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		u, err := c.Decrypt(ctx, blob, "arn:k", ec)
		if err != nil {
			b.Fatal(err)
		}
		Zero(u.Plaintext)
	}
}

// TestCacheKeysInLockedMemory: the plaintexts the cache holds, from
// Decrypt and from GenerateDataKey, live in the arena given as
// CacheOptions.Memory (locked, left out of core dumps); the copies it
// returns do not.
func TestCacheKeysInLockedMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to be sure mlock is allowed (RLIMIT_MEMLOCK)")
	}
	mem := secmem.New(secmem.Options{})
	defer mem.Close()
	c := NewCache(&fakeService{}, CacheOptions{Memory: mem})
	defer c.Close()
	ctx := context.Background()
	u, err := c.Decrypt(ctx, []byte("blob"), "", testEC)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := c.GenerateDataKey(ctx, "k", testEC)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string][]byte{
		"decrypted": entryPlaintext(c, []byte("blob"), testEC, ""),
		"generated": entryPlaintext(c, dk.Wrapped.Blob, testEC, "k"),
	} {
		if !mem.Locked(p) {
			t.Errorf("%s key is not in the cache's locked memory", name)
		}
	}
	if mem.Locked(u.Plaintext) {
		t.Error("the caller's copy is in the cache's memory")
	}
}
