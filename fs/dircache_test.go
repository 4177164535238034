package fs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// fdOpen reports whether fd is an open descriptor.
func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func openPath(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestDirCache checks lending, expiry, replacement and clearing: a lent
// descriptor is never closed under its borrower, and every descriptor the
// cache drops is closed exactly when its last borrower is done.
func TestDirCache(t *testing.T) {
	base := t.TempDir()
	now := time.Unix(1000, 0)
	c := &dirCache{now: func() time.Time { return now }, ttl: dirCacheTTL}
	var inodes [dirCacheSize + 1]gofs.Inode

	a := openPath(t, base)
	d := c.put(&inodes[0], a)
	if d.fd != a {
		t.Fatalf("put lent fd %d, want %d", d.fd, a)
	}
	d2, ok := c.get(&inodes[0])
	if !ok || d2.fd != a {
		t.Fatalf("get = %v %v", d2, ok)
	}
	if _, ok := c.get(&inodes[1]); ok {
		t.Fatal("hit for a directory never put")
	}
	// Cleared while lent twice: stays open until both are closed.
	c.clear()
	if _, ok := c.get(&inodes[0]); ok {
		t.Fatal("hit after clear")
	}
	d.close()
	if !fdOpen(a) {
		t.Fatal("closed while still lent")
	}
	d2.close()
	if fdOpen(a) {
		t.Fatal("not closed after the last borrower")
	}

	// Expiry: an entry older than the TTL is a miss and is closed.
	b := openPath(t, base)
	c.put(&inodes[0], b).close()
	now = now.Add(dirCacheTTL)
	if _, ok := c.get(&inodes[0]); ok {
		t.Fatal("hit after the TTL")
	}
	if fdOpen(b) {
		t.Fatal("expired entry not closed")
	}

	// Filling the cache replaces the oldest entry, which is closed.
	var fds []int
	for i := range inodes {
		sub := filepath.Join(base, "d", string(rune('a'+i)))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		fd := openPath(t, sub)
		fds = append(fds, fd)
		c.put(&inodes[i], fd).close()
	}
	if _, ok := c.get(&inodes[0]); ok || fdOpen(fds[0]) {
		t.Fatalf("oldest entry still cached (%v) or open (%v)", ok, fdOpen(fds[0]))
	}
	for i := 1; i < len(inodes); i++ {
		d, ok := c.get(&inodes[i])
		if !ok || d.fd != fds[i] {
			t.Fatalf("entry %d: %v %v", i, d, ok)
		}
		d.close()
	}
	c.clear()
	for i, fd := range fds {
		if fdOpen(fd) {
			t.Errorf("fd of entry %d open after clear", i)
		}
	}
}
