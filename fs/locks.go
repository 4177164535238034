package fs

import (
	"context"
	"errors"
	"slices"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
)

// Application locks (fcntl F_SETLK, F_SETLKW and F_GETLK, OFD locks and
// flock) are taken on the backing file, as open file description (OFD)
// locks, so that every mount of the tree sees them: the backing
// filesystem's lock manager is the only one that spans the mounts (and,
// on a shared filesystem, the hosts). Where they go on the backing file is
// fixed in chunk/FORMAT.md, "Locks on backing files".
//
// Ownership. The kernel names the owner of each lock request: for POSIX
// (fcntl F_SETLK) locks the process (its file table), for OFD locks and
// flock the open file description. A POSIX lock is per owner and inode and
// goes when the owner closes any descriptor of the file; an OFD lock is per
// open file description. Process-associated POSIX locks taken by the daemon
// would all belong to the daemon and never conflict with each other, so
// each (backing inode, owner) pair gets a backing open file description of
// its own (lockOwner.fd), and its locks are OFD locks on that one: two
// owners then conflict in the backing lock manager exactly as two processes
// or two descriptions would locally, and one owner's locks merge and split
// as they do locally. flock locks get their own descriptions too (one per
// open file, keyed apart from the OFD locks of the same open file).
//
// Release. The kernel sends FLUSH with the owner on every close(2) of a
// descriptor (a killed process closes all of its descriptors): the owner's
// POSIX locks on that inode go (lockTable.flush). OFD and flock locks go
// with the open file, at RELEASE (lockTable.release). The daemon dying
// closes every backing descriptor, and the backing lock manager drops its
// locks with them; unmounting closes them all (lockTable.close).

const (
	// lockSpaceEnd ends the backing range [0, lockSpaceEnd) of application
	// POSIX and OFD locks, in plaintext offsets: a lock on plaintext bytes
	// [s, e] is a backing lock on [s, e]. Ranges are clamped to end there.
	lockSpaceEnd = cipherdir.SizeLockOffset
	// flockByte is the one backing byte that carries flock(2) locks
	// (shared: F_RDLCK, exclusive: F_WRLCK), outside the range of fcntl
	// locks so that the two kinds stay independent as they are on Linux.
	flockByte = cipherdir.InternalLockEnd
	// offsetMax is the kernel's OFFSET_MAX: a lock ending there runs to
	// the end of the file (l_len 0).
	offsetMax = 1<<63 - 1
	// lockPollMin and lockPollMax bound the pause between the attempts of
	// a blocking lock (F_SETLKW, flock without LOCK_NB): a waiter gets the
	// lock at most lockPollMax after it is free, and an interrupted waiter
	// (a signal to the waiting process) answers EINTR at once.
	lockPollMin = time.Millisecond
	lockPollMax = 50 * time.Millisecond
	// unknownPid is the pid F_GETLK reports for a lock held through another
	// mount: the backing lock manager knows only an open file description
	// (l_pid -1 for an OFD lock).
	unknownPid = ^uint32(0)
)

// ownerKey names one lock owner of one inode in lockTable.
type ownerKey struct {
	owner uint64 // the kernel's lock owner
	flock bool   // flock locks of the open file owner, kept apart from its OFD locks
}

// heldRange is a range a lock owner holds, in plaintext offsets, with end
// inclusive and below lockSpaceEnd (flockByte for flock).
type heldRange struct {
	start, end uint64
	typ        uint32 // syscall.F_RDLCK or syscall.F_WRLCK
	pid        uint32 // the process that took it, reported by F_GETLK
}

// lockOwner is one owner's locks on one backing inode.
type lockOwner struct {
	fd      int                  // its backing open file description; -1 once closed
	held    []heldRange          // sorted, disjoint, same-type neighbours merged
	via     map[*handle]struct{} // the open files its locks were taken through
	waiters int                  // blocking requests polling with fd
}

// lockTable holds the application locks taken through one mount, by
// backing inode and owner. Its fds are the only descriptors application
// locks live on.
type lockTable struct {
	mu     sync.Mutex
	inodes map[uint64]map[ownerKey]*lockOwner
	closed bool // the mount is gone: every fd is closed

	// flushing maps the cancel channel of a FLUSH request in progress to
	// its lock owner: go-fuse's bridge hands the handle only the channel
	// (rawFS.Flush).
	flushing sync.Map
}

