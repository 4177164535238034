package fs

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"sync"

	"github.com/kmsfs/kmsfs/keysvc"
)

// fakeKeys is an in-test key service: data keys are wrapped with AES-GCM
// under one random key, with the key ID and the canonical encryption
// context as additional data, so a wrong context fails like KMS does.
type fakeKeys struct {
	aead  cipher.AEAD
	keyID string

	mu        sync.Mutex
	disabled  bool
	generates int
	decrypts  int
}

func newFakeKeys() *fakeKeys {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(err)
	}
	b, _ := aes.NewCipher(k)
	a, _ := cipher.NewGCM(b)
	return &fakeKeys{aead: a, keyID: "arn:aws:kms:local:000000000000:key/fake"}
}

func (f *fakeKeys) setDisabled(d bool) {
	f.mu.Lock()
	f.disabled = d
	f.mu.Unlock()
}

func (f *fakeKeys) counts() (generates, decrypts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.generates, f.decrypts
}

func (f *fakeKeys) aad(ec keysvc.EncryptionContext) []byte {
	return append([]byte(f.keyID), keysvc.EncodeContext(ec)...)
}

func (f *fakeKeys) GenerateDataKey(ctx context.Context, keyID string, ec keysvc.EncryptionContext) (keysvc.DataKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.disabled {
		return keysvc.DataKey{}, keysvc.ErrDisabled
	}
	if keyID != f.keyID {
		return keysvc.DataKey{}, keysvc.ErrNotFound
	}
	f.generates++
	pt := make([]byte, keysvc.DataKeySize)
	rand.Read(pt)
	nonce := make([]byte, f.aead.NonceSize())
	rand.Read(nonce)
	blob := f.aead.Seal(nonce, nonce, pt, f.aad(ec))
	return keysvc.DataKey{Plaintext: pt, Wrapped: keysvc.WrappedKey{KeyID: f.keyID, KeyMaterialID: "m1", Blob: blob}}, nil
}

func (f *fakeKeys) Decrypt(ctx context.Context, blob []byte, keyID string, ec keysvc.EncryptionContext) (keysvc.Unwrapped, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.disabled {
		return keysvc.Unwrapped{}, keysvc.ErrDisabled
	}
	if keyID != "" && keyID != f.keyID {
		return keysvc.Unwrapped{}, keysvc.ErrIncorrectKey
	}
	f.decrypts++
	n := f.aead.NonceSize()
	if len(blob) < n {
		return keysvc.Unwrapped{}, keysvc.ErrInvalidCiphertext
	}
	pt, err := f.aead.Open(nil, blob[:n], blob[n:], f.aad(ec))
	if err != nil {
		return keysvc.Unwrapped{}, keysvc.ErrInvalidCiphertext
	}
	return keysvc.Unwrapped{Plaintext: pt, KeyID: f.keyID, KeyMaterialID: "m1"}, nil
}

func (f *fakeKeys) ReEncrypt(ctx context.Context, blob []byte, srcKeyID string, ec keysvc.EncryptionContext, destKeyID string) (keysvc.WrappedKey, error) {
	return keysvc.WrappedKey{}, errors.New("fake: ReEncrypt not supported")
}

func (f *fakeKeys) DescribeKey(ctx context.Context, keyID string) (keysvc.KeyInfo, error) {
	return keysvc.KeyInfo{KeyID: "fake", ARN: f.keyID, Enabled: !f.disabled, State: "Enabled"}, nil
}
