package names

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
)

// Extended attributes (FORMAT.md, "Extended attributes").
const (
	// UserXattrPrefix is the namespace whose attributes are encrypted.
	UserXattrPrefix = "user."
	// XattrNameMax is Linux's XATTR_NAME_MAX: the longest attribute name,
	// namespace prefix included.
	XattrNameMax = 255
	// XattrSizeMax is Linux's XATTR_SIZE_MAX: the largest attribute value.
	XattrSizeMax = 65536
	// XattrPrefix starts the backing name of an encrypted attribute whose
	// encoded name fits: XattrPrefix + encoded name.
	XattrPrefix = "user.kmsfs.x."
	// XattrHashedPrefix starts the backing name of an encrypted attribute
	// whose encoded name does not fit: XattrHashedPrefix + base64url
	// SHA-256 of the encoded name, which the value blob carries.
	XattrHashedPrefix = "user.kmsfs.h."
	// maxXattrSuffix is the longest name after "user.".
	maxXattrSuffix = XattrNameMax - len(UserXattrPrefix)
	// xattrValueOverhead is the fixed part of a value blob: version,
	// name length, nonce and tag.
	xattrValueOverhead = 1 + 2 + nonceSize + tagSize
)

// ObjectID identifies the owner of extended attributes: a regular file's
// file ID (from its chunk header) or a directory's DirID. Symlinks carry
// no user attributes on Linux.
type ObjectID [16]byte

// xattrSuffix checks a plaintext attribute name and returns the part after
// "user.".
func xattrSuffix(name string) (string, error) {
	s, ok := strings.CutPrefix(name, UserXattrPrefix)
	switch {
	case !ok:
		return "", ErrNotUserXattr
	case s == "":
		return "", ErrEmptyName
	case strings.IndexByte(s, 0) >= 0:
		return "", ErrInvalidName
	case len(name) > XattrNameMax:
		return "", ErrNameTooLong
	}
	return s, nil
}

// encodedXattrLen is the length of the encoded name of an attribute whose
// name after "user." is n bytes long.
func encodedXattrLen(n int) int { return b64.EncodedLen(sivOverhead + paddedLen(n)) }

// xattrNameHashed reports whether an encoded attribute name of length n
// is stored under XattrHashedPrefix.
func xattrNameHashed(n int) bool { return len(XattrPrefix)+n > XattrNameMax }

func xattrNameAD(obj ObjectID) []byte { return append([]byte(adXattrName), obj[:]...) }

func xattrValueAD(obj ObjectID, name string) []byte {
	ad := make([]byte, 0, len(adXattrValue)+len(obj)+len(name))
	ad = append(ad, adXattrValue...)
	ad = append(ad, obj[:]...)
	return append(ad, name...)
}

// encryptXattrName returns the encoded name and backing name of the
// attribute name (whose suffix s has been checked) of object obj.
func (k *Keys) encryptXattrName(obj ObjectID, s string) (encoded, backing string) {
	ct, err := k.xattrNames.EncryptDeterministically(pad([]byte(s)), xattrNameAD(obj))
	if err != nil {
		panic("names: internal error: aes-siv: " + err.Error())
	}
	encoded = b64.EncodeToString(ct)
	if xattrNameHashed(len(encoded)) {
		sum := sha256.Sum256([]byte(encoded))
		return encoded, XattrHashedPrefix + b64.EncodeToString(sum[:])
	}
	return encoded, XattrPrefix + encoded
}

// XattrBackingName returns the backing attribute name of the user
// attribute name ("user." and 1 to 250 more bytes, no NUL) of object obj,
// for getxattr and removexattr. It fails with ErrNotUserXattr (other
// namespaces are not encrypted), ErrEmptyName, ErrInvalidName or
// ErrNameTooLong.
func (k *Keys) XattrBackingName(obj ObjectID, name string) (string, error) {
	s, err := xattrSuffix(name)
	if err != nil {
		return "", err
	}
	_, backing := k.encryptXattrName(obj, s)
	return backing, nil
}

