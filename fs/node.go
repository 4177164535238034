package fs

import (
	"context"
	"encoding/binary"
	"errors"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is one inode of the mount (hard links share it: go-fuse finds the
// Inode by StableAttr). It holds no backing path: every operation
// resolves the backing directory afresh from the tree, so renames need no
// bookkeeping here.
type node struct {
	gofs.Inode
	r *root
}

// newChild returns the Inode of a backing entry just stat'ed.
func (n *node) newChild(ctx context.Context, st *unix.Statx_t) *gofs.Inode {
	return n.NewInode(ctx, &node{r: n.r}, n.r.stableAttr(st))
}

// child resolves a name in this directory: the backing directory and the
// backing name. The caller closes the dirFD.
func (n *node) child(name string) (dirFD, string, error) {
	bn, err := backingName(n.IsRoot(), name)
	if err != nil {
		return dirFD{}, "", err
	}
	d, err := n.r.openDir(&n.Inode)
	if err != nil {
		return dirFD{}, "", err
	}
	return d, bn, nil
}

// Lookup finds a child by name; the config file and other internal names
// do not exist in the mount.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d, bn, err := n.child(name)
	if errors.Is(err, errReservedName) {
		return nil, syscall.ENOENT
	}
	if err != nil {
		return nil, n.r.errno("lookup", err)
	}
	defer d.close()
	var st unix.Statx_t
	if err := statAt(d.fd, bn, &st); err != nil {
		return nil, n.r.errno("lookup", err)
	}
	n.r.fillAttr(&st, &out.Attr)
	return n.newChild(ctx, &st), 0
}

// Getattr stats the backing entry (through the open handle when there is
// one, so unlinked open files work) and reports plaintext sizes.
func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st unix.Statx_t
	if h, ok := f.(*handle); ok {
		h.c.mu.RLock()
		err := statAt(h.raw, "", &st)
		h.c.mu.RUnlock()
		if err != nil {
			return n.r.errno("getattr", err)
		}
	} else if dh, ok := f.(*dirHandle); ok {
		// An open directory, possibly removed already.
		if err := statAt(dh.fd, "", &st); err != nil {
			return n.r.errno("getattr", err)
		}
	} else {
		d, name, err := n.r.locate(&n.Inode)
		if err != nil {
			return n.r.errno("getattr", err)
		}
		err = statAt(d.fd, name, &st)
		d.close()
		if err != nil {
			return n.r.errno("getattr", err)
		}
	}
	n.r.fillAttr(&st, &out.Attr)
	return 0
}

