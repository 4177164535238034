package fs

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
)

// handle is an open regular file: one backing descriptor (read-write
// unless the file was opened read-only on a read-only mount) and the
// shared content state. It deliberately has no PassthroughFd method: with
// kernel passthrough the kernel would read the backing file itself and
// hand ciphertext to the reader.
type handle struct {
	backingFile
	raw      int // the backing descriptor, for syscalls
	r        *root
	c        *content
	writable bool // opened for writing (the backing fd always can, off ro mounts)
}

// procFD names descriptor fd (and name inside it, when a directory)
// through /proc, for the calls that have no *at or f* form.
func procFD(fd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	if name != "" {
		p += "/" + name
	}
	return p
}

// backingOpenFlags returns the flags a backing file is opened with for a
// plaintext open with flags: read-write whenever writing is possible at
// all (an O_WRONLY plaintext write is a read-modify-write of chunks),
// never O_APPEND (appends are placed in plaintext offsets), O_TRUNC
// (truncation keeps the header) or O_DIRECT (chunks are not aligned), and
// never following a symlink.
func (r *root) backingOpenFlags(flags uint32) int {
	acc := unix.O_RDWR
	if r.readOnly {
		acc = unix.O_RDONLY
	}
	keep := int(flags) & (unix.O_SYNC | unix.O_DSYNC)
	return acc | keep | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
}

// newHandle wraps the open backing descriptor fd with content c.
func (r *root) newHandle(fd int, c *content, flags uint32) *handle {
	h := &handle{
		raw:      fd,
		r:        r,
		c:        c,
		writable: flags&syscall.O_ACCMODE != syscall.O_RDONLY && !r.readOnly,
	}
	h.fd = os.NewFile(uintptr(fd), "")
	return h
}

// createFile makes the encrypted file name in dirfd: a new data key from
// the key service (wrapped with the filesystem and file ID as encryption
// context), the backing file created O_EXCL, owned by the caller, with
// exactly mode m.perm (or, under a default ACL, the permissions the backing
// filesystem derives from it: see newMode), the sealed header and the
// key-record slot written in one pwrite and the key record in its xattr.
// Any failure removes the half-made file. With open it returns a handle,
// else it closes the file.
func (r *root) createFile(ctx context.Context, dirfd int, name string, m newMode, flags uint32, open bool) (*handle, unix.Statx_t, error) {
	var st unix.Statx_t
	ci, rec, confirmed, err := r.newKeyAt(ctx)
	if err != nil {
		return nil, st, err
	}
	// Created with perm when the umask leaves it whole (the common case:
	// no chmod), else 0600 and chmod'ed below. Set-ID bits always take
	// the chmod, after any chown, which would clear them. Under a default
	// ACL the backing filesystem ignores the daemon's umask.
	perm := m.perm
	exact := r.umask >= 0 && perm&07000 == 0 && perm&uint32(r.umask) == 0
	createMode := m.createPerm(0o600)
	if m.inherit {
		exact = createMode == perm
	} else if exact {
		createMode = perm
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, createMode)
	if err != nil {
		return nil, st, err
	}
	fail := func(err error) (*handle, unix.Statx_t, error) {
		unix.Close(fd)
		unix.Unlinkat(dirfd, name, 0)
		return nil, st, err
	}
	if r.afterCreate != nil {
		r.afterCreate(dirfd, name)
	}
	if r.shared {
		// Another host may open the new, still empty file by its name at
		// once and, writing to it, give it a header of its own (under the
		// size lock, chunk/FORMAT.md). The header goes in under the same
		// lock, and only if no other host's is there yet.
		lk, err := lockSize(fd, true)
		if err != nil {
			return fail(err)
		}
		defer lk.release()
		var bst unix.Stat_t
		if err := unix.Fstat(fd, &bst); err != nil {
			return fail(err)
		}
		if bst.Size > 0 {
			ci, rec = nil, nil // theirs: the content loads it at first use
		}
	}
	if uid, gid, ok := r.newOwner(ctx, dirfd); ok {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fail(err)
		}
	}
	if !exact {
		if m.inherit {
			if err := statAt(fd, "", &st); err != nil {
				return fail(err)
			}
			perm = m.finalPerm(uint32(st.Mode))
		}
		if err := unix.Fchmod(fd, perm); err != nil {
			return fail(err)
		}
	}
	if ci != nil {
		if err := r.writeNewKeyRecord(fd, ci, rec); err != nil {
			return fail(err)
		}
	}
	if err := statAt(fd, "", &st); err != nil {
		return fail(err)
	}
	if !open {
		unix.Close(fd)
		return nil, st, nil
	}
	c := r.adopt(r.ino(unix.Mkdev(st.Dev_major, st.Dev_minor), st.Ino), ci, confirmed)
	return r.newHandle(fd, c, flags), st, nil
}

