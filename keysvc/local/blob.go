package local

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

// Wrapped blob layout (what Encrypt and GenerateDataKey return):
//
//	magic "KLB" ‖ version 1 (1) ‖ key UUID (16) ‖ key material ID (32) ‖
//	salt (32) ‖ AES-256-GCM ciphertext ‖ tag (16)
//
// The first 52 bytes are the prefix. The GCM key is
// HKDF-Expand-SHA256(PRK = material, info = "kmsfs local blob v1" ‖ salt,
// 32 bytes); the material is 32 uniformly random bytes, so the Extract
// step of HKDF is not needed (RFC 5869, section 3.3). The key is fresh for
// every blob because the salt is random, so the GCM nonce is fixed at zero
// and no nonce is ever reused under one key. AAD = prefix ‖ EncodeContext(ec):
// the key, the material version and the encryption context are all
// authenticated.
const (
	blobMagic      = "KLB"
	blobVersion    = 1
	blobPrefixSize = len(blobMagic) + 1 + 16 + 32
	blobSaltSize   = 32
	blobOverhead   = blobPrefixSize + blobSaltSize + gcmTagSize // 100 bytes
	blobInfo       = "kmsfs local blob v1"
)

var zeroNonce [gcmNonceSize]byte

type parsedBlob struct {
	keyID      string // UUID form
	materialID string // 64 hex
	prefix     []byte
	salt       []byte
	sealed     []byte
}

func errBadBlob(what string) error {
	return fmt.Errorf("%s: %w", what, keysvc.ErrInvalidCiphertext)
}

// parseBlob checks a blob's structure. Anything wrong is ErrInvalidCiphertext.
func parseBlob(b []byte) (parsedBlob, error) {
	if len(b) == 0 || len(b) > keysvc.MaxBlobSize {
		return parsedBlob{}, errBadBlob(fmt.Sprintf("ciphertext blob of %d bytes, want 1..%d", len(b), keysvc.MaxBlobSize))
	}
	if len(b) <= blobOverhead || string(b[:len(blobMagic)]) != blobMagic || b[len(blobMagic)] != blobVersion {
		return parsedBlob{}, errBadBlob("not a local KMS ciphertext blob")
	}
	u := b[len(blobMagic)+1 : len(blobMagic)+17]
	m := b[len(blobMagic)+17 : blobPrefixSize]
	return parsedBlob{
		keyID:      formatUUID(u),
		materialID: hex.EncodeToString(m),
		prefix:     b[:blobPrefixSize],
		salt:       b[blobPrefixSize : blobPrefixSize+blobSaltSize],
		sealed:     b[blobPrefixSize+blobSaltSize:],
	}, nil
}

