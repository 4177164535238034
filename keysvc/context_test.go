package keysvc

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestEncodeContextUnambiguous(t *testing.T) {
	cases := []struct {
		a, b EncryptionContext
	}{
		{EncryptionContext{"ab": "c"}, EncryptionContext{"a": "bc"}},
		{EncryptionContext{"a": "b", "c": "d"}, EncryptionContext{"a": "bcd"}},
		{EncryptionContext{"a": ""}, EncryptionContext{}},
		{EncryptionContext{"a": "b"}, EncryptionContext{"b": "a"}},
		{EncryptionContext{"\x01a": "b"}, EncryptionContext{"": "ab"}},
	}
	for _, c := range cases {
		if bytes.Equal(EncodeContext(c.a), EncodeContext(c.b)) {
			t.Errorf("EncodeContext(%v) == EncodeContext(%v)", c.a, c.b)
		}
	}
}

func TestEncodeContextCanonical(t *testing.T) {
	if !bytes.Equal(EncodeContext(nil), EncodeContext(EncryptionContext{})) {
		t.Fatal("nil and empty contexts encode differently")
	}
	if got := EncodeContext(nil); !bytes.Equal(got, []byte{0}) {
		t.Fatalf("EncodeContext(nil) = %x, want 00", got)
	}
	a := EncryptionContext{"z": "1", "a": "2", "m": "3"}
	want := []byte{3, 1, 'a', 1, '2', 1, 'm', 1, '3', 1, 'z', 1, '1'}
	for range 20 { // map iteration order varies between runs
		if got := EncodeContext(a); !bytes.Equal(got, want) {
			t.Fatalf("EncodeContext = %x, want %x", got, want)
		}
	}
	long := strings.Repeat("x", 200)
	got := EncodeContext(EncryptionContext{long: ""})
	if !bytes.Equal(got[:3], []byte{1, 0xc8, 0x01}) || len(got) != 3+200+1 {
		t.Fatalf("long key encoding starts %x, len %d", got[:3], len(got))
	}
}

func TestValidateContext(t *testing.T) {
	ok := []EncryptionContext{
		nil,
		{},
		{"k": ""},
		{ContextFilesystemID: "00", ContextFileID: "11"},
		{"k": strings.Repeat("v", MaxContextSize-1)},
	}
	for _, ec := range ok {
		if err := ValidateContext(ec); err != nil {
			t.Errorf("ValidateContext(%.40v) = %v", ec, err)
		}
	}
	bad := []EncryptionContext{
		{"": "v"},
		{"k": strings.Repeat("v", MaxContextSize)},
		{"\xff": "v"},
		{"k": "\xff"},
	}
	for _, ec := range bad {
		if err := ValidateContext(ec); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ValidateContext(%.40q) = %v, want ErrInvalidArgument", ec, err)
		}
	}
}

// TestNamesContext pins the names key's encryption context: a change
// would make every v2 tree's names key unwrap fail.
func TestNamesContext(t *testing.T) {
	got := NamesContext("00112233445566778899aabbccddeeff")
	want := EncryptionContext{"kmsfs:fs": "00112233445566778899aabbccddeeff", "kmsfs:purpose": "names"}
	if len(got) != len(want) || got["kmsfs:fs"] != want["kmsfs:fs"] || got["kmsfs:purpose"] != want["kmsfs:purpose"] {
		t.Fatalf("NamesContext = %v, want %v", got, want)
	}
	if bytes.Equal(EncodeContext(got), EncodeContext(FileContext("00112233445566778899aabbccddeeff", "names"))) {
		t.Fatal("the names context equals a file's")
	}
}
