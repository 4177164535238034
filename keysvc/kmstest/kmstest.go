// Package kmstest is the conformance suite every kmsfs key service backend
// must pass: the embedded keystore, `kmsfs keysvc serve` through the AWS
// SDK client, and third-party KMS emulators. One suite, so that the
// backends cannot drift apart on what kmsfs relies on: data keys,
// encryption contexts (including the {ab: c} / {a: bc} collision), rotation
// with old blobs still decrypting, re-encryption, key states, aliases and
// error kinds.
//
// A backend that knowingly falls short (an emulator) lists its gaps by name
// in Backend.Gaps; the cases that depend on a gap skip with its name and
// reason, so every skip is visible in `go test -v`.
package kmstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

// Admin is the key management the suite needs to set up its cases. It is
// deliberately outside keysvc.Service: kmsfs itself never manages keys.
// Every method takes the key's ARN.
type Admin interface {
	// CreateKey creates an enabled symmetric key and returns its ARN.
	CreateKey(ctx context.Context, description string) (string, error)
	CreateAlias(ctx context.Context, alias, keyARN string) error
	// RotateKey adds new key material (AWS RotateKeyOnDemand).
	RotateKey(ctx context.Context, keyARN string) error
	EnableKey(ctx context.Context, keyARN string) error
	DisableKey(ctx context.Context, keyARN string) error
	ScheduleKeyDeletion(ctx context.Context, keyARN string, days int) error
	CancelKeyDeletion(ctx context.Context, keyARN string) error
}

// Known gaps, by name. A backend lists those it has in Backend.Gaps with
// the reason; cases depending on one skip.
const (
	// GapKeyState: disabled and pending-deletion keys still work.
	GapKeyState = "key-state-not-enforced"
	// GapRotation: rotating changes no key material (and old/new blobs
	// cannot be told apart).
	GapRotation = "rotation-changes-nothing"
	// GapKeyMaterialID: responses carry no KeyMaterialId.
	GapKeyMaterialID = "no-key-material-id"
	// GapContextCollision: the encryption context is encoded ambiguously,
	// so {"ab": "c"} and {"a": "bc"} are the same context.
	GapContextCollision = "context-concatenation"
	// GapIncorrectKey: Decrypt naming a key other than the blob's does not
	// fail with IncorrectKeyException.
	GapIncorrectKey = "incorrect-key-not-checked"
	// GapCiphertextValidation: damaged blobs give another error than
	// InvalidCiphertextException.
	GapCiphertextValidation = "ciphertext-errors"
	// GapCancelDeletionState: cancelling a deletion does not leave the key
	// Disabled.
	GapCancelDeletionState = "cancel-deletion-state"
)

// Backend is one key service under test.
type Backend struct {
	// Service is what kmsfs uses.
	Service keysvc.Service
	// Admin sets keys up.
	Admin Admin
	// Gaps maps known gap names (the Gap constants) to their reasons.
	Gaps map[string]string
}

// requireNo skips t when b has the named gap.
func (b Backend) requireNo(t *testing.T, gap string) {
	t.Helper()
	if reason, ok := b.Gaps[gap]; ok {
		t.Skipf("known gap %s: %s", gap, reason)
	}
}

// Run runs the whole suite. newBackend is called once per case, so each
// case may get a fresh backend (or a shared one: every case makes its own
// keys and aliases).
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			tc.run(ctx, t, b)
		})
	}
}

var cases = []struct {
	name string
	run  func(ctx context.Context, t *testing.T, b Backend)
}{
	{"DataKeyRoundTrip", testDataKeyRoundTrip},
	{"KeyMaterialID", testKeyMaterialID},
	{"EncryptionContext", testEncryptionContext},
	{"ContextCollision", testContextCollision},
	{"Rotation", testRotation},
	{"ReEncrypt", testReEncrypt},
	{"IncorrectKey", testIncorrectKey},
	{"DisabledKey", testDisabledKey},
	{"PendingDeletion", testPendingDeletion},
	{"Aliases", testAliases},
	{"NotFound", testNotFound},
	{"DamagedBlobs", testDamagedBlobs},
	{"Concurrent", testConcurrent},
}

