package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
)

// Shared mode (Options.Shared): several hosts mount one CIPHERDIR on
// shared storage, each mount its own daemon with its own kernel caches.
//
// Content: every read-modify-write of a chunk and every size change holds
// internal byte-range locks on the backing file (chunk/FORMAT.md, "Internal
// locks (shared mode)"): open file description (OFD) locks, which NFSv4
// turns into byte-range locks on the server and CephFS keeps coherent
// across clients, in a range of offsets no plaintext byte and no
// application lock uses. The size lock comes first, then chunk locks in
// ascending order; a holder of the size lock's write side holds every
// chunk, as every other holder of an internal lock holds the size lock's
// read side. A write inside the file holds the size lock shared and its
// chunks exclusively, so writes of different chunks from different hosts
// run in parallel; a write past the end of file, an O_APPEND write (its
// offset read under the lock), a truncation and fallocate hold the size
// lock exclusively. Reads take no lock: a chunk read while another host
// rewrites it fails its tag, and the read is then repeated once under the
// shared size lock and the chunks' shared locks (a torn or stale read is
// detected, never returned).
//
// Caches: the kernel keeps no entry (every path walk looks each name up,
// so a name another host removed, renamed or replaced is never followed
// to the old file) and keeps attributes at most SharedCacheTimeout; it
// never caches directory listings (no FOPEN_CACHE_DIR) and has no
// writeback cache. Every open drops the file's cached pages (no
// FOPEN_KEEP_CACHE) and attributes, and refuses (ESTALE, so the kernel
// looks the path up again) a name that names another file since the
// lookup: close-to-open consistency, as NFS gives. kmsfs's own directory
// descriptor cache lives no longer than SharedCacheTimeout.
//
// O_APPEND: a descriptor opened with O_APPEND gets FOPEN_DIRECT_IO, so
// that each write(2) reaches the daemon as one request (up to the 1 MiB
// MaxWrite) and is placed at the end of file as a whole; through the page
// cache the kernel splits a write at the first page it does not fully
// cover, and another host could append between the pieces. O_APPEND set
// later with fcntl(F_SETFL) is placed at the end of file request by
// request.

// SharedCacheTimeout is the longest time a mount in shared mode lets the
// kernel keep an attribute and its own directory cache a directory
// descriptor: the bound within which another host's change of a file's
// size, mode, owner or times shows without an open. 100 ms keeps a stat-heavy workload within a
// few percent of the unbounded one (bench/README.md) while changes show
// well within a human's reaction time.
const SharedCacheTimeout = 100 * time.Millisecond

// Internal lock offsets on a backing file (chunk/FORMAT.md), defined once
// in cipherdir, whose offline tools take the same locks: [lockBase,
// lockEnd), above the application locks (locks.go) and below the flock
// byte.
const (
	lockBase      = int64(cipherdir.SizeLockOffset)
	sizeLockByte  = lockBase                         // the header and the size
	chunkLockBase = int64(cipherdir.ChunkLockOffset) // chunk i at chunkLockBase + i
	lockEnd       = int64(cipherdir.InternalLockEnd) // the flock byte follows
)

// errNoLocks says the backing filesystem refused the byte-range locks
// shared mode needs.
var errNoLocks = errors.New("the backing filesystem does not support open file description locks (F_OFD_SETLK)")

// backingLock is the set of internal locks one content operation holds on
// one backing descriptor; the zero value holds none.
type backingLock struct {
	fd   int
	held bool
}

// ofdLock sets an OFD lock of type typ on backing bytes [start,
// start+n) of fd, waiting for a conflicting one to go (cipherdir.SetLock).
func ofdLock(fd int, typ int16, start, n int64) error {
	return cipherdir.SetLock(fd, typ, start, n, true)
}

// lockSize takes the size lock of fd, exclusive or shared.
func lockSize(fd int, exclusive bool) (backingLock, error) {
	typ := int16(unix.F_RDLCK)
	if exclusive {
		typ = unix.F_WRLCK
	}
	if err := ofdLock(fd, typ, sizeLockByte, 1); err != nil {
		return backingLock{}, err
	}
	return backingLock{fd: fd, held: true}, nil
}

// lockChunks adds the locks of chunks first through last (inclusive) to
// l, which holds the size lock's read side.
func (l backingLock) lockChunks(first, last int64, exclusive bool) error {
	typ := int16(unix.F_RDLCK)
	if exclusive {
		typ = unix.F_WRLCK
	}
	return ofdLock(l.fd, typ, chunkLockBase+first, last-first+1)
}

// release drops every internal lock l holds (one fcntl over the whole
// internal range, which leaves application locks alone).
func (l *backingLock) release() {
	if !l.held {
		return
	}
	l.held = false
	_ = ofdLock(l.fd, unix.F_UNLCK, lockBase, lockEnd-lockBase)
}

