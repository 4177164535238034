package cipherdir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/names"
)

// This file holds the backing-tree operations of tree format v2 (encrypted
// names, names/FORMAT.md) that the mount and the offline tools share: the
// directory ID file, long-name sidecars and long symlink targets, each
// resolved from directory descriptors only.

// ErrNoDirID is returned (wrapped) by ReadDirID when a directory has no
// ID file: its entries cannot be named (names/FORMAT.md, "Directory IDs").
var ErrNoDirID = errors.New("directory has no ID file (kmsfs.dirid)")

// TempName returns a fresh temporary backing name (names.TempPrefix and
// 16 random bytes in hex): fsck removes any it finds.
func TempName() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return names.TempPrefix + hex.EncodeToString(b[:])
}

// readSmall reads at most limit bytes of the regular file name in dirfd,
// never following a symlink; a longer file gives limit+1 bytes so the
// parser can reject it.
func readSmall(dirfd int, name string, limit int) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	return io.ReadAll(io.LimitReader(f, int64(limit)+1))
}

// ReadDirID reads and verifies the ID file of the directory dirfd. A
// missing file gives ErrNoDirID; a damaged or forged one names.ErrCorrupt
// or names.ErrAuthentication (all wrapped).
func ReadDirID(dirfd int, k *names.Keys) (names.DirID, error) {
	b, err := readSmall(dirfd, names.DirIDFileName, names.DirIDFileSize)
	if errors.Is(err, unix.ENOENT) {
		return names.DirID{}, ErrNoDirID
	}
	if err != nil {
		return names.DirID{}, fmt.Errorf("read %s: %w", names.DirIDFileName, err)
	}
	return k.ParseDirID(b)
}

// writeDurable creates name in dirfd exclusively with content b and
// mode, and fsyncs it. A failed write removes the file again.
func writeDurable(dirfd int, name string, b []byte, mode uint32) error {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	n, err := unix.Write(fd, b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(dirfd, name, 0)
	}
	return err
}

// WriteDirID creates the ID file of the directory dirfd holding id and
// makes it durable. It fails with EEXIST when the directory has one.
// The mount calls it on a directory that is not yet visible under its
// final name (the mkdir protocol of names/FORMAT.md), and init on the
// root of a new tree.
func WriteDirID(dirfd int, k *names.Keys, id names.DirID) error {
	if err := writeDurable(dirfd, names.DirIDFileName, k.MarshalDirID(id), 0o444); err != nil {
		return fmt.Errorf("write %s: %w", names.DirIDFileName, err)
	}
	return nil
}

