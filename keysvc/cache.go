package keysvc

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/kmsfs/kmsfs/internal/secmem"
)

// Cache defaults, used when CacheOptions leaves a field zero.
const (
	DefaultCacheEntries = 4096
	DefaultCacheMaxAge  = 5 * time.Minute
)

// CacheOptions bounds a Cache.
type CacheOptions struct {
	// MaxEntries is the most unwrapped keys held at once; the least
	// recently used is evicted (and zeroed) beyond it. 0 means
	// DefaultCacheEntries.
	MaxEntries int
	// MaxAge is how long an unwrapped key is served without asking the KMS
	// again, counted from when the KMS answered. It bounds how long a
	// disabled or revoked key keeps working for files already seen.
	// 0 means DefaultCacheMaxAge.
	MaxAge time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Memory holds the cached plaintexts: locked, non-dumpable pages
	// (package secmem). nil means an arena of the cache's own, freed by
	// Close, whose refusals are not logged; pass one made with a logger.
	Memory *secmem.Arena
}

// CacheStats counts what a Cache did since it was made.
type CacheStats struct {
	Hits      uint64 // Decrypt calls served from the cache
	Misses    uint64 // Decrypt calls that needed the KMS (or joined a call in flight)
	KMSCalls  uint64 // calls made to the underlying Service, of every kind
	Evictions uint64 // entries dropped for size or age
	Entries   int    // entries held now
}

// cacheKey names a cache entry: SHA-256 over the blob's SHA-256, the
// length-prefixed canonical encryption context and the key ID asked for.
// Neither the plaintext nor anything derived from it goes into the key.
type cacheKey [sha256.Size]byte

func makeCacheKey(blob []byte, ec EncryptionContext, keyID string) cacheKey {
	blobSum := sha256.Sum256(blob)
	enc := EncodeContext(ec)
	h := sha256.New()
	h.Write(blobSum[:])
	h.Write(binary.AppendUvarint(nil, uint64(len(enc))))
	h.Write(enc)
	h.Write([]byte(keyID))
	var k cacheKey
	h.Sum(k[:0])
	return k
}

type cacheEntry struct {
	key     cacheKey
	value   Unwrapped // Plaintext in c.mem, owned by the cache; freed (zeroed) on eviction
	fetched time.Time
	elem    *list.Element
}

// flight is one Decrypt in progress that identical misses wait for.
type flight struct {
	done  chan struct{}
	value Unwrapped // a private copy, zeroed by the leader once all waiters copied it
	err   error
	refs  int // waiters still to copy value
}

// Cache is a Service that keeps unwrapped data keys in memory, bounded by
// entry count (LRU) and age, so reopening a file needs no KMS call. It is
// safe for concurrent use. The plaintexts it holds live in locked memory
// left out of core dumps (CacheOptions.Memory); those it returns are heap
// copies the caller owns and must zero; those it drops are zeroed. Errors
// are never cached.
type Cache struct {
	svc        Service
	maxEntries int
	maxAge     time.Duration
	now        func() time.Time
	mem        *secmem.Arena
	ownMem     bool // mem is the cache's own: Close frees it

	mu        sync.Mutex
	entries   map[cacheKey]*cacheEntry
	lru       *list.List // front = most recently used; values are *cacheEntry
	flights   map[cacheKey]*flight
	lastSweep time.Time
	closed    bool
	stats     CacheStats
}

var _ Service = (*Cache)(nil)

