package fs

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/names"
)

// node is one inode of the mount (hard links share it: go-fuse finds the
// Inode by StableAttr). It holds no backing path: every operation
// resolves the backing directory afresh from the tree, so renames need no
// bookkeeping here.
type node struct {
	gofs.Inode
	r *root

	// Kept once known, for encrypted-names (v2) trees only: a symlink's
	// target never changes; a directory's ID changes only through the
	// repair of an empty directory, which in shared mode another host may
	// do (names.go, dirIDFresh).
	dirID   atomic.Pointer[dirIDEntry] // a directory's ID
	linkLen atomic.Int64               // a symlink's plaintext target length + 1 (0: unknown)
}

// newChild returns the Inode of a backing entry just stat'ed.
func (n *node) newChild(ctx context.Context, st *unix.Statx_t) *gofs.Inode {
	return n.NewInode(ctx, &node{r: n.r}, n.r.stableAttr(st))
}

// child resolves a name in this directory: the backing directory and the
// backing name. The caller closes the dirFD.
func (n *node) child(name string) (dirFD, string, error) {
	d, bn, _, err := n.childFor(name, false)
	return d, bn, err
}

// childFor is child that also returns, for a long encrypted name, the
// encoded name its sidecar holds; create says the caller is about to make
// the entry (see root.entryName).
func (n *node) childFor(name string, create bool) (dirFD, string, string, error) {
	d, err := n.r.openDir(&n.Inode)
	if err != nil {
		return dirFD{}, "", "", err
	}
	bn, long, err := n.r.entryName(&n.Inode, d.fd, name, create)
	if err != nil {
		d.close()
		return dirFD{}, "", "", err
	}
	return d, bn, long, nil
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
	child := n.newChild(ctx, &st)
	if err := n.r.fixLinkSize(child, d.fd, bn, &out.Attr); err != nil {
		return nil, n.r.errno("lookup", err)
	}
	return child, 0
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
	return n.r.errno("getattr", n.r.fixLinkSize(&n.Inode, -1, "", &out.Attr))
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
	return n.r.errno("setattr", n.r.fixLinkSize(&n.Inode, -1, "", &out.Attr))
}

