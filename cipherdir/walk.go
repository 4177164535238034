package cipherdir

import (
	"fmt"
	"os"
	"path"
	"slices"

	"golang.org/x/sys/unix"
)

// Entry is one entry of a backing tree, as Walk meets it.
type Entry struct {
	// Rel is the entry's path relative to CIPHERDIR, "/"-separated.
	Rel string
	// Stat is the entry itself (lstat: a symlink is a symlink).
	Stat unix.Stat_t
}

// IsDir reports whether the entry is a directory.
func (e Entry) IsDir() bool { return e.Stat.Mode&unix.S_IFMT == unix.S_IFDIR }

// IsRegular reports whether the entry is a regular file.
func (e Entry) IsRegular() bool { return e.Stat.Mode&unix.S_IFMT == unix.S_IFREG }

// OpenRoot opens the CIPHERDIR at dir as an O_PATH directory descriptor,
// the starting point of every resolution below it. dir itself may be
// reached through symlinks (the user named it); nothing below it is.
func OpenRoot(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", dir, err)
	}
	return fd, nil
}

// Walk calls fn for every entry below the directory root (a descriptor of
// CIPHERDIR), parents before children and names in byte order, skipping
// kmsfs's own files (IsInternalName; encNames says the tree is of format
// v2, Config.EncryptedNames). It is the one walk of a backing
// tree: each directory is opened relative to its parent's descriptor with
// O_NOFOLLOW, so a symlink is reported as one and never followed, and a
// directory swapped for a symlink during the walk fails to open instead of
// leading the walk elsewhere. An error of fn or of the walk ends it.
func Walk(root int, encNames bool, fn func(Entry) error) error {
	return walkDir(root, encNames, "", fn)
}

func walkDir(dirfd int, encNames bool, rel string, fn func(Entry) error) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("walk %s: %w", orDot(rel), err)
	}
	f := os.NewFile(uintptr(fd), orDot(rel))
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("walk %s: %w", orDot(rel), err)
	}
	slices.Sort(names)
	for _, name := range names {
		if IsInternalName(encNames, rel == "", name) {
			continue
		}
		e := Entry{Rel: path.Join(rel, name)}
		if err := unix.Fstatat(dirfd, name, &e.Stat, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue // removed since the listing
			}
			return fmt.Errorf("walk %s: %w", e.Rel, err)
		}
		if err := fn(e); err != nil {
			return err
		}
		if !e.IsDir() {
			continue
		}
		sub, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("walk %s: %w", e.Rel, err)
		}
		err = walkDir(sub, encNames, e.Rel, fn)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

func orDot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// Files returns the path (relative to CIPHERDIR) of every regular file
// below root, in Walk's order (encNames as Walk's). With onePerInode a file with several hard
// links is reported once, under the first of its names: the links share
// one header and key record.
func Files(root int, encNames, onePerInode bool) ([]string, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var files []string
	err := Walk(root, encNames, func(e Entry) error {
		if !e.IsRegular() {
			return nil
		}
		if onePerInode && e.Stat.Nlink > 1 {
			k := inode{e.Stat.Dev, e.Stat.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		files = append(files, e.Rel)
		return nil
	})
	return files, err
}
