package fs

import (
	"bytes"
	"context"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
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
	p, done, err := n.xattrPath()
	if err != nil {
		return 0, n.r.errno("getxattr", err)
	}
	defer done()
	sz, err := unix.Lgetxattr(p, attr, dest)
	if err == syscall.ERANGE {
		// Tell the caller the size it needs.
		if need, err2 := unix.Lgetxattr(p, attr, nil); err2 == nil {
			return uint32(need), syscall.ERANGE
		}
	}
	if err != nil {
		return 0, n.r.errno("getxattr", err)
	}
	return uint32(sz), 0
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
	out := buf[:0]
	for _, name := range bytes.Split(buf[:sz], []byte{0}) {
		if len(name) == 0 || isInternalXattr(string(name)) {
			continue
		}
		out = append(out, name...)
		out = append(out, 0)
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
	return n.r.errno("removexattr", unix.Lremovexattr(p, attr))
}