// WriteRootDirID gives the root of a new v2 tree (root, a descriptor of
// CIPHERDIR) its ID file.
func WriteRootDirID(root int, k *names.Keys) error {
	fd, err := unix.Openat(root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := WriteDirID(fd, k, names.NewDirID()); err != nil {
		return err
	}
	return unix.Fsync(fd)
}

// RepairDirID gives an empty directory that lost its ID file (a crash in
// rmdir) a fresh one, as names/FORMAT.md "Repairing an empty directory"
// says: written as a temporary, linked into place (so a second mount
// doing the same at the same time makes both use one ID), temporary
// removed. It returns the ID the directory has afterwards.
func RepairDirID(dirfd int, k *names.Keys) (names.DirID, error) {
	tmp := TempName()
	id := names.NewDirID()
	if err := writeDurable(dirfd, tmp, k.MarshalDirID(id), 0o444); err != nil {
		return names.DirID{}, fmt.Errorf("repair %s: %w", names.DirIDFileName, err)
	}
	err := unix.Linkat(dirfd, tmp, dirfd, names.DirIDFileName, 0)
	unix.Unlinkat(dirfd, tmp, 0)
	if errors.Is(err, unix.EEXIST) {
		return ReadDirID(dirfd, k)
	}
	if err != nil {
		return names.DirID{}, fmt.Errorf("repair %s: %w", names.DirIDFileName, err)
	}
	if err := syncDir(dirfd); err != nil {
		return names.DirID{}, fmt.Errorf("repair %s: fsync the directory: %w", names.DirIDFileName, err)
	}
	return id, nil
}

// HasUserEntries reports whether the backing directory dirfd holds an
// entry that is a user's (names.KindName or names.KindLongName) in a v2
// tree: such a directory is not empty whatever else it holds.
func HasUserEntries(dirfd int) (bool, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	f := os.NewFile(uintptr(fd), ".")
	defer f.Close()
	for {
		list, err := f.Readdirnames(256)
		for _, n := range list {
			if k := names.Classify(n); k == names.KindName || k == names.KindLongName {
				return true, nil
			}
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// ClearInternal removes kmsfs's own entries from a backing directory of a
// v2 tree that holds no user entries, before rmdir: the ID file, sidecars
// and temporary files. It leaves anything else (a foreign file keeps the
// rmdir failing with ENOTEMPTY, as it should).
func ClearInternal(dirfd int) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), ".")
	list, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	// The ID file goes last, so a crash leaves a directory that still
	// has its ID for as long as anything else of kmsfs's is in it.
	for _, n := range list {
		switch names.Classify(n) {
		case names.KindSidecar:
			err = unix.Unlinkat(dirfd, n, 0)
		case names.KindTemp:
			err = unix.Unlinkat(dirfd, n, 0)
			if errors.Is(err, unix.EISDIR) {
				err = RemoveTempDir(dirfd, n)
			}
		default:
			continue
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	if err := unix.Unlinkat(dirfd, names.DirIDFileName, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// RemoveTempDir removes a temporary directory a crashed or failed mkdir left (it
// holds at most an ID file).
func RemoveTempDir(dirfd int, name string) error {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	unix.Unlinkat(fd, names.DirIDFileName, 0)
	unix.Close(fd)
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// ReadSidecar returns the encoded name the sidecar of the hashed entry
// name hashed (in dirfd) holds.
func ReadSidecar(dirfd int, hashed string) (string, error) {
	b, err := readSmall(dirfd, names.SidecarName(hashed), names.MaxSidecarSize)
	if err != nil {
		return "", fmt.Errorf("sidecar of %s: %w", hashed, err)
	}
	return names.ParseSidecar(hashed, b)
}

// EnsureSidecar makes sure the sidecar of the long encoded name exists in
// dirfd before an entry appears under its hashed name: a valid one is
// kept (same name, same bytes: AES-SIV is deterministic), otherwise it is
// written as a temporary, made durable and renamed into place.
func EnsureSidecar(dirfd int, encoded string) error {
	hashed := names.HashedName(encoded)
	if got, err := ReadSidecar(dirfd, hashed); err == nil && got == encoded {
		return nil
	}
	tmp := TempName()
	if err := writeDurable(dirfd, tmp, names.MarshalSidecar(encoded), 0o444); err != nil {
		return fmt.Errorf("write sidecar: %w", err)
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, names.SidecarName(hashed)); err != nil {
		unix.Unlinkat(dirfd, tmp, 0)
		return fmt.Errorf("write sidecar: %w", err)
	}
	return nil
}

// EntryName returns the backing name of the plaintext name in the
// directory with ID dir, and, for a long name, the encoded name its
// sidecar holds ("" for a short name).
func EntryName(k *names.Keys, dir names.DirID, plain string) (backing, long string, err error) {
	enc, err := k.EncryptName(dir, plain)
	if err != nil {
		return "", "", err
	}
	if names.IsLong(enc) {
		return names.HashedName(enc), enc, nil
	}
	return enc, "", nil
}

// DecryptEntry returns the plaintext name of the backing entry backing in
// the directory dirfd whose ID is dir: a short name is decrypted, a long
// one through its sidecar. Internal names fail with names.ErrEncoding.
func DecryptEntry(dirfd int, k *names.Keys, dir names.DirID, backing string) (string, error) {
	switch names.Classify(backing) {
	case names.KindName:
		return k.DecryptName(dir, backing)
	case names.KindLongName:
		enc, err := ReadSidecar(dirfd, backing)
		if err != nil {
			return "", err
		}
		return k.DecryptName(dir, enc)
	}
	return "", fmt.Errorf("%q is not an entry name: %w", backing, names.ErrEncoding)
}

// WriteTarget encrypts a symlink target and returns what the backing
// symlink must point at. A long target's file is written first into
// kmsfs.targets in root (a descriptor of CIPHERDIR), made with mode 0700
// on first use (names/FORMAT.md, "Long symlink targets").
func WriteTarget(root int, k *names.Keys, target string) (string, error) {
	link, file, err := k.EncryptTarget(target)
	if err != nil {
		return "", err
	}
	name, long := names.TargetFileName(link)
	if !long {
		return link, nil
	}
	if err := unix.Mkdirat(root, names.TargetsDirName, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("make %s: %w", names.TargetsDirName, err)
	}
	dfd, err := unix.Openat(root, names.TargetsDirName, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", names.TargetsDirName, err)
	}
	defer unix.Close(dfd)
	tmp := TempName()
	if err := writeDurable(dfd, tmp, file, 0o444); err != nil {
		return "", fmt.Errorf("write long symlink target: %w", err)
	}
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return "", fmt.Errorf("write long symlink target: %w", err)
	}
	return link, nil
}

// ReadTarget decrypts the backing symlink target link (reading its file
// in kmsfs.targets for the long form).
func ReadTarget(root int, k *names.Keys, link string) (string, error) {
	var file []byte
	if name, long := names.TargetFileName(link); long {
		dfd, err := unix.Openat(root, names.TargetsDirName, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("long symlink target: %w", err)
		}
		file, err = readSmall(dfd, name, names.MaxTargetFileSize)
		unix.Close(dfd)
		if err != nil {
			return "", fmt.Errorf("long symlink target: %w", err)
		}
	}
	return k.DecryptTarget(link, file)
}

// RemoveTarget removes the file of a long-form backing target link (no-op
// for the short form): called once the last backing symlink pointing at it
// is gone.
func RemoveTarget(root int, link string) error {
	name, long := names.TargetFileName(link)
	if !long {
		return nil
	}
	dfd, err := unix.Openat(root, names.TargetsDirName, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
