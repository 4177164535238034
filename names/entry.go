package names

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
)

// Limits of entry names (FORMAT.md, "Entry names").
const (
	// NameMax is the longest plaintext entry name, Linux's NAME_MAX.
	NameMax = 255
	// MaxBackingNameLen is the longest backing entry name written: an
	// encoded name longer than this is stored under its hashed name.
	MaxBackingNameLen = 255
	// padBlock is the padding granularity of names and targets.
	padBlock = 16
	// sivOverhead is the synthetic IV AES-SIV puts before the ciphertext.
	sivOverhead = 16
)

// Internal backing names of tree format v2. Every one contains '.', which
// the base64url alphabet lacks, so none can equal an encoded name.
const (
	// LongNamePrefix starts the hashed backing name of a long entry name.
	LongNamePrefix = "kmsfs.long."
	// SidecarSuffix ends the sidecar beside a hashed entry.
	SidecarSuffix = ".name"
	// DirIDFileName is the file holding a directory's ID, in every
	// directory of the tree, the root included.
	DirIDFileName = "kmsfs.dirid"
	// TempPrefix starts every temporary backing name: a directory being
	// created and given its ID before it is renamed into place, and a
	// sidecar, ID file or long-target file being written before it is
	// renamed or linked into place (FORMAT.md, "Crash safety").
	TempPrefix = "kmsfs.tmp."
	// TargetsDirName is the directory in the CIPHERDIR root holding the
	// files of long symlink targets.
	TargetsDirName = "kmsfs.targets"
)

// hashLen is the length of base64url(SHA-256(...)) without padding.
const hashLen = 43

// sidecarMagic and formatVersion start a sidecar; formatVersion is the
// tree format version, used by every record of this package.
const (
	sidecarMagic  = "KMSL"
	formatVersion = 2
)

// MaxSidecarSize is the largest valid sidecar: the header and the encoded
// ciphertext of a 255-byte name (padded to 256). A reader need not read
// more than MaxSidecarSize+1 bytes to let ParseSidecar reject a longer one.
const MaxSidecarSize = 6 + 363

// b64 is unpadded base64url (RFC 4648 §5). Decoding goes through decode64,
// which also insists on the canonical form.
var b64 = base64.RawURLEncoding

// decode64 decodes canonical unpadded base64url: only characters of the
// alphabet (Go's decoder skips CR and LF), and no second spelling of the
// same bytes (non-zero unused bits).
func decode64(s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if !isB64(s[i]) {
			return nil, false
		}
	}
	b, err := b64.Strict().DecodeString(s)
	if err != nil {
		return nil, false
	}
	return b, true
}

