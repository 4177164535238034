package cipherdir

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/names"
)

// Path mapping between the plaintext view (a path relative to the root of
// a mount) and the backing tree (a path relative to CIPHERDIR), for the
// offline tools: `kmsfs paths`, `kmsfs info`, `kmsfs rekey`. In a v2 tree
// each name is encrypted under its directory's ID, so every directory on
// the way is opened (from a descriptor, never following a symlink) and its
// ID file read.

// ErrNotUserEntry: a backing path names one of kmsfs's own entries (the
// config, an ID file, a sidecar, a temporary, …) or a name that is no user
// entry of the tree (a foreign file), not a file of the plaintext view.
var ErrNotUserEntry = errors.New("not an entry of the plaintext view")

// splitRel splits a slash-separated relative path into its names: "" and
// "." are the root (no names); an empty, "." or ".." name is refused.
func splitRel(rel string) ([]string, error) {
	rel = strings.Trim(rel, "/")
	if rel == "" || rel == "." {
		return nil, nil
	}
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return nil, fmt.Errorf("path %q: %q is not a plain name: %w", rel, p, errNotBeneath)
		}
	}
	return parts, nil
}

// joinRel joins names back into a relative path ("." for none).
func joinRel(parts []string) string {
	if len(parts) == 0 {
		return "."
	}
	return strings.Join(parts, "/")
}

// EncryptPath returns the backing path, relative to CIPHERDIR (root, a
// descriptor of it), of plainRel, a path relative to the root of the
// mount ("" or "." for the root itself, which gives "."). k nil is a v1
// tree: names map to themselves, except kmsfs's own (IsInternalName),
// which fail with ErrNotUserEntry. In a v2 tree every directory on the way
// must exist (its ID is read); the last name need not.
func EncryptPath(root int, k *names.Keys, plainRel string) (string, error) {
	parts, err := splitRel(plainRel)
	if err != nil {
		return "", err
	}
	if k == nil {
		for i, p := range parts {
			if IsInternalName(i == 0, p) {
				return "", fmt.Errorf("path %q: %q is reserved for kmsfs: %w", plainRel, p, ErrNotUserEntry)
			}
		}
		return joinRel(parts), nil
	}
	out := make([]string, len(parts))
	err = walkNames(root, parts, func(dirfd int, i int) (string, error) {
		id, err := ReadDirID(dirfd, k)
		if err != nil {
			return "", fmt.Errorf("directory %s: %w", joinRel(parts[:i]), err)
		}
		backing, _, err := EntryName(k, id, parts[i])
		if err != nil {
			return "", fmt.Errorf("name %d of %q: %w", i+1, plainRel, err)
		}
		out[i] = backing
		return backing, nil
	})
	if err != nil {
		return "", err
	}
	return joinRel(out), nil
}

// DecryptPath returns the plaintext path, relative to the root of the
// mount, of backingRel, a path relative to CIPHERDIR (root, a descriptor
// of it); "" or "." give ".". k nil is a v1 tree: the identity, except
// that kmsfs's own names fail with ErrNotUserEntry, as they do in v2
// (with every name that is not a user entry). Every name must exist: a
// hashed long name is decrypted through its sidecar.
func DecryptPath(root int, k *names.Keys, backingRel string) (string, error) {
	parts, err := splitRel(backingRel)
	if err != nil {
		return "", err
	}
	if k == nil {
		for i, p := range parts {
			if IsInternalName(i == 0, p) {
				return "", fmt.Errorf("path %q: %q is kmsfs's own: %w", backingRel, p, ErrNotUserEntry)
			}
		}
		return joinRel(parts), nil
	}
	out := make([]string, len(parts))
	err = walkNames(root, parts, func(dirfd int, i int) (string, error) {
		if kind := names.Classify(parts[i]); kind != names.KindName && kind != names.KindLongName {
			return "", fmt.Errorf("path %q: %q: %w", backingRel, parts[i], ErrNotUserEntry)
		}
		id, err := ReadDirID(dirfd, k)
		if err != nil {
			return "", fmt.Errorf("directory %s: %w", joinRel(parts[:i]), err)
		}
		plain, err := DecryptEntry(dirfd, k, id, parts[i])
		if err != nil {
			return "", fmt.Errorf("%s: %w", joinRel(parts[:i+1]), err)
		}
		out[i] = plain
		return parts[i], nil
	})
	if err != nil {
		return "", err
	}
	return joinRel(out), nil
}

// walkNames resolves the directories of a path below root one name at a
// time: step(dirfd, i) is called with the directory holding name i and
// returns the backing name to descend into (unused for the last name).
// Each directory is opened with openat(O_PATH|O_DIRECTORY|O_NOFOLLOW)
// from its parent's descriptor, so a symlink on the way fails (ENOTDIR or
// ELOOP) and is never followed.
func walkNames(root int, parts []string, step func(dirfd, i int) (string, error)) error {
	cur, err := unix.Openat(root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { unix.Close(cur) }()
	for i := range parts {
		backing, err := step(cur, i)
		if err != nil {
			return err
		}
		if i == len(parts)-1 {
			break
		}
		next, err := unix.Openat(cur, backing, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("directory %s: %w", joinRel(parts[:i+1]), err)
		}
		unix.Close(cur)
		cur = next
	}
	return nil
}
