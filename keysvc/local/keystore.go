package local

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/crypto/scrypt"

	"github.com/kmsfs/kmsfs/keysvc"
)

// keystore.kms layout (all integers big-endian):
//
//	magic "KMKS" (4) ‖ format version (1, = 1) ‖ root-key mode (1)
//	mode 1 (root.key file): nothing more
//	mode 2 (passphrase):    scrypt log2(N) (1) ‖ r (4) ‖ p (4) ‖ salt (32)
//	nonce (12) ‖ AES-256-GCM(root key, nonce, JSON, AAD = every byte before the nonce)
//
// The JSON is keystoreData. The header is authenticated, so a changed KDF
// parameter or salt fails like a wrong passphrase.
const (
	keystoreMagic   = "KMKS"
	keystoreVersion = 1
	modeRootKeyFile = 1
	modePassphrase  = 2
	saltSize        = 32
	rootKeySize     = 32
	gcmNonceSize    = 12
	gcmTagSize      = 16
	// maxKeystoreSize bounds what is read from disk. save never writes a
	// larger file, so the keystore always loads.
	maxKeystoreSize = 64 << 20
	// keystoreBudget is the size past which a keystore may not grow: a
	// write that makes keystore.kms larger than this and larger than it
	// was fails with keysvc.ErrLimitExceeded. Writes that do not grow it
	// (deleting aliases or tags, shortening a description or policy) still
	// go through up to maxKeystoreSize, so an administrator can always
	// make room: the 16 MiB between the two leaves space for the small
	// growth of scheduling deletions and state changes.
	keystoreBudget = 48 << 20

	// DefaultScryptLogN is log2 of the scrypt cost N used for new
	// passphrase keystores: N = 2^17, r = 8, p = 1 (128 MiB, about half a
	// second).
	DefaultScryptLogN = 17
	scryptR           = 8
	scryptP           = 1
	maxScryptLogN     = 22
)

// Errors about the keystore's root secret. They are about the keystore
// file, not a KMS key, so they are not keysvc sentinels.
var (
	// ErrWrongPassphrase: the passphrase does not open keystore.kms (or
	// the file was altered).
	ErrWrongPassphrase = errors.New("wrong passphrase for the keystore, or keystore.kms is damaged")
	// ErrWrongRootKey: root.key does not open keystore.kms (or the file
	// was altered).
	ErrWrongRootKey = errors.New("root.key does not open the keystore, or keystore.kms is damaged")
	// ErrKeystoreMode: a passphrase was given for a keystore protected by
	// root.key, or none was given for one protected by a passphrase.
	ErrKeystoreMode = errors.New("keystore root-key mode mismatch")
	// ErrInsecureRootKey: root.key is readable or writable by others, or
	// not owned by this user, so it protects nothing.
	ErrInsecureRootKey = errors.New("root.key is not private to its owner")
	// ErrInsecureKeystoreDir: the keystore directory is not mode 0700 (or
	// stricter) or not owned by this user.
	ErrInsecureKeystoreDir = errors.New("the keystore directory is not private to its owner")
	// ErrCorruptKeystore: keystore.kms is not a keystore file.
	ErrCorruptKeystore = errors.New("keystore.kms is malformed")
)

// fileHeader is the decoded header of keystore.kms.
type fileHeader struct {
	mode    byte
	logN    uint8
	r, p    uint32
	salt    [saltSize]byte
	encoded []byte // the header bytes, used as AAD
}

func (h fileHeader) sameKDF(o fileHeader) bool {
	return h.mode == o.mode && h.logN == o.logN && h.r == o.r && h.p == o.p && h.salt == o.salt
}

func newHeader(passphrase bool, logN uint8) (fileHeader, error) {
	h := fileHeader{mode: modeRootKeyFile}
	if passphrase {
		h = fileHeader{mode: modePassphrase, logN: logN, r: scryptR, p: scryptP}
		salt, err := randomBytes(saltSize)
		if err != nil {
			return fileHeader{}, err
		}
		copy(h.salt[:], salt)
	}
	h.encoded = h.encode()
	return h, nil
}

func (h fileHeader) encode() []byte {
	b := append([]byte(keystoreMagic), keystoreVersion, h.mode)
	if h.mode == modePassphrase {
		b = append(b, h.logN)
		b = binary.BigEndian.AppendUint32(b, h.r)
		b = binary.BigEndian.AppendUint32(b, h.p)
		b = append(b, h.salt[:]...)
	}
	return b
}

// sealedSize is the size of the keystore file that seals plainLen bytes
// of JSON under header h.
func sealedSize(h fileHeader, plainLen int) int64 {
	return int64(len(h.encoded)) + gcmNonceSize + int64(plainLen) + gcmTagSize
}