// openFile opens the existing regular file name in dirfd: a backing
// descriptor per handle, the content (key unwrapped on first open) shared
// by all handles of the inode, and O_TRUNC done as a content truncation.
func (r *root) openFile(ctx context.Context, dirfd int, name string, flags uint32) (*handle, error) {
	return r.openFileAs(ctx, dirfd, name, flags, nil)
}

// openFileAs is openFile that, when want is not nil, fails with ESTALE
// unless name still names the backing file want identifies (shared mode:
// another host replaced or removed it since the kernel looked the name
// up, and ESTALE makes the kernel look it up again and retry the open).
// The check comes before O_TRUNC, so a file the kernel did not check
// permissions on is never truncated.
func (r *root) openFileAs(ctx context.Context, dirfd int, name string, flags uint32, want *gofs.StableAttr) (*handle, error) {
	fd, err := unix.Openat(dirfd, name, r.backingOpenFlags(flags), 0)
	if err != nil {
		if want != nil && err == unix.ENOENT {
			return nil, syscall.ESTALE
		}
		return nil, err
	}
	var st unix.Statx_t
	if err := statAt(fd, "", &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if want != nil {
		if got := r.stableAttr(&st); got.Ino != want.Ino || got.Gen != want.Gen {
			unix.Close(fd)
			return nil, syscall.ESTALE
		}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		unix.Close(fd)
		return nil, syscall.EINVAL
	}
	h := r.newHandle(fd, nil, flags)
	c, err := r.acquire(ctx, r.ino(unix.Mkdev(st.Dev_major, st.Dev_minor), st.Ino), h.fd)
	if err != nil {
		h.fd.Close()
		return nil, err
	}
	h.c = c
	trunc := flags&syscall.O_TRUNC != 0 && h.writable
	if st.Size == chunk.DataOffset && !trunc {
		// Header and slot, no chunk: an empty file, or one truncated to
		// empty behind our back (FlagHasData). The kernel reads nothing
		// of a file whose size is 0, so the open is where that shows.
		// Only files of exactly this size pay for the header read.
		if err := h.checkEmpty(); err != nil {
			h.Release(ctx)
			return nil, err
		}
	}
	if trunc {
		if _, err := r.change(ctx, c, &h.backingFile, change{kind: changeTruncate}); err != nil {
			h.Release(ctx)
			return nil, err
		}
	}
	return h, nil
}

// checkEmpty verifies the header of a backing file holding no chunk and
// fails (chunk.AuthError, ReasonTruncated) if it says the file has data.
func (h *handle) checkEmpty() error {
	h.c.mu.RLock()
	defer h.c.mu.RUnlock()
	ci := h.c.cipher
	if ci == nil {
		return nil
	}
	// The caller's size was read before the lock: a writer may have added
	// the first chunk and set FlagHasData since. Decide on the size seen
	// under the lock, or a first write racing this open looks like a
	// truncation.
	fi, err := h.fd.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != chunk.DataOffset {
		return nil
	}
	var hb [chunk.HeaderSize]byte
	if _, err := cipherdir.ReadHeader(h.raw, hb[:]); err != nil {
		return err
	}
	hdr, err := ci.OpenHeader(hb[:])
	if err != nil {
		return err
	}
	if hdr.Flags&chunk.FlagHasData != 0 {
		return &chunk.AuthError{FileID: hdr.FileID, Chunk: 0, Reason: chunk.ReasonTruncated}
	}
	return nil
}

// truncatePath sets the plaintext size of name in dirfd, a file that may
// have no open handle (truncate(2) by path).
func (r *root) truncatePath(ctx context.Context, dirfd int, name string, size int64) error {
	h, err := r.openFile(ctx, dirfd, name, syscall.O_WRONLY)
	if err != nil {
		return err
	}
	defer h.Release(ctx)
	_, err = r.change(ctx, h.c, &h.backingFile, change{kind: changeTruncate, size: size})
	return err
}

// Read decrypts the chunks covering [off, off+len(dest)) under the
// content lock's read side. In shared mode a read that fails is repeated
// once under the internal locks (shared.go).
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.c.mu.RLock()
	defer h.c.mu.RUnlock()
	if h.c.cipher == nil {
		return fuse.ReadResultData(nil), 0 // empty backing file
	}
	if err := h.r.revalidate(ctx, h.c, h.fd); err != nil {
		return nil, h.r.errno("read", err)
	}
	f := h.file(h.c)
	n, err := f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) && h.r.shared {
		// Another host may have been rewriting a chunk of the range, or
		// changing the size: read again while no host can (shared.go).
		n, err = h.r.readLocked(h.raw, f, dest, off)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.r.errno("read", err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write encrypts data into the file at off, or at the plaintext end of
// file for write(2) on an O_APPEND descriptor (see rawFS).
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if !h.writable {
		return 0, syscall.EBADF
	}
	appendMode, killPriv := h.r.writeFlags(ctx)
	if killPriv {
		if err := killSetID(h.raw); err != nil {
			return 0, h.r.errno("write", err)
		}
	}
	n, err := h.r.change(ctx, h.c, &h.backingFile, change{kind: changeWrite, data: data, off: off, appendMode: appendMode})
	if err != nil {
		return uint32(n), h.r.errno("write", err)
	}
	return uint32(n), 0
}

// killSetID clears, as a write or truncate by a process without
// CAP_FSETID must, the set-user-ID bit of the file open as fd and its
// set-group-ID bit if group execute is set (without group execute the bit
// means mandatory locking and stays, as in the kernel). File capabilities
// need no clearing: kmsfs never stores security.capability.
func killSetID(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if mode, kill := withoutSetID(st.Mode); kill {
		return unix.Fchmod(fd, mode)
	}
	return nil
}

// killSetIDAt is killSetID for name in dirfd.
func killSetIDAt(dirfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if mode, kill := withoutSetID(st.Mode); kill {
		return unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// withoutSetID returns the permission bits of mode without the set-ID
// bits a write must kill, and whether there were any.
func withoutSetID(mode uint32) (uint32, bool) {
	if mode&syscall.S_IFMT != syscall.S_IFREG {
		return 0, false
	}
	perm := mode & 07777
	kill := perm & unix.S_ISUID
	if perm&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		kill |= unix.S_ISGID
	}
	return perm &^ kill, kill != 0
}

// Flush drops the POSIX locks of the closing owner on this file (the
// kernel sends FLUSH on every close(2)); data has nothing to do: every
// write reached the backing file already.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	if owner, ok := h.r.locks.flushOwner(ctx); ok {
		h.r.locks.flush(h, owner)
	}
	return 0
}

