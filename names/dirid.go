package names

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// DirIDSize is the size of a directory ID.
const DirIDSize = 16

// DirIDFileSize is the size of a directory ID file: magic (4), version
// (2), ID (16), HMAC-SHA256 (32).
const DirIDFileSize = 4 + 2 + DirIDSize + sha256.Size

const dirIDMagic = "KMSD"

// DirID is a directory's random ID. It is the associated data of the names
// of the directory's entries and the object ID of the directory's own
// extended attributes.
type DirID [DirIDSize]byte

// String returns the ID in hex, for logs and errors (it is not secret).
func (d DirID) String() string { return hex.EncodeToString(d[:]) }

// NewDirID returns a fresh random directory ID.
func NewDirID() DirID {
	var d DirID
	_, _ = rand.Read(d[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return d
}

// dirIDMAC returns the HMAC-SHA256 of the first 22 bytes of a directory ID
// file under the directory-ID key, prefixed by the purpose label.
func (k *Keys) dirIDMAC(fields []byte) []byte {
	m := hmac.New(sha256.New, k.dirIDKey)
	m.Write([]byte(macDirID))
	m.Write(fields)
	return m.Sum(nil)
}

// MarshalDirID returns the content of the directory ID file (DirIDFileName)
// of the directory with ID id: DirIDFileSize bytes.
func (k *Keys) MarshalDirID(id DirID) []byte {
	b := make([]byte, 0, DirIDFileSize)
	b = append(b, dirIDMagic...)
	b = binary.BigEndian.AppendUint16(b, formatVersion)
	b = append(b, id[:]...)
	return append(b, k.dirIDMAC(b)...)
}

// ParseDirID returns the ID held by the content of a directory ID file.
// It fails with ErrCorrupt when the content has the wrong size, magic or
// version, and with ErrAuthentication when the MAC does not verify (the ID
// was edited, or the file comes from another filesystem): a tampered ID is
// reported as such rather than as a directory of undecryptable names.
func (k *Keys) ParseDirID(b []byte) (DirID, error) {
	if len(b) != DirIDFileSize || string(b[:4]) != dirIDMagic || binary.BigEndian.Uint16(b[4:6]) != formatVersion {
		return DirID{}, fmt.Errorf("directory ID file: %w", ErrCorrupt)
	}
	if !hmac.Equal(k.dirIDMAC(b[:22]), b[22:]) {
		return DirID{}, fmt.Errorf("directory ID file: %w", ErrAuthentication)
	}
	return DirID(b[6:22]), nil
}