// appRange maps the range of a FUSE lock request (end inclusive, offsetMax
// for "to end of file") to its backing range, clamped below lockSpaceEnd.
// ok is false when the range starts at or past lockSpaceEnd, where no
// application lock can be (or when it is empty).
func appRange(lk *fuse.FileLock) (start, end uint64, ok bool) {
	if lk.Start >= lockSpaceEnd || lk.End < lk.Start {
		return 0, 0, false
	}
	return lk.Start, min(lk.End, lockSpaceEnd-1), true
}

// reportEnd maps the end of a backing lock back to a FUSE lock's: one that
// reaches lockSpaceEnd (the clamp of "to end of file") runs to end of file.
func reportEnd(end uint64) uint64 {
	if end >= lockSpaceEnd-1 {
		return offsetMax
	}
	return end
}

// flockT is the struct flock of an OFD lock command on [start, end].
func flockT(typ uint32, start, end uint64) unix.Flock_t {
	return unix.Flock_t{Type: int16(typ), Whence: unix.SEEK_SET, Start: int64(start), Len: int64(end - start + 1)}
}

// applyRange returns held with r applied as the kernel applies one
// owner's lock: r replaces whatever part of held it overlaps (F_UNLCK
// leaves nothing there), and touching ranges of one type merge.
func applyRange(held []heldRange, r heldRange) []heldRange {
	out := make([]heldRange, 0, len(held)+2)
	for _, h := range held {
		if h.end < r.start || h.start > r.end {
			out = append(out, h)
			continue
		}
		if h.start < r.start {
			out = append(out, heldRange{start: h.start, end: r.start - 1, typ: h.typ, pid: h.pid})
		}
		if h.end > r.end {
			out = append(out, heldRange{start: r.end + 1, end: h.end, typ: h.typ, pid: h.pid})
		}
	}
	if r.typ != syscall.F_UNLCK {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b heldRange) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, h := range out {
		if n := len(merged); n > 0 && merged[n-1].typ == h.typ && merged[n-1].end+1 == h.start {
			merged[n-1].end = h.end
			merged[n-1].pid = h.pid
			continue
		}
		merged = append(merged, h)
	}
	return merged
}

// conflicting returns the first range of held that a lock of typ on
// [start, end] conflicts with: an overlapping one where either is a write
// lock.
func conflicting(held []heldRange, start, end uint64, typ uint32) (heldRange, bool) {
	for _, h := range held {
		if h.end >= start && h.start <= end && (h.typ == syscall.F_WRLCK || typ == syscall.F_WRLCK) {
			return h, true
		}
	}
	return heldRange{}, false
}

