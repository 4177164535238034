package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

func TestGenerateDecryptEveryReference(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	if err := s.CreateAlias(ctx, "alias/data", k.KeyID); err != nil {
		t.Fatal(err)
	}
	ec := keysvc.EncryptionContext{keysvc.ContextFilesystemID: "0011", keysvc.ContextFileID: "2233"}
	refs := []string{k.KeyID, k.ARN, "alias/data", "arn:aws:kms:local:000000000000:alias/data"}
	for _, ref := range refs {
		dk, err := s.GenerateDataKey(ctx, ref, ec)
		if err != nil {
			t.Fatalf("GenerateDataKey(%s): %v", ref, err)
		}
		if len(dk.Plaintext) != keysvc.DataKeySize || dk.Wrapped.KeyID != k.ARN || dk.Wrapped.KeyMaterialID != k.CurrentKeyMaterialID {
			t.Fatalf("GenerateDataKey(%s) = %d bytes, %+v", ref, len(dk.Plaintext), dk.Wrapped)
		}
		if len(dk.Wrapped.Blob) != blobOverhead+keysvc.DataKeySize {
			t.Fatalf("blob of %d bytes", len(dk.Wrapped.Blob))
		}
		if err := dk.Wrapped.Validate(); err != nil {
			t.Fatalf("wrapped key is not a valid record: %v", err)
		}
		for _, dref := range append([]string{""}, refs...) {
			u, err := s.Decrypt(ctx, dk.Wrapped.Blob, dref, ec)
			if err != nil || !bytes.Equal(u.Plaintext, dk.Plaintext) || u.KeyID != k.ARN || u.KeyMaterialID != k.CurrentKeyMaterialID {
				t.Fatalf("Decrypt(keyID %q) = %+v, %v", dref, u, err)
			}
		}
	}
}