// NewCache returns a Cache in front of svc.
func NewCache(svc Service, opts CacheOptions) *Cache {
	c := &Cache{
		svc:        svc,
		maxEntries: opts.MaxEntries,
		maxAge:     opts.MaxAge,
		now:        opts.Now,
		mem:        opts.Memory,
		entries:    make(map[cacheKey]*cacheEntry),
		lru:        list.New(),
		flights:    make(map[cacheKey]*flight),
	}
	if c.maxEntries <= 0 {
		c.maxEntries = DefaultCacheEntries
	}
	if c.maxAge <= 0 {
		c.maxAge = DefaultCacheMaxAge
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.mem == nil {
		c.mem, c.ownMem = secmem.New(secmem.Options{}), true
	}
	return c
}

func cloneUnwrapped(u Unwrapped) Unwrapped {
	u.Plaintext = append([]byte(nil), u.Plaintext...)
	return u
}

// keep returns u with a copy of its plaintext in the cache's memory, for
// an entry. c.mu must be held.
func (c *Cache) keep(u Unwrapped) Unwrapped {
	u.Plaintext = c.mem.Copy(u.Plaintext)
	return u
}

// Decrypt returns the unwrapped key from the cache when an entry for the
// same blob, encryption context and keyID is younger than MaxAge, and
// otherwise asks the underlying Service. Concurrent identical misses make
// one call and share its answer.
func (c *Cache) Decrypt(ctx context.Context, blob []byte, keyID string, ec EncryptionContext) (Unwrapped, error) {
	key := makeCacheKey(blob, ec, keyID)
	for {
		c.mu.Lock()
		if c.closed {
			c.stats.KMSCalls++
			c.mu.Unlock()
			return c.svc.Decrypt(ctx, blob, keyID, ec)
		}
		now := c.now()
		c.sweepLocked(now)
		if e, ok := c.entries[key]; ok {
			if now.Sub(e.fetched) < c.maxAge {
				c.lru.MoveToFront(e.elem)
				c.stats.Hits++
				u := cloneUnwrapped(e.value)
				u.Fetched = e.fetched
				c.mu.Unlock()
				return u, nil
			}
			c.removeLocked(e)
		}
		c.stats.Misses++
		if f, ok := c.flights[key]; ok {
			f.refs++
			c.mu.Unlock()
			u, err, retry := c.wait(ctx, f)
			if retry {
				continue
			}
			return u, err
		}
		f := &flight{done: make(chan struct{})}
		c.flights[key] = f
		c.stats.KMSCalls++
		c.mu.Unlock()
		return c.lead(ctx, key, f, blob, keyID, ec)
	}
}

// lead makes the KMS call for flight f, publishes the answer to waiters
// and caches it.
func (c *Cache) lead(ctx context.Context, key cacheKey, f *flight, blob []byte, keyID string, ec EncryptionContext) (Unwrapped, error) {
	u, err := c.svc.Decrypt(ctx, blob, keyID, ec)
	c.mu.Lock()
	delete(c.flights, key)
	if err != nil {
		f.err = err
	} else {
		now := c.now()
		if u.Fetched.IsZero() {
			u.Fetched = now
		}
		f.value = cloneUnwrapped(u)
		if !c.closed {
			c.insertLocked(key, c.keep(u), now)
		}
	}
	if f.refs == 0 {
		Zero(f.value.Plaintext)
	}
	c.mu.Unlock()
	close(f.done)
	return u, err
}

// wait waits for flight f. When the leader failed only because its own
// context ended while the waiter's is still live, retry is true and the
// waiter should try again (and may lead).
func (c *Cache) wait(ctx context.Context, f *flight) (u Unwrapped, err error, retry bool) {
	select {
	case <-f.done:
	case <-ctx.Done():
		c.mu.Lock()
		f.refs--
		c.release(f)
		c.mu.Unlock()
		return Unwrapped{}, ctx.Err(), false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f.refs--
	if f.err != nil {
		c.release(f)
		if ctx.Err() == nil && (errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)) {
			return Unwrapped{}, nil, true
		}
		return Unwrapped{}, f.err, false
	}
	u = cloneUnwrapped(f.value)
	c.release(f)
	return u, nil, false
}

// release zeroes the flight's shared copy once it is finished and no
// waiter needs it any more. c.mu must be held.
func (c *Cache) release(f *flight) {
	select {
	case <-f.done:
		if f.refs == 0 {
			Zero(f.value.Plaintext)
		}
	default: // the leader zeroes it when it finishes
	}
}

// GenerateDataKey asks the underlying Service for a data key and caches a
// copy of its plaintext under the key ID asked for and the one the KMS
// reported, so the first open of the new file needs no KMS call.
func (c *Cache) GenerateDataKey(ctx context.Context, keyID string, ec EncryptionContext) (DataKey, error) {
	c.mu.Lock()
	c.stats.KMSCalls++
	c.mu.Unlock()
	dk, err := c.svc.GenerateDataKey(ctx, keyID, ec)
	if err != nil {
		return dk, err
	}
	u := Unwrapped{Plaintext: dk.Plaintext, KeyID: dk.Wrapped.KeyID, KeyMaterialID: dk.Wrapped.KeyMaterialID}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return dk, nil
	}
	now := c.now()
	c.insertLocked(makeCacheKey(dk.Wrapped.Blob, ec, keyID), c.keep(u), now)
	if dk.Wrapped.KeyID != keyID && dk.Wrapped.KeyID != "" {
		c.insertLocked(makeCacheKey(dk.Wrapped.Blob, ec, dk.Wrapped.KeyID), c.keep(u), now)
	}
	return dk, nil
}

// ReEncrypt passes through to the underlying Service.
func (c *Cache) ReEncrypt(ctx context.Context, blob []byte, srcKeyID string, ec EncryptionContext, destKeyID string) (WrappedKey, error) {
	c.mu.Lock()
	c.stats.KMSCalls++
	c.mu.Unlock()
	return c.svc.ReEncrypt(ctx, blob, srcKeyID, ec, destKeyID)
}

// DescribeKey passes through to the underlying Service.
func (c *Cache) DescribeKey(ctx context.Context, keyID string) (KeyInfo, error) {
	c.mu.Lock()
	c.stats.KMSCalls++
	c.mu.Unlock()
	return c.svc.DescribeKey(ctx, keyID)
}

// Stats returns the counters so far.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Entries = len(c.entries)
	return s
}

// Close zeroes and drops every entry. Later calls pass straight through to
// the underlying Service without caching.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		c.mem.Free(e.value.Plaintext)
	}
	clear(c.entries)
	c.lru.Init()
	c.closed = true
	if c.ownMem {
		c.mem.Close()
	}
}

// insertLocked adds or replaces the entry for key, taking ownership of
// u.Plaintext (from c.keep), and evicts least recently used entries beyond
// MaxEntries.
func (c *Cache) insertLocked(key cacheKey, u Unwrapped, now time.Time) {
	if old, ok := c.entries[key]; ok {
		c.lru.Remove(old.elem)
		delete(c.entries, key)
		c.mem.Free(old.value.Plaintext)
	}
	e := &cacheEntry{key: key, value: u, fetched: now}
	e.elem = c.lru.PushFront(e)
	c.entries[key] = e
	for len(c.entries) > c.maxEntries {
		c.removeLocked(c.lru.Back().Value.(*cacheEntry))
	}
}

// removeLocked evicts e and zeroes its plaintext.
func (c *Cache) removeLocked(e *cacheEntry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.key)
	c.mem.Free(e.value.Plaintext)
	c.stats.Evictions++
}

// sweepLocked evicts every expired entry, at most once per quarter MaxAge,
// so plaintexts of files no longer used do not outlive MaxAge by much.
func (c *Cache) sweepLocked(now time.Time) {
	if now.Sub(c.lastSweep) < c.maxAge/4 {
		return
	}
	c.lastSweep = now
	for _, e := range c.entries {
		if now.Sub(e.fetched) >= c.maxAge {
			c.removeLocked(e)
		}
	}
}
