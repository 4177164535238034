package names

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
)

// Limits of symlink targets (FORMAT.md, "Symlink targets").
const (
	// MaxTargetLen is the longest plaintext symlink target, Linux's
	// PATH_MAX − 1.
	MaxTargetLen = 4095
	// MaxBackingTargetLen is the longest backing symlink target written:
	// ext2/3/4 with 1 KiB blocks (mke2fs's choice for small file systems)
	// refuse longer ones, as do BSD and macOS (PATH_MAX 1024). A target
	// whose encoding is longer goes to a long-target file.
	MaxBackingTargetLen = 1023
	// LongTargetPrefix starts the backing symlink target of a long
	// target; the rest is the name of its file in TargetsDirName.
	LongTargetPrefix = "kmsfs.target."
	// MaxTargetFileSize is the largest valid long-target file (a
	// 4,095-byte target): a reader need not read more than one byte past it.
	MaxTargetFileSize = 6 + targetOverhead + MaxTargetLen + 1
)

const (
	targetMagic = "KMST"
	nonceSize   = 12
	tagSize     = 16
	// targetOverhead is the version byte, nonce and tag around the padded
	// target in a target blob.
	targetOverhead = 1 + nonceSize + tagSize
)

func validTarget(target string) error {
	switch {
	case target == "":
		return ErrEmptyTarget
	case strings.IndexByte(target, 0) >= 0:
		return ErrInvalidTarget
	case len(target) > MaxTargetLen:
		return ErrTargetTooLong
	}
	return nil
}

// EncryptTarget encrypts a symlink target (1 to 4,095 bytes, no NUL) with
// a fresh random nonce. It returns the backing symlink's target and, when
// that is the long form (LongTargetPrefix), the content of the file to
// store as TargetsDirName/TargetFileName(link) before creating the
// symlink; file is nil for the short form.
func (k *Keys) EncryptTarget(target string) (link string, file []byte, err error) {
	var nonce [nonceSize]byte
	_, _ = rand.Read(nonce[:])
	return k.encryptTarget(target, nonce[:])
}

func (k *Keys) encryptTarget(target string, nonce []byte) (string, []byte, error) {
	if err := validTarget(target); err != nil {
		return "", nil, err
	}
	p := pad([]byte(target))
	blob := make([]byte, 0, targetOverhead+len(p))
	blob = append(blob, formatVersion)
	blob = append(blob, nonce...)
	blob = k.targets.Seal(blob, nonce, p, []byte(adTarget))
	if enc := b64.EncodeToString(blob); len(enc) <= MaxBackingTargetLen {
		return enc, nil, nil
	}
	file := make([]byte, 0, 6+len(blob))
	file = append(file, targetMagic...)
	file = binary.BigEndian.AppendUint16(file, formatVersion)
	file = append(file, blob...)
	sum := sha256.Sum256(file)
	return LongTargetPrefix + b64.EncodeToString(sum[:]), file, nil
}

// TargetFileName returns, for the backing target of a long-form symlink,
// the name of its file in TargetsDirName; ok is false for any other
// target (the short form needs no file).
func TargetFileName(link string) (name string, ok bool) {
	name, ok = strings.CutPrefix(link, LongTargetPrefix)
	return name, ok && isHash(name)
}

// DecryptTarget returns the plaintext target of a backing symlink whose
// target is link. For the long form, file is the content of the file
// TargetFileName names (ignored otherwise). It fails with ErrEncoding for
// a link that is neither form, ErrCorrupt or ErrHashMismatch for a bad
// long-target file, ErrAuthentication when the ciphertext does not verify,
// ErrPadding, and ErrEmptyTarget, ErrInvalidTarget or ErrTargetTooLong for
// a plaintext that is not a valid target.
func (k *Keys) DecryptTarget(link string, file []byte) (string, error) {
	var blob []byte
	if name, ok := strings.CutPrefix(link, LongTargetPrefix); ok {
		if !isHash(name) {
			return "", fmt.Errorf("symlink target: %w", ErrEncoding)
		}
		if len(file) > MaxTargetFileSize || len(file) < 6 || string(file[:4]) != targetMagic ||
			binary.BigEndian.Uint16(file[4:6]) != formatVersion {
			return "", fmt.Errorf("long-target file: %w", ErrCorrupt)
		}
		if sum := sha256.Sum256(file); b64.EncodeToString(sum[:]) != name {
			return "", fmt.Errorf("long-target file: %w", ErrHashMismatch)
		}
		blob = file[6:]
		if b64.EncodedLen(len(blob)) <= MaxBackingTargetLen {
			// Canonical form: such a blob is stored in the link itself.
			return "", fmt.Errorf("long-target file: %w", ErrCorrupt)
		}
	} else {
		var ok bool
		if blob, ok = decode64(link); !ok || len(link) > MaxBackingTargetLen {
			return "", fmt.Errorf("symlink target: %w", ErrEncoding)
		}
	}
	if len(blob) < targetOverhead+padBlock || (len(blob)-targetOverhead)%padBlock != 0 || blob[0] != formatVersion {
		return "", fmt.Errorf("symlink target: %w", ErrCorrupt)
	}
	p, err := k.targets.Open(nil, blob[1:1+nonceSize], blob[1+nonceSize:], []byte(adTarget))
	if err != nil {
		return "", fmt.Errorf("symlink target: %w", ErrAuthentication)
	}
	t, err := unpad(p)
	if err != nil {
		return "", fmt.Errorf("symlink target: %w", err)
	}
	if err := validTarget(string(t)); err != nil {
		return "", fmt.Errorf("symlink target: %w", err)
	}
	return string(t), nil
}
