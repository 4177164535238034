package fs

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/names"
)

// securityCapability is the attribute the kernel asks for on every
// write(2) (to drop file capabilities). kmsfs answers it without a system
// call and does not store file capabilities.
const securityCapability = "security.capability"

// maxXattrList is the kernel's limit on a listxattr result (XATTR_LIST_MAX).
const maxXattrList = 64 << 10

// isInternalXattr reports the attributes kmsfs keeps for itself.
func isInternalXattr(name string) bool {
	return strings.HasPrefix(name, internalXattrPrefix)
}

// xattrPath returns a path naming the node's backing entry for the
// l*xattr calls (which have no *at form), without following a final
// symlink, and a function that releases it.
func (n *node) xattrPath() (string, func(), error) {
	d, name, err := n.r.locate(&n.Inode)
	if err != nil {
		return "", nil, err
	}
	return procFD(d.fd, name), d.close, nil
}

// Getxattr passes through, except that user.kmsfs.* attributes do not
// exist and security.capability is answered at once.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if isPosixACLXattr(attr) {
		return n.getPosixACL(attr, dest) // acl.go
	}
	if attr == securityCapability || isInternalXattr(attr) {
		return 0, syscall.ENODATA
	}
	if n.r.names != nil && strings.HasPrefix(attr, names.UserXattrPrefix) {
		return n.getxattrV2(attr, dest)
	}
	sz, err := n.getBacking(attr, dest)
	if err == syscall.ERANGE {
		return sz, syscall.ERANGE
	}
	return sz, n.r.errno("getxattr", err)
}

// getBacking reads the attribute attr of the backing entry as it is. On
// ERANGE the size is the one the caller needs.
func (n *node) getBacking(attr string, dest []byte) (uint32, error) {
	p, done, err := n.xattrPath()
	if err != nil {
		return 0, err
	}
	defer done()
	sz, err := unix.Lgetxattr(p, attr, dest)
	if err == syscall.ERANGE {
		if need, err2 := unix.Lgetxattr(p, attr, nil); err2 == nil {
			return uint32(need), syscall.ERANGE
		}
	}
	if err != nil {
		return 0, err
	}
	return uint32(sz), nil
}

// Listxattr passes through with user.kmsfs.* filtered out.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	p, done, err := n.xattrPath()
	if err != nil {
		return 0, n.r.errno("listxattr", err)
	}
	defer done()
	buf := make([]byte, maxXattrList)
	sz, err := unix.Llistxattr(p, buf)
	if err != nil {
		return 0, n.r.errno("listxattr", err)
	}
	var out []byte
	if n.r.names != nil {
		if out, err = n.listV2(p, buf[:sz]); err != nil {
			return 0, n.r.errno("listxattr", err)
		}
	} else {
		out = buf[:0]
		for _, name := range bytes.Split(buf[:sz], []byte{0}) {
			if len(name) == 0 || isInternalXattr(string(name)) {
				continue
			}
			out = append(out, name...)
			out = append(out, 0)
		}
	}
	if len(out) > maxXattrList {
		return 0, syscall.E2BIG
	}
	if len(dest) == 0 {
		return uint32(len(out)), 0
	}
	if len(dest) < len(out) {
		return uint32(len(out)), syscall.ERANGE
	}
	return uint32(copy(dest, out)), 0
}

// Setxattr passes through; user.kmsfs.* answers EPERM and
// security.capability EOPNOTSUPP (file capabilities are not stored).
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if isPosixACLXattr(attr) {
		return n.setPosixACL(attr, data, flags) // acl.go
	}
	if e := n.r.writable(); e != 0 {
		return e
	}
	if isInternalXattr(attr) {
		return syscall.EPERM
	}
	if attr == securityCapability {
		return syscall.EOPNOTSUPP
	}
	p, done, err := n.xattrPath()
	if err != nil {
		return n.r.errno("setxattr", err)
	}
	defer done()
	if n.r.names != nil && strings.HasPrefix(attr, names.UserXattrPrefix) {
		obj, err := n.objectID(p)
		if err != nil {
			return n.r.errno("setxattr", err)
		}
		backing, blob, err := n.r.names.EncryptXattr(obj, attr, data)
		if err != nil {
			return n.r.errno("setxattr", err)
		}
		attr, data = backing, blob
	}
	return n.r.errno("setxattr", unix.Lsetxattr(p, attr, data, int(flags)))
}

