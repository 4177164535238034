package keysvc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sampleRecords() []WrappedKey {
	return []WrappedKey{
		{KeyID: "k", Blob: []byte{1}},
		{KeyID: "arn:aws:kms:local:000000000000:key/0b5a3c2e-8a43-4a8e-9d4e-1f2a3b4c5d6e",
			KeyMaterialID: strings.Repeat("ab", 32), Blob: bytes.Repeat([]byte{7}, 112)},
		{KeyID: strings.Repeat("x", 1024), KeyMaterialID: strings.Repeat("m", MaxKeyMaterialIDSize),
			Blob: bytes.Repeat([]byte{0xff}, MaxBlobSize)},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, w := range sampleRecords() {
		if err := w.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		b := w.MarshalRecord()
		got, err := ParseRecord(b)
		if err != nil {
			t.Fatalf("ParseRecord: %v", err)
		}
		if got.KeyID != w.KeyID || got.KeyMaterialID != w.KeyMaterialID || !bytes.Equal(got.Blob, w.Blob) {
			t.Fatalf("round trip changed the record")
		}
		if !bytes.Equal(got.MarshalRecord(), b) {
			t.Fatalf("re-encoding differs")
		}
	}
}

func TestRecordLayout(t *testing.T) {
	w := WrappedKey{KeyID: "ab", KeyMaterialID: "", Blob: []byte{9, 8}}
	want := []byte("KMSK\x01\x02ab\x00\x02\x09\x08")
	if got := w.MarshalRecord(); !bytes.Equal(got, want) {
		t.Fatalf("MarshalRecord = %q, want %q", got, want)
	}
}

func TestParseRecordRejects(t *testing.T) {
	good := WrappedKey{KeyID: "ab", KeyMaterialID: "m", Blob: []byte{9, 8}}.MarshalRecord()
	cases := map[string][]byte{
		"empty":            nil,
		"magic only":       []byte("KMSK"),
		"bad magic":        append([]byte("KMSX"), good[4:]...),
		"bad version":      append([]byte("KMSK\x02"), good[5:]...),
		"trailing":         append(append([]byte(nil), good...), 0),
		"truncated":        good[:len(good)-1],
		"empty key ID":     []byte("KMSK\x01\x00\x00\x01\x01"),
		"empty blob":       []byte("KMSK\x01\x01k\x00\x00"),
		"non-minimal len":  []byte("KMSK\x01\x81\x00k\x00\x01\x01"),
		"huge len":         []byte("KMSK\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
		"overlong varint":  []byte("KMSK\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
		"blob too big":     WrappedKey{KeyID: "k", Blob: make([]byte, MaxBlobSize+1)}.MarshalRecord(),
		"record too big":   append(append([]byte(nil), good...), make([]byte, MaxRecordSize)...),
		"key ID too long":  WrappedKey{KeyID: strings.Repeat("k", MaxKeyIDSize+1), Blob: []byte{1}}.MarshalRecord(),
		"material too big": WrappedKey{KeyID: "k", KeyMaterialID: strings.Repeat("m", MaxKeyMaterialIDSize+1), Blob: []byte{1}}.MarshalRecord(),
	}
	for name, b := range cases {
		if _, err := ParseRecord(b); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: ParseRecord = %v, want ErrBadRecord", name, err)
		}
	}
}

func TestParseRecordCopiesBlob(t *testing.T) {
	b := WrappedKey{KeyID: "k", Blob: []byte{1, 2, 3}}.MarshalRecord()
	w, err := ParseRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !bytes.Equal(w.Blob, []byte{1, 2, 3}) {
		t.Fatal("blob aliases the input")
	}
}

// TestFuzzCorpusPresent fails when the checked-in seed corpus of
// FuzzParseRecord is missing, so the fuzz target never runs on nothing.
func TestFuzzCorpusPresent(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzParseRecord"))
	if err != nil || len(entries) == 0 {
		t.Fatalf("seed corpus testdata/fuzz/FuzzParseRecord is empty or missing: %v", err)
	}
}

func FuzzParseRecord(f *testing.F) {
	for _, w := range sampleRecords()[:2] {
		f.Add(w.MarshalRecord())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := ParseRecord(b)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error %v does not wrap ErrBadRecord", err)
			}
			return
		}
		if err := w.Validate(); err != nil {
			t.Fatalf("accepted record fails Validate: %v", err)
		}
		if again := w.MarshalRecord(); !bytes.Equal(again, b) {
			t.Fatalf("accepted record has a second encoding:\n got %x\nwant %x", again, b)
		}
	})
}