// checkKeystoreSize refuses a keystore file of size bytes, replacing one of
// oldSize bytes, that the loader would refuse or that grows past
// keystoreBudget.
func checkKeystoreSize(size, oldSize int64) error {
	if size > maxKeystoreSize {
		return fmt.Errorf("the keystore would be %d bytes, more than the %d it may have: %w", size, maxKeystoreSize, keysvc.ErrLimitExceeded)
	}
	if size > keystoreBudget && size > oldSize {
		return fmt.Errorf("the keystore would grow to %d bytes, past its %d-byte budget; delete keys, aliases or tags to make room: %w", size, keystoreBudget, keysvc.ErrLimitExceeded)
	}
	return nil
}

// parseKeystoreFile splits a keystore file into header, nonce and sealed
// JSON, checking structure only. It never panics.
func parseKeystoreFile(b []byte) (h fileHeader, nonce, sealed []byte, err error) {
	bad := func(what string) (fileHeader, []byte, []byte, error) {
		return fileHeader{}, nil, nil, fmt.Errorf("%s: %w", what, ErrCorruptKeystore)
	}
	if len(b) > maxKeystoreSize {
		return bad("file too large")
	}
	if len(b) < len(keystoreMagic)+2 || string(b[:len(keystoreMagic)]) != keystoreMagic {
		return bad("no keystore magic")
	}
	if b[4] != keystoreVersion {
		return bad(fmt.Sprintf("keystore format version %d, want %d", b[4], keystoreVersion))
	}
	h.mode = b[5]
	rest := b[6:]
	switch h.mode {
	case modeRootKeyFile:
	case modePassphrase:
		if len(rest) < 1+4+4+saltSize {
			return bad("truncated KDF parameters")
		}
		h.logN = rest[0]
		h.r = binary.BigEndian.Uint32(rest[1:5])
		h.p = binary.BigEndian.Uint32(rest[5:9])
		copy(h.salt[:], rest[9:9+saltSize])
		rest = rest[9+saltSize:]
		if h.logN < 1 || h.logN > maxScryptLogN || h.r < 1 || h.r > 32 || h.p < 1 || h.p > 16 {
			return bad("scrypt parameters out of range")
		}
	default:
		return bad(fmt.Sprintf("unknown root-key mode %d", h.mode))
	}
	h.encoded = append([]byte(nil), b[:len(b)-len(rest)]...)
	if len(rest) < gcmNonceSize+gcmTagSize {
		return bad("truncated sealed content")
	}
	return h, rest[:gcmNonceSize], rest[gcmNonceSize:], nil
}

// deriveRootKey runs scrypt over the passphrase with h's parameters.
func deriveRootKey(passphrase []byte, h fileHeader) ([]byte, error) {
	k, err := scrypt.Key(passphrase, h.salt[:], 1<<h.logN, int(h.r), int(h.p), rootKeySize)
	if err != nil {
		return nil, fmt.Errorf("derive keystore key: %w", err)
	}
	return k, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealKeystore encrypts plain under rootKey into a whole keystore file.
func sealKeystore(h fileHeader, rootKey, plain []byte) ([]byte, error) {
	aead, err := newGCM(rootKey)
	if err != nil {
		return nil, err
	}
	nonce, err := randomBytes(gcmNonceSize)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(h.encoded)+gcmNonceSize+len(plain)+gcmTagSize)
	out = append(out, h.encoded...)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, h.encoded), nil
}

// openKeystore decrypts the sealed content of a parsed keystore file. The
// caller zeroes the result.
func openKeystore(h fileHeader, nonce, sealed, rootKey []byte) ([]byte, error) {
	aead, err := newGCM(rootKey)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, nonce, sealed, h.encoded)
	if err != nil {
		if h.mode == modePassphrase {
			return nil, ErrWrongPassphrase
		}
		return nil, ErrWrongRootKey
	}
	return plain, nil
}

// decodeKeystoreData parses and validates the keystore JSON. On error any
// material already decoded is zeroed.
func decodeKeystoreData(plain []byte) (*keystoreData, error) {
	d := &keystoreData{}
	if err := json.Unmarshal(plain, d); err != nil {
		d.zero()
		return nil, fmt.Errorf("decode keystore content: %w", ErrCorruptKeystore)
	}
	if err := d.validate(); err != nil {
		d.zero()
		return nil, fmt.Errorf("%w: %w", ErrCorruptKeystore, err)
	}
	return d, nil
}

// encodeKeystoreData serialises d; the caller zeroes the result.
func encodeKeystoreData(d *keystoreData) ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode keystore content: %w", err)
	}
	return b, nil
}
