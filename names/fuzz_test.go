package names

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The seed corpora live in testdata/fuzz/<target>; `go test -update`
// rewrites them from fuzzSeeds, and TestFuzzCorpus fails if one is empty.

// fuzzSeeds returns the seed inputs of each fuzz target: valid records of
// every form and a few broken ones.
func fuzzSeeds(t testing.TB) map[string][][]any {
	k := testKeys(t)
	dir := testDirID()
	short, _ := k.EncryptName(dir, "hello.txt")
	long, _ := k.EncryptName(dir, nameOfLen(NameMax))
	hashed := HashedName(long)
	sidecar := MarshalSidecar(long)
	dirID := k.MarshalDirID(dir)
	slink, _, _ := k.encryptTarget("../lib/libfoo.so.1", pattern(nonceSize, 1))
	llink, lfile, _ := k.encryptTarget("/"+nameOfLen(3000), pattern(nonceSize, 2))
	obj := ObjectID(pattern(16, 0xc0))
	xs, xsBlob, _ := k.encryptXattr(obj, "user.comment", []byte("hello"), pattern(nonceSize, 3))
	longX := UserXattrPrefix + nameOfLen(maxXattrSuffix)
	xl, xlBlob, _ := k.encryptXattr(obj, longX, []byte("v"), pattern(nonceSize, 4))
	return map[string][][]any{
		"FuzzDecryptName": {
			{short}, {long}, {short[:len(short)-1]}, {short + "A"}, {"." + short}, {""}, {"AAAA"},
			{rawName(k, dir, []byte(".."))}, {rawName(k, dir, []byte("a/b"))},
		},
		"FuzzParseSidecar": {
			{hashed, sidecar}, {hashed, sidecar[:6]}, {hashed, append(bytes.Clone(sidecar), '\n')},
			{HashedName(short), MarshalSidecar(short)}, {"x", []byte("KMSL")}, {hashed, []byte{}},
		},
		"FuzzParseDirID": {
			{dirID}, {dirID[:DirIDFileSize-1]}, {append(bytes.Clone(dirID), 0)}, {make([]byte, DirIDFileSize)}, {[]byte("KMSD\x00\x02")},
		},
		"FuzzDecryptTarget": {
			{slink, []byte{}}, {llink, lfile}, {llink, lfile[:len(lfile)-1]}, {slink[:len(slink)-1], []byte{}},
			{LongTargetPrefix + "x", lfile}, {"", []byte{}}, {"/etc/passwd", []byte{}},
		},
		"FuzzDecryptXattr": {
			{"user.comment", xs, xsBlob}, {longX, xl, xlBlob}, {"user.comment", xs, xsBlob[:30]},
			{"user.other", xs, xsBlob}, {longX, xl, xsBlob}, {"user.kmsfs.key", "user.kmsfs.key", []byte{}},
			{"user.x", XattrHashedPrefix + "x", []byte{2, 0xff, 0xff}},
		},
	}
}

func TestFuzzCorpus(t *testing.T) {
	for name, inputs := range fuzzSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for i, in := range inputs {
				var b bytes.Buffer
				b.WriteString("go test fuzz v1\n")
				for _, v := range in {
					switch v := v.(type) {
					case []byte:
						fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
					case string:
						fmt.Fprintf(&b, "string(%s)\n", strconv.Quote(v))
					default:
						t.Fatalf("seed type %T", v)
					}
				}
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) == 0 {
			t.Errorf("seed corpus %s is missing or empty (%v); run go test -update", dir, err)
		}
	}
}