// Removexattr passes through; user.kmsfs.* answers EPERM.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if isPosixACLXattr(attr) {
		return n.removePosixACL(attr) // acl.go
	}
	if e := n.r.writable(); e != 0 {
		return e
	}
	if isInternalXattr(attr) {
		return syscall.EPERM
	}
	p, done, err := n.xattrPath()
	if err != nil {
		return n.r.errno("removexattr", err)
	}
	defer done()
	if n.r.names != nil && strings.HasPrefix(attr, names.UserXattrPrefix) {
		obj, err := n.objectID(p)
		if err != nil {
			return n.r.errno("removexattr", err)
		}
		if attr, err = n.r.names.XattrBackingName(obj, attr); err != nil {
			return n.r.errno("removexattr", err)
		}
	}
	return n.r.errno("removexattr", unix.Lremovexattr(p, attr))
}

// The user attributes of an encrypted-names (v2) tree: names and values
// are encrypted and bound to their object (names/FORMAT.md, "Extended
// attributes"); other namespaces pass through as in a v1 tree.

// objectID returns the object ID of the node's user attributes: a
// directory's ID or a regular file's file ID, read from the header of the
// backing file p names (xattrPath) on every call: rekey replaces a file
// (and its file ID) under the same name, so an ID kept on the node could
// be another file's. Linux allows user attributes only on those two kinds
// (EPERM otherwise, as the kernel answers).
func (n *node) objectID(p string) (names.ObjectID, error) {
	switch n.StableAttr().Mode {
	case syscall.S_IFDIR:
		id, err := n.r.dirID(&n.Inode, -1, false)
		return names.ObjectID(id), err
	case syscall.S_IFREG:
	default:
		return names.ObjectID{}, syscall.EPERM
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return names.ObjectID{}, err
	}
	defer unix.Close(fd)
	hdr := make([]byte, chunk.HeaderSize)
	if m, err := unix.Pread(fd, hdr, 0); err != nil {
		return names.ObjectID{}, err
	} else if m < len(hdr) {
		return names.ObjectID{}, fmt.Errorf("user attributes: the file has no header yet: %w", errBadHeader)
	}
	h, err := chunk.ParseHeader(hdr)
	if err != nil {
		return names.ObjectID{}, fmt.Errorf("user attributes: %w", err)
	}
	return names.ObjectID(h.FileID), nil
}

// xattrBlobMax is the largest backing value read: Linux's XATTR_SIZE_MAX.
const xattrBlobMax = names.XattrSizeMax

// getxattrV2 reads and decrypts one user attribute. A size probe (dest
// empty) and ERANGE answer the plaintext size.
func (n *node) getxattrV2(attr string, dest []byte) (uint32, syscall.Errno) {
	p, done, err := n.xattrPath()
	if err != nil {
		return 0, n.r.errno("getxattr", err)
	}
	defer done()
	obj, err := n.objectID(p)
	if err != nil {
		return 0, n.r.errno("getxattr", err)
	}
	backing, err := n.r.names.XattrBackingName(obj, attr)
	if err != nil {
		return 0, n.r.errno("getxattr", err)
	}
	blob := make([]byte, xattrBlobMax)
	sz, err := unix.Lgetxattr(p, backing, blob)
	if err != nil {
		return 0, n.r.errno("getxattr", err)
	}
	v, err := n.r.names.DecryptXattrValue(obj, attr, blob[:sz])
	if err != nil {
		n.r.nameLog.log(n.r, "user attribute value does not decrypt for this file (edited, or copied from another file or attribute)", backing, err)
		return 0, n.r.errno("getxattr", err)
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// listV2 turns the backing attribute list of the node (at p) into the
// plaintext one: encrypted user attributes decrypted (the hashed form
// through its value), other namespaces passed through, and kmsfs's own and
// foreign user attributes (a plaintext user.* name in a v2 tree) left out.
// An attribute whose name does not decrypt for this object is left out and
// logged.
func (n *node) listV2(p string, list []byte) ([]byte, error) {
	var out []byte
	var obj names.ObjectID
	haveObj := false
	var blob []byte
	for _, b := range bytes.Split(list, []byte{0}) {
		name := string(b)
		switch {
		case name == "":
			continue
		case names.IsXattrBackingName(name):
		case strings.HasPrefix(name, names.UserXattrPrefix):
			continue // kmsfs's own, or not written by kmsfs
		default:
			out = append(out, name...)
			out = append(out, 0)
			continue
		}
		if !haveObj {
			var err error
			if obj, err = n.objectID(p); err != nil {
				return nil, err
			}
			haveObj = true
		}
		var val []byte
		if names.IsHashedXattrName(name) {
			if blob == nil {
				blob = make([]byte, xattrBlobMax)
			}
			sz, err := unix.Lgetxattr(p, name, blob)
			if err == unix.ENODATA {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, err
			}
			val = blob[:sz]
		}
		plain, err := n.r.names.DecryptXattrName(obj, name, val)
		if err != nil {
			n.r.nameLog.log(n.r, "user attribute left out of a listing: its name does not decrypt for this file", name, err)
			continue
		}
		out = append(out, plain...)
		out = append(out, 0)
	}
	return out, nil
}
