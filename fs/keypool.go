package fs

import (
	"context"
	"sync"
	"time"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
)

// The data key pool.
//
// Every new file needs a new data key from the KMS, and GenerateDataKey
// binds the key to the file ID through the encryption context, so a key
// cannot be made before its file ID exists. File IDs are random, though:
// the pool draws a file ID (a whole new header) and generates its key
// ahead of time, in the background, and a create takes the pair. Against
// a KMS with a network round trip of milliseconds, a burst of creates then
// waits for none of them: up to keyPoolWorkers calls run at once while the
// creates proceed.
//
// Bounds and rules:
//   - It holds at most its size (DefaultKeyPool) keys, generated and in
//     flight together, and each key is handed out once: take removes it
//     under the lock.
//   - It fills only during a burst of creates (keyPoolBurst creates within
//     keyPoolBurstWindow): a mount that creates a file now and then calls
//     the KMS once per create, inline, as before, and a mount that never
//     creates never calls GenerateDataKey. Each create still costs exactly
//     one GenerateDataKey; a burst that ends leaves at most size keys
//     unused, which expire.
//   - A pooled key is used at most maxPooledKeyAge after the KMS made it
//     (and never longer than the key re-check interval): a key rotation or
//     a disabled key reaches new files within that time, and the new file
//     re-validates its key counting from when it was generated.
//   - Keys it holds live in the mount's locked, non-dumpable memory
//     (root.mem, package secmem); keys it drops (expired, or at unmount)
//     are zeroed.
//   - A failed background call pauses filling for keyPoolRetry; creates
//     then call the KMS inline and report its error themselves.

// DefaultKeyPool is the pool size when Options.KeyPool is 0.
const DefaultKeyPool = 32

const (
	// maxPooledKeyAge bounds how long a generated key waits for its file.
	maxPooledKeyAge = 2 * time.Second
	// keyPoolWorkers bounds the background GenerateDataKey calls in
	// flight: with a 10 ms KMS round trip, 16 calls at once make 1,600
	// keys/s, more than a FUSE mount creates files on 2 CPUs.
	keyPoolWorkers = 16
	// keyPoolBurst creates within keyPoolBurstWindow start the filling.
	keyPoolBurst       = 4
	keyPoolBurstWindow = time.Second
	// keyPoolRetry is the pause after a failed background call.
	keyPoolRetry = time.Second
)

// pooledKey is a data key generated for a header (and so a file ID) not
// yet given to any file.
type pooledKey struct {
	h  chunk.Header
	dk keysvc.DataKey
	at time.Time // when the KMS was asked: the key's confirmation time
}

// keyPool holds pre-generated data keys for creates. A nil *keyPool is a
// disabled pool: take finds nothing.
type keyPool struct {
	r       *root
	size    int
	workers int
	maxAge  time.Duration

	ctx    context.Context // ends at close: background calls stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	keys       []pooledKey // oldest first
	running    int         // background generators; len(keys)+running <= size
	creates    [keyPoolBurst]time.Time
	next       int // index into creates of the oldest
	pauseUntil time.Time
	closed     bool
}

// newKeyPool returns an empty pool of size keys for r, whose keys live at
// most maxAge.
func newKeyPool(r *root, size int, maxAge time.Duration) *keyPool {
	ctx, cancel := context.WithCancel(context.Background())
	return &keyPool{r: r, size: size, workers: min(size, keyPoolWorkers), maxAge: maxAge, ctx: ctx, cancel: cancel}
}

// take returns a pooled key for a create, if there is one young enough,
// and counts the create towards starting the filling. The caller owns the
// key's plaintext (in root.mem) and frees it with root.mem.Free.
func (p *keyPool) take() (pooledKey, bool) {
	if p == nil {
		return pooledKey{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.creates[p.next] = now
	p.next = (p.next + 1) % len(p.creates)
	p.expireLocked(now)
	var k pooledKey
	ok := len(p.keys) > 0
	if ok {
		k = p.keys[0]
		copy(p.keys, p.keys[1:])
		p.keys[len(p.keys)-1] = pooledKey{}
		p.keys = p.keys[:len(p.keys)-1]
	}
	if ok || now.Sub(p.creates[p.next]) < keyPoolBurstWindow {
		p.fillLocked(now)
	}
	return k, ok
}

// expireLocked zeroes and drops the keys older than maxAge.
func (p *keyPool) expireLocked(now time.Time) {
	n := 0
	for n < len(p.keys) && now.Sub(p.keys[n].at) >= p.maxAge {
		p.r.mem.Free(p.keys[n].dk.Plaintext)
		n++
	}
	if n > 0 {
		rest := copy(p.keys, p.keys[n:])
		clear(p.keys[rest:])
		p.keys = p.keys[:rest]
	}
}

// fillLocked starts background generators until the pool, counting the
// keys in flight, is full.
func (p *keyPool) fillLocked(now time.Time) {
	if p.closed || now.Before(p.pauseUntil) {
		return
	}
	for p.running < p.workers && len(p.keys)+p.running < p.size {
		p.running++
		p.wg.Add(1)
		go p.generate()
	}
}

// generate makes keys until the pool is full, the pool closes or the key
// service fails.
func (p *keyPool) generate() {
	defer p.wg.Done()
	for {
		k, err := p.newKey()
		p.mu.Lock()
		switch {
		case p.closed:
			p.r.mem.Free(k.dk.Plaintext)
			p.running--
			p.mu.Unlock()
			return
		case err != nil:
			p.pauseUntil = time.Now().Add(keyPoolRetry)
			p.running--
			p.mu.Unlock()
			p.r.log.Debug("data key pool: generating a key failed; creates ask the key service themselves", "err", err.Error())
			return
		}
		p.keys = append(p.keys, k)
		// Another key fits when this generator's next one, counted in
		// running, keeps len(keys)+running within size.
		if len(p.keys)+p.running > p.size {
			p.running--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// newKey draws a header with a fresh file ID and generates its data key
// (through the mount's key service: a DEK cache remembers it, so the
// file's first open needs no KMS call).
func (p *keyPool) newKey() (pooledKey, error) {
	h, err := p.r.newHeader()
	if err != nil {
		return pooledKey{}, err
	}
	at := time.Now()
	ctx, cancel := context.WithTimeout(p.ctx, p.r.kmsTimeout)
	defer cancel()
	dk, err := cipherdir.GenerateFileKey(ctx, p.r.keys, p.r.cfg, h)
	if err != nil {
		return pooledKey{}, err
	}
	plain := dk.Plaintext
	dk.Plaintext = p.r.mem.Copy(plain)
	keysvc.Zero(plain)
	return pooledKey{h: h, dk: dk, at: at}, nil
}

// close stops the filling, waits for the calls in flight and zeroes every
// key held.
func (p *keyPool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	for i := range p.keys {
		p.r.mem.Free(p.keys[i].dk.Plaintext)
	}
	p.keys = nil
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}