var fileContext = keysvc.EncryptionContext{
	keysvc.ContextFilesystemID: "00112233445566778899aabbccddeeff",
	keysvc.ContextFileID:       "ffeeddccbbaa99887766554433221100",
}

// newKey creates a key and an alias for it, unique per test.
func newKey(ctx context.Context, t *testing.T, b Backend) (arn, alias string) {
	t.Helper()
	arn, err := b.Admin.CreateKey(ctx, "kmstest "+t.Name())
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	alias = "alias/kmstest-" + strings.NewReplacer("/", "-", "#", "-").Replace(t.Name()) + "-" + arn[len(arn)-12:]
	if err := b.Admin.CreateAlias(ctx, alias, arn); err != nil {
		t.Fatalf("CreateAlias: %v", err)
	}
	return arn, alias
}

func generate(ctx context.Context, t *testing.T, b Backend, keyID string, ec keysvc.EncryptionContext) keysvc.DataKey {
	t.Helper()
	dk, err := b.Service.GenerateDataKey(ctx, keyID, ec)
	if err != nil {
		t.Fatalf("GenerateDataKey(%s): %v", keyID, err)
	}
	if len(dk.Plaintext) != keysvc.DataKeySize || len(dk.Wrapped.Blob) == 0 || len(dk.Wrapped.Blob) > keysvc.MaxBlobSize {
		t.Fatalf("GenerateDataKey(%s): %d-byte key, %d-byte blob", keyID, len(dk.Plaintext), len(dk.Wrapped.Blob))
	}
	return dk
}

func decrypt(ctx context.Context, t *testing.T, b Backend, blob []byte, keyID string, ec keysvc.EncryptionContext, want []byte) keysvc.Unwrapped {
	t.Helper()
	u, err := b.Service.Decrypt(ctx, blob, keyID, ec)
	if err != nil {
		t.Fatalf("Decrypt(keyID %q): %v", keyID, err)
	}
	if !bytes.Equal(u.Plaintext, want) {
		t.Fatalf("Decrypt(keyID %q) returned another plaintext", keyID)
	}
	return u
}

// wantErr checks that err is the sentinel want and carries no key material.
func wantErr(t *testing.T, what string, err, want error, secrets ...[]byte) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s = %v, want %v", what, err, want)
	}
	for _, s := range secrets {
		if len(s) >= 8 && strings.Contains(err.Error(), fmt.Sprintf("%x", s)) {
			t.Fatalf("%s: error message holds key material", what)
		}
	}
}

func testDataKeyRoundTrip(ctx context.Context, t *testing.T, b Backend) {
	arn, alias := newKey(ctx, t, b)
	keyUUID := arn[strings.LastIndex(arn, "/")+1:]
	var seen [][]byte
	for _, ref := range []string{arn, keyUUID, alias} {
		dk := generate(ctx, t, b, ref, fileContext)
		if dk.Wrapped.KeyID != arn {
			t.Fatalf("GenerateDataKey(%s) names key %q, want the ARN %s", ref, dk.Wrapped.KeyID, arn)
		}
		for _, keyID := range []string{"", ref, arn} {
			u := decrypt(ctx, t, b, dk.Wrapped.Blob, keyID, fileContext, dk.Plaintext)
			if u.KeyID != arn {
				t.Fatalf("Decrypt names key %q, want %s", u.KeyID, arn)
			}
		}
		for _, s := range seen {
			if bytes.Equal(s, dk.Plaintext) {
				t.Fatal("two data keys are equal")
			}
		}
		seen = append(seen, dk.Plaintext)
	}
	// An empty encryption context is a context too.
	dk := generate(ctx, t, b, arn, nil)
	decrypt(ctx, t, b, dk.Wrapped.Blob, "", keysvc.EncryptionContext{}, dk.Plaintext)
	info, err := b.Service.DescribeKey(ctx, alias)
	if err != nil || info.ARN != arn || !info.Enabled || info.State != "Enabled" || info.KeyID != keyUUID {
		t.Fatalf("DescribeKey(%s) = %+v, %v", alias, info, err)
	}
}

