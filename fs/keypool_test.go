package fs

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/internal/secmem"
	"github.com/kmsfs/kmsfs/keysvc"
)

// poolRoot returns the shared state a pool needs, over keys.
func poolRoot(t *testing.T, keys keysvc.Service) *root {
	t.Helper()
	cfg, err := cipherdir.NewConfig(cipherdir.KMSLocal, newFakeKeys().keyID, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return &root{cfg: cfg, keys: keys, kmsTimeout: time.Minute, metrics: &Metrics{},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), mem: secmem.New(secmem.Options{})}
}

// waitIdle waits until no background generator runs.
func (p *keyPool) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		running, held := p.running, len(p.keys)
		p.mu.Unlock()
		if held > p.size || held+running > p.size {
			t.Fatalf("pool of %d holds %d keys with %d in flight", p.size, held, running)
		}
		if running == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d generators still running", running)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestKeyPoolHandsOutOnce takes keys from 4 goroutines at once: no file ID
// and no data key is handed out twice, the pool stays within its size, and
// the key service made at most one key per take plus the pool's size.
func TestKeyPoolHandsOutOnce(t *testing.T) {
	keys := newFakeKeys()
	r := poolRoot(t, keys)
	keys.keyID = r.cfg.KeyID
	p := newKeyPool(r, 8, time.Minute)
	defer p.close()

	const takers, perTaker = 4, 200
	var mu sync.Mutex
	ids := map[string]bool{}
	deks := map[string]bool{}
	hits := 0
	var wg sync.WaitGroup
	for range takers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perTaker {
				k, ok := p.take()
				if !ok {
					time.Sleep(100 * time.Microsecond)
					continue
				}
				mu.Lock()
				hits++
				id, dek := k.h.FileID.String(), string(k.dk.Plaintext)
				if ids[id] || deks[dek] {
					t.Errorf("key for file %s handed out twice", id)
				}
				ids[id], deks[dek] = true, true
				mu.Unlock()
				if len(k.dk.Plaintext) != keysvc.DataKeySize {
					t.Errorf("data key of %d bytes", len(k.dk.Plaintext))
				}
			}
		}()
	}
	wg.Wait()
	p.waitIdle(t)
	if hits == 0 {
		t.Fatal("the pool never served a key during a burst of takes")
	}
	gen, _ := keys.counts()
	if gen > hits+p.size {
		t.Errorf("%d keys generated for %d keys handed out by a pool of %d", gen, hits, p.size)
	}
	t.Logf("%d of %d takes served from the pool, %d keys generated", hits, takers*perTaker, gen)
}

// TestKeyPoolIdle: a single create does not start the filling; a burst
// does; the keys expire and are zeroed; close zeroes what is held and
// later takes find nothing.
func TestKeyPoolIdle(t *testing.T) {
	keys := newFakeKeys()
	r := poolRoot(t, keys)
	keys.keyID = r.cfg.KeyID
	p := newKeyPool(r, 8, 200*time.Millisecond)
	if _, ok := p.take(); ok {
		t.Fatal("a new pool served a key")
	}
	p.waitIdle(t)
	if gen, _ := keys.counts(); gen != 0 {
		t.Fatalf("one create made the pool generate %d keys", gen)
	}
	for range keyPoolBurst {
		p.take()
	}
	p.waitIdle(t)
	p.mu.Lock()
	held := make([][]byte, 0, len(p.keys))
	for _, k := range p.keys {
		held = append(held, k.dk.Plaintext)
	}
	p.mu.Unlock()
	if len(held) != p.size {
		t.Fatalf("after a burst the pool holds %d keys, want %d", len(held), p.size)
	}
	for i, b := range held {
		// Root may always lock memory (CAP_IPC_LOCK).
		if os.Geteuid() == 0 && !r.mem.Locked(b) {
			t.Errorf("pooled key %d is not in locked memory", i)
		}
	}
	time.Sleep(250 * time.Millisecond)
	if _, ok := p.take(); ok {
		t.Error("an expired key was handed out")
	}
	zero := make([]byte, keysvc.DataKeySize)
	for i, b := range held {
		if !bytes.Equal(b, zero) {
			t.Errorf("expired key %d was not zeroed", i)
		}
	}
	for range keyPoolBurst {
		p.take()
	}
	p.waitIdle(t)
	p.mu.Lock()
	held = held[:0]
	for _, k := range p.keys {
		held = append(held, k.dk.Plaintext)
	}
	p.mu.Unlock()
	p.close()
	for i, b := range held {
		if !bytes.Equal(b, zero) {
			t.Errorf("key %d held at close was not zeroed", i)
		}
	}
	if _, ok := p.take(); ok {
		t.Error("a closed pool served a key")
	}
}

