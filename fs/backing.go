package fs

import (
	"fmt"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/names"
)

// dirFD is a backing directory descriptor for one operation: opened for
// it (own), lent by the directory cache (cached), or the root's, which is
// shared and never closed here. close must be called exactly once.
type dirFD struct {
	fd     int
	own    bool
	cached *dirEntry
	cache  *dirCache
}

func (d dirFD) close() {
	switch {
	case d.cached != nil:
		d.cache.release(d.cached)
	case d.own:
		unix.Close(d.fd)
	}
}

// backingRel returns the path of in relative to CIPHERDIR in backing names
// ("" for the root). A node no longer in any directory (unlinked) has no
// path: ENOENT. With encrypted names each component is encrypted under
// its parent's directory ID; an ID not known yet is read from the parent
// resolved by the components before it, so a cold path costs one ID read
// per directory, not a walk per directory.
func (r *root) backingRel(in *gofs.Inode) ([]string, error) {
	type step struct {
		name   string
		parent *gofs.Inode
	}
	var steps []step
	for p := in; !p.IsRoot(); {
		name, parent := p.Parent()
		if parent == nil {
			return nil, syscall.ENOENT
		}
		steps = append(steps, step{name, parent})
		p = parent
	}
	parts := make([]string, len(steps))
	for i := range steps {
		s := steps[len(steps)-1-i] // root first
		dirfd := r.fd
		var d dirFD
		if e := nodeOf(s.parent).dirID.Load(); r.names != nil && i > 0 && (e == nil || !r.dirIDFresh(s.parent, e, false)) {
			var err error
			if d, err = r.resolveDir(parts[:i]); err != nil {
				return nil, err
			}
			dirfd = d.fd
		}
		b, _, err := r.entryName(s.parent, dirfd, s.name, false)
		d.close()
		if err != nil {
			return nil, err
		}
		parts[i] = b
	}
	return parts, nil
}

// openDir returns an O_PATH descriptor of the backing directory of dir.
// It never follows a symlink: one openat2 with RESOLVE_NO_SYMLINKS and
// RESOLVE_BENEATH, or, for paths longer than PATH_MAX or kernels without
// openat2, one openat with O_NOFOLLOW per component, so any depth works.
func (r *root) openDir(dir *gofs.Inode) (dirFD, error) {
	if dir.IsRoot() {
		return dirFD{fd: r.fd}, nil
	}
	// A cached descriptor needs no path (and so no name encrypted).
	if d, ok := r.dirs.get(dir); ok {
		return d, nil
	}
	parts, err := r.backingRel(dir)
	if err != nil {
		return dirFD{}, err
	}
	if len(parts) == 0 {
		return dirFD{fd: r.fd}, nil
	}
	d, err := r.resolveDir(parts)
	if err != nil {
		return dirFD{}, err
	}
	return r.dirs.put(dir, d.fd), nil
}

// resolveDir opens the backing directory at parts (relative to CIPHERDIR,
// at least one component) as openDir describes (cipherdir.OpenBeneath).
func (r *root) resolveDir(parts []string) (dirFD, error) {
	fd, err := cipherdir.OpenBeneath(r.fd, strings.Join(parts, "/"), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return dirFD{}, err
	}
	return dirFD{fd: fd, own: true}, nil
}

// locate returns the backing directory holding in and in's backing name
// there. The root is located as (CIPHERDIR, ".").
func (r *root) locate(in *gofs.Inode) (dirFD, string, error) {
	if in.IsRoot() {
		return dirFD{fd: r.fd}, ".", nil
	}
	name, parent := in.Parent()
	if parent == nil {
		return dirFD{}, "", syscall.ENOENT
	}
	d, err := r.openDir(parent)
	if err != nil {
		return dirFD{}, "", err
	}
	bn, _, err := r.entryName(parent, d.fd, name, false)
	if err != nil {
		d.close()
		return dirFD{}, "", err
	}
	return d, bn, nil
}

// statMask is what every stat asks for: the basic fields and the birth
// time, which becomes the inode generation.
const statMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// statAt stats name in dirfd without following a final symlink ("" with
// AT_EMPTY_PATH stats dirfd itself).
func statAt(dirfd int, name string, st *unix.Statx_t) error {
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_SYNC_AS_STAT
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	return unix.Statx(dirfd, name, flags, statMask, st)
}

// stableAttr returns the identity of a backing inode. Hard links have the
// same identity, so go-fuse gives them one Inode. The device is mixed in
// so bind mounts inside CIPHERDIR cannot collide; the birth time tells a
// reused inode number from the file that had it before.
func (r *root) stableAttr(st *unix.Statx_t) gofs.StableAttr {
	return gofs.StableAttr{
		Mode: uint32(st.Mode) & syscall.S_IFMT,
		Ino:  r.ino(unix.Mkdev(st.Dev_major, st.Dev_minor), st.Ino),
		Gen:  genOf(st),
	}
}

// ino maps a backing (device, inode) to the inode number in the mount.
func (r *root) ino(dev, ino uint64) uint64 {
	swap := func(x uint64) uint64 { return x<<32 | x>>32 }
	n := (swap(dev) ^ swap(r.dev)) ^ ino
	if n == 0 || n == 1 || n == ^uint64(0) {
		// Reserved by go-fuse (root and invalid IDs).
		n ^= 1 << 62
	}
	return n
}

func genOf(st *unix.Statx_t) uint64 {
	if st.Mask&unix.STATX_BTIME == 0 || (st.Btime.Sec == 0 && st.Btime.Nsec == 0) {
		return 1
	}
	return uint64(st.Btime.Sec)*1e9 + uint64(st.Btime.Nsec)
}

// fillAttr converts a backing stat into the attributes the mount shows.
// A regular file's size is its plaintext size; a backing size no content
// can have is logged and shown as 0 (reads of it fail with EIO).
func (r *root) fillAttr(st *unix.Statx_t, out *fuse.Attr) {
	out.Ino = r.ino(unix.Mkdev(st.Dev_major, st.Dev_minor), st.Ino)
	out.Size = st.Size
	out.Blocks = st.Blocks
	out.Atime, out.Atimensec = uint64(st.Atime.Sec), st.Atime.Nsec
	out.Mtime, out.Mtimensec = uint64(st.Mtime.Sec), st.Mtime.Nsec
	out.Ctime, out.Ctimensec = uint64(st.Ctime.Sec), st.Ctime.Nsec
	out.Mode = uint32(st.Mode)
	out.Nlink = st.Nlink
	out.Uid = st.Uid
	out.Gid = st.Gid
	out.Rdev = uint32(unix.Mkdev(st.Rdev_major, st.Rdev_minor))
	out.Blksize = st.Blksize
	if r.names != nil && st.Ino == r.rootIno && unix.Mkdev(st.Dev_major, st.Dev_minor) == r.dev && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		// The directory of long symlink targets is the root's but not the
		// user's: a directory's link count is 2 plus its subdirectories.
		var t unix.Statx_t
		if out.Nlink > 2 && statAt(r.fd, names.TargetsDirName, &t) == nil {
			out.Nlink--
		}
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFREG {
		backing := int64(st.Size)
		if whole, torn := tornTail(backing, r.cfg.ChunkSize); torn {
			backing = whole // the first open trims it (torn.go)
		}
		size, err := chunk.PlaintextSize(backing, r.cfg.ChunkSize)
		if err != nil {
			r.log.Error("damaged backing file", "op", "stat", "ino", st.Ino,
				"err", fmt.Errorf("backing size %d: %w", st.Size, err).Error())
			size = 0
		}
		out.Size = uint64(size)
	}
}