func testKeyMaterialID(ctx context.Context, t *testing.T, b Backend) {
	b.requireNo(t, GapKeyMaterialID)
	arn, _ := newKey(ctx, t, b)
	dk := generate(ctx, t, b, arn, fileContext)
	if dk.Wrapped.KeyMaterialID == "" {
		t.Fatal("GenerateDataKey reports no key material ID")
	}
	u := decrypt(ctx, t, b, dk.Wrapped.Blob, "", fileContext, dk.Plaintext)
	if u.KeyMaterialID != dk.Wrapped.KeyMaterialID {
		t.Fatalf("Decrypt reports material %q, GenerateDataKey %q", u.KeyMaterialID, dk.Wrapped.KeyMaterialID)
	}
	info, err := b.Service.DescribeKey(ctx, arn)
	if err != nil || info.CurrentKeyMaterialID != dk.Wrapped.KeyMaterialID {
		t.Fatalf("DescribeKey current material %q, %v; want %q", info.CurrentKeyMaterialID, err, dk.Wrapped.KeyMaterialID)
	}
}

func testEncryptionContext(ctx context.Context, t *testing.T, b Backend) {
	arn, _ := newKey(ctx, t, b)
	dk := generate(ctx, t, b, arn, fileContext)
	fs, file := fileContext[keysvc.ContextFilesystemID], fileContext[keysvc.ContextFileID]
	wrong := map[string]keysvc.EncryptionContext{
		"none":          nil,
		"one missing":   {keysvc.ContextFilesystemID: fs},
		"extra pair":    {keysvc.ContextFilesystemID: fs, keysvc.ContextFileID: file, "x": "y"},
		"other value":   {keysvc.ContextFilesystemID: fs, keysvc.ContextFileID: file[:31] + "1"},
		"swapped":       {keysvc.ContextFilesystemID: file, keysvc.ContextFileID: fs},
		"case of key":   {strings.ToUpper(keysvc.ContextFilesystemID): fs, keysvc.ContextFileID: file},
		"case of value": {keysvc.ContextFilesystemID: strings.ToUpper(fs), keysvc.ContextFileID: file},
	}
	for name, ec := range wrong {
		_, err := b.Service.Decrypt(ctx, dk.Wrapped.Blob, "", ec)
		wantErr(t, "Decrypt with context "+name, err, keysvc.ErrInvalidCiphertext, dk.Plaintext)
	}
	// The same context, built in another order, matches.
	same := keysvc.EncryptionContext{}
	same[keysvc.ContextFileID] = file
	same[keysvc.ContextFilesystemID] = fs
	decrypt(ctx, t, b, dk.Wrapped.Blob, "", same, dk.Plaintext)
	// ReEncrypt needs the right context too.
	_, err := b.Service.ReEncrypt(ctx, dk.Wrapped.Blob, "", wrong["other value"], arn)
	wantErr(t, "ReEncrypt with a wrong context", err, keysvc.ErrInvalidCiphertext)
}

