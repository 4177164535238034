package fs

import (
	"sync"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// dirCache keeps the O_PATH descriptors of the few backing directories
// used last, so that the operations of a busy directory (create, lookup,
// unlink of many files in it) do not each resolve its path again with
// openat2: the metadata job made four such resolutions, and as many
// closes, per file.
//
// Entries are keyed by the directory's go-fuse Inode. A descriptor follows
// its directory through renames, as the Inode does, so a rename in this
// mount keeps an entry right; an entry lives at most ttl (the kernel's
// entry timeout: dirCacheTTL, or SharedCacheTimeout in shared mode),
// which bounds how long a change made to the
// backing tree by someone else (another host on shared storage) can go
// unseen, as for the kernel's own caches; and every rmdir or rename of
// this mount empties the cache, so a removed directory's descriptor is
// never used for a new one that go-fuse might give the same Inode.
//
// Descriptors are lent, not duplicated: a dirFD from the cache holds a
// reference, and an entry dropped while lent is closed when the last
// borrower is done.
type dirCache struct {
	mu      sync.Mutex
	entries [dirCacheSize]*dirEntry
	next    int // slot the next insert replaces
	now     func() time.Time
	ttl     time.Duration // an entry's lifetime: dirCacheTTL, or SharedCacheTimeout in shared mode
}

const (
	dirCacheSize = 8
	dirCacheTTL  = cacheTimeout
)

// dirEntry is one cached directory descriptor.
type dirEntry struct {
	in      *gofs.Inode
	fd      int
	added   time.Time
	refs    int  // dirFDs lent out and not yet closed
	dropped bool // no longer in the cache: close at the last release
}

// get lends the cached descriptor of dir, if there is a fresh one.
func (c *dirCache) get(dir *gofs.Inode) (dirFD, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for i, e := range c.entries {
		if e == nil || e.in != dir {
			continue
		}
		if now.Sub(e.added) >= c.ttl || now.Before(e.added) {
			c.dropLocked(i)
			return dirFD{}, false
		}
		e.refs++
		return dirFD{fd: e.fd, cached: e, cache: c}, true
	}
	return dirFD{}, false
}

// put hands fd, a descriptor of dir that the caller owns, to the cache
// and lends it back: the caller closes the returned dirFD as usual.
func (c *dirCache) put(dir *gofs.Inode, fd int) dirFD {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.entries {
		if e != nil && e.in == dir {
			c.dropLocked(i) // a concurrent put got there first
		}
	}
	if c.entries[c.next] != nil {
		c.dropLocked(c.next)
	}
	e := &dirEntry{in: dir, fd: fd, added: c.now(), refs: 1}
	c.entries[c.next] = e
	c.next = (c.next + 1) % dirCacheSize
	return dirFD{fd: fd, cached: e, cache: c}
}

// release returns a lent descriptor.
func (c *dirCache) release(e *dirEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.dropped {
		unix.Close(e.fd)
	}
}

// clear drops every entry (after an rmdir or a rename, and at unmount).
func (c *dirCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.entries {
		if c.entries[i] != nil {
			c.dropLocked(i)
		}
	}
}

// dropLocked removes entry i, closing its descriptor unless it is lent.
func (c *dirCache) dropLocked(i int) {
	e := c.entries[i]
	c.entries[i] = nil
	e.dropped = true
	if e.refs == 0 {
		unix.Close(e.fd)
	}
}
