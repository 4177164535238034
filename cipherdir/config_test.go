package cipherdir

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// validV2ConfigJSON is validConfigJSON of format 2, with a names key
// record (key ID, key material "m1", a 40-byte blob 01..28).
const validV2ConfigJSON = `{"format_version":2,"filesystem_id":"00112233445566778899aabbccddeeff","kms":"local","key_id":"arn:aws:kms:local:000000000000:key/7f2c1a4e-0000-4000-8000-000000000001","chunk_size":4096,"created":"2026-11-27T05:00:00Z","names_key":"S01TSwFHYXJuOmF3czprbXM6bG9jYWw6MDAwMDAwMDAwMDAwOmtleS83ZjJjMWE0ZS0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDECbTEoAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKA=="}`

const validConfigJSON = `{"format_version":1,"filesystem_id":"00112233445566778899aabbccddeeff","kms":"local","key_id":"arn:aws:kms:local:000000000000:key/7f2c1a4e-0000-4000-8000-000000000001","chunk_size":4096,"created":"2026-11-27T05:00:00Z"}`

func TestNewConfigRoundTrip(t *testing.T) {
	c, err := NewConfig(KMSLocal, "arn:aws:kms:local:000000000000:key/x", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.ChunkSize != 4096 || len(c.FilesystemID) != 32 || c.FormatVersion != 1 {
		t.Fatalf("NewConfig = %+v", c)
	}
	dir := t.TempDir()
	if err := WriteConfig(dir, c); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(c.Created) {
		t.Fatalf("created %v, want %v", got.Created, c.Created)
	}
	got.Created = c.Created
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("LoadConfig = %+v, want %+v", got, c)
	}
	fi, err := os.Stat(filepath.Join(dir, ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("config mode %o, want 644", fi.Mode().Perm())
	}
	if err := WriteConfig(dir, c); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second WriteConfig: %v, want refusal", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("leftover files: %v", entries)
	}
}

func TestNewConfigRejects(t *testing.T) {
	for _, tc := range []struct {
		kms, key string
		cs       int
	}{
		{"vault", "k", 4096},
		{KMSAWS, "", 4096},
		{KMSAWS, "has space", 4096},
		{KMSLocal, "k", 1000},
		{KMSLocal, "k", 256},
		{KMSLocal, "k", 2 << 20},
	} {
		if _, err := NewConfig(tc.kms, tc.key, tc.cs); err == nil {
			t.Errorf("NewConfig(%q, %q, %d) succeeded", tc.kms, tc.key, tc.cs)
		}
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(validConfigJSON))
	if err != nil {
		t.Fatal(err)
	}
	if c.KMS != KMSLocal || c.ChunkSize != 4096 || !c.Created.Equal(time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)) {
		t.Fatalf("ParseConfig = %+v", c)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"version 3", `"format_version":1`, `"format_version":3`, "unsupported format_version 3"},
		{"version 0", `"format_version":1`, `"format_version":0`, "unsupported format_version 0"},
		{"version 2 without names key", `"format_version":1`, `"format_version":2`, "names_key is missing"},
		{"names key in version 1", `"kms":"local"`, `"kms":"local","names_key":"S01TSwE="`, "names_key in a format_version 1 config"},
		{"no version", `"format_version":1,`, ``, "format_version is missing"},
		{"short id", `"00112233445566778899aabbccddeeff"`, `"0011"`, "filesystem_id"},
		{"upper id", `"00112233445566778899aabbccddeeff"`, `"00112233445566778899AABBCCDDEEFF"`, "filesystem_id"},
		{"non-hex id", `"00112233445566778899aabbccddeeff"`, `"00112233445566778899aabbccddeefg"`, "filesystem_id"},
		{"kms", `"kms":"local"`, `"kms":"vault"`, "kms must be"},
		{"empty key", `"key_id":"arn:aws:kms:local:000000000000:key/7f2c1a4e-0000-4000-8000-000000000001"`, `"key_id":""`, "key_id is empty"},
		{"chunk size", `"chunk_size":4096`, `"chunk_size":4097`, "chunk_size 4097"},
		{"zero chunk", `"chunk_size":4096`, `"chunk_size":0`, "chunk_size 0"},
		{"no created", `,"created":"2026-11-27T05:00:00Z"`, ``, "created is missing"},
		{"bad created", `"2026-11-27T05:00:00Z"`, `"yesterday"`, "config"},
		{"unknown field", `"kms":"local"`, `"kms":"local","compression_level":3`, "unknown field"},
		{"compress unknown", `"kms":"local"`, `"kms":"local","compress":"gzip"`, "compress must be"},
		{"trailing", `}`, `}{}`, "trailing data"},
		{"string version", `"format_version":1`, `"format_version":"1"`, "config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(validConfigJSON, tc.old, tc.new, 1)
			if in == validConfigJSON {
				t.Fatal("test case does not change the input")
			}
			_, err := ParseConfig([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig: %v, want error containing %q", err, tc.want)
			}
		})
	}
	if _, err := ParseConfig([]byte(strings.Repeat(" ", maxConfigSize+1))); err == nil {
		t.Fatal("oversized config accepted")
	}
}