func testContextCollision(ctx context.Context, t *testing.T, b Backend) {
	b.requireNo(t, GapContextCollision)
	arn, _ := newKey(ctx, t, b)
	for _, pair := range [][2]keysvc.EncryptionContext{
		{{"ab": "c"}, {"a": "bc"}},
		{{"a": "b", "c": "d"}, {"a": "bc", "": "d"}},
		{{"a": "b", "c": "d"}, {"a": "b=c", "d": ""}},
		{{"k": "v1"}, {"k": "v", "1": ""}},
	} {
		dk := generate(ctx, t, b, arn, pair[0])
		_, err := b.Service.Decrypt(ctx, dk.Wrapped.Blob, "", pair[1])
		if err == nil {
			t.Fatalf("blob wrapped with context %v decrypts with %v", pair[0], pair[1])
		}
		if !errors.Is(err, keysvc.ErrInvalidCiphertext) && !errors.Is(err, keysvc.ErrInvalidArgument) {
			t.Fatalf("Decrypt with colliding context = %v", err)
		}
	}
}

func testRotation(ctx context.Context, t *testing.T, b Backend) {
	arn, alias := newKey(ctx, t, b)
	before := generate(ctx, t, b, alias, fileContext)
	if err := b.Admin.RotateKey(ctx, arn); err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	after := generate(ctx, t, b, alias, fileContext)
	// Old blobs keep decrypting, with or without the key named.
	u := decrypt(ctx, t, b, before.Wrapped.Blob, arn, fileContext, before.Plaintext)
	decrypt(ctx, t, b, after.Wrapped.Blob, "", fileContext, after.Plaintext)
	if err := b.Admin.RotateKey(ctx, arn); err != nil {
		t.Fatalf("second RotateKey: %v", err)
	}
	decrypt(ctx, t, b, before.Wrapped.Blob, "", fileContext, before.Plaintext)
	decrypt(ctx, t, b, after.Wrapped.Blob, "", fileContext, after.Plaintext)

	b.requireNo(t, GapRotation)
	b.requireNo(t, GapKeyMaterialID)
	if after.Wrapped.KeyMaterialID == before.Wrapped.KeyMaterialID {
		t.Fatal("rotation did not change the key material of new data keys")
	}
	if u.KeyMaterialID != before.Wrapped.KeyMaterialID {
		t.Fatalf("old blob unwrapped by material %q, wrapped by %q", u.KeyMaterialID, before.Wrapped.KeyMaterialID)
	}
	info, err := b.Service.DescribeKey(ctx, arn)
	if err != nil {
		t.Fatal(err)
	}
	if info.CurrentKeyMaterialID == before.Wrapped.KeyMaterialID || info.CurrentKeyMaterialID == after.Wrapped.KeyMaterialID {
		t.Fatalf("current material %q after two rotations", info.CurrentKeyMaterialID)
	}
	// Re-encrypting an old blob moves it to the current material.
	w, err := b.Service.ReEncrypt(ctx, before.Wrapped.Blob, "", fileContext, arn)
	if err != nil {
		t.Fatalf("ReEncrypt: %v", err)
	}
	if w.KeyMaterialID != info.CurrentKeyMaterialID {
		t.Fatalf("ReEncrypt used material %q, current is %q", w.KeyMaterialID, info.CurrentKeyMaterialID)
	}
	decrypt(ctx, t, b, w.Blob, "", fileContext, before.Plaintext)
}

func testReEncrypt(ctx context.Context, t *testing.T, b Backend) {
	src, _ := newKey(ctx, t, b)
	dst, dstAlias := newKey(ctx, t, b)
	dk := generate(ctx, t, b, src, fileContext)
	w, err := b.Service.ReEncrypt(ctx, dk.Wrapped.Blob, "", fileContext, dstAlias)
	if err != nil {
		t.Fatalf("ReEncrypt: %v", err)
	}
	if w.KeyID != dst || bytes.Equal(w.Blob, dk.Wrapped.Blob) {
		t.Fatalf("ReEncrypt names key %q, want %s", w.KeyID, dst)
	}
	u := decrypt(ctx, t, b, w.Blob, dst, fileContext, dk.Plaintext)
	if u.KeyID != dst {
		t.Fatalf("re-encrypted blob unwrapped by %q", u.KeyID)
	}
	// The old blob is untouched and still decrypts.
	decrypt(ctx, t, b, dk.Wrapped.Blob, src, fileContext, dk.Plaintext)
	_, err = b.Service.ReEncrypt(ctx, dk.Wrapped.Blob, "", fileContext, "alias/kmstest-does-not-exist")
	wantErr(t, "ReEncrypt to a missing key", err, keysvc.ErrNotFound)
}