// Fsync flushes the backing file (data only for fdatasync).
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	var err error
	if flags&1 != 0 { // FUSE_FSYNC_FDATASYNC
		err = unix.Fdatasync(h.raw)
	} else {
		err = unix.Fsync(h.raw)
	}
	return h.r.errno("fsync", err)
}

// Release drops the locks taken through this open file, closes the
// backing descriptor and drops the content reference.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	if h.c != nil {
		h.r.locks.release(h)
	}
	h.fd.Close()
	if h.c != nil {
		h.r.release(h.c)
	}
	return 0
}

// Allocate implements fallocate modes 0 and FALLOC_FL_KEEP_SIZE through
// the content lock; other modes answer EOPNOTSUPP.
func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if !h.writable {
		return syscall.EBADF
	}
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EOPNOTSUPP
	}
	if off > 1<<62 || size > 1<<62 {
		return syscall.EFBIG
	}
	_, err := h.r.change(ctx, h.c, &h.backingFile, change{kind: changeAllocate, off: int64(off), size: int64(size), mode: mode})
	return h.r.errno("fallocate", err)
}

// Lseek answers SEEK_DATA and SEEK_HOLE with the simple valid answer:
// data everywhere up to the end of file, one hole at the end.
func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	if whence != unix.SEEK_DATA && whence != unix.SEEK_HOLE {
		return 0, syscall.EINVAL
	}
	h.c.mu.RLock()
	var size int64
	var err error
	if h.c.cipher != nil {
		size, err = h.file(h.c).Size()
	}
	h.c.mu.RUnlock()
	if err != nil {
		return 0, h.r.errno("lseek", err)
	}
	if off >= uint64(size) {
		return 0, syscall.ENXIO
	}
	if whence == unix.SEEK_DATA {
		return off, 0
	}
	return uint64(size), 0
}
