package fs

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kmsfs/kmsfs/cipherdir"
)

// errReservedName reports a name in the mount that maps to an internal
// file of the backing tree (the config file or its temporary copies).
// errno.go turns it into EPERM; Lookup answers ENOENT for it instead.
var errReservedName = errors.New("name is reserved for kmsfs")

// isReservedBacking reports whether a backing name in a directory (root
// says whether it is CIPHERDIR itself) belongs to kmsfs and must never be
// visible or reachable through the mount: cipherdir.IsInternalName.
func isReservedBacking(root bool, name string) bool {
	return cipherdir.IsInternalName(root, name)
}

// backingName translates a name in the mount into the name of the same
// entry in the backing tree. root says whether the directory is the root
// of the mount. It is the only place that does so: filename encryption, if
// it comes, is a change here and in plainName alone. Names of internal
// files fail with errReservedName.
func backingName(root bool, plain string) (string, error) {
	if isReservedBacking(root, plain) {
		return "", errReservedName
	}
	return plain, nil
}

// plainName is the inverse of backingName: the name a backing directory
// entry has in the mount, or ok=false when the entry must stay hidden.
func plainName(root bool, backing string) (plain string, ok bool) {
	if isReservedBacking(root, backing) {
		return "", false
	}
	return backing, true
}

// BackingPath translates a path relative to the root of a mount
// ("dir/file", no leading slash; "" or "." for the root) into the path of
// the same entry relative to CIPHERDIR, name by name through backingName.
// Tools that map a mount path to its backing file (kmsfs info) use it so
// they keep working when names get encrypted.
func BackingPath(rel string) (string, error) {
	rel = strings.Trim(rel, "/")
	if rel == "" || rel == "." {
		return ".", nil
	}
	parts := strings.Split(rel, "/")
	for i, p := range parts {
		if p == "" || p == "." || p == ".." {
			return "", fmt.Errorf("path %q: %q is not a plain name", rel, p)
		}
		b, err := backingName(i == 0, p)
		if err != nil {
			return "", fmt.Errorf("path %q: %w", rel, err)
		}
		parts[i] = b
	}
	return strings.Join(parts, "/"), nil
}