// lockChange takes the internal locks a content change ch of the file f
// (backing descriptor fd) needs, in the protocol's order, and returns
// them. A write that stays inside the file holds the size lock shared and
// its chunks exclusively; anything that can change the size or the header
// (a write past the end, O_APPEND, truncation, fallocate) holds the size
// lock exclusively. hint is the size this mount last saw (0: unknown):
// a write ending past it goes straight to the exclusive side (appending
// writers: two lock calls, not four); the size read under the lock
// decides, and is returned for a write that stays inside the file (-1
// otherwise), so the caller need not read it again.
func (r *root) lockChange(fd int, f *chunk.File, ch change, hint int64) (backingLock, int64, error) {
	if ch.kind != changeWrite || ch.appendMode {
		l, err := lockSize(fd, true)
		return l, -1, err
	}
	end := ch.off + int64(len(ch.data))
	if len(ch.data) == 0 || ch.off < 0 || end < ch.off {
		l, err := lockSize(fd, false) // chunk.File refuses or ignores it
		return l, -1, err
	}
	if hint <= 0 {
		if size, err := f.Size(); err == nil {
			hint = size
		}
	}
	if end > hint {
		l, err := lockSize(fd, true)
		return l, -1, err
	}
	l, err := lockSize(fd, false)
	if err != nil {
		return l, -1, err
	}
	size, err := f.Size()
	if err != nil {
		l.release()
		return l, -1, err
	}
	if end > size {
		// Extending: the size lock's write side. A lock is never upgraded
		// in place (two readers upgrading would wait for each other).
		l.release()
		l, err := lockSize(fd, true)
		return l, -1, err
	}
	cs := int64(r.cfg.ChunkSize)
	if err := l.lockChunks(ch.off/cs, (end-1)/cs, true); err != nil {
		l.release()
		return l, -1, err
	}
	return l, size, nil
}

// checkNotReplaced fails with ESTALE when the backing inode open as fd was
// replaced by `kmsfs rekey` (cipherdir.Retire), which renames a new inode
// over every name of the file while it holds the file's internal locks. A
// writer that waited for those locks holds a descriptor of the old inode,
// which no name leads to any more: its write would be lost, so it fails
// as a write to a file replaced on an NFS server does. Called with the
// size lock held (shared mode), so the mark cannot appear meanwhile.
func checkNotReplaced(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if cipherdir.Retired(&st) {
		return fmt.Errorf("the file was replaced by kmsfs rekey since it was opened: %w", unix.ESTALE)
	}
	return nil
}

// readLocked repeats a read that failed in shared mode, under the size
// lock's and the chunks' read sides: no other host is then rewriting a
// chunk of the range or changing the size.
func (r *root) readLocked(fd int, f *chunk.File, dest []byte, off int64) (int, error) {
	l, err := lockSize(fd, false)
	if err != nil {
		return 0, err
	}
	defer l.release()
	if len(dest) > 0 && off >= 0 {
		cs := int64(r.cfg.ChunkSize)
		if err := l.lockChunks(off/cs, (off+int64(len(dest))-1)/cs, false); err != nil {
			return 0, err
		}
	}
	return f.ReadAt(dest, off)
}

// loadKeyLocked is loadKeyConfirmed under the size lock's read side: no
// other host is then writing the file's first header (shared mode).
func (r *root) loadKeyLocked(ctx context.Context, f *os.File) (*chunk.Cipher, time.Time, error) {
	l, err := lockSize(int(f.Fd()), false)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer l.release()
	return r.loadKeyConfirmed(ctx, f)
}

// probeLocks checks, for shared mode, that the backing filesystem grants
// OFD locks at the internal offsets: a shared lock of the size lock's byte
// on kmsfs.conf, released at once. A filesystem without byte-range locks
// (NFSv3 without lockd, some FUSE filesystems) fails the mount here rather
// than leaving writers unserialised.
func probeLocks(root int) error {
	fd, err := unix.Openat(root, cipherdir.ConfigName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("shared mode: opening %s to probe locks: %w", cipherdir.ConfigName, err)
	}
	f := os.NewFile(uintptr(fd), cipherdir.ConfigName)
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart, Start: sizeLockByte, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		return fmt.Errorf("shared mode: %w: %w", errNoLocks, err)
	}
	lk.Type = unix.F_UNLCK
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		return fmt.Errorf("shared mode: %w: %w", errNoLocks, err)
	}
	return nil
}

// openNode opens the backing file of the regular file n, found as name in
// dirfd (node.Open). In shared mode it gives close-to-open consistency:
// the name must still name n's backing file (else ESTALE: the kernel looks
// the path up again and retries), and the kernel forgets n's cached
// attributes, so that the file's size (and with it everything another
// host wrote before this open) is asked for again. The cached pages go
// at every open already (the reply never sets FOPEN_KEEP_CACHE).
//
// It returns the FOPEN flags of the reply (openFlags).
func (r *root) openNode(ctx context.Context, n *node, dirfd int, name string, flags uint32) (*handle, uint32, error) {
	if !r.shared {
		h, err := r.openFile(ctx, dirfd, name, flags)
		return h, 0, err
	}
	want := n.StableAttr()
	h, err := r.openFileAs(ctx, dirfd, name, flags, &want)
	if err != nil {
		return nil, 0, err
	}
	// Attributes only (offset -1): no page is locked, so this cannot wait
	// for a request of this mount. A kernel that refuses the
	// notification keeps its attributes for at most SharedCacheTimeout.
	_ = n.NotifyContent(-1, 0)
	return h, r.openFlags(flags), nil
}

// openFlags returns the FOPEN flags of an open or create with flags: in
// shared mode FOPEN_DIRECT_IO for O_APPEND (one request per write(2), see
// above), else none.
func (r *root) openFlags(flags uint32) uint32 {
	if r.shared && flags&syscall.O_APPEND != 0 {
		return fuse.FOPEN_DIRECT_IO
	}
	return 0
}