func formatUUID(u []byte) string {
	h := hex.EncodeToString(u)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func uuidBytes(id string) []byte {
	b, _ := hex.DecodeString(id[0:8] + id[9:13] + id[14:18] + id[19:23] + id[24:36])
	return b
}

func blobAAD(prefix []byte, ec keysvc.EncryptionContext) []byte {
	return append(append([]byte(nil), prefix...), keysvc.EncodeContext(ec)...)
}

func blobGCMKey(material, salt []byte) ([]byte, error) {
	return hkdf.Expand(sha256.New, material, blobInfo+string(salt), 32)
}

// sealBlob wraps plaintext under version v of key k.
func sealBlob(k *keyRecord, v *keyVersion, plaintext []byte, ec keysvc.EncryptionContext) ([]byte, error) {
	out := make([]byte, 0, blobOverhead+len(plaintext))
	out = append(out, blobMagic...)
	out = append(out, blobVersion)
	out = append(out, uuidBytes(k.ID)...)
	mid, err := hex.DecodeString(v.ID)
	if err != nil {
		return nil, fmt.Errorf("key %s: bad key material ID", k.ID)
	}
	out = append(out, mid...)
	salt, err := randomBytes(blobSaltSize)
	if err != nil {
		return nil, err
	}
	out = append(out, salt...)
	gk, err := blobGCMKey(v.Material, salt)
	if err != nil {
		return nil, fmt.Errorf("derive blob key: %w", err)
	}
	aead, err := newGCM(gk)
	keysvc.Zero(gk)
	if err != nil {
		return nil, fmt.Errorf("blob cipher: %w", err)
	}
	return aead.Seal(out, zeroNonce[:], plaintext, blobAAD(out[:blobPrefixSize], ec)), nil
}

// openBlob unwraps p with version v. Any failure is ErrInvalidCiphertext.
func openBlob(p parsedBlob, v *keyVersion, ec keysvc.EncryptionContext) ([]byte, error) {
	gk, err := blobGCMKey(v.Material, p.salt)
	if err != nil {
		return nil, errBadBlob("derive blob key")
	}
	aead, err := newGCM(gk)
	keysvc.Zero(gk)
	if err != nil {
		return nil, errBadBlob("blob cipher")
	}
	plain, err := aead.Open(nil, zeroNonce[:], p.sealed, blobAAD(p.prefix, ec))
	if err != nil {
		return nil, keysvc.ErrInvalidCiphertext
	}
	return plain, nil
}

// usable reports whether cryptographic operations may use k.
func usable(k *keyRecord) error {
	switch k.State {
	case KeyStateEnabled:
		return nil
	case KeyStateDisabled:
		return fmt.Errorf("key %s is Disabled: %w", k.ARN, keysvc.ErrDisabled)
	default:
		return fmt.Errorf("key %s is %s: %w", k.ARN, k.State, keysvc.ErrInvalidState)
	}
}

func (k *keyRecord) current() *keyVersion { return k.Versions[len(k.Versions)-1] }

func (k *keyRecord) version(id string) *keyVersion {
	for _, v := range k.Versions {
		if v.ID == id {
			return v
		}
	}
	return nil
}

func newKeyVersion(now time.Time, kind MaterialKind) (*keyVersion, error) {
	id, err := newMaterialID()
	if err != nil {
		return nil, err
	}
	m, err := randomBytes(materialSize)
	if err != nil {
		return nil, err
	}
	return &keyVersion{ID: id, Material: m, Created: now.UTC(), Kind: kind}, nil
}

// wrap encrypts plaintext under keyRef's current material.
func (s *Store) wrap(ctx context.Context, keyRef string, plaintext []byte, ec keysvc.EncryptionContext) (keysvc.WrappedKey, error) {
	if err := keysvc.ValidateContext(ec); err != nil {
		return keysvc.WrappedKey{}, err
	}
	var w keysvc.WrappedKey
	err := s.view(ctx, func(d *keystoreData, now time.Time) error {
		k, err := resolve(d, keyRef, now)
		if err != nil {
			return err
		}
		if err := usable(k); err != nil {
			return err
		}
		v := k.current()
		blob, err := sealBlob(k, v, plaintext, ec)
		if err != nil {
			return err
		}
		w = keysvc.WrappedKey{KeyID: k.ARN, KeyMaterialID: v.ID, Blob: blob}
		return nil
	})
	return w, err
}

// GenerateDataKey returns a new 32-byte data key wrapped under keyID (an
// ID, ARN, alias name or alias ARN) with the given encryption context.
func (s *Store) GenerateDataKey(ctx context.Context, keyID string, ec keysvc.EncryptionContext) (keysvc.DataKey, error) {
	return s.GenerateDataKeyBytes(ctx, keyID, keysvc.DataKeySize, ec)
}

// GenerateDataKeyBytes returns a new random data key of n bytes (1..1024,
// AWS's NumberOfBytes; KeySpec AES_128 is 16, AES_256 is 32) wrapped under
// keyID. The caller zeroes the plaintext.
func (s *Store) GenerateDataKeyBytes(ctx context.Context, keyID string, n int, ec keysvc.EncryptionContext) (keysvc.DataKey, error) {
	if n < 1 || n > MaxDataKeyBytes {
		return keysvc.DataKey{}, fmt.Errorf("data key of %d bytes, want 1..%d: %w", n, MaxDataKeyBytes, keysvc.ErrInvalidArgument)
	}
	plain, err := randomBytes(n)
	if err != nil {
		return keysvc.DataKey{}, err
	}
	w, err := s.wrap(ctx, keyID, plain, ec)
	if err != nil {
		keysvc.Zero(plain)
		return keysvc.DataKey{}, err
	}
	return keysvc.DataKey{Plaintext: plain, Wrapped: w}, nil
}

// Encrypt wraps plaintext (1..4096 bytes) under keyID's current key
// material.
func (s *Store) Encrypt(ctx context.Context, keyID string, plaintext []byte, ec keysvc.EncryptionContext) (keysvc.WrappedKey, error) {
	if len(plaintext) < 1 || len(plaintext) > MaxPlaintextSize {
		return keysvc.WrappedKey{}, fmt.Errorf("plaintext of %d bytes, want 1..%d: %w", len(plaintext), MaxPlaintextSize, keysvc.ErrInvalidArgument)
	}
	return s.wrap(ctx, keyID, plaintext, ec)
}

// Decrypt unwraps blob with the key material it names. keyID may be
// empty; when set and the blob names another key, Decrypt fails with
// ErrIncorrectKey. A damaged blob, a blob of an unknown (or deleted) key or
// material, or a wrong encryption context fail with ErrInvalidCiphertext.
func (s *Store) Decrypt(ctx context.Context, blob []byte, keyID string, ec keysvc.EncryptionContext) (keysvc.Unwrapped, error) {
	if err := keysvc.ValidateContext(ec); err != nil {
		return keysvc.Unwrapped{}, err
	}
	p, err := parseBlob(blob)
	if err != nil {
		return keysvc.Unwrapped{}, err
	}
	var u keysvc.Unwrapped
	err = s.view(ctx, func(d *keystoreData, now time.Time) error {
		if keyID != "" {
			named, err := resolve(d, keyID, now)
			if err != nil {
				return err
			}
			if named.ID != p.keyID {
				return fmt.Errorf("blob was not wrapped under key %s: %w", named.ARN, keysvc.ErrIncorrectKey)
			}
		}
		k := d.Keys[p.keyID]
		if k == nil || isDeleted(k, now) {
			return errBadBlob("blob names no key in this keystore")
		}
		if err := usable(k); err != nil {
			return err
		}
		v := k.version(p.materialID)
		if v == nil {
			return errBadBlob(fmt.Sprintf("key %s has no such key material", k.ARN))
		}
		plain, err := openBlob(p, v, ec)
		if err != nil {
			return err
		}
		u = keysvc.Unwrapped{Plaintext: plain, KeyID: k.ARN, KeyMaterialID: v.ID}
		return nil
	})
	return u, err
}

// ReEncryptInput is the full form of ReEncrypt, as the KMS API offers it.
type ReEncryptInput struct {
	Blob               []byte
	SourceKeyID        string // optional; as Decrypt's keyID
	SourceContext      keysvc.EncryptionContext
	DestinationKeyID   string
	DestinationContext keysvc.EncryptionContext
}

// ReEncryptOutput says what ReEncryptWith did.
type ReEncryptOutput struct {
	Wrapped             keysvc.WrappedKey // under the destination key's current material
	SourceKeyID         string            // ARN
	SourceKeyMaterialID string
}

// ReEncryptWith unwraps in.Blob with in.SourceContext and wraps the result
// under in.DestinationKeyID with in.DestinationContext, never returning the
// plaintext.
func (s *Store) ReEncryptWith(ctx context.Context, in ReEncryptInput) (ReEncryptOutput, error) {
	if in.DestinationKeyID == "" {
		return ReEncryptOutput{}, fmt.Errorf("destination key ID is required: %w", keysvc.ErrInvalidArgument)
	}
	u, err := s.Decrypt(ctx, in.Blob, in.SourceKeyID, in.SourceContext)
	if err != nil {
		return ReEncryptOutput{}, err
	}
	defer keysvc.Zero(u.Plaintext)
	w, err := s.wrap(ctx, in.DestinationKeyID, u.Plaintext, in.DestinationContext)
	if err != nil {
		return ReEncryptOutput{}, err
	}
	return ReEncryptOutput{Wrapped: w, SourceKeyID: u.KeyID, SourceKeyMaterialID: u.KeyMaterialID}, nil
}

// ReEncrypt re-wraps blob under destKeyID's current material with the same
// encryption context.
func (s *Store) ReEncrypt(ctx context.Context, blob []byte, srcKeyID string, ec keysvc.EncryptionContext, destKeyID string) (keysvc.WrappedKey, error) {
	out, err := s.ReEncryptWith(ctx, ReEncryptInput{Blob: blob, SourceKeyID: srcKeyID, SourceContext: ec, DestinationKeyID: destKeyID, DestinationContext: ec})
	return out.Wrapped, err
}

// GenerateRandom returns n (1..1024) random bytes.
func (s *Store) GenerateRandom(ctx context.Context, n int) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if n < 1 || n > MaxDataKeyBytes {
		return nil, fmt.Errorf("%d random bytes asked, want 1..%d: %w", n, MaxDataKeyBytes, keysvc.ErrInvalidArgument)
	}
	return randomBytes(n)
}