func timespec(now bool, sec uint64, nsec uint32) unix.Timespec {
	if now {
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// parseDirents appends the linux_dirent64 records in b to entries:
// ino(8) off(8) reclen(2) type(1) name NUL-terminated. plain gives each
// backing name's name in the mount, or false to leave it out.
func (r *root) parseDirents(b []byte, plain func(string) (string, bool), entries []fuse.DirEntry) []fuse.DirEntry {
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
		name, ok := plain(string(raw))
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
	d, bn, long, err := n.childFor(name, true)
	if err != nil {
		return nil, n.r.errno("mkdir", err)
	}
	defer d.close()
	m, err := n.r.newEntryMode(d.fd, mode)
	if err != nil {
		return nil, n.r.errno("mkdir", err)
	}
	if n.r.names != nil {
		return n.mkdirV2(ctx, d.fd, bn, long, m, out)
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

// mkdirV2 makes a directory of an encrypted-names tree in the order of
// names/FORMAT.md ("mkdir"), so that no crash and no second mount ever
// leaves a directory visible under its name without its ID: it is made
// under a temporary name, given its ID file (durable), its mode and
// owner, and only then renamed into place without replacing anything.
func (n *node) mkdirV2(ctx context.Context, dirfd int, bn, long string, m newMode, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	tmp := cipherdir.TempName()
	if err := unix.Mkdirat(dirfd, tmp, m.createPerm(0o700)); err != nil {
		return nil, n.r.errno("mkdir", err)
	}
	id := names.NewDirID()
	err := n.r.initDir(dirfd, tmp, id)
	var st unix.Statx_t
	if err == nil {
		_, err = n.finishNew(ctx, dirfd, tmp, m, syscall.S_IFDIR)
	}
	if err == nil && long != "" {
		err = cipherdir.EnsureSidecar(dirfd, long)
	}
	if err == nil {
		err = renameNoReplace(dirfd, tmp, bn)
	}
	if err == nil {
		err = statAt(dirfd, bn, &st)
	}
	if err != nil {
		cipherdir.RemoveTempDir(dirfd, tmp)
		return nil, n.r.errno("mkdir", err)
	}
	n.r.fillAttr(&st, &out.Attr)
	child := n.newChild(ctx, &st)
	nodeOf(child).dirID.Store(&dirIDEntry{id: id, at: time.Now()})
	return child, 0
}

// initDir writes the ID file of the new backing directory name in dirfd
// and makes its directory entry durable.
func (r *root) initDir(dirfd int, name string, id names.DirID) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := cipherdir.WriteDirID(fd, r.names, id); err != nil {
		return err
	}
	return unix.Fsync(fd)
}

// renameNoReplace renames from to to in dirfd, failing with EEXIST when to
// exists. A backing filesystem without RENAME_NOREPLACE (EINVAL) gets a
// check and a plain rename, which is exact on one host and racy only
// against another host creating the same name at the same instant.
func renameNoReplace(dirfd int, from, to string) error {
	err := unix.Renameat2(dirfd, from, dirfd, to, unix.RENAME_NOREPLACE)
	if err != unix.EINVAL {
		return err
	}
	var st unix.Statx_t
	if err := statAt(dirfd, to, &st); err == nil {
		return unix.EEXIST
	} else if err != unix.ENOENT {
		return err
	}
	return unix.Renameat(dirfd, from, dirfd, to)
}

// beforeEntry makes sure the sidecar of a long encrypted name exists
// before an entry appears under its hashed name (names/FORMAT.md, "Long
// names"); a no-op for short and plaintext names.
func (r *root) beforeEntry(dirfd int, long string) error {
	if long == "" {
		return nil
	}
	return cipherdir.EnsureSidecar(dirfd, long)
}

// afterEntry checks again, once the entry exists, that its sidecar does:
// another mount removing the same long name at the same time may have
// removed it after beforeEntry. A failure is logged (the entry exists; fsck
// reports a hashed entry without sidecar).
func (r *root) afterEntry(dirfd int, long string) {
	if long == "" {
		return
	}
	if err := cipherdir.EnsureSidecar(dirfd, long); err != nil {
		r.log.Error("could not write a long name's sidecar: the entry is left out of listings until kmsfs fsck", "err", err.Error())
	}
}

// Mknod makes FIFOs, sockets and (when the daemon may) device nodes; a
// regular file made by mknod(2) is an encrypted empty file like one made
// by open(O_CREAT).
func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := n.r.writable(); e != 0 {
		return nil, e
	}
	d, bn, long, err := n.childFor(name, true)
	if err != nil {
		return nil, n.r.errno("mknod", err)
	}
	defer d.close()
	typ := mode & syscall.S_IFMT
	m, err := n.r.newEntryMode(d.fd, mode)
	if err != nil {
		return nil, n.r.errno("mknod", err)
	}
	if err := n.r.beforeEntry(d.fd, long); err != nil {
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
	n.r.afterEntry(d.fd, long)
	n.r.fillAttr(&st, &out.Attr)
	return n.newChild(ctx, &st), 0
}

// Symlink makes a symbolic link owned by the caller. The target is stored
// as given, or encrypted (names/FORMAT.md, "Symlink targets").
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := n.r.writable(); e != 0 {
		return nil, e
	}
	d, bn, long, err := n.childFor(name, true)
	if err != nil {
		return nil, n.r.errno("symlink", err)
	}
	defer d.close()
	link := target
	if n.r.names != nil {
		if link, err = cipherdir.WriteTarget(n.r.fd, n.r.names, target); err != nil {
			return nil, n.r.errno("symlink", err)
		}
	}
	if err := n.r.beforeEntry(d.fd, long); err != nil {
		n.r.dropLongTarget(link)
		return nil, n.r.errno("symlink", err)
	}
	if err := unix.Symlinkat(link, d.fd, bn); err != nil {
		if n.r.names != nil {
			n.r.dropLongTarget(link)
		}
		return nil, n.r.errno("symlink", err)
	}
	st, err := n.finishNew(ctx, d.fd, bn, newMode{}, syscall.S_IFLNK)
	if err != nil {
		unix.Unlinkat(d.fd, bn, 0)
		if n.r.names != nil {
			n.r.dropLongTarget(link)
		}
		return nil, n.r.errno("symlink", err)
	}
	n.r.afterEntry(d.fd, long)
	n.r.fillAttr(&st, &out.Attr)
	child := n.newChild(ctx, &st)
	if n.r.names != nil {
		out.Attr.Size = uint64(len(target))
		nodeOf(child).linkLen.Store(int64(len(target)) + 1)
	}
	return child, 0
}

// Readlink returns a symlink's target, decrypted in an encrypted-names
// tree.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	d, name, err := n.r.locate(&n.Inode)
	if err != nil {
		return nil, n.r.errno("readlink", err)
	}
	defer d.close()
	t, err := n.r.target(n, d.fd, name)
	if err != nil {
		return nil, n.r.errno("readlink", err)
	}
	return []byte(t), 0
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
	d, bn, long, err := n.childFor(name, true)
	if err != nil {
		return nil, n.r.errno("link", err)
	}
	defer d.close()
	if err := n.r.beforeEntry(d.fd, long); err != nil {
		return nil, n.r.errno("link", err)
	}
	if err := unix.Linkat(td.fd, tname, d.fd, bn, 0); err != nil {
		return nil, n.r.errno("link", err)
	}
	n.r.afterEntry(d.fd, long)
	var st unix.Statx_t
	if err := statAt(d.fd, bn, &st); err != nil {
		return nil, n.r.errno("link", err)
	}
	n.r.fillAttr(&st, &out.Attr)
	child := n.newChild(ctx, &st)
	if err := n.r.fixLinkSize(child, d.fd, bn, &out.Attr); err != nil {
		return nil, n.r.errno("link", err)
	}
	return child, 0
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
	d, bn, long, err := n.childFor(name, false)
	if errors.Is(err, errReservedName) {
		return syscall.ENOENT
	}
	if err != nil {
		return n.r.errno("unlink", err)
	}
	defer d.close()
	var oldLink string
	switch {
	case flags&unix.AT_REMOVEDIR != 0 && n.r.names != nil:
		err = n.r.rmdirV2(d.fd, bn)
	default:
		if c := n.GetChild(name); n.r.names != nil && (c == nil || c.StableAttr().Mode == syscall.S_IFLNK) {
			oldLink = n.r.longTargetOf(d.fd, bn)
		}
		err = unix.Unlinkat(d.fd, bn, flags)
	}
	if flags&unix.AT_REMOVEDIR != 0 {
		n.r.dirs.clear()
	}
	if err == nil {
		n.r.dropSidecar(d.fd, bn, long)
		n.r.dropLongTarget(oldLink)
	}
	return n.r.errno("unlink", err)
}

// rmdirV2 removes the backing directory bn in dirfd of an encrypted-names
// tree (names/FORMAT.md, "rmdir"): ENOTEMPTY while it holds a user entry;
// otherwise kmsfs's own entries (ID file last) go, then the directory. If
// the rmdir still fails (another mount created an entry meanwhile, or a
// foreign file is there), the same ID is written back so the directory's
// entries stay readable.
func (r *root) rmdirV2(dirfd int, bn string) error {
	fd, err := unix.Openat(dirfd, bn, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ELOOP {
		return unix.ENOTDIR
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if used, err := cipherdir.HasUserEntries(fd); err != nil {
		return err
	} else if used {
		return unix.ENOTEMPTY
	}
	id, idErr := cipherdir.ReadDirID(fd, r.names)
	if err := cipherdir.ClearInternal(fd); err != nil {
		return err
	}
	err = unix.Unlinkat(dirfd, bn, unix.AT_REMOVEDIR)
	if err != nil && idErr == nil {
		if werr := cipherdir.WriteDirID(fd, r.names, id); werr != nil && werr != unix.EEXIST && !errors.Is(werr, unix.EEXIST) {
			r.log.Error("rmdir failed and the directory's ID file could not be written back", "err", werr.Error())
		}
	}
	return err
}

// emptyForReplace prepares the backing entry bn in dirfd, when it is a
// directory, to be replaced by a rename: ENOTEMPTY while it holds a user
// entry, else its internal entries are removed (as rmdirV2 does) and the
// returned function, called once the rename is done, writes its ID back
// if the rename failed. For anything else it does nothing.
func (r *root) emptyForReplace(dirfd int, bn string) (func(failed bool), error) {
	fd, err := unix.Openat(dirfd, bn, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil // not a directory, or not there: nothing to prepare
	}
	used, err := cipherdir.HasUserEntries(fd)
	if err != nil || used {
		unix.Close(fd)
		if used {
			return nil, unix.ENOTEMPTY
		}
		return nil, err
	}
	id, idErr := cipherdir.ReadDirID(fd, r.names)
	if err := cipherdir.ClearInternal(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return func(failed bool) {
		defer unix.Close(fd)
		if !failed || idErr != nil {
			return
		}
		if err := cipherdir.WriteDirID(fd, r.names, id); err != nil && !errors.Is(err, unix.EEXIST) {
			r.log.Error("rename failed and the replaced directory's ID file could not be written back", "err", err.Error())
		}
	}, nil
}

// Rename moves name to newName in newParent with renameat2 flags: 0,
// RENAME_NOREPLACE, RENAME_EXCHANGE (and RENAME_WHITEOUT when the backing
// filesystem allows it). With encrypted names, a long destination name's
// sidecar is written first and a long source name's removed after; an
// exchange moves no name, so both sidecars stay.
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := n.r.writable(); e != 0 {
		return e
	}
	np, ok := newParent.(*node)
	if !ok || np.r != n.r {
		return syscall.EXDEV
	}
	d1, b1, long1, err := n.childFor(name, false)
	if err != nil {
		return n.r.errno("rename", err)
	}
	defer d1.close()
	d2, b2, long2, err := np.childFor(newName, true)
	if err != nil {
		return n.r.errno("rename", err)
	}
	defer d2.close()
	exchange := flags&unix.RENAME_EXCHANGE != 0
	var oldLink string
	if n.r.names != nil && !exchange {
		if err := n.r.beforeEntry(d2.fd, long2); err != nil {
			return n.r.errno("rename", err)
		}
		if c := np.GetChild(newName); c == nil || c.StableAttr().Mode == syscall.S_IFLNK {
			oldLink = n.r.longTargetOf(d2.fd, b2)
		}
	}
	var restore func(failed bool)
	if n.r.names != nil && !exchange && flags&unix.RENAME_NOREPLACE == 0 {
		// A directory replaced by rename must be empty for the backing
		// filesystem too: its ID file goes first, and comes back if the
		// rename fails.
		if restore, err = n.r.emptyForReplace(d2.fd, b2); err != nil {
			return n.r.errno("rename", err)
		}
	}
	err = unix.Renameat2(d1.fd, b1, d2.fd, b2, uint(flags))
	if restore != nil {
		restore(err != nil)
	}
	// Cached descriptors follow their directories through a rename; the
	// cache is emptied anyway when a directory moves or is replaced (see
	// dirCache). The kernel has looked up the source, so an unknown one
	// counts as a directory; an unknown target did not exist.
	src, dst := n.GetChild(name), np.GetChild(newName)
	if src == nil || isDir(src) || (dst != nil && isDir(dst)) {
		n.r.dirs.clear()
	}
	if err == nil && n.r.names != nil && !exchange {
		n.r.afterEntry(d2.fd, long2)
		n.r.dropSidecar(d1.fd, b1, long1)
		n.r.dropLongTarget(oldLink)
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
	d, bn, long, err := n.childFor(name, true)
	if err != nil {
		return nil, nil, 0, n.r.errno("create", err)
	}
	defer d.close()
	m, err := n.r.newEntryMode(d.fd, mode)
	if err != nil {
		return nil, nil, 0, n.r.errno("create", err)
	}
	if err := n.r.beforeEntry(d.fd, long); err != nil {
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
	n.r.afterEntry(d.fd, long)
	n.r.fillAttr(&st, &out.Attr)
	return n.newChild(ctx, &st), h, n.r.openFlags(flags), 0
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
	h, fuseFlags, err := n.r.openNode(ctx, n, d.fd, name, flags)
	if err != nil {
		return nil, 0, n.r.errno("open", err)
	}
	return h, fuseFlags, 0
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
