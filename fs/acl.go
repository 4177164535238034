package fs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// POSIX ACLs.
//
// kmsfs stores ACLs as the backing filesystem's own: system.posix_acl_access
// and system.posix_acl_default pass through to the backing entry (getxattr,
// setxattr, removexattr), which keeps the mode's group bits and the ACL
// mask in step as it does for any program. mountOptions asks the kernel for
// three capabilities:
//
//   - FUSE_POSIX_ACL: the kernel checks permissions against access ACLs
//     itself (it implies default_permissions), reading
//     system.posix_acl_access through getxattr and caching the result per
//     inode. It drops the cached ACLs of an inode on setxattr and
//     removexattr of an ACL and on every setattr (chmod rewrites the mask),
//     so changes made through the mount apply at once. A change made to the
//     backing tree directly is seen once the kernel forgets the inode.
//   - FUSE_DONT_MASK: with ACLs, the kernel leaves the caller's umask to the
//     filesystem, because a new entry under a directory with a default ACL
//     takes its permissions from that ACL and the requested mode, not from
//     the umask. CREATE, MKDIR and MKNOD then carry the requested mode and
//     the umask separately (rawFS hands the umask on, see withUmask).
//   - FUSE_SETXATTR_EXT: the kernel says when setting an access ACL must
//     clear the set-group-ID bit (see xattrKillSGID).
//
// How a new entry gets its mode (newEntryMode): when the backing parent
// has a default ACL, the entry is created with the requested mode and the
// backing filesystem (which implements ACLs, or it could not hold the
// default ACL) gives it the inherited ACLs exactly as it would to any
// creator: the access ACL is the default ACL masked by the mode
// (posix_acl_create), a directory also gets the default ACL, and the
// daemon's umask is ignored. kmsfs then changes only the owner and set-ID
// bits. Otherwise the requested mode minus the caller's umask is applied,
// as before. Setting the daemon's umask to the caller's for the create is not
// an option: the umask is per process and requests run in parallel; and
// parsing the default ACL to compute the mode ourselves would duplicate
// what the backing filesystem does, with its corner cases. The parent's
// default ACL is read just before the entry is made: a default ACL set or
// removed in between (two racing operations) gives the entry either
// outcome, never a mode beyond the requested one.
//
// When the kernel grants none of these, nothing changes: the kernel
// applies the umask, does not look at ACLs, and kmsfs sets the mode it is
// sent as it always did.

const (
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
)

// kernelCaps are the capabilities of interest that the kernel granted at
// INIT; rawFS.Init sets them before the first request is served.
type kernelCaps struct {
	posixACL bool // FUSE_POSIX_ACL: the kernel checks ACLs
	dontMask bool // FUSE_DONT_MASK: the umask is ours to apply
}

// Init implements fuse.RawFileSystem: it records which of the capabilities
// mountOptions asked for (want) the kernel granted. go-fuse grants the
// requested capabilities the kernel offers, so granted = offered & want.
func (w *rawFS) Init(s *fuse.Server) {
	w.RawFileSystem.Init(s)
	granted := s.KernelSettings().Flags64() & w.want
	w.caps.posixACL = granted&fuse.CAP_POSIX_ACL != 0
	w.caps.dontMask = granted&fuse.CAP_DONT_MASK != 0
}

// The caller's umask travels from rawFS to the node in the mode argument
// of Create, Mkdir and Mknod (go-fuse's bridge hands nodes the mode but not
// the umask): bit 30 says a umask is there, bits 20 to 28 hold it. Modes
// use only the low 16 bits (S_IFMT and 07777).
const (
	umaskCarried = 1 << 30
	umaskShift   = 20
)

// withUmask returns mode carrying umask when the kernel left the umask to
// us (FUSE_DONT_MASK), and mode as it is otherwise (the kernel applied it).
func (w *rawFS) withUmask(mode, umask uint32) uint32 {
	if !w.caps.dontMask {
		return mode
	}
	return mode | umaskCarried | (umask&0o777)<<umaskShift
}

// splitUmask undoes withUmask: the mode without the umask bits, and the
// umask if one was carried.
func splitUmask(mode uint32) (plain, umask uint32, carried bool) {
	if mode&umaskCarried == 0 {
		return mode, 0, false
	}
	return mode &^ (umaskCarried | 0o777<<umaskShift), mode >> umaskShift & 0o777, true
}

// newMode is how a new entry gets its permission bits.
type newMode struct {
	// perm is the mode to give the entry (07777), the caller's umask
	// applied; with inherit it is the requested mode, of which the backing
	// filesystem's default ACL inheritance keeps a subset.
	perm uint32
	// inherit: the backing parent has a default ACL. The entry is created
	// with perm and keeps the permissions the backing filesystem derived
	// from the ACL; only set-ID bits are added afterwards.
	inherit bool
}

// createPerm is the mode to create the backing entry with: private (the
// owner's bits the daemon needs to finish the entry: a key record, a
// directory ID file), and when the entry inherits a default ACL also
// perm's permission bits, by which the backing filesystem masks the ACL
// (u::, the mask and o:: keep only what the mode allows).
func (m newMode) createPerm(private uint32) uint32 {
	if m.inherit {
		return m.perm&0o777 | private
	}
	return private
}

