package cipherdir

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
)

// The backing-file API: every backing file or directory is opened relative
// to a descriptor of CIPHERDIR (or of a directory in it) by OpenBeneath,
// which follows no symlink in any component and never leaves the tree,
// whatever is renamed or swapped underneath meanwhile.

// openat2Broken is set once openat2 answers ENOSYS, so later resolutions
// walk component by component straight away. It caches a fact of the
// running kernel, so nothing ever resets it.
var openat2Broken atomic.Bool

// errNotBeneath: a path handed to OpenBeneath is absolute or has an empty,
// "." or ".." component.
var errNotBeneath = errors.New("not a plain path below the directory")

// OpenBeneath opens rel, a slash-separated path of plain names below the
// directory dirfd, with flags (O_CLOEXEC and O_NOFOLLOW are added) and
// mode. No component may be a symlink, and the resolution never leaves
// dirfd's tree: one openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or,
// for paths longer than PATH_MAX and kernels without openat2, one openat
// with O_NOFOLLOW per component (a path with "..", "." or an empty name is
// refused first), so any depth works. A symlink met on the way fails with
// ELOOP (openat2) or ENOTDIR (openat).
func OpenBeneath(dirfd int, rel string, flags int, mode uint32) (int, error) {
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return -1, fmt.Errorf("%q: %w", rel, errNotBeneath)
		}
	}
	if len(rel) < unix.PathMax && !openat2Broken.Load() {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   uint64(flags),
			Mode:    uint64(mode),
			Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
		})
		switch err {
		case nil:
			return fd, nil
		case unix.ENOSYS:
			openat2Broken.Store(true)
		case unix.EAGAIN, unix.ENAMETOOLONG:
		default:
			return -1, err
		}
	}
	const dirFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	cur := dirfd
	for i, p := range parts {
		f, m := dirFlags, uint32(0)
		if i == len(parts)-1 {
			f, m = flags, mode
		}
		fd, err := unix.Openat(cur, p, f, m)
		if cur != dirfd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

// openDirBeneath opens the directory rel below dirfd as OpenBeneath does,
// as an O_PATH descriptor for *at calls. rel "" or "." is dirfd's own
// directory (a new descriptor of it).
func openDirBeneath(dirfd int, rel string) (int, error) {
	if rel == "" || rel == "." {
		return unix.Openat(dirfd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	return OpenBeneath(dirfd, rel, unix.O_PATH|unix.O_DIRECTORY, 0)
}

// OpenFile opens the backing regular file rel below dirfd for reading (and
// writing when write is set) as OpenBeneath does, non-blocking (a FIFO
// swapped in must not hang a tool) and without updating its access time
// when the caller may ask for that (O_NOATIME needs ownership or
// CAP_FOWNER; without, the open is retried without it). The caller checks
// that it got a regular file.
func OpenFile(dirfd int, rel string, write bool) (int, error) {
	flags := unix.O_RDONLY | unix.O_NONBLOCK
	if write {
		flags = unix.O_RDWR | unix.O_NONBLOCK
	}
	fd, err := OpenBeneath(dirfd, rel, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = OpenBeneath(dirfd, rel, flags, 0)
	}
	return fd, err
}

// ReadHeader reads the header of the open backing file fd into hb (at
// least chunk.HeaderSize bytes) and parses it. The access time is left
// alone where O_NOATIME is allowed: it is set on the descriptor for the
// one read when it was not already (opening a file must not look like
// reading it). A file shorter than the header fails with ErrBadHeader.
func ReadHeader(fd int, hb []byte) (chunk.Header, error) {
	hb = hb[:chunk.HeaderSize]
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	noatime := err == nil && fl&unix.O_NOATIME == 0 &&
		func() bool { _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NOATIME); return err == nil }()
	n, err := unix.Pread(fd, hb, 0)
	if noatime {
		unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	}
	if err != nil {
		return chunk.Header{}, fmt.Errorf("read header: %w", err)
	}
	if n < len(hb) {
		return chunk.Header{}, fmt.Errorf("%w: backing file is shorter than the %d-byte header", ErrBadHeader, chunk.HeaderSize)
	}
	h, err := chunk.ParseHeader(hb)
	if err != nil {
		return chunk.Header{}, fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	return h, nil
}

// ChunkSpanBytes returns the backing byte range [start, end) of chunks
// first..last (inclusive) of a file whose plaintext size is size (after
// the change that writes them), from the format's own size function:
// chunk i starts where a file of i full chunks ends, and the span ends
// where a file ending in its last chunk does.
func ChunkSpanBytes(chunkSize int, first, last, size int64) (start, end int64) {
	cs := int64(chunkSize)
	start = chunk.CiphertextSize(first*cs, chunkSize)
	end = chunk.CiphertextSize(min(size, (last+1)*cs), chunkSize)
	return start, end
}

// Reserve allocates the backing bytes [start, end) of fd with
// fallocate(FALLOC_FL_KEEP_SIZE) before chunks are written there: it
// allocates all or fails (ENOSPC, EDQUOT) before a byte is written, so a
// full disk can never leave a half-written chunk, and it never changes the
// file size. A backing file system without fallocate answers an error
// matching errors.ErrUnsupported (ReserveUnsupported); callers then write
// unreserved.
func Reserve(fd int, start, end int64) error {
	if end <= start {
		return nil
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, start, end-start); err != nil {
		return fmt.Errorf("reserve backing bytes %d-%d: %w", start, end, err)
	}
	return nil
}

// ReserveUnsupported reports whether a Reserve error means the backing
// file system has no fallocate.
func ReserveUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}
