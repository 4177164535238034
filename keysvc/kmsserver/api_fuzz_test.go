package kmsserver

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// operationNames lists the operations in a fixed order, so a fuzzed byte
// picks one reproducibly.
func operationNames() []string {
	names := make([]string, 0, len(operations))
	for n := range operations {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// FuzzDecodeRequest feeds arbitrary bodies to every operation's decoder:
// it must never panic, must answer only SerializationException or
// ValidationException, and its messages must never echo the body.
func FuzzDecodeRequest(f *testing.F) {
	names := operationNames()
	for _, n := range names {
		for _, body := range []string{"", "{}", "null", `{"KeyId":"alias/x"}`} {
			f.Add(n, []byte(body))
		}
	}
	f.Add("Decrypt", []byte(`{"CiphertextBlob":"S0xCAQ==","EncryptionContext":{"a":"b"},"KeyId":"k"}`))
	f.Add("Encrypt", []byte(`{"KeyId":"k","Plaintext":"c2VjcmV0IHNlY3JldCBzZWNyZXQ="}`))
	f.Add("GenerateDataKey", []byte(`{"KeyId":"k","NumberOfBytes":1e3,"KeySpec":"AES_256"}`))
	f.Add("CreateKey", []byte(`{"Tags":[{"TagKey":"a","TagValue":"b"}],"Policy":"{}"}`))
	f.Fuzz(func(t *testing.T, name string, body []byte) {
		o := operations[name]
		if o == nil {
			o = operations[names[len(name)%len(names)]]
		}
		in, aerr := decodeRequest(o, body)
		if aerr == nil {
			if in == nil {
				t.Fatal("no input and no error")
			}
			return
		}
		if aerr.typ != "SerializationException" && aerr.typ != "ValidationException" {
			t.Fatalf("decode error type %s", aerr.typ)
		}
		if len(body) >= 12 && bytes.Contains([]byte(aerr.msg), body) {
			t.Fatalf("message %q echoes the body", aerr.msg)
		}
	})
}

// TestFuzzCorpusPresent fails when the checked-in seed corpus is missing,
// so the fuzz target never silently runs on its inline seeds alone.
func TestFuzzCorpusPresent(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzDecodeRequest"))
	if err != nil || len(entries) == 0 {
		t.Fatalf("seed corpus testdata/fuzz/FuzzDecodeRequest is empty or missing: %v", err)
	}
}
