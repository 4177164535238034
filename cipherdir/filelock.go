package cipherdir

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Internal locks on backing files (chunk/FORMAT.md, "Internal locks
// (shared mode)"): open file description (OFD) locks far above any
// plaintext offset, which mounts in shared mode take around every content
// change. The offline tools take them too, so that they never race a
// shared-mode mount's writer on this host or another. Package fs uses the
// same offsets.
const (
	// SizeLockOffset is the backing byte of the size lock: the header and
	// the file's size.
	SizeLockOffset = 1 << 62
	// ChunkLockOffset is the backing byte of chunk 0's lock; chunk i's is
	// ChunkLockOffset + i.
	ChunkLockOffset = SizeLockOffset + 1
	// InternalLockEnd ends the internal locks' range [SizeLockOffset,
	// InternalLockEnd); the application flock byte is at InternalLockEnd.
	InternalLockEnd = SizeLockOffset + 1<<61
)

// ErrBusy says a lock is held by someone else (a mount writing the file,
// or another tool): the file was left alone.
var ErrBusy = errors.New("busy: a mount is writing it")

// LockMode says which internal locks LockFile takes, and so what it
// excludes. By the protocol of chunk/FORMAT.md every writer holds the size
// lock (shared or exclusive) and, when it writes inside the file, the
// locks of its chunks exclusively.
type LockMode int

const (
	// LockHeader holds the size lock shared: no header and no size
	// changes (the first key of an empty file, extending writes, O_APPEND,
	// truncation, fallocate). Writes inside the file go on. For rewrap,
	// which replaces the key record and nothing else. Needs read access.
	LockHeader LockMode = iota
	// LockContent holds the size lock and every chunk's lock shared: no
	// writer at all, while readers (a mount's read retries, other
	// LockContent holders) go on. For reading a file that must not change
	// meanwhile (rekey, fsck). Needs read access only.
	LockContent
	// LockExclusive holds the size lock exclusively, which excludes every
	// other holder of an internal lock, readers' retries and other tools
	// included. For rewriting a file in place (fsck --repair). Needs a
	// descriptor open for writing.
	LockExclusive
)

// LockFile takes the internal locks of mode on the backing file open as
// fd, in the protocol's order (the size lock first, then chunks), and
// returns the function that releases them. With wait it waits for
// conflicting locks to go; without, it fails at once with ErrBusy when a
// lock is held by another open file description (another mount, another
// tool, or another descriptor of this process).
//
// The locks belong to fd's open file description: they go when it is
// closed, and no application lock may be held on it (the release drops
// every lock in the internal range). They are OFD locks, which NFSv4
// holds on the server and CephFS keeps coherent across clients; only
// mounts in shared mode take them, so they exclude nothing of a mount in
// any other mode.
func LockFile(fd int, mode LockMode, wait bool) (unlock func(), err error) {
	typ := int16(unix.F_RDLCK)
	if mode == LockExclusive {
		typ = unix.F_WRLCK
	}
	if err := SetLock(fd, typ, SizeLockOffset, 1, wait); err != nil {
		return nil, err
	}
	unlock = func() { _ = SetLock(fd, unix.F_UNLCK, SizeLockOffset, InternalLockEnd-SizeLockOffset, false) }
	if mode == LockContent {
		if err := SetLock(fd, unix.F_RDLCK, ChunkLockOffset, InternalLockEnd-ChunkLockOffset, wait); err != nil {
			unlock()
			return nil, err
		}
	}
	return unlock, nil
}

// lockRetries and lockRetryPause bound how long lockSoon tries without
// waiting: a mount's writer holds its locks for one write, so a file
// still busy after about half a second is being written steadily.
const (
	lockRetries    = 5
	lockRetryPause = 100 * time.Millisecond
)

// lockSoon is LockFile for the offline tools: with wait it waits; without,
// it tries a few times over about half a second before giving up with
// ErrBusy, so that one write in progress does not make a file busy.
func lockSoon(fd int, mode LockMode, wait bool) (func(), error) {
	for i := 0; ; i++ {
		unlock, err := LockFile(fd, mode, wait)
		if !errors.Is(err, ErrBusy) || i == lockRetries-1 {
			return unlock, err
		}
		time.Sleep(lockRetryPause)
	}
}

// setLock sets an OFD lock of type typ on backing bytes [start, start+n)
// of fd (F_OFD_SETLKW with wait, else F_OFD_SETLK).
func SetLock(fd int, typ int16, start, n int64, wait bool) error {
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: n}
	for {
		err := unix.FcntlFlock(uintptr(fd), cmd, &lk)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case !wait && (err == unix.EAGAIN || err == unix.EACCES):
			return ErrBusy
		default:
			return fmt.Errorf("internal lock of backing bytes [%d, %d): %w", start, start+n, err)
		}
	}
}

// Retire marks the backing inode open as fd as replaced, once rekey has
// renamed its successor over every one of its names: mode 0 and a
// modification time of 0 (the epoch). A shared-mode mount's writer that
// still holds a descriptor of the old inode checks for the mark after
// taking its locks (Retired) and fails with ESTALE instead of writing
// into an inode no name leads to any more. The mark is in the
// attributes, which every backing filesystem keeps and fstat shows on
// any host (NFS included, where a replaced open file may live on under a
// silly-rename name, so a link count of 0 cannot be relied on; and a
// link count of 0 alone is an ordinary unlinked open file, whose writes
// must go on). Mode and time need the owner or root, as rekey does.
func Retire(fd int) error {
	if err := unix.Fchmod(fd, 0); err != nil {
		return fmt.Errorf("mark the old inode replaced: %w", err)
	}
	ts := []unix.Timespec{{Sec: 0, Nsec: 0}, {Sec: 0, Nsec: 0}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), ts, 0); err != nil {
		return fmt.Errorf("mark the old inode replaced: %w", err)
	}
	return nil
}

// Retired reports whether st, the attributes of a backing file, carry
// Retire's mark: no permission bits and a modification time of exactly
// the epoch.
func Retired(st *unix.Stat_t) bool {
	return st.Mode&0o7777 == 0 && st.Mtim.Sec == 0 && st.Mtim.Nsec == 0
}