// openLockFD opens a new backing open file description of the file open
// as h, for one owner's locks: read-write when the daemon may (an OFD
// F_WRLCK needs write access, F_RDLCK read access), else read-only, so
// that write locks fail with EBADF as they do on a read-only descriptor.
// The file is reopened through /proc/self/fd: no path is resolved in the
// tree.
func (h *handle) openLockFD() (int, error) {
	p := procFD(h.raw, "")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS) || errors.Is(err, unix.EPERM) {
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

// owner returns the lock owner k of the file open as h, making it (with
// its backing description) when it does not exist yet. The caller holds
// t.mu.
func (t *lockTable) owner(h *handle, k ownerKey) (*lockOwner, error) {
	if t.closed {
		return nil, syscall.ENOTCONN
	}
	owners := t.inodes[h.c.ino]
	if o := owners[k]; o != nil {
		return o, nil
	}
	fd, err := h.openLockFD()
	if err != nil {
		return nil, err
	}
	if t.inodes == nil {
		t.inodes = make(map[uint64]map[ownerKey]*lockOwner)
	}
	if owners == nil {
		owners = make(map[ownerKey]*lockOwner)
		t.inodes[h.c.ino] = owners
	}
	o := &lockOwner{fd: fd, via: make(map[*handle]struct{})}
	owners[k] = o
	return o, nil
}

// dropIfIdle closes the description of owner k of inode ino and forgets
// the owner once it holds nothing and nobody waits with it. The caller
// holds t.mu.
func (t *lockTable) dropIfIdle(ino uint64, k ownerKey, o *lockOwner) {
	if len(o.held) > 0 || o.waiters > 0 {
		return
	}
	if o.fd >= 0 {
		unix.Close(o.fd)
		o.fd = -1
	}
	owners := t.inodes[ino]
	if owners[k] == o {
		delete(owners, k)
		if len(owners) == 0 {
			delete(t.inodes, ino)
		}
	}
}

// unlockAll drops every lock of o (whose descriptor stays open while
// someone waits with it) and forgets o when idle. The caller holds t.mu.
// The explicit unlock comes before the close so that a copy of the
// descriptor in a child forked meanwhile (between fork and exec) cannot
// keep the locks alive.
func (t *lockTable) unlockAll(ino uint64, k ownerKey, o *lockOwner) {
	if len(o.held) > 0 && o.fd >= 0 {
		fl := flockT(syscall.F_UNLCK, 0, lockSpaceEnd-1)
		if k.flock {
			fl = flockT(syscall.F_UNLCK, flockByte, flockByte)
		}
		unix.FcntlFlock(uintptr(o.fd), unix.F_OFD_SETLK, &fl)
	}
	o.held = nil
	t.dropIfIdle(ino, k, o)
}

// setlk takes, changes or drops (F_UNLCK) a lock of owner on the file
// open as h: an fcntl lock on the plaintext range of lk, or with
// fuse.FUSE_LK_FLOCK in flags a flock lock. With wait it retries a
// conflicting lock until it is granted or ctx is cancelled (EINTR).
func (t *lockTable) setlk(ctx context.Context, h *handle, owner uint64, lk *fuse.FileLock, flags uint32, wait bool) syscall.Errno {
	switch lk.Typ {
	case syscall.F_RDLCK, syscall.F_WRLCK, syscall.F_UNLCK:
	default:
		return syscall.EINVAL
	}
	k := ownerKey{owner: owner, flock: flags&fuse.FUSE_LK_FLOCK != 0}
	r := heldRange{start: flockByte, end: flockByte, typ: lk.Typ, pid: lk.Pid}
	if !k.flock {
		var ok bool
		if r.start, r.end, ok = appRange(lk); !ok {
			if lk.Typ == syscall.F_UNLCK {
				return 0 // nothing can be held there
			}
			return syscall.EINVAL
		}
	}
	ino := h.c.ino
	t.mu.Lock()
	if lk.Typ == syscall.F_UNLCK && t.inodes[ino][k] == nil {
		t.mu.Unlock()
		return 0
	}
	o, err := t.owner(h, k)
	if err != nil {
		t.mu.Unlock()
		return errnoOf(err)
	}
	o.waiters++
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		o.waiters--
		t.dropIfIdle(ino, k, o)
		t.mu.Unlock()
	}()
	pause := lockPollMin
	for {
		t.mu.Lock()
		err := t.try(h, o, r)
		t.mu.Unlock()
		if !wait || !errors.Is(err, unix.EAGAIN) {
			return errnoOf(err)
		}
		timer := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			timer.Stop()
			return syscall.EINTR
		case <-timer.C:
		}
		pause = min(2*pause, lockPollMax)
	}
}

// try makes one non-blocking attempt at lock r with o's description and
// records the outcome. The caller holds t.mu.
func (t *lockTable) try(h *handle, o *lockOwner, r heldRange) error {
	if t.closed || o.fd < 0 {
		return syscall.ENOTCONN
	}
	fl := flockT(r.typ, r.start, r.end)
	if err := unix.FcntlFlock(uintptr(o.fd), unix.F_OFD_SETLK, &fl); err != nil {
		return err
	}
	o.held = applyRange(o.held, r)
	o.via[h] = struct{}{}
	return nil
}