// Setattr changes mode, owner, size and times, in that order of owner
// before mode (chown clears set-ID bits) and size before times (so an
// explicit mtime survives the truncate), and returns the final attributes.
func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := n.r.writable(); e != 0 {
		return e
	}
	h, _ := f.(*handle)
	d, name, err := n.r.locate(&n.Inode)
	if err != nil && h == nil {
		return n.r.errno("setattr", err)
	}
	if err == nil {
		defer d.close()
	}
	byFD := err != nil // unlinked but open: work on the descriptor

	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if byFD {
			err = unix.Fchown(h.raw, u, g)
		} else {
			err = unix.Fchownat(d.fd, name, u, g, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return n.r.errno("chown", err)
		}
	}
	if mode, ok := in.GetMode(); ok {
		if byFD {
			err = unix.Fchmod(h.raw, mode)
		} else {
			err = unix.Fchmodat(d.fd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return n.r.errno("chmod", err)
		}
	}
	if size, ok := in.GetSize(); ok {
		if n.StableAttr().Mode != syscall.S_IFREG {
			return syscall.EISDIR
		}
		if h != nil && h.writable {
			_, err = n.r.change(ctx, h.c, &h.backingFile, change{kind: changeTruncate, size: int64(size)})
		} else if !byFD {
			err = n.r.truncatePath(ctx, d.fd, name, int64(size))
		} else {
			err = syscall.EBADF
		}
		if err != nil {
			return n.r.errno("truncate", err)
		}
	}
	if _, ok := in.GetMode(); !ok && in.Valid&fuse.FATTR_KILL_SUIDGID != 0 {
		// A truncate by a process without CAP_FSETID, or a chown: the
		// kernel leaves clearing the set-ID bits to us (mountOptions).
		if byFD {
			err = killSetID(h.raw)
		} else {
			err = killSetIDAt(d.fd, name)
		}
		if err != nil {
			return n.r.errno("setattr", err)
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if in.Valid&fuse.FATTR_ATIME != 0 {
			ts[0] = timespec(in.Valid&fuse.FATTR_ATIME_NOW != 0, in.Atime, in.Atimensec)
		}
		if in.Valid&fuse.FATTR_MTIME != 0 {
			ts[1] = timespec(in.Valid&fuse.FATTR_MTIME_NOW != 0, in.Mtime, in.Mtimensec)
		}
		if byFD {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, procFD(h.raw, ""), ts, 0)
		} else {
			err = unix.UtimesNanoAt(d.fd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return n.r.errno("utimens", err)
		}
	}
	var st unix.Statx_t
	if byFD {
		err = statAt(h.raw, "", &st)
	} else {
		err = statAt(d.fd, name, &st)
	}
	if err != nil {
		return n.r.errno("setattr", err)
	}
	n.r.fillAttr(&st, &out.Attr)
	return 0
}

func timespec(now bool, sec uint64, nsec uint32) unix.Timespec {
	if now {
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// parseDirents appends the linux_dirent64 records in b to entries:
// ino(8) off(8) reclen(2) type(1) name NUL-terminated.
func (r *root) parseDirents(b []byte, isRoot bool, entries []fuse.DirEntry) []fuse.DirEntry {
	for len(b) >= 19 {
		ino := binary.NativeEndian.Uint64(b[0:8])
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		typ := b[18]
		raw := b[19:reclen]
		for i, c := range raw {
			if c == 0 {
				raw = raw[:i]
				break
			}
		}
		b = b[reclen:]
		name, ok := plainName(isRoot, string(raw))
		if !ok {
			continue
		}
		entries = append(entries, fuse.DirEntry{
			Name: name,
			Mode: uint32(typ) << 12, // DT_x is S_IFx >> 12
			Ino:  r.ino(r.dev, ino),
		})
	}
	return entries
}

// newOwner is owner for a regular file the daemon has just created in
// dirfd: it also answers false when the kernel has already given the file
// the right owner, which is the case when the caller's IDs are the
// daemon's (the group is then the daemon's or, in a set-group-ID
// directory, the directory's, as owner would choose).
func (r *root) newOwner(ctx context.Context, dirfd int) (uid, gid int, ok bool) {
	if caller, found := fuse.FromContext(ctx); found && int(caller.Uid) == r.euid && int(caller.Gid) == r.egid {
		return 0, 0, false
	}
	return r.owner(ctx, dirfd)
}

// owner returns the uid and gid a new entry gets when the daemon runs as
// root: the caller's, except that a set-group-ID directory keeps the group
// the backing filesystem gave the entry (gid -1). ok is false when the
// daemon is not root (entries keep the daemon's owner).
func (r *root) owner(ctx context.Context, dirfd int) (uid, gid int, ok bool) {
	if !r.asRoot {
		return 0, 0, false
	}
	caller, found := fuse.FromContext(ctx)
	if !found {
		return 0, 0, false
	}
	uid, gid = int(caller.Uid), int(caller.Gid)
	var st unix.Statx_t
	if statAt(dirfd, "", &st) == nil && st.Mode&syscall.S_ISGID != 0 {
		gid = -1
	}
	return uid, gid, true
}

// finishNew gives a newly made entry (not a regular file) its owner and,
// unless it is a symlink, its final mode (m.finalPerm): exactly m.perm
// once (the caller's umask is already applied, by the kernel or by
// newEntryMode), or under a default ACL the permissions the backing
// filesystem derived from it at creation, untouched (a chmod to other
// bits would rewrite the inherited ACL's mask). A new directory in a
// set-group-ID directory keeps the inherited S_ISGID.
func (n *node) finishNew(ctx context.Context, dirfd int, name string, m newMode, typ uint32) (unix.Statx_t, error) {
	var st unix.Statx_t
	if uid, gid, ok := n.r.owner(ctx, dirfd); ok {
		if err := unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return st, err
		}
	}
	if typ != syscall.S_IFLNK {
		perm := m.perm
		if typ == syscall.S_IFDIR || m.inherit {
			if err := statAt(dirfd, name, &st); err != nil {
				return st, err
			}
			perm = m.finalPerm(uint32(st.Mode))
		}
		if typ == syscall.S_IFDIR {
			perm |= uint32(st.Mode) & syscall.S_ISGID
		}
		if !m.inherit || perm != uint32(st.Mode)&07777 {
			if err := unix.Fchmodat(dirfd, name, perm, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return st, err
			}
		}
	}
	err := statAt(dirfd, name, &st)
	return st, err
}

// Mkdir makes a directory with exactly mode (after the caller's umask) or
// the mode a default ACL gives it (acl.go), and the caller's owner.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := n.r.writable(); e != 0 {
		return nil, e
	}
	d, bn, err := n.child(name)
	if err != nil {
		return nil, n.r.errno("mkdir", err)
	}
	defer d.close()
	m, err := n.r.newEntryMode(d.fd, mode)
	if err != nil {
		return nil, n.r.errno("mkdir", err)
	}
	if err := unix.Mkdirat(d.fd, bn, m.createPerm(0o700)); err != nil {
		return nil, n.r.errno("mkdir", err)
	}
	st, err := n.finishNew(ctx, d.fd, bn, m, syscall.S_IFDIR)
	if err != nil {
		unix.Unlinkat(d.fd, bn, unix.AT_REMOVEDIR)
		return nil, n.r.errno("mkdir", err)
	}
	n.r.fillAttr(&st, &out.Attr)
	return n.newChild(ctx, &st), 0
}