// EncryptXattr encrypts the user attribute name with value for object obj
// under a fresh random nonce, returning the backing attribute name and
// value. It fails as XattrBackingName, or with ErrValueTooLarge when the
// blob would exceed XattrSizeMax (see MaxXattrValueSize; E2BIG).
func (k *Keys) EncryptXattr(obj ObjectID, name string, value []byte) (backing string, blob []byte, err error) {
	var nonce [nonceSize]byte
	_, _ = rand.Read(nonce[:])
	return k.encryptXattr(obj, name, value, nonce[:])
}

func (k *Keys) encryptXattr(obj ObjectID, name string, value, nonce []byte) (string, []byte, error) {
	s, err := xattrSuffix(name)
	if err != nil {
		return "", nil, err
	}
	encoded, backing := k.encryptXattrName(obj, s)
	carried := ""
	if xattrNameHashed(len(encoded)) {
		carried = encoded
	}
	if xattrValueOverhead+len(carried)+len(value) > XattrSizeMax {
		return "", nil, ErrValueTooLarge
	}
	blob := make([]byte, 0, xattrValueOverhead+len(carried)+len(value))
	blob = append(blob, formatVersion)
	blob = binary.BigEndian.AppendUint16(blob, uint16(len(carried)))
	blob = append(blob, carried...)
	blob = append(blob, nonce...)
	blob = k.xattrValues.Seal(blob, nonce, value, xattrValueAD(obj, name))
	return backing, blob, nil
}

// splitXattrValue checks the framing of a value blob and returns the
// carried encoded name, the nonce and the GCM ciphertext.
func splitXattrValue(blob []byte) (carried string, nonce, ct []byte, err error) {
	if len(blob) < xattrValueOverhead || len(blob) > XattrSizeMax || blob[0] != formatVersion {
		return "", nil, nil, fmt.Errorf("attribute value: %w", ErrCorrupt)
	}
	n := int(binary.BigEndian.Uint16(blob[1:3]))
	if len(blob) < xattrValueOverhead+n {
		return "", nil, nil, fmt.Errorf("attribute value: %w", ErrCorrupt)
	}
	rest := blob[3+n:]
	return string(blob[3 : 3+n]), rest[:nonceSize], rest[nonceSize:], nil
}

// IsXattrBackingName reports whether a backing attribute name is an
// encrypted user attribute (either form). Other backing attributes are
// kmsfs's own (user.kmsfs.key) or another namespace's.
func IsXattrBackingName(backing string) bool {
	if e, ok := strings.CutPrefix(backing, XattrPrefix); ok {
		return e != ""
	}
	h, ok := strings.CutPrefix(backing, XattrHashedPrefix)
	return ok && isHash(h)
}

// IsHashedXattrName reports whether a backing attribute name is the
// hashed form, whose plaintext name DecryptXattrName can only recover from
// the attribute's value blob.
func IsHashedXattrName(backing string) bool {
	h, ok := strings.CutPrefix(backing, XattrHashedPrefix)
	return ok && isHash(h)
}