func isB64(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// pad appends PKCS#7 padding to a multiple of padBlock: 1 to 16 bytes,
// each holding the padding length.
func pad(b []byte) []byte {
	n := padBlock - len(b)%padBlock
	out := make([]byte, len(b), len(b)+n)
	copy(out, b)
	for range n {
		out = append(out, byte(n))
	}
	return out
}

// unpad strips PKCS#7 padding, checking every padding byte.
func unpad(b []byte) ([]byte, error) {
	if len(b) == 0 || len(b)%padBlock != 0 {
		return nil, ErrPadding
	}
	n := int(b[len(b)-1])
	if n == 0 || n > padBlock {
		return nil, ErrPadding
	}
	for _, c := range b[len(b)-n:] {
		if int(c) != n {
			return nil, ErrPadding
		}
	}
	return b[:len(b)-n], nil
}

// paddedLen is the padded length of n plaintext bytes.
func paddedLen(n int) int { return (n/padBlock + 1) * padBlock }

// validName checks a plaintext entry name.
func validName(name string) error {
	switch {
	case name == "":
		return ErrEmptyName
	case name == "." || name == "..":
		return ErrDotName
	case strings.ContainsAny(name, "/\x00"):
		return ErrInvalidName
	case len(name) > NameMax:
		return ErrNameTooLong
	}
	return nil
}

// entryAD is the associated data of the name of an entry in directory dir.
func entryAD(dir DirID) []byte {
	return append([]byte(adEntryName), dir[:]...)
}

// EncryptName returns the encoded encryption of the entry name in the
// directory dir: unpadded base64url of AES-SIV(padded name). The same name
// in the same directory always gives the same result. The result may be
// longer than MaxBackingNameLen: BackingName says what to store.
func (k *Keys) EncryptName(dir DirID, name string) (string, error) {
	if err := validName(name); err != nil {
		return "", err
	}
	ct, err := k.entryNames.EncryptDeterministically(pad([]byte(name)), entryAD(dir))
	if err != nil {
		panic("names: internal error: aes-siv: " + err.Error()) // only for absurd lengths
	}
	return b64.EncodeToString(ct), nil
}

// DecryptName returns the plaintext of an encoded name (a short backing
// name, or the content of a long name's sidecar) in the directory dir. It
// fails with ErrEncoding, ErrAuthentication (also for a name encrypted in
// another directory), ErrPadding, or the sentinel of an invalid plaintext
// (ErrEmptyName, ErrInvalidName, ErrDotName, ErrNameTooLong).
func (k *Keys) DecryptName(dir DirID, encoded string) (string, error) {
	ct, ok := decode64(encoded)
	if !ok || len(ct) < sivOverhead+padBlock || (len(ct)-sivOverhead)%padBlock != 0 {
		return "", fmt.Errorf("entry name: %w", ErrEncoding)
	}
	padded, err := k.entryNames.DecryptDeterministically(ct, entryAD(dir))
	if err != nil {
		return "", fmt.Errorf("entry name in directory %v: %w", dir, ErrAuthentication)
	}
	name, err := unpad(padded)
	if err != nil {
		return "", fmt.Errorf("entry name: %w", err)
	}
	if err := validName(string(name)); err != nil {
		return "", fmt.Errorf("entry name: %w", err)
	}
	return string(name), nil
}

// IsLong reports whether an encoded name is too long to be a backing name
// itself, so that it is stored under HashedName with a sidecar. Names of
// up to 159 plaintext bytes are short (FORMAT.md, "Long names").
func IsLong(encoded string) bool { return len(encoded) > MaxBackingNameLen }

// BackingName returns the backing entry name of an encoded name: itself
// when short, else HashedName(encoded).
func BackingName(encoded string) string {
	if IsLong(encoded) {
		return HashedName(encoded)
	}
	return encoded
}

// HashedName returns LongNamePrefix followed by the unpadded base64url
// SHA-256 of the encoded name: 54 bytes.
func HashedName(encoded string) string {
	sum := sha256.Sum256([]byte(encoded))
	return LongNamePrefix + b64.EncodeToString(sum[:])
}

// SidecarName returns the name of the sidecar of a hashed entry name.
func SidecarName(hashed string) string { return hashed + SidecarSuffix }

// MarshalSidecar returns the content of the sidecar of a long encoded
// name: "KMSL", the version 2 as uint16, and the encoded name.
func MarshalSidecar(encoded string) []byte {
	b := make([]byte, 0, 6+len(encoded))
	b = append(b, sidecarMagic...)
	b = binary.BigEndian.AppendUint16(b, formatVersion)
	return append(b, encoded...)
}

// ParseSidecar returns the encoded name held by content, the sidecar of
// the hashed entry name hashed. It fails with ErrCorrupt when the content
// is not a sidecar (magic, version, size, or an encoded name that is not
// canonical base64url of a possible long-name ciphertext) and with
// ErrHashMismatch when the name is not the one hashed names.
func ParseSidecar(hashed string, content []byte) (string, error) {
	if len(content) > MaxSidecarSize || len(content) < 6 || string(content[:4]) != sidecarMagic ||
		binary.BigEndian.Uint16(content[4:6]) != formatVersion {
		return "", fmt.Errorf("sidecar: %w", ErrCorrupt)
	}
	encoded := string(content[6:])
	ct, ok := decode64(encoded)
	if !ok || !IsLong(encoded) || (len(ct)-sivOverhead)%padBlock != 0 {
		return "", fmt.Errorf("sidecar: %w", ErrCorrupt)
	}
	if HashedName(encoded) != hashed {
		return "", fmt.Errorf("sidecar: %w", ErrHashMismatch)
	}
	return encoded, nil
}

// Kind is what a backing directory entry of a v2 tree is, by its name.
type Kind int

// Kinds of backing names.
const (
	// KindOther is a name kmsfs v2 never writes in a directory of the
	// tree (in the root: kmsfs.conf and what cipherdir owns).
	KindOther Kind = iota
	// KindName is a short encoded name: a user entry.
	KindName
	// KindLongName is a hashed long name: a user entry whose name is in
	// its sidecar.
	KindLongName
	// KindSidecar is the sidecar of a hashed long name.
	KindSidecar
	// KindDirID is the directory ID file.
	KindDirID
	// KindTemp is a temporary: a directory or file under construction,
	// or left by a crash.
	KindTemp
	// KindTargets is the directory of long symlink targets (in the root).
	KindTargets
)

// Classify tells what a backing entry name of a v2 tree is, by shape
// only (nothing is decrypted): user entries are KindName and
// KindLongName; every other kind is kmsfs's own and hidden from listings.
func Classify(name string) Kind {
	switch {
	case name == DirIDFileName:
		return KindDirID
	case name == TargetsDirName:
		return KindTargets
	case strings.HasPrefix(name, TempPrefix):
		return KindTemp
	case strings.HasPrefix(name, LongNamePrefix):
		h := name[len(LongNamePrefix):]
		if s, ok := strings.CutSuffix(h, SidecarSuffix); ok && isHash(s) {
			return KindSidecar
		}
		if isHash(h) {
			return KindLongName
		}
		return KindOther
	}
	if ct, ok := decode64(name); ok && len(name) <= MaxBackingNameLen &&
		len(ct) >= sivOverhead+padBlock && (len(ct)-sivOverhead)%padBlock == 0 {
		return KindName
	}
	return KindOther
}

// isHash reports whether s is canonical base64url of 32 bytes.
func isHash(s string) bool {
	if len(s) != hashLen {
		return false
	}
	_, ok := decode64(s)
	return ok
}
