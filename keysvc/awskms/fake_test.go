package awskms

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// fakeKMS implements kmsAPI with real AES-256-GCM, the way tink-go-awskms
// tests its client: enough KMS semantics (key states, aliases, key
// material versions, encryption context as AAD, IncorrectKey) to test the
// client's mapping without a network.
type fakeKMS struct {
	mu      sync.Mutex
	keys    []*fakeKey // index = blob byte 0
	aliases map[string]int
	// before, when set, runs first in every call; a non-nil error is
	// returned as the call's result.
	before func(ctx context.Context, op string) error
	calls  map[string]int
}

type fakeKey struct {
	id, arn  string
	state    types.KeyState
	versions []cipher.AEAD
}

func newFakeKMS() *fakeKMS {
	return &fakeKMS{aliases: map[string]int{}, calls: map[string]int{}}
}

// addKey creates an enabled key with one version and returns its ARN.
func (f *fakeKMS) addKey(alias string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.keys)
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
	k := &fakeKey{id: id, arn: "arn:aws:kms:us-east-1:111122223333:key/" + id, state: types.KeyStateEnabled}
	f.keys = append(f.keys, k)
	f.rotateLocked(n)
	if alias != "" {
		f.aliases[alias] = n
	}
	return k.arn
}

func (f *fakeKMS) rotate(arn string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, _ := f.lookupLocked(arn)
	f.rotateLocked(i)
}

func (f *fakeKMS) setState(arn string, s types.KeyState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, _ := f.lookupLocked(arn)
	f.keys[i].state = s
}

func (f *fakeKMS) rotateLocked(i int) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic(err)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	f.keys[i].versions = append(f.keys[i].versions, g)
}

func materialID(v int) string { return fmt.Sprintf("%064x", v+1) }

func (f *fakeKMS) lookupLocked(ref string) (int, error) {
	if strings.HasPrefix(ref, "alias/") {
		if i, ok := f.aliases[ref]; ok {
			return i, nil
		}
		return 0, &types.NotFoundException{Message: aws.String("Alias is not found.")}
	}
	for i, k := range f.keys {
		if ref == k.id || ref == k.arn {
			return i, nil
		}
	}
	return 0, &types.NotFoundException{Message: aws.String("Key is not found.")}
}

func (f *fakeKMS) usableLocked(i int) error {
	switch f.keys[i].state {
	case types.KeyStateEnabled:
		return nil
	case types.KeyStateDisabled:
		return &types.DisabledException{Message: aws.String("key is disabled")}
	default:
		return &types.KMSInvalidStateException{Message: aws.String("key is pending deletion")}
	}
}

// aad is the fake's unambiguous context encoding: sorted, length-prefixed.
func aad(prefix []byte, ec map[string]string) []byte {
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := append([]byte(nil), prefix...)
	for _, k := range keys {
		out = binary.AppendUvarint(out, uint64(len(k)))
		out = append(out, k...)
		out = binary.AppendUvarint(out, uint64(len(ec[k])))
		out = append(out, ec[k]...)
	}
	return out
}

func (f *fakeKMS) enter(ctx context.Context, op string) error {
	f.mu.Lock()
	f.calls[op]++
	before := f.before
	f.mu.Unlock()
	if before != nil {
		return before(ctx, op)
	}
	return nil
}

// sealLocked wraps plain under key i's newest version.
func (f *fakeKMS) sealLocked(i int, plain []byte, ec map[string]string) ([]byte, int) {
	v := len(f.keys[i].versions) - 1
	prefix := []byte{byte(i), byte(v)}
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	blob := append(append(prefix, nonce...), f.keys[i].versions[v].Seal(nil, nonce, plain, aad(prefix, ec))...)
	return blob, v
}

// openLocked unwraps blob and returns the plaintext, key index and version.
func (f *fakeKMS) openLocked(blob []byte, ec map[string]string) ([]byte, int, int, error) {
	bad := &types.InvalidCiphertextException{Message: aws.String("")}
	if len(blob) < 2+12+16 {
		return nil, 0, 0, bad
	}
	i, v := int(blob[0]), int(blob[1])
	if i >= len(f.keys) || v >= len(f.keys[i].versions) {
		return nil, 0, 0, bad
	}
	plain, err := f.keys[i].versions[v].Open(nil, blob[2:14], blob[14:], aad(blob[:2], ec))
	if err != nil {
		return nil, 0, 0, bad
	}
	return plain, i, v, nil
}

