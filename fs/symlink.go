package fs

import (
	"errors"
	"fmt"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/names"
)

// readLink returns the backing target of the symlink name in dirfd.
func readLink(dirfd int, name string) (string, error) {
	buf := make([]byte, unix.PathMax+1)
	nb, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:nb]), nil
}

// target returns the plaintext target of the symlink name in dirfd (a
// node's backing entry) and remembers its length on nd.
func (r *root) target(nd *node, dirfd int, name string) (string, error) {
	link, err := readLink(dirfd, name)
	if err != nil {
		return "", err
	}
	if r.names == nil {
		return link, nil
	}
	t, err := cipherdir.ReadTarget(r.fd, r.names, link)
	if errors.Is(err, unix.ENOENT) {
		// The symlink is there (readlink found it) but its long-target
		// file is not: damage to report as EIO, not a missing entry
		// (ENOENT would contradict the listing that shows it).
		err = fmt.Errorf("%w: %w", err, names.ErrCorrupt)
	}
	if err != nil {
		r.nameLog.log(r, "symlink target does not decrypt", name, err)
		return "", err
	}
	nd.linkLen.Store(int64(len(t)) + 1)
	return t, nil
}

// fixLinkSize sets the size of a symlink's attributes to the length of
// its plaintext target, as POSIX wants lstat to report, in a tree with
// encrypted targets (the backing size is the ciphertext's). The length is
// kept on the node: a symlink's target never changes. dirfd and name are
// the backing entry, or -1 and "" to locate it.
func (r *root) fixLinkSize(in *gofs.Inode, dirfd int, name string, out *fuse.Attr) error {
	if r.names == nil || out.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil
	}
	nd := nodeOf(in)
	if l := nd.linkLen.Load(); l > 0 {
		out.Size = uint64(l - 1)
		return nil
	}
	if dirfd < 0 {
		d, bn, err := r.locate(in)
		if err != nil {
			return err
		}
		defer d.close()
		dirfd, name = d.fd, bn
	}
	t, err := r.target(nd, dirfd, name)
	if err != nil {
		return err
	}
	out.Size = uint64(len(t))
	return nil
}

// longTargetOf returns the backing target of the entry name in dirfd when
// it is a long-form encrypted symlink that is its inode's only link, so
// that its long-target file can go once the entry is removed or replaced;
// "" otherwise (also when the entry does not exist).
func (r *root) longTargetOf(dirfd int, name string) string {
	if r.names == nil {
		return ""
	}
	var st unix.Statx_t
	if statAt(dirfd, name, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFLNK || st.Nlink != 1 {
		return ""
	}
	link, err := readLink(dirfd, name)
	if err != nil {
		return ""
	}
	if _, long := names.TargetFileName(link); !long {
		return ""
	}
	return link
}

// dropLongTarget removes the long-target file of a backing target that
// longTargetOf returned, once its symlink is gone. A failure leaves an
// orphan that fsck removes; it is logged, not returned: the user's
// operation succeeded.
func (r *root) dropLongTarget(link string) {
	if link == "" {
		return
	}
	if err := cipherdir.RemoveTarget(r.fd, link); err != nil {
		r.log.Warn("could not remove a long symlink target's file (kmsfs fsck --repair removes it)", "err", err.Error())
	}
}

// dropSidecar removes the sidecar of the long backing name bn in dirfd
// once no entry has that name any more (after unlink, rmdir or a rename
// away). A rename between two hard links of one file leaves the source in
// place, so the entry is checked first. A failure leaves an orphan that
// fsck removes.
func (r *root) dropSidecar(dirfd int, bn, long string) {
	if long == "" {
		return
	}
	var st unix.Statx_t
	if statAt(dirfd, bn, &st) == nil {
		return
	}
	if err := unix.Unlinkat(dirfd, names.SidecarName(bn), 0); err != nil && err != unix.ENOENT {
		r.log.Warn("could not remove a long name's sidecar (kmsfs fsck --repair removes it)", "err", err.Error())
	}
}