// Mknod makes FIFOs, sockets and (when the daemon may) device nodes; a
// regular file made by mknod(2) is an encrypted empty file like one made
// by open(O_CREAT).
func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := n.r.writable(); e != 0 {
		return nil, e
	}
	d, bn, err := n.child(name)
	if err != nil {
		return nil, n.r.errno("mknod", err)
	}
	defer d.close()
	typ := mode & syscall.S_IFMT
	m, err := n.r.newEntryMode(d.fd, mode)
	if err != nil {
		return nil, n.r.errno("mknod", err)
	}
	var st unix.Statx_t
	if typ == syscall.S_IFREG || typ == 0 {
		_, st, err = n.r.createFile(ctx, d.fd, bn, m, 0, false)
		if err != nil {
			return nil, n.r.errno("mknod", err)
		}
	} else {
		if err := unix.Mknodat(d.fd, bn, typ|m.createPerm(0o600), int(dev)); err != nil {
			return nil, n.r.errno("mknod", err)
		}
		st, err = n.finishNew(ctx, d.fd, bn, m, typ)
		if err != nil {
			unix.Unlinkat(d.fd, bn, 0)
			return nil, n.r.errno("mknod", err)
		}
	}
	n.r.fillAttr(&st, &out.Attr)
	return n.newChild(ctx, &st), 0
}

// Symlink makes a symbolic link owned by the caller. The target is stored
// as given.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := n.r.writable(); e != 0 {
		return nil, e
	}
	d, bn, err := n.child(name)
	if err != nil {
		return nil, n.r.errno("symlink", err)
	}
	defer d.close()
	if err := unix.Symlinkat(target, d.fd, bn); err != nil {
		return nil, n.r.errno("symlink", err)
	}
	st, err := n.finishNew(ctx, d.fd, bn, newMode{}, syscall.S_IFLNK)
	if err != nil {
		unix.Unlinkat(d.fd, bn, 0)
		return nil, n.r.errno("symlink", err)
	}
	n.r.fillAttr(&st, &out.Attr)
	return n.newChild(ctx, &st), 0
}

// Readlink returns a symlink's target.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	d, name, err := n.r.locate(&n.Inode)
	if err != nil {
		return nil, n.r.errno("readlink", err)
	}
	defer d.close()
	buf := make([]byte, unix.PathMax+1)
	nb, err := unix.Readlinkat(d.fd, name, buf)
	if err != nil {
		return nil, n.r.errno("readlink", err)
	}
	return buf[:nb], 0
}

// Link makes a hard link; the new name shares the inode, and so the data
// key, of the target.
func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := n.r.writable(); e != 0 {
		return nil, e
	}
	t, ok := target.(*node)
	if !ok || t.r != n.r {
		return nil, syscall.EXDEV
	}
	td, tname, err := n.r.locate(&t.Inode)
	if err != nil {
		return nil, n.r.errno("link", err)
	}
	defer td.close()
	d, bn, err := n.child(name)
	if err != nil {
		return nil, n.r.errno("link", err)
	}
	defer d.close()
	if err := unix.Linkat(td.fd, tname, d.fd, bn, 0); err != nil {
		return nil, n.r.errno("link", err)
	}
	var st unix.Statx_t
	if err := statAt(d.fd, bn, &st); err != nil {
		return nil, n.r.errno("link", err)
	}
	n.r.fillAttr(&st, &out.Attr)
	return n.newChild(ctx, &st), 0
}

// Unlink removes a non-directory.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, 0)
}

// Rmdir removes an empty directory.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, unix.AT_REMOVEDIR)
}

func (n *node) remove(name string, flags int) syscall.Errno {
	if e := n.r.writable(); e != 0 {
		return e
	}
	d, bn, err := n.child(name)
	if errors.Is(err, errReservedName) {
		return syscall.ENOENT
	}
	if err != nil {
		return n.r.errno("unlink", err)
	}
	defer d.close()
	err = unix.Unlinkat(d.fd, bn, flags)
	if flags&unix.AT_REMOVEDIR != 0 {
		n.r.dirs.clear()
	}
	return n.r.errno("unlink", err)
}

