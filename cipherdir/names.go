package cipherdir

import (
	"strings"

	"github.com/kmsfs/kmsfs/names"
)

// RekeyTempMarker is part of the name of every temporary file Rekey
// writes next to the file it re-encrypts.
const RekeyTempMarker = ".kmsfs-rekey-"

// IsInternalName reports whether a backing directory entry called name
// (atRoot says whether the directory is CIPHERDIR itself) belongs to kmsfs
// and not to the user's tree. encNames says the tree is of format v2
// (Config.EncryptedNames). It is the one such rule: the mount hides these
// names and refuses to create them, and Walk (so Check, Rewrap and Rekey)
// skips them.
//
// In a v1 tree (plaintext names): kmsfs.conf and every name starting with
// "kmsfs.conf." (its copy, its temporaries) in the root, and the
// temporary files of Rekey (RekeyTempMarker) anywhere.
//
// In a v2 tree: every name that is not a user entry by its shape
// (names.Classify: names.KindName or names.KindLongName), in every
// directory (names/FORMAT.md, "Internal names"): directory ID files,
// sidecars, temporaries, kmsfs.targets, and in the root kmsfs.conf and
// its copy and temporaries; Rekey's temporaries contain '.' and are
// internal too.
func IsInternalName(encNames, atRoot bool, name string) bool {
	if encNames {
		k := names.Classify(name)
		return k != names.KindName && k != names.KindLongName
	}
	if atRoot && (name == ConfigName || strings.HasPrefix(name, ConfigName+".")) {
		return true
	}
	return strings.Contains(name, RekeyTempMarker)
}

// IsInternal is IsInternalName for this tree's format.
func (c Config) IsInternal(atRoot bool, name string) bool {
	return IsInternalName(c.EncryptedNames(), atRoot, name)
}