func testIncorrectKey(ctx context.Context, t *testing.T, b Backend) {
	b.requireNo(t, GapIncorrectKey)
	k1, _ := newKey(ctx, t, b)
	k2, alias2 := newKey(ctx, t, b)
	dk := generate(ctx, t, b, k1, fileContext)
	for _, ref := range []string{k2, alias2} {
		_, err := b.Service.Decrypt(ctx, dk.Wrapped.Blob, ref, fileContext)
		wantErr(t, "Decrypt naming another key", err, keysvc.ErrIncorrectKey, dk.Plaintext)
		_, err = b.Service.ReEncrypt(ctx, dk.Wrapped.Blob, ref, fileContext, k1)
		wantErr(t, "ReEncrypt naming another source key", err, keysvc.ErrIncorrectKey, dk.Plaintext)
	}
	// Naming the blob's own key works.
	if _, err := b.Service.ReEncrypt(ctx, dk.Wrapped.Blob, k1, fileContext, k1); err != nil {
		t.Errorf("ReEncrypt naming the blob's own key: %v", err)
	}
}

func testDisabledKey(ctx context.Context, t *testing.T, b Backend) {
	arn, alias := newKey(ctx, t, b)
	dk := generate(ctx, t, b, arn, fileContext)
	if err := b.Admin.DisableKey(ctx, arn); err != nil {
		t.Fatalf("DisableKey: %v", err)
	}
	info, err := b.Service.DescribeKey(ctx, alias)
	if err != nil || info.Enabled || info.State != "Disabled" {
		t.Fatalf("DescribeKey of a disabled key = %+v, %v", info, err)
	}
	b.requireNo(t, GapKeyState)
	_, err = b.Service.GenerateDataKey(ctx, alias, fileContext)
	wantErr(t, "GenerateDataKey under a disabled key", err, keysvc.ErrDisabled)
	_, err = b.Service.Decrypt(ctx, dk.Wrapped.Blob, "", fileContext)
	wantErr(t, "Decrypt under a disabled key", err, keysvc.ErrDisabled, dk.Plaintext)
	_, err = b.Service.ReEncrypt(ctx, dk.Wrapped.Blob, "", fileContext, arn)
	wantErr(t, "ReEncrypt under a disabled key", err, keysvc.ErrDisabled)
	if err := b.Admin.EnableKey(ctx, arn); err != nil {
		t.Fatalf("EnableKey: %v", err)
	}
	decrypt(ctx, t, b, dk.Wrapped.Blob, "", fileContext, dk.Plaintext)
}

func testPendingDeletion(ctx context.Context, t *testing.T, b Backend) {
	arn, alias := newKey(ctx, t, b)
	dk := generate(ctx, t, b, arn, fileContext)
	if err := b.Admin.ScheduleKeyDeletion(ctx, arn, 7); err != nil {
		t.Fatalf("ScheduleKeyDeletion: %v", err)
	}
	info, err := b.Service.DescribeKey(ctx, arn)
	if err != nil || info.Enabled || info.State != "PendingDeletion" {
		t.Fatalf("DescribeKey of a key pending deletion = %+v, %v", info, err)
	}
	if reason, gap := b.Gaps[GapKeyState]; !gap {
		_, err = b.Service.GenerateDataKey(ctx, alias, fileContext)
		wantErr(t, "GenerateDataKey under a key pending deletion", err, keysvc.ErrInvalidState)
		_, err = b.Service.Decrypt(ctx, dk.Wrapped.Blob, "", fileContext)
		wantErr(t, "Decrypt under a key pending deletion", err, keysvc.ErrInvalidState, dk.Plaintext)
	} else {
		t.Logf("known gap %s: %s (state checks skipped)", GapKeyState, reason)
	}
	if err := b.Admin.CancelKeyDeletion(ctx, arn); err != nil {
		t.Fatalf("CancelKeyDeletion: %v", err)
	}
	b.requireNo(t, GapCancelDeletionState)
	info, err = b.Service.DescribeKey(ctx, arn)
	if err != nil || info.State != "Disabled" {
		t.Fatalf("after CancelKeyDeletion the key is %+v, %v; want Disabled", info, err)
	}
	if err := b.Admin.EnableKey(ctx, arn); err != nil {
		t.Fatalf("EnableKey: %v", err)
	}
	decrypt(ctx, t, b, dk.Wrapped.Blob, "", fileContext, dk.Plaintext)
}