// isOneOf reports whether err wraps one of the sentinels.
func isOneOf(err error, sentinels ...error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzDecryptName: an arbitrary backing name never decrypts to an invalid
// name, errors are sentinels, and anything accepted re-encrypts to itself
// (the encoding is canonical).
func FuzzDecryptName(f *testing.F) {
	k := testKeys(f)
	dir := testDirID()
	f.Fuzz(func(t *testing.T, encoded string) {
		name, err := k.DecryptName(dir, encoded)
		if err != nil {
			if !isOneOf(err, ErrEncoding, ErrAuthentication, ErrPadding, ErrEmptyName, ErrInvalidName, ErrDotName, ErrNameTooLong) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if validName(name) != nil {
			t.Fatalf("decrypted an invalid name %q", name)
		}
		if again, _ := k.EncryptName(dir, name); again != encoded {
			t.Fatalf("accepted a non-canonical encoding %q of %q", encoded, name)
		}
		_ = Classify(encoded)
	})
}

// FuzzParseSidecar: a sidecar is accepted only when it is exactly what
// MarshalSidecar writes for a long name that hashes to the entry name.
func FuzzParseSidecar(f *testing.F) {
	f.Fuzz(func(t *testing.T, hashed string, content []byte) {
		enc, err := ParseSidecar(hashed, content)
		if err != nil {
			if !isOneOf(err, ErrCorrupt, ErrHashMismatch) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !IsLong(enc) || HashedName(enc) != hashed || !bytes.Equal(MarshalSidecar(enc), content) || Classify(hashed) != KindLongName {
			t.Fatalf("accepted sidecar %q for %q", content, hashed)
		}
	})
}

// FuzzParseDirID: only the exact bytes MarshalDirID writes are accepted.
func FuzzParseDirID(f *testing.F) {
	k := testKeys(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := k.ParseDirID(b)
		if err != nil {
			if !isOneOf(err, ErrCorrupt, ErrAuthentication) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !bytes.Equal(k.MarshalDirID(id), b) {
			t.Fatalf("accepted a directory ID file MarshalDirID does not write: %x", b)
		}
	})
}

// FuzzDecryptTarget: arbitrary backing targets and long-target files
// decrypt only to valid targets, with sentinel errors otherwise.
func FuzzDecryptTarget(f *testing.F) {
	k := testKeys(f)
	f.Fuzz(func(t *testing.T, link string, file []byte) {
		target, err := k.DecryptTarget(link, file)
		if err != nil {
			if !isOneOf(err, ErrEncoding, ErrCorrupt, ErrHashMismatch, ErrAuthentication, ErrPadding, ErrEmptyTarget, ErrInvalidTarget, ErrTargetTooLong) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if validTarget(target) != nil {
			t.Fatalf("decrypted an invalid target %q", target)
		}
		if _, long := TargetFileName(link); long != (len(target) > 735) {
			t.Fatalf("a %d-byte target accepted in the wrong form %q", len(target), link)
		}
	})
}

// FuzzDecryptXattr: arbitrary backing attribute names and value blobs
// decrypt only to the attribute they were written for.
func FuzzDecryptXattr(f *testing.F) {
	k := testKeys(f)
	obj := ObjectID(pattern(16, 0xc0))
	f.Fuzz(func(t *testing.T, name, backing string, blob []byte) {
		if got, err := k.DecryptXattrName(obj, backing, blob); err != nil {
			if !isOneOf(err, ErrEncoding, ErrCorrupt, ErrHashMismatch, ErrAuthentication, ErrPadding, ErrEmptyName, ErrInvalidName, ErrNameTooLong) {
				t.Fatalf("DecryptXattrName: unexpected error %v", err)
			}
		} else if want, err := k.XattrBackingName(obj, got); err != nil || want != backing {
			t.Fatalf("DecryptXattrName(%q) = %q, whose backing name is %q (%v)", backing, got, want, err)
		}
		v, err := k.DecryptXattrValue(obj, name, blob)
		if err != nil {
			if !isOneOf(err, ErrNotUserXattr, ErrEmptyName, ErrInvalidName, ErrNameTooLong, ErrCorrupt, ErrAuthentication) {
				t.Fatalf("DecryptXattrValue: unexpected error %v", err)
			}
			return
		}
		if o, _ := XattrValueOverhead(name); len(blob) != len(v)+o {
			t.Fatalf("value of %d bytes from a %d-byte blob, overhead %d", len(v), len(blob), o)
		}
	})
}
