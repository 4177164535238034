package cipherdir

import "strings"

// RekeyTempMarker is part of the name of every temporary file Rekey
// writes next to the file it re-encrypts.
const RekeyTempMarker = ".kmsfs-rekey-"

// IsInternalName reports whether a backing directory entry called name
// (atRoot says whether the directory is CIPHERDIR itself) belongs to kmsfs
// and not to the user's tree: kmsfs.conf and the temporary files written
// next to it ("kmsfs.conf." prefix) in the root, and the temporary files
// of Rekey (RekeyTempMarker) anywhere. It is the one such rule: the mount
// hides these names and refuses to create them, and Check, Rewrap and
// Rekey skip them.
func IsInternalName(atRoot bool, name string) bool {
	if atRoot && (name == ConfigName || strings.HasPrefix(name, ConfigName+".")) {
		return true
	}
	return strings.Contains(name, RekeyTempMarker)
}
