package local

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzRootKey is the root key the fuzz seeds are sealed under, so that
// unmutated seeds get past AES-GCM and exercise the JSON decoder.
var fuzzRootKey = bytes.Repeat([]byte{0x42}, rootKeySize)

// sampleKeystoreJSON builds a keystore with every kind of record (keys in
// each state, rotations, aliases, a credential) and returns its JSON.
func sampleKeystoreJSON(t testing.TB) []byte {
	dir := privateDir(t)
	clk := newTestClock()
	s := openStore(t, dir, clk)
	ctx := context.Background()
	a := mustCreateKey(t, s, CreateKeyInput{Description: "a", RotationPeriodDays: 90, Tags: map[string]string{"k": "v"}})
	b := mustCreateKey(t, s, CreateKeyInput{Description: "b"})
	c := mustCreateKey(t, s, CreateKeyInput{})
	if _, err := s.RotateKey(ctx, a.KeyID); err != nil {
		t.Fatal(err)
	}
	if err := s.DisableKey(ctx, b.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ScheduleKeyDeletion(ctx, c.KeyID, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAlias(ctx, "alias/a", a.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateCredential(ctx, "fuzz", AdminPolicy); err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	plain, err := encodeKeystoreData(s.data)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

func TestFuzzKeystoreCorpusPresent(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzParseKeystore"))
	if err != nil || len(entries) == 0 {
		t.Fatalf("seed corpus testdata/fuzz/FuzzParseKeystore is empty or missing: %v", err)
	}
}

func TestSampleKeystoreRoundTrip(t *testing.T) {
	plain := sampleKeystoreJSON(t)
	h, err := newHeader(false, 0)
	if err != nil {
		t.Fatal(err)
	}
	file, err := sealKeystore(h, fuzzRootKey, plain)
	if err != nil {
		t.Fatal(err)
	}
	h2, nonce, sealed, err := parseKeystoreFile(file)
	if err != nil {
		t.Fatal(err)
	}
	got, err := openKeystore(h2, nonce, sealed, fuzzRootKey)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("openKeystore: %v", err)
	}
	if _, err := decodeKeystoreData(got); err != nil {
		t.Fatal(err)
	}
	_, err = openKeystore(h2, nonce, sealed, make([]byte, rootKeySize))
	wantErr(t, "wrong root key", err, ErrWrongRootKey)
	for i := range file {
		b := append([]byte(nil), file...)
		b[i] ^= 0x01
		h3, n3, s3, err := parseKeystoreFile(b)
		if err == nil {
			_, err = openKeystore(h3, n3, s3, fuzzRootKey)
		}
		if err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
}

func FuzzParseKeystore(f *testing.F) {
	plain := sampleKeystoreJSON(f)
	h, err := newHeader(false, 0)
	if err != nil {
		f.Fatal(err)
	}
	file, err := sealKeystore(h, fuzzRootKey, plain)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(file)
	f.Add(plain)
	discard := &Store{log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, nonce, sealed, err := parseKeystoreFile(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptKeystore) {
				t.Fatalf("error %v does not wrap ErrCorruptKeystore", err)
			}
		} else {
			if !bytes.Equal(h.encode(), h.encoded) {
				t.Fatalf("header re-encodes differently")
			}
			if p, err := openKeystore(h, nonce, sealed, fuzzRootKey); err == nil {
				b = p
			}
		}
		d, err := decodeKeystoreData(b)
		if err != nil {
			if !errors.Is(err, ErrCorruptKeystore) {
				t.Fatalf("error %v does not wrap ErrCorruptKeystore", err)
			}
			return
		}
		// Whatever validate accepts, the Store's code must handle.
		for _, k := range d.Keys {
			metadataOf(k)
			_ = usable(k)
		}
		nextDue(d)
		discard.applyDue(d, time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC))
		if err := d.validate(); err != nil {
			t.Fatalf("applyDue broke an invariant: %v", err)
		}
		if _, err := encodeKeystoreData(d); err != nil {
			t.Fatal(err)
		}
	})
}