func TestEncryptLimits(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	for _, n := range []int{0, MaxPlaintextSize + 1} {
		_, err := s.Encrypt(ctx, k.KeyID, make([]byte, n), nil)
		wantErr(t, "Encrypt size", err, keysvc.ErrInvalidArgument)
	}
	for _, n := range []int{1, MaxPlaintextSize} {
		pt := bytes.Repeat([]byte{0x5a}, n)
		w, err := s.Encrypt(ctx, k.KeyID, pt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(w.Blob) > keysvc.MaxBlobSize {
			t.Fatalf("blob of %d bytes", len(w.Blob))
		}
		u, err := s.Decrypt(ctx, w.Blob, "", nil)
		if err != nil || !bytes.Equal(u.Plaintext, pt) {
			t.Fatalf("Decrypt %d bytes: %v", n, err)
		}
	}
	for _, n := range []int{0, MaxDataKeyBytes + 1} {
		_, err := s.GenerateDataKeyBytes(ctx, k.KeyID, n, nil)
		wantErr(t, "GenerateDataKeyBytes size", err, keysvc.ErrInvalidArgument)
		_, err = s.GenerateRandom(ctx, n)
		wantErr(t, "GenerateRandom size", err, keysvc.ErrInvalidArgument)
	}
	for _, n := range []int{1, 16, MaxDataKeyBytes} {
		dk, err := s.GenerateDataKeyBytes(ctx, k.KeyID, n, nil)
		if err != nil || len(dk.Plaintext) != n {
			t.Fatalf("GenerateDataKeyBytes(%d): %v", n, err)
		}
		r, err := s.GenerateRandom(ctx, n)
		if err != nil || len(r) != n {
			t.Fatalf("GenerateRandom(%d): %v", n, err)
		}
	}
	_, err := s.Encrypt(ctx, k.KeyID, []byte("x"), keysvc.EncryptionContext{"": "v"})
	wantErr(t, "Encrypt with an empty context key", err, keysvc.ErrInvalidArgument)
	_, err = s.Decrypt(ctx, make([]byte, keysvc.MaxBlobSize+1), "", nil)
	wantErr(t, "Decrypt of an oversized blob", err, keysvc.ErrInvalidCiphertext)
}

func TestEncryptionContextBinding(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	w, err := s.Encrypt(ctx, k.KeyID, []byte("secret"), keysvc.EncryptionContext{"ab": "c"})
	if err != nil {
		t.Fatal(err)
	}
	wrong := []keysvc.EncryptionContext{
		{"a": "bc"}, // the collision plain concatenation would allow
		{"ab": "C"},
		{"AB": "c"},
		{"ab": "c", "x": ""},
		nil,
	}
	for _, ec := range wrong {
		_, err := s.Decrypt(ctx, w.Blob, "", ec)
		wantErr(t, "Decrypt with a wrong context", err, keysvc.ErrInvalidCiphertext)
	}
	if _, err := s.Decrypt(ctx, w.Blob, "", keysvc.EncryptionContext{"ab": "c"}); err != nil {
		t.Fatal(err)
	}
	// nil and empty are the same context.
	w2, err := s.Encrypt(ctx, k.KeyID, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decrypt(ctx, w2.Blob, "", keysvc.EncryptionContext{}); err != nil {
		t.Fatal(err)
	}
}

func TestDecryptIncorrectKey(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	a := mustCreateKey(t, s, CreateKeyInput{})
	b := mustCreateKey(t, s, CreateKeyInput{})
	if err := s.CreateAlias(ctx, "alias/b", b.KeyID); err != nil {
		t.Fatal(err)
	}
	dk, err := s.GenerateDataKey(ctx, a.KeyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{b.KeyID, b.ARN, "alias/b"} {
		_, err := s.Decrypt(ctx, dk.Wrapped.Blob, ref, nil)
		wantErr(t, "Decrypt naming another key", err, keysvc.ErrIncorrectKey)
	}
	_, err = s.Decrypt(ctx, dk.Wrapped.Blob, "alias/missing", nil)
	wantErr(t, "Decrypt naming a missing key", err, keysvc.ErrNotFound)
}

func TestDamagedBlobs(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	if _, err := s.RotateKey(ctx, k.KeyID); err != nil { // two materials: a flipped material ID may name neither
		t.Fatal(err)
	}
	ec := keysvc.EncryptionContext{"k": "v"}
	dk, err := s.GenerateDataKey(ctx, k.KeyID, ec)
	if err != nil {
		t.Fatal(err)
	}
	blob := dk.Wrapped.Blob
	check := func(what string, b []byte) {
		t.Helper()
		u, err := s.Decrypt(ctx, b, "", ec)
		if !bytes.Equal(b, blob) {
			wantErr(t, what, err, keysvc.ErrInvalidCiphertext)
			if u.Plaintext != nil {
				t.Fatalf("%s: plaintext returned with an error", what)
			}
		}
		if err != nil && strings.Contains(err.Error(), string(dk.Plaintext)) {
			t.Fatalf("%s: error leaks the plaintext", what)
		}
	}
	for n := range len(blob) {
		check("truncated", blob[:n])
	}
	check("extended", append(append([]byte(nil), blob...), 0))
	for i := range len(blob) * 8 {
		b := append([]byte(nil), blob...)
		b[i/8] ^= 1 << (i % 8)
		check("bit flip", b)
	}
	for range 200 {
		b := make([]byte, 1+len(blob))
		rand.Read(b)
		check("garbage", b)
		copy(b, blob[:blobPrefixSize]) // right prefix, garbage body
		check("garbage body", b)
	}
}

func TestReEncryptWith(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	a := mustCreateKey(t, s, CreateKeyInput{})
	b := mustCreateKey(t, s, CreateKeyInput{})
	src := keysvc.EncryptionContext{"from": "a"}
	dst := keysvc.EncryptionContext{"to": "b"}
	w, err := s.Encrypt(ctx, a.KeyID, []byte("payload"), src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.ReEncryptWith(ctx, ReEncryptInput{Blob: w.Blob, SourceContext: dst, DestinationKeyID: b.KeyID})
	wantErr(t, "ReEncrypt with a wrong source context", err, keysvc.ErrInvalidCiphertext)
	_, err = s.ReEncryptWith(ctx, ReEncryptInput{Blob: w.Blob, SourceKeyID: b.KeyID, SourceContext: src, DestinationKeyID: b.KeyID})
	wantErr(t, "ReEncrypt with a wrong source key", err, keysvc.ErrIncorrectKey)
	_, err = s.ReEncryptWith(ctx, ReEncryptInput{Blob: w.Blob, SourceContext: src})
	wantErr(t, "ReEncrypt without destination", err, keysvc.ErrInvalidArgument)
	out, err := s.ReEncryptWith(ctx, ReEncryptInput{Blob: w.Blob, SourceKeyID: a.ARN, SourceContext: src, DestinationKeyID: b.ARN, DestinationContext: dst})
	if err != nil || out.SourceKeyID != a.ARN || out.SourceKeyMaterialID != a.CurrentKeyMaterialID || out.Wrapped.KeyID != b.ARN {
		t.Fatalf("ReEncryptWith = %+v, %v", out, err)
	}
	u, err := s.Decrypt(ctx, out.Wrapped.Blob, b.KeyID, dst)
	if err != nil || string(u.Plaintext) != "payload" {
		t.Fatalf("Decrypt re-encrypted: %v", err)
	}
	_, err = s.Decrypt(ctx, out.Wrapped.Blob, "", src)
	wantErr(t, "re-encrypted blob with the old context", err, keysvc.ErrInvalidCiphertext)
}

func TestCacheInFrontOfStore(t *testing.T) {
	clk := newTestClock()
	s := openStore(t, privateDir(t), clk)
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	c := keysvc.NewCache(s, keysvc.CacheOptions{MaxAge: time.Minute, Now: clk.Now})
	defer c.Close()
	ec := keysvc.EncryptionContext{keysvc.ContextFilesystemID: "fs", keysvc.ContextFileID: "1"}
	dk, err := c.GenerateDataKey(ctx, k.ARN, ec)
	if err != nil {
		t.Fatal(err)
	}
	u, err := c.Decrypt(ctx, dk.Wrapped.Blob, dk.Wrapped.KeyID, ec)
	if err != nil || !bytes.Equal(u.Plaintext, dk.Plaintext) {
		t.Fatalf("cached Decrypt: %v", err)
	}
	if st := c.Stats(); st.KMSCalls != 1 || st.Hits != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := s.DisableKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decrypt(ctx, dk.Wrapped.Blob, dk.Wrapped.KeyID, ec); err != nil {
		t.Fatalf("within MaxAge the cache still serves: %v", err)
	}
	clk.Advance(time.Minute)
	_, err = c.Decrypt(ctx, dk.Wrapped.Blob, dk.Wrapped.KeyID, ec)
	wantErr(t, "cached Decrypt after MaxAge of a disabled key", err, keysvc.ErrDisabled)
}

func TestReloadZeroesDroppedMaterial(t *testing.T) {
	dir := privateDir(t)
	clk := newTestClock()
	a, b := openStore(t, dir, clk), openStore(t, dir, clk)
	k := mustCreateKey(t, a, CreateKeyInput{})
	a.mu.RLock()
	old := a.data.Keys[k.KeyID].Versions[0].Material
	a.mu.RUnlock()
	mustCreateKey(t, b, CreateKeyInput{})
	if _, err := a.ListKeys(context.Background()); err != nil { // reloads
		t.Fatal(err)
	}
	if !bytes.Equal(old, make([]byte, len(old))) {
		t.Fatal("material of the replaced in-memory keystore was not zeroed")
	}
}