func (f *fakeKMS) GenerateDataKey(ctx context.Context, in *kms.GenerateDataKeyInput, _ ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error) {
	if err := f.enter(ctx, "GenerateDataKey"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.lookupLocked(aws.ToString(in.KeyId))
	if err != nil {
		return nil, err
	}
	if err := f.usableLocked(i); err != nil {
		return nil, err
	}
	if in.KeySpec != types.DataKeySpecAes256 {
		return nil, &types.InvalidKeyUsageException{Message: aws.String("fake wants AES_256")}
	}
	plain := make([]byte, 32)
	if _, err := rand.Read(plain); err != nil {
		panic(err)
	}
	blob, v := f.sealLocked(i, plain, in.EncryptionContext)
	return &kms.GenerateDataKeyOutput{
		CiphertextBlob: blob,
		Plaintext:      plain,
		KeyId:          aws.String(f.keys[i].arn),
		KeyMaterialId:  aws.String(materialID(v)),
	}, nil
}

func (f *fakeKMS) Decrypt(ctx context.Context, in *kms.DecryptInput, _ ...func(*kms.Options)) (*kms.DecryptOutput, error) {
	if err := f.enter(ctx, "Decrypt"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	plain, i, v, err := f.openLocked(in.CiphertextBlob, in.EncryptionContext)
	if err != nil {
		return nil, err
	}
	if in.KeyId != nil {
		j, err := f.lookupLocked(*in.KeyId)
		if err != nil {
			return nil, err
		}
		if j != i {
			return nil, &types.IncorrectKeyException{Message: aws.String("The key ID in the request does not identify a CMK that can perform this operation.")}
		}
	}
	if err := f.usableLocked(i); err != nil {
		return nil, err
	}
	return &kms.DecryptOutput{Plaintext: plain, KeyId: aws.String(f.keys[i].arn), KeyMaterialId: aws.String(materialID(v))}, nil
}

func (f *fakeKMS) ReEncrypt(ctx context.Context, in *kms.ReEncryptInput, _ ...func(*kms.Options)) (*kms.ReEncryptOutput, error) {
	if err := f.enter(ctx, "ReEncrypt"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	plain, i, v, err := f.openLocked(in.CiphertextBlob, in.SourceEncryptionContext)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	if in.SourceKeyId != nil {
		s, err := f.lookupLocked(*in.SourceKeyId)
		if err != nil {
			return nil, err
		}
		if s != i {
			return nil, &types.IncorrectKeyException{Message: aws.String("The source key ID in the request does not identify the key that encrypted the ciphertext.")}
		}
	}
	if err := f.usableLocked(i); err != nil {
		return nil, err
	}
	j, err := f.lookupLocked(aws.ToString(in.DestinationKeyId))
	if err != nil {
		return nil, err
	}
	if err := f.usableLocked(j); err != nil {
		return nil, err
	}
	blob, dv := f.sealLocked(j, plain, in.DestinationEncryptionContext)
	return &kms.ReEncryptOutput{
		CiphertextBlob:           blob,
		KeyId:                    aws.String(f.keys[j].arn),
		SourceKeyId:              aws.String(f.keys[i].arn),
		SourceKeyMaterialId:      aws.String(materialID(v)),
		DestinationKeyMaterialId: aws.String(materialID(dv)),
	}, nil
}

func (f *fakeKMS) Encrypt(ctx context.Context, in *kms.EncryptInput, _ ...func(*kms.Options)) (*kms.EncryptOutput, error) {
	if err := f.enter(ctx, "Encrypt"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.lookupLocked(aws.ToString(in.KeyId))
	if err != nil {
		return nil, err
	}
	if err := f.usableLocked(i); err != nil {
		return nil, err
	}
	blob, _ := f.sealLocked(i, in.Plaintext, in.EncryptionContext)
	return &kms.EncryptOutput{CiphertextBlob: blob, KeyId: aws.String(f.keys[i].arn)}, nil
}

func (f *fakeKMS) RotateKeyOnDemand(ctx context.Context, in *kms.RotateKeyOnDemandInput, _ ...func(*kms.Options)) (*kms.RotateKeyOnDemandOutput, error) {
	if err := f.enter(ctx, "RotateKeyOnDemand"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.lookupLocked(aws.ToString(in.KeyId))
	if err != nil {
		return nil, err
	}
	f.rotateLocked(i)
	return &kms.RotateKeyOnDemandOutput{KeyId: aws.String(f.keys[i].arn)}, nil
}

func (f *fakeKMS) DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, _ ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	if err := f.enter(ctx, "DescribeKey"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.lookupLocked(aws.ToString(in.KeyId))
	if err != nil {
		return nil, err
	}
	k := f.keys[i]
	return &kms.DescribeKeyOutput{KeyMetadata: &types.KeyMetadata{
		KeyId:                aws.String(k.id),
		Arn:                  aws.String(k.arn),
		Enabled:              k.state == types.KeyStateEnabled,
		KeyState:             k.state,
		CurrentKeyMaterialId: aws.String(materialID(len(k.versions) - 1)),
	}}, nil
}

var _ kmsAPI = (*fakeKMS)(nil)

// flip returns a copy of b with one bit changed at position i.
func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}