// TestParseConfigV2 checks the names key field of format 2: a valid
// record is accepted and survives a round trip; anything else is refused,
// naming the field.
func TestParseConfigV2(t *testing.T) {
	c, err := ParseConfig([]byte(validV2ConfigJSON))
	if err != nil {
		t.Fatal(err)
	}
	if !c.EncryptedNames() || c.FormatVersion != ConfigFormatV2 {
		t.Fatalf("ParseConfig = %+v, want a v2 config", c)
	}
	wk, err := c.NamesKeyRecord()
	if err != nil {
		t.Fatal(err)
	}
	if wk.KeyID != c.KeyID || wk.KeyMaterialID != "m1" || len(wk.Blob) != 40 || wk.Blob[0] != 1 || wk.Blob[39] != 40 {
		t.Fatalf("NamesKeyRecord = %+v", wk)
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseConfig(out)
	if err != nil {
		t.Fatal(err)
	}
	if c2.NamesKey != c.NamesKey || !c2.EncryptedNames() {
		t.Fatalf("round trip: %+v, want %+v", c2, c)
	}
	if v1, err := ParseConfig([]byte(validConfigJSON)); err != nil || v1.EncryptedNames() {
		t.Fatalf("v1 config: EncryptedNames %v, %v", v1.EncryptedNames(), err)
	}
	good := c.NamesKey
	for _, tc := range []struct{ name, value, want string }{
		{"empty", ``, "names_key is missing"},
		{"not base64", `!!!!`, "not canonical base64"},
		{"unpadded", strings.TrimRight(good, "="), "not canonical base64"},
		{"url alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(good) + "-", "not canonical base64"},
		{"not a record", `AAAAAAAA`, "malformed key record"},
		{"record without blob", `S01TSwECYWIAAA==`, "malformed key record"},
		{"too long", strings.Repeat("A", maxNamesKeyLen+4), "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(validV2ConfigJSON, good, tc.value, 1)
			_, err := ParseConfig([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig: %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfigMissing(t *testing.T) {
	_, err := LoadConfig(t.TempDir())
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadConfig of empty dir: %v, want ErrNotExist", err)
	}
}

// FuzzParseConfig checks that the parser never panics and that whatever it
// accepts is valid and survives Marshal and ParseConfig unchanged.
func FuzzParseConfig(f *testing.F) {
	entries, err := os.ReadDir("testdata/fuzz/FuzzParseConfig")
	if err != nil || len(entries) == 0 {
		f.Fatalf("seed corpus testdata/fuzz/FuzzParseConfig is missing or empty: %v", err)
	}
	f.Add([]byte(validConfigJSON))
	f.Add([]byte(validV2ConfigJSON))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !c2.Created.Equal(c.Created) {
			t.Fatal("created changed in a round trip")
		}
		c2.Created = c.Created
		if !reflect.DeepEqual(c2, c) {
			t.Fatalf("round trip changed %+v into %+v", c, c2)
		}
	})
}

// TestConfigShared checks the shared field in v1 and v2 configs: parsed,
// kept through a write (kmsfs.conf and, in v2, its copy alike), left out
// when false (configs that never asked for it keep their bytes), and a
// value that is not a JSON boolean refused.
func TestConfigShared(t *testing.T) {
	for _, base := range []string{validConfigJSON, validV2ConfigJSON} {
		in := strings.Replace(base, `"kms":"local"`, `"kms":"local","shared":true`, 1)
		c, err := ParseConfig([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if !c.Shared {
			t.Fatalf("ParseConfig(%s): Shared false", in)
		}
		dir := t.TempDir()
		if err := WriteConfig(dir, c); err != nil {
			t.Fatal(err)
		}
		back, err := LoadConfig(dir)
		if err != nil || !back.Shared {
			t.Fatalf("LoadConfig after WriteConfig: Shared %v, %v", back.Shared, err)
		}
		if c.EncryptedNames() {
			cp, err := LoadConfigCopy(dir)
			if err != nil || !cp.Shared {
				t.Fatalf("LoadConfigCopy: Shared %v, %v", cp.Shared, err)
			}
		}
		c.Shared = false
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "shared") {
			t.Fatalf("Marshal of an unshared config mentions shared: %s", out)
		}
		bad := strings.Replace(base, `"kms":"local"`, `"kms":"local","shared":"yes"`, 1)
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Fatalf("ParseConfig accepted %s", bad)
		}
	}
}