// getlk answers F_GETLK for owner on the file open as h: the first lock
// that would conflict with lk, or F_UNLCK. A lock held through this mount
// is reported with the pid of the process that took it; one held through
// another mount (known only to the backing lock manager, as an OFD lock)
// with pid -1.
func (t *lockTable) getlk(h *handle, owner uint64, lk *fuse.FileLock, out *fuse.FileLock) syscall.Errno {
	*out = fuse.FileLock{Typ: syscall.F_UNLCK}
	start, end, ok := appRange(lk)
	if !ok {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fd := h.raw // holds no application lock: sees every owner's
	for k, o := range t.inodes[h.c.ino] {
		if k.flock {
			continue
		}
		if k.owner == owner {
			if o.fd >= 0 {
				fd = o.fd // the caller's own locks conflict with nothing
			}
			continue
		}
		if c, ok := conflicting(o.held, start, end, lk.Typ); ok {
			*out = fuse.FileLock{Start: c.start, End: reportEnd(c.end), Typ: c.typ, Pid: c.pid}
			return 0
		}
	}
	fl := flockT(lk.Typ, start, end)
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &fl); err != nil {
		return errnoOf(err)
	}
	if fl.Type == syscall.F_UNLCK {
		return 0
	}
	e := uint64(offsetMax)
	if fl.Len > 0 {
		e = uint64(fl.Start + fl.Len - 1)
	}
	*out = fuse.FileLock{Start: uint64(fl.Start), End: reportEnd(e), Typ: uint32(fl.Type), Pid: unknownPid}
	return 0
}

// flush drops the POSIX locks of owner on the file open as h: the owner
// closed a descriptor of it (FLUSH).
func (t *lockTable) flush(h *handle, owner uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := ownerKey{owner: owner}
	if o := t.inodes[h.c.ino][k]; o != nil {
		t.unlockAll(h.c.ino, k, o)
	}
}

// release drops every lock taken through the open file h, which is being
// closed for good (RELEASE): its OFD and flock locks. POSIX locks taken
// through h went at the FLUSH of the owner's close.
func (t *lockTable) release(h *handle) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, o := range t.inodes[h.c.ino] {
		if _, ok := o.via[h]; !ok {
			continue
		}
		delete(o.via, h)
		t.unlockAll(h.c.ino, k, o)
	}
}

// close closes every lock description: the mount is gone.
func (t *lockTable) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, owners := range t.inodes {
		for _, o := range owners {
			if o.fd >= 0 {
				unix.Close(o.fd)
				o.fd = -1
			}
		}
	}
	t.inodes = nil
}

// flushOwner returns the lock owner of the FLUSH request whose context is
// ctx (see rawFS.Flush).
func (t *lockTable) flushOwner(ctx context.Context) (uint64, bool) {
	fc, ok := ctx.(*fuse.Context)
	if !ok {
		return 0, false
	}
	v, ok := t.flushing.Load(fc.Cancel)
	if !ok {
		return 0, false
	}
	return v.(uint64), true
}

// Getlk implements gofs.NodeGetlker (F_GETLK, F_OFD_GETLK).
func (n *node) Getlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	h, ok := f.(*handle)
	if !ok {
		return syscall.EINVAL
	}
	return n.r.locks.getlk(h, owner, lk, out)
}

// Setlk implements gofs.NodeSetlker (F_SETLK, F_OFD_SETLK, flock with
// LOCK_NB or LOCK_UN).
func (n *node) Setlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return n.setlk(ctx, f, owner, lk, flags, false)
}

// Setlkw implements gofs.NodeSetlkwer (F_SETLKW, F_OFD_SETLKW, flock
// without LOCK_NB).
func (n *node) Setlkw(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return n.setlk(ctx, f, owner, lk, flags, true)
}

// setlk forwards a lock request to the backing file and keeps the
// kernel's cache of the file coherent with the lock, as NFS does: before
// an unlock the cached pages are invalidated (dirty ones, of mmap or the
// writeback cache, are written to us first), so that what was written
// under the lock is in the backing file before another mount can take
// it; after a lock is granted the cached pages and attributes are
// invalidated, so that reads under the lock see what other mounts wrote
// under theirs.
func (n *node) setlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, wait bool) syscall.Errno {
	h, ok := f.(*handle)
	if !ok {
		return syscall.EINVAL
	}
	if lk.Typ == syscall.F_UNLCK {
		n.NotifyContent(0, 0)
	}
	errno := n.r.locks.setlk(ctx, h, owner, lk, flags, wait)
	if errno == 0 && lk.Typ != syscall.F_UNLCK {
		n.NotifyContent(0, 0)
	}
	return errno
}