// DecryptXattrName returns the plaintext name ("user.…") of the backing
// attribute backing of object obj, for listxattr. blob is the attribute's
// value, needed only when IsHashedXattrName(backing) (nil otherwise). It
// fails with ErrEncoding for a name of neither form or not canonical,
// ErrCorrupt or ErrHashMismatch for a bad blob, ErrAuthentication (also for
// an attribute of another object), ErrPadding, and the invalid-name
// sentinels.
func (k *Keys) DecryptXattrName(obj ObjectID, backing string, blob []byte) (string, error) {
	var encoded string
	switch {
	case IsHashedXattrName(backing):
		carried, _, _, err := splitXattrValue(blob)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256([]byte(carried))
		if XattrHashedPrefix+b64.EncodeToString(sum[:]) != backing {
			return "", fmt.Errorf("attribute value: %w", ErrHashMismatch)
		}
		if !xattrNameHashed(len(carried)) {
			return "", fmt.Errorf("attribute value: %w", ErrCorrupt) // canonical: short names are not hashed
		}
		encoded = carried
	case strings.HasPrefix(backing, XattrPrefix):
		encoded = backing[len(XattrPrefix):]
	default:
		return "", fmt.Errorf("attribute name: %w", ErrEncoding)
	}
	ct, ok := decode64(encoded)
	if !ok || len(ct) < sivOverhead+padBlock || (len(ct)-sivOverhead)%padBlock != 0 {
		return "", fmt.Errorf("attribute name: %w", ErrEncoding)
	}
	p, err := k.xattrNames.DecryptDeterministically(ct, xattrNameAD(obj))
	if err != nil {
		return "", fmt.Errorf("attribute name: %w", ErrAuthentication)
	}
	s, err := unpad(p)
	if err != nil {
		return "", fmt.Errorf("attribute name: %w", err)
	}
	name := UserXattrPrefix + string(s)
	if _, err := xattrSuffix(name); err != nil {
		return "", fmt.Errorf("attribute name: %w", err)
	}
	return name, nil
}

// DecryptXattrValue returns the plaintext value of the user attribute name
// of object obj from its backing value blob. It fails with ErrCorrupt for
// a malformed blob (or one whose carried name is not this attribute's),
// with ErrAuthentication when the value was written for another object or
// another attribute name or was edited, and as XattrBackingName for an
// invalid name.
func (k *Keys) DecryptXattrValue(obj ObjectID, name string, blob []byte) ([]byte, error) {
	s, err := xattrSuffix(name)
	if err != nil {
		return nil, err
	}
	carried, nonce, ct, err := splitXattrValue(blob)
	if err != nil {
		return nil, err
	}
	encoded, _ := k.encryptXattrName(obj, s)
	if xattrNameHashed(len(encoded)) != (carried != "") || (carried != "" && carried != encoded) {
		return nil, fmt.Errorf("attribute value: %w", ErrCorrupt)
	}
	v, err := k.xattrValues.Open(nil, nonce, ct, xattrValueAD(obj, name))
	if err != nil {
		return nil, fmt.Errorf("attribute value: %w", ErrAuthentication)
	}
	return v, nil
}

// XattrValueOverhead returns how many bytes the backing value of the user
// attribute name has beyond its plaintext value: 31 for names of up to
// 159 bytes after "user.", 31 plus the encoded name (256 to 363 bytes)
// for longer ones, which are stored hashed.
func XattrValueOverhead(name string) (int, error) {
	s, err := xattrSuffix(name)
	if err != nil {
		return 0, err
	}
	if n := encodedXattrLen(len(s)); xattrNameHashed(n) {
		return xattrValueOverhead + n, nil
	}
	return xattrValueOverhead, nil
}

// MaxXattrValueSize returns the largest plaintext value the user attribute
// name can hold: XattrSizeMax − XattrValueOverhead(name), 65,505 bytes for
// a short name. A larger value fails with ErrValueTooLarge (E2BIG); the
// backing file system may refuse smaller ones (ext4 keeps all attributes of
// a file in one block unless ea_inode is on).
func MaxXattrValueSize(name string) (int, error) {
	o, err := XattrValueOverhead(name)
	if err != nil {
		return 0, err
	}
	return XattrSizeMax - o, nil
}

// XattrValueSize returns the plaintext size of a backing value blob
// without decrypting it (for size probes of getxattr after the value has
// been authenticated once, or for listings that only need sizes).
func XattrValueSize(blob []byte) (int, error) {
	_, _, ct, err := splitXattrValue(blob)
	if err != nil {
		return 0, err
	}
	return len(ct) - tagSize, nil
}
