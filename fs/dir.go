package fs

import (
	"context"
	"errors"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// dirHandle is an open directory: a backing directory descriptor (so an
// open directory can still be stat'ed and synced after it is removed) and
// a snapshot of its entries, taken on the first read and again on a
// rewind, with internal names hidden. Offsets are entry positions.
type dirHandle struct {
	n  *node
	fd int

	mu      sync.Mutex
	entries []fuse.DirEntry
	loaded  bool
	pos     int
}

// OpendirHandle opens the backing directory.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	d, err := n.r.openDir(&n.Inode)
	if err != nil {
		return nil, 0, n.r.errno("opendir", err)
	}
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	d.close()
	if err != nil {
		return nil, 0, n.r.errno("opendir", err)
	}
	return &dirHandle{n: n, fd: fd}, 0, 0
}

// load reads the whole directory from its start. The caller holds d.mu.
func (d *dirHandle) load() syscall.Errno {
	if _, err := unix.Seek(d.fd, 0, unix.SEEK_SET); err != nil {
		return d.n.r.errno("readdir", err)
	}
	d.entries = d.entries[:0]
	buf := make([]byte, 32<<10)
	plain, errno := d.plainNames()
	if errno != 0 {
		return errno
	}
	if plain == nil {
		// An empty directory that lost its ID file: nothing to list but
		// itself and its parent.
		plain = func(b string) (string, bool) { return b, b == "." || b == ".." }
	}
	for {
		nb, err := unix.ReadDirent(d.fd, buf)
		if err != nil {
			return d.n.r.errno("readdir", err)
		}
		if nb <= 0 {
			break
		}
		d.entries = d.n.r.parseDirents(buf[:nb], plain, d.entries)
	}
	d.loaded, d.pos = true, 0
	return 0
}

// plainNames returns the function that gives a backing entry's name in
// the mount: for encrypted names, decryption under the directory's ID
// (nil for an empty directory without ID file); for plaintext names, the
// name itself unless it is kmsfs's.
func (d *dirHandle) plainNames() (func(string) (string, bool), syscall.Errno) {
	r := d.n.r
	if r.names == nil {
		isRoot := d.n.IsRoot()
		return func(b string) (string, bool) { return plainName(isRoot, b) }, 0
	}
	id, err := r.dirID(&d.n.Inode, d.fd, false)
	if errors.Is(err, errEmptyNoID) {
		return nil, 0
	}
	if err != nil {
		return nil, r.errno("readdir", err)
	}
	return func(b string) (string, bool) {
		if b == "." || b == ".." {
			return b, true
		}
		return r.decryptEntry(d.fd, id, b)
	}, 0
}

// Readdirent returns the next entry, or nil at the end.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.loaded {
		if errno := d.load(); errno != 0 {
			return nil, errno
		}
	}
	if d.pos >= len(d.entries) {
		return nil, 0
	}
	e := d.entries[d.pos]
	d.pos++
	e.Off = uint64(d.pos)
	return &e, 0
}

// Seekdir moves to an offset returned before; offset 0 (rewinddir) reads
// the directory afresh, so new entries appear.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off == 0 || !d.loaded {
		if errno := d.load(); errno != 0 {
			return errno
		}
	}
	d.pos = int(min(off, uint64(len(d.entries))))
	return 0
}

// Fsyncdir syncs the backing directory.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.n.r.errno("fsyncdir", unix.Fsync(d.fd))
}

// Releasedir closes the backing directory.
func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {
	unix.Close(d.fd)
}