// TestKMSEconomy counts the key service calls behind a DEK cache, as the
// daemon stacks them: one GenerateDataKey per create (plus at most the
// pool's size), no Decrypt for the first open of a new file nor for a
// reopen, and exactly one Decrypt per file for first opens in a new mount.
func TestKMSEconomy(t *testing.T) {
	var keys *fakeKeys
	var metrics Metrics
	tf := mountFS(t, func(o *Options) {
		keys = o.Keys.(*fakeKeys)
		cache := keysvc.NewCache(keys, keysvc.CacheOptions{})
		t.Cleanup(cache.Close)
		o.Keys, o.KeyCheck, o.Metrics = cache, keys, &metrics
	})
	const files = 100
	data := bytes.Repeat([]byte("kms"), 2000)
	for i := range files {
		if err := os.WriteFile(tf.path(fmt.Sprint("f", i)), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tf.waitReleased(t)
	// The pool refills in the background after the burst: count once it
	// is done, or a late refill would show up as a call of the reopens.
	tf.root.pool.waitIdle(t)
	gen, dec := keys.counts()
	if gen < files || gen > files+DefaultKeyPool {
		t.Errorf("%d creates made %d GenerateDataKey calls, want %d to %d", files, gen, files, files+DefaultKeyPool)
	}
	if dec != 0 {
		t.Errorf("creating and writing %d files made %d Decrypt calls, want 0", files, dec)
	}
	if metrics.poolHits.Load() == 0 {
		t.Errorf("no create of a burst of %d was served from the key pool (misses %d)", files, metrics.poolMisses.Load())
	}
	for range 2 {
		for i := range files {
			if got := readFile(t, tf.path(fmt.Sprint("f", i))); !bytes.Equal(got, data) {
				t.Fatalf("f%d reads back wrong", i)
			}
		}
		tf.waitReleased(t)
	}
	if gen2, dec2 := keys.counts(); gen2 != gen || dec2 != 0 {
		t.Errorf("reopening %d files twice: %d GenerateDataKey, %d Decrypt calls, want 0 and 0", files, gen2-gen, dec2)
	}

	// A second mount of the tree, with an empty cache: one Decrypt per
	// file on first open, none on reopen.
	keys2 := newFakeKeys()
	keys2.aead, keys2.keyID = keys.aead, keys.keyID
	cache2 := keysvc.NewCache(keys2, keysvc.CacheOptions{})
	defer cache2.Close()
	mnt2 := t.TempDir()
	srv, r2, err := mount(mnt2, Options{CipherDir: tf.cipher, Config: tf.cfg, Keys: cache2, KeyCheck: keys2})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Unmount(); srv.Wait() }()
	tf2 := &testFS{cipher: tf.cipher, mnt: mnt2, root: r2}
	for range 2 {
		for i := range files {
			if got := readFile(t, tf2.path(fmt.Sprint("f", i))); !bytes.Equal(got, data) {
				t.Fatalf("f%d reads back wrong in the second mount", i)
			}
		}
		tf2.waitReleased(t)
	}
	if gen, dec := keys2.counts(); gen != 0 || dec != files {
		t.Errorf("opening %d files twice in a new mount: %d GenerateDataKey, %d Decrypt calls, want 0 and %d", files, gen, dec, files)
	}
}
