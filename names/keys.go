// Package names encrypts and decrypts everything tree format v2 hides
// besides file contents: directory entry names (with the long-name
// sidecar), directory IDs, symlink targets and user extended attributes
// (names and values). It is pure: it reads and writes no files, and the
// byte layouts it produces are specified in FORMAT.md beside this file,
// which is normative; testdata/vectors.json pins them.
//
// Everything is derived from one 32-byte names key per filesystem (made by
// the KMS; how it is wrapped and stored is not this package's business).
// The primitives are AES-SIV (RFC 5297, tink-go's implementation) for the
// deterministic encryption of names, AES-256-GCM (crypto/cipher) for
// symlink targets and attribute values, HKDF-SHA256 (crypto/hkdf) for the
// subkeys and HMAC-SHA256 (crypto/hmac) for directory ID files.
package names

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/daead/subtle"
)

// KeySize is the size of a names key: 32 bytes from the KMS.
const KeySize = 32

// HKDF info labels, one per subkey (FORMAT.md, "Keys"). They are part of
// the format: changing one changes every backing name.
const (
	labelEntryNames  = "kmsfs v2 entry names"
	labelXattrNames  = "kmsfs v2 xattr names"
	labelTargets     = "kmsfs v2 symlink targets"
	labelXattrValues = "kmsfs v2 xattr values"
	labelDirIDs      = "kmsfs v2 directory ids"
)

// Purpose labels that start the associated data of each kind of
// ciphertext (FORMAT.md). The subkeys already separate the kinds; the
// labels make every AD self-describing and keep kinds apart even if two
// subkeys were ever merged.
const (
	adEntryName  = "kmsfs v2 entry name"
	adXattrName  = "kmsfs v2 xattr name"
	adTarget     = "kmsfs v2 symlink target"
	adXattrValue = "kmsfs v2 xattr value"
	macDirID     = "kmsfs v2 directory id"
)

// Errors. Each kind of rejection has its own sentinel, matched with
// errors.Is; the returned errors wrap them with context but never with a
// plaintext name, target or value.
var (
	// ErrEncoding: a backing name or target is not canonical unpadded
	// base64url of a possible ciphertext length.
	ErrEncoding = errors.New("names: bad encoding")
	// ErrAuthentication: a ciphertext or MAC does not verify under this
	// key and associated data (edited, from another directory, object or
	// attribute, or from another filesystem).
	ErrAuthentication = errors.New("names: authentication failed")
	// ErrPadding: a decrypted name or target is not canonically padded.
	ErrPadding = errors.New("names: bad padding")
	// ErrEmptyName: an empty entry or attribute name.
	ErrEmptyName = errors.New("names: empty name")
	// ErrInvalidName: a name containing '/' (entry names) or NUL.
	ErrInvalidName = errors.New("names: name contains '/' or NUL")
	// ErrDotName: the entry name "." or "..".
	ErrDotName = errors.New(`names: name is "." or ".."`)
	// ErrNameTooLong: an entry name over 255 bytes or an attribute name
	// over 255 bytes with its "user." prefix.
	ErrNameTooLong = errors.New("names: name too long")
	// ErrCorrupt: a sidecar, directory ID file, long-target file or
	// attribute value blob that is malformed (magic, version, length).
	ErrCorrupt = errors.New("names: corrupt record")
	// ErrHashMismatch: a sidecar or long-target file whose hash does not
	// match the name that refers to it.
	ErrHashMismatch = errors.New("names: hash does not match")
	// ErrEmptyTarget: an empty symlink target.
	ErrEmptyTarget = errors.New("names: empty symlink target")
	// ErrInvalidTarget: a symlink target containing NUL.
	ErrInvalidTarget = errors.New("names: symlink target contains NUL")
	// ErrTargetTooLong: a symlink target over 4,095 bytes (ENAMETOOLONG).
	ErrTargetTooLong = errors.New("names: symlink target too long")
	// ErrNotUserXattr: an attribute name outside the "user." namespace.
	ErrNotUserXattr = errors.New("names: not a user.* attribute")
	// ErrValueTooLarge: an attribute value whose encrypted form would
	// exceed XATTR_SIZE_MAX (E2BIG).
	ErrValueTooLarge = errors.New("names: attribute value too large")
)

// Keys holds the subkeys of one filesystem's names key. Build it once per
// mount with New; it is immutable and safe for concurrent use.
//
// What it keeps in memory: two 64-byte AES-SIV keys (tink's AESSIV keeps
// the slice it was given, split in halves, plus the expanded AES key and
// CMAC subkeys of the first half, and expands the second half on every
// call), the expanded AES-256 schedules of the two GCM keys (crypto/aes
// copies the key; the 32-byte buffers are zeroed after use), and the
// 32-byte HMAC key of directory ID files. It does not keep the names key.
// Go offers no way to wipe the expanded schedules, so they live until the
// Keys is garbage collected.
type Keys struct {
	entryNames  *subtle.AESSIV
	xattrNames  *subtle.AESSIV
	targets     cipher.AEAD
	xattrValues cipher.AEAD
	dirIDKey    []byte
}

// New derives the subkeys from a 32-byte names key. It does not keep
// namesKey (nor anything that aliases it): the caller should zero its copy
// when New returns.
func New(namesKey []byte) (*Keys, error) {
	if len(namesKey) != KeySize {
		return nil, fmt.Errorf("names: key is %d bytes, want %d", len(namesKey), KeySize)
	}
	prk, err := hkdf.Extract(sha256.New, namesKey, nil)
	if err != nil {
		return nil, fmt.Errorf("names: hkdf: %w", err)
	}
	defer clear(prk)
	derive := func(label string, n int) []byte {
		k, err := hkdf.Expand(sha256.New, prk, label, n)
		if err != nil {
			panic("names: internal error: hkdf: " + err.Error()) // n is far below 255·32
		}
		return k
	}
	k := &Keys{dirIDKey: derive(labelDirIDs, 32)}
	// tink keeps these two slices for the life of the AESSIV: not zeroed.
	if k.entryNames, err = subtle.NewAESSIV(derive(labelEntryNames, subtle.AESSIVKeySize)); err != nil {
		return nil, fmt.Errorf("names: %w", err)
	}
	if k.xattrNames, err = subtle.NewAESSIV(derive(labelXattrNames, subtle.AESSIVKeySize)); err != nil {
		return nil, fmt.Errorf("names: %w", err)
	}
	if k.targets, err = newGCM(derive(labelTargets, 32)); err != nil {
		return nil, err
	}
	if k.xattrValues, err = newGCM(derive(labelXattrValues, 32)); err != nil {
		return nil, err
	}
	return k, nil
}

// newGCM returns AES-256-GCM with 12-byte nonces and 16-byte tags under
// key, and zeroes key (crypto/aes keeps its own expanded copy).
func newGCM(key []byte) (cipher.AEAD, error) {
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("names: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("names: %w", err)
	}
	return gcm, nil
}