// Rename moves name to newName in newParent with renameat2 flags: 0,
// RENAME_NOREPLACE, RENAME_EXCHANGE (and RENAME_WHITEOUT when the backing
// filesystem allows it).
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.r.writable(); e != 0 {
		return e
	}
	np, ok := newParent.(*node)
	if !ok || np.r != n.r {
		return syscall.EXDEV
	}
	d1, b1, err := n.child(name)
	if err != nil {
		return n.r.errno("rename", err)
	}
	defer d1.close()
	d2, b2, err := np.child(newName)
	if err != nil {
		return n.r.errno("rename", err)
	}
	defer d2.close()
	err = unix.Renameat2(d1.fd, b1, d2.fd, b2, uint(flags))
	// Cached descriptors follow their directories through a rename; the
	// cache is emptied anyway when a directory moves or is replaced (see
	// dirCache). The kernel has looked up the source, so an unknown one
	// counts as a directory; an unknown target did not exist.
	src, dst := n.GetChild(name), np.GetChild(newName)
	if src == nil || isDir(src) || (dst != nil && isDir(dst)) {
		n.r.dirs.clear()
	}
	return n.r.errno("rename", err)
}

func isDir(in *gofs.Inode) bool { return in.StableAttr().Mode == syscall.S_IFDIR }

// Statfs reports the backing filesystem's numbers.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s syscall.Statfs_t
	if err := syscall.Fstatfs(n.r.fd, &s); err != nil {
		return n.r.errno("statfs", err)
	}
	out.FromStatfsT(&s)
	return 0
}

// Create makes a new encrypted file and opens it. The kernel sends
// CREATE only after its lookup found no entry, and it skips its own
// permission checks (default_permissions) and O_TRUNC for the file it
// believes is new, so a name that appeared since the lookup is never
// opened here: that would hand any caller, O_TRUNC included, another
// user's file. With O_EXCL the answer is EEXIST, as open(2) gives. Without
// it the answer is ESTALE: the kernel then repeats the whole open once
// with a fresh lookup (do_filp_open, LOOKUP_REVAL), finds the file and
// opens it with its usual checks, so the caller sees what open(2) on a
// local file system gives (EEXIST would reach the caller as is: the
// kernel retries only on ESTALE). A second race on that retry reaches
// the caller as ESTALE.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if e := n.r.writable(); e != 0 {
		return nil, nil, 0, e
	}
	d, bn, err := n.child(name)
	if err != nil {
		return nil, nil, 0, n.r.errno("create", err)
	}
	defer d.close()
	m, err := n.r.newEntryMode(d.fd, mode)
	if err != nil {
		return nil, nil, 0, n.r.errno("create", err)
	}
	if n.r.beforeCreate != nil {
		n.r.beforeCreate(d.fd, bn)
	}
	h, st, err := n.r.createFile(ctx, d.fd, bn, m, flags, true)
	if errors.Is(err, syscall.EEXIST) && flags&syscall.O_EXCL == 0 {
		return nil, nil, 0, syscall.ESTALE
	}
	if err != nil {
		return nil, nil, 0, n.r.errno("create", err)
	}
	n.r.fillAttr(&st, &out.Attr)
	return n.newChild(ctx, &st), h, 0, 0
}

// Open opens a regular file: its key is unwrapped (through the cached key
// service) unless another handle already holds it.
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		if e := n.r.writable(); e != 0 {
			return nil, 0, e
		}
	}
	d, name, err := n.r.locate(&n.Inode)
	if err != nil {
		return nil, 0, n.r.errno("open", err)
	}
	defer d.close()
	h, err := n.r.openFile(ctx, d.fd, name, flags)
	if err != nil {
		return nil, 0, n.r.errno("open", err)
	}
	return h, 0, 0
}

// Fsync flushes a file through its handle, and a directory (fsync on a
// directory descriptor, which programs use after a rename to make it
// durable) by syncing the backing directory.
func (n *node) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	if h, ok := f.(*handle); ok {
		return h.Fsync(ctx, flags)
	}
	if dh, ok := f.(*dirHandle); ok {
		return n.r.errno("fsync", unix.Fsync(dh.fd))
	}
	d, err := n.r.openDir(&n.Inode)
	if err != nil {
		return n.r.errno("fsync", err)
	}
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	d.close()
	if err != nil {
		return n.r.errno("fsync", err)
	}
	defer unix.Close(fd)
	return n.r.errno("fsync", unix.Fsync(fd))
}