func testAliases(ctx context.Context, t *testing.T, b Backend) {
	arn, alias := newKey(ctx, t, b)
	info, err := b.Service.DescribeKey(ctx, alias)
	if err != nil || info.ARN != arn {
		t.Fatalf("DescribeKey(%s) = %+v, %v", alias, info, err)
	}
	dk := generate(ctx, t, b, alias, fileContext)
	decrypt(ctx, t, b, dk.Wrapped.Blob, alias, fileContext, dk.Plaintext)
	err = b.Admin.CreateAlias(ctx, alias, arn)
	wantErr(t, "CreateAlias of an existing alias", err, keysvc.ErrAlreadyExists)
}

func testNotFound(ctx context.Context, t *testing.T, b Backend) {
	for _, ref := range []string{"alias/kmstest-no-such-alias", "0b0c0d0e-0000-4000-8000-000000000000"} {
		_, err := b.Service.GenerateDataKey(ctx, ref, fileContext)
		wantErr(t, "GenerateDataKey("+ref+")", err, keysvc.ErrNotFound)
		_, err = b.Service.DescribeKey(ctx, ref)
		wantErr(t, "DescribeKey("+ref+")", err, keysvc.ErrNotFound)
	}
}

func testDamagedBlobs(ctx context.Context, t *testing.T, b Backend) {
	b.requireNo(t, GapCiphertextValidation)
	arn, _ := newKey(ctx, t, b)
	dk := generate(ctx, t, b, arn, fileContext)
	blob := dk.Wrapped.Blob
	damaged := map[string][]byte{
		"garbage":        []byte("this is not a ciphertext blob at all, just bytes"),
		"one byte":       {0x01},
		"truncated half": blob[:len(blob)/2],
		"truncated by 1": blob[:len(blob)-1],
		"extended":       append(bytes.Clone(blob), 0),
		"last bit":       flip(blob, len(blob)-1),
		"middle bit":     flip(blob, len(blob)/2),
		"first byte":     flip(blob, 0),
		"all zero":       make([]byte, len(blob)),
		"doubled":        append(bytes.Clone(blob), blob...),
	}
	for name, bad := range damaged {
		_, err := b.Service.Decrypt(ctx, bad, "", fileContext)
		wantErr(t, "Decrypt of "+name+" blob", err, keysvc.ErrInvalidCiphertext, dk.Plaintext)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func testConcurrent(ctx context.Context, t *testing.T, b Backend) {
	arn, _ := newKey(ctx, t, b)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ec := keysvc.EncryptionContext{keysvc.ContextFileID: fmt.Sprint(g)}
			for range 5 {
				dk, err := b.Service.GenerateDataKey(ctx, arn, ec)
				if err != nil {
					errs <- err
					return
				}
				u, err := b.Service.Decrypt(ctx, dk.Wrapped.Blob, "", ec)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(u.Plaintext, dk.Plaintext) {
					errs <- errors.New("concurrent round trip returned another key")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent use: %v", err)
	}
}
