package fs

import (
	"errors"
	"strings"
)

// errReservedName reports a name in the mount that maps to an internal
// file of the backing tree (the config file or its temporary copies).
// errno.go turns it into EPERM; Lookup answers ENOENT for it instead.
var errReservedName = errors.New("name is reserved for kmsfs")

// isReservedBacking reports whether a backing name in a directory (root
// says whether it is CIPHERDIR itself) belongs to kmsfs and must never be
// visible or reachable through the mount: kmsfs.conf and the temporary
// files WriteConfig creates next to it ("kmsfs.conf." prefix).
func isReservedBacking(root bool, name string) bool {
	return root && (name == ConfigName || strings.HasPrefix(name, ConfigName+"."))
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