// finalPerm is the mode to leave a new entry with, given its mode st right
// after creation with createPerm: perm, or with inherit the permission
// bits the backing filesystem derived from the ACL, masked by perm (which
// takes back what private added to the owner's), plus the set-ID and
// sticky bits asked for. A chmod to it then leaves the ACL as inheriting
// with mode perm would have made it.
func (m newMode) finalPerm(st uint32) uint32 {
	if m.inherit {
		return m.perm&0o7000 | st&m.perm&0o777
	}
	return m.perm
}

// newEntryMode decides the mode of an entry about to be made in the
// backing directory dirfd from the mode of a CREATE, MKDIR or MKNOD
// request (the umask in it or already applied; see withUmask). See the
// comment at the top of this file.
func (r *root) newEntryMode(dirfd int, mode uint32) (newMode, error) {
	plain, umask, carried := splitUmask(mode)
	perm := plain & 0o7777
	if !carried {
		return newMode{perm: perm}, nil
	}
	inherit, err := hasDefaultACL(dirfd)
	if err != nil {
		return newMode{}, err
	}
	if inherit {
		return newMode{perm: perm, inherit: true}, nil
	}
	return newMode{perm: perm &^ umask}, nil
}

// hasDefaultACL reports whether the backing directory dirfd (an O_PATH
// descriptor) has a default ACL. A backing filesystem without ACLs has
// none.
func hasDefaultACL(dirfd int) (bool, error) {
	sz, err := unix.Getxattr(procFD(dirfd, ""), xattrACLDefault, nil)
	switch err {
	case nil:
		return sz > 0, nil
	case syscall.ENODATA, syscall.EOPNOTSUPP:
		return false, nil
	}
	return false, err
}

// isPosixACLXattr reports the two attributes that hold POSIX ACLs. They
// are the backing entry's own ACLs, passed through in clear (the kernel
// reads and checks them), never encrypted like user attributes.
func isPosixACLXattr(name string) bool {
	return name == xattrACLAccess || name == xattrACLDefault
}

// getPosixACL reads an ACL attribute of the backing entry. When the
// kernel checks ACLs itself, a backing filesystem without ACL support
// answers "no ACL" (ENODATA): the kernel takes EOPNOTSUPP as a failure of
// every permission check that consults the ACL (it accepts EOPNOTSUPP only
// from a daemon without getxattr at all); getfacl copes with either.
func (n *node) getPosixACL(attr string, dest []byte) (uint32, syscall.Errno) {
	sz, err := n.getBacking(attr, dest)
	switch {
	case err == syscall.ERANGE:
		return sz, syscall.ERANGE
	case err == syscall.EOPNOTSUPP && n.r.caps.posixACL:
		return 0, syscall.ENODATA
	}
	return sz, n.r.errno("getxattr", err)
}

// xattrKillSGID travels in Setxattr's flags argument from rawFS to the
// node (setxattr(2) flags use bits 0 and 1): the kernel's
// FUSE_SETXATTR_ACL_KILL_SGID, sent when the caller is neither in the
// entry's group nor has CAP_FSETID, which go-fuse's bridge does not hand
// on. The backing filesystem cannot decide this itself: it sees the
// daemon, often root, as the caller.
const xattrKillSGID = 1 << 31

// markKillSGID sets xattrKillSGID in the flags of a SETXATTR request that
// asks for it (FUSE_SETXATTR_EXT, negotiated in mountOptions).
func markKillSGID(in *fuse.SetXAttrIn) {
	if in.SetXAttrFlags&fuse.SETXATTR_ACL_KILL_SGID != 0 {
		in.Flags |= xattrKillSGID
	}
}

// setPosixACL stores an ACL attribute on the backing entry, which checks
// it and brings the entry's mode in line (the group bits become the ACL
// mask); the kernel has checked that the caller owns the entry. As on a
// local filesystem, setting an access ACL clears the set-group-ID bit when
// the caller is not in the entry's group (xattrKillSGID). A backing
// filesystem without ACLs answers EOPNOTSUPP.
func (n *node) setPosixACL(attr string, data []byte, flags uint32) syscall.Errno {
	if e := n.r.writable(); e != 0 {
		return e
	}
	d, name, err := n.r.locate(&n.Inode)
	if err != nil {
		return n.r.errno("setxattr", err)
	}
	defer d.close()
	kill := flags&xattrKillSGID != 0 && attr == xattrACLAccess
	flags &^= xattrKillSGID
	if err := unix.Lsetxattr(procFD(d.fd, name), attr, data, int(flags)); err != nil {
		return n.r.errno("setxattr", err)
	}
	if kill {
		var st unix.Stat_t
		if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return n.r.errno("setxattr", err)
		}
		if st.Mode&syscall.S_ISGID != 0 {
			// The mode's group bits are the new ACL's mask: the chmod
			// leaves the ACL as set.
			err := unix.Fchmodat(d.fd, name, st.Mode&07777&^syscall.S_ISGID, unix.AT_SYMLINK_NOFOLLOW)
			return n.r.errno("setxattr", err)
		}
	}
	return 0
}

// removePosixACL removes an ACL attribute of the backing entry.
func (n *node) removePosixACL(attr string) syscall.Errno {
	if e := n.r.writable(); e != 0 {
		return e
	}
	p, done, err := n.xattrPath()
	if err != nil {
		return n.r.errno("removexattr", err)
	}
	defer done()
	return n.r.errno("removexattr", unix.Lremovexattr(p, attr))
}
