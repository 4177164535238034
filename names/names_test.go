package names

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestNewKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New accepted a %d-byte key", n)
		}
	}
}

// TestNewDoesNotKeepKey: zeroing the caller's key after New must not
// change what the Keys does (nothing aliases it).
func TestNewDoesNotKeepKey(t *testing.T) {
	key := testKey()
	k, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	clear(key)
	want, _ := testKeys(t).EncryptName(testDirID(), "x")
	if got, _ := k.EncryptName(testDirID(), "x"); got != want {
		t.Fatal("Keys depends on the caller's copy of the names key")
	}
}

func TestNameRoundTripLengths(t *testing.T) {
	k := testKeys(t)
	dir := testDirID()
	for n := 1; n <= NameMax; n++ {
		name := nameOfLen(n)
		enc, err := k.EncryptName(dir, name)
		if err != nil {
			t.Fatalf("len %d: %v", n, err)
		}
		if wantLong := n >= 160; IsLong(enc) != wantLong {
			t.Errorf("len %d: IsLong = %v, encoded length %d", n, IsLong(enc), len(enc))
		}
		b := BackingName(enc)
		if len(b) > MaxBackingNameLen || strings.ContainsAny(b, "/\x00") || b[0] == '.' {
			t.Fatalf("len %d: backing name %q is not a safe POSIX name", n, b)
		}
		if !IsLong(enc) {
			if Classify(b) != KindName {
				t.Errorf("len %d: Classify(short) = %v", n, Classify(b))
			}
		} else {
			if Classify(b) != KindLongName || Classify(SidecarName(b)) != KindSidecar {
				t.Errorf("len %d: Classify(long) = %v, sidecar %v", n, Classify(b), Classify(SidecarName(b)))
			}
			got, err := ParseSidecar(b, MarshalSidecar(enc))
			if err != nil || got != enc {
				t.Fatalf("len %d: ParseSidecar = %q, %v", n, got, err)
			}
		}
		got, err := k.DecryptName(dir, enc)
		if err != nil || got != name {
			t.Fatalf("len %d: DecryptName = %q, %v", n, got, err)
		}
		// Padding hides the length within a block of 16.
		if same, _ := k.EncryptName(dir, nameOfLen(max(1, n/16*16))); len(same) != len(enc) {
			t.Errorf("len %d: encoded length %d differs within its padding block (%d)", n, len(enc), len(same))
		}
	}
}

// TestNameEveryByte: every byte value but '/' and NUL, in multibyte UTF-8
// and invalid UTF-8 alike, survives.
func TestNameEveryByte(t *testing.T) {
	k := testKeys(t)
	dir := testDirID()
	var all []byte
	for c := 1; c < 256; c++ {
		if c != '/' {
			all = append(all, byte(c))
		}
	}
	names := []string{string(all[:NameMax-2]), string(all[100:]), "日本語のファイル名.txt", "🌍🌍🌍", ".hidden", "...", "-rf", " ", "a\xff\xfe"}
	for _, name := range names {
		enc, err := k.EncryptName(dir, name)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if got, err := k.DecryptName(dir, enc); err != nil || got != name {
			t.Errorf("%q: DecryptName = %q, %v", name, got, err)
		}
	}
}

func TestNameInvalidPlaintext(t *testing.T) {
	k := testKeys(t)
	for _, c := range []struct {
		name string
		want error
	}{
		{"", ErrEmptyName},
		{".", ErrDotName},
		{"..", ErrDotName},
		{"a/b", ErrInvalidName},
		{"/", ErrInvalidName},
		{"a\x00", ErrInvalidName},
		{nameOfLen(NameMax + 1), ErrNameTooLong},
	} {
		if _, err := k.EncryptName(testDirID(), c.name); !errors.Is(err, c.want) {
			t.Errorf("EncryptName(%.20q) = %v, want %v", c.name, err, c.want)
		}
		// A key holder who encrypted such a plaintext anyway (padded as
		// usual) is refused on decrypt with the same sentinel.
		if got, err := k.DecryptName(testDirID(), rawName(k, testDirID(), []byte(c.name))); !errors.Is(err, c.want) {
			t.Errorf("DecryptName(raw %.20q) = %q, %v, want %v", c.name, got, err, c.want)
		}
	}
}

// rawName encrypts an arbitrary padded plaintext as an entry name would be.
func rawName(k *Keys, dir DirID, plain []byte) string {
	ct, _ := k.entryNames.EncryptDeterministically(pad(plain), entryAD(dir))
	return b64.EncodeToString(ct)
}

func TestNameBadPadding(t *testing.T) {
	k := testKeys(t)
	dir := testDirID()
	for _, p := range [][]byte{
		[]byte("abcdefghijklmno\x00"),                        // pad byte 0
		[]byte("abcdefghijklmn\x01\x02"),                     // last byte 2, previous not 2
		[]byte("abcdefghijklmnop"),                           // no padding at all
		append([]byte("a"), bytes.Repeat([]byte{17}, 15)...), // pad length over 16
		bytes.Repeat([]byte{16}, 32),                         // a whole extra block: canonical is 16 only for the empty name
		[]byte("abcdefghijklmnop\x10\x10"),                   // not a multiple of 16
	} {
		ct, _ := k.entryNames.EncryptDeterministically(p, entryAD(dir))
		enc := b64.EncodeToString(ct)
		_, err := k.DecryptName(dir, enc)
		if len(p)%16 != 0 {
			if !errors.Is(err, ErrEncoding) {
				t.Errorf("%q: %v, want ErrEncoding (impossible length)", p, err)
			}
			continue
		}
		if len(p) == 32 && bytes.Equal(p, bytes.Repeat([]byte{16}, 32)) {
			// Unpads to 16 bytes of 0x10: a valid name, not padding
			// trouble; PKCS#7 is unambiguous.
			continue
		}
		if !errors.Is(err, ErrPadding) {
			t.Errorf("%q: %v, want ErrPadding", p, err)
		}
	}
}

func TestNameOtherDirectory(t *testing.T) {
	k := testKeys(t)
	a, b := testDirID(), testDirID()
	b[15] ^= 1
	ea, _ := k.EncryptName(a, "report.pdf")
	eb, _ := k.EncryptName(b, "report.pdf")
	if ea == eb {
		t.Fatal("the same name encrypts the same in two directories")
	}
	if _, err := k.DecryptName(b, ea); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("entry moved to another directory: %v, want ErrAuthentication", err)
	}
	other, _ := New(pattern(KeySize, 9))
	if _, err := other.DecryptName(a, ea); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("name from another filesystem: %v, want ErrAuthentication", err)
	}
	if again, _ := k.EncryptName(a, "report.pdf"); again != ea {
		t.Fatal("EncryptName is not deterministic")
	}
}

// TestNameBitFlips flips every bit of the ciphertext of a short name and
// every character of its encoding: each must be refused, never decrypt.
func TestNameBitFlips(t *testing.T) {
	k := testKeys(t)
	dir := testDirID()
	enc, _ := k.EncryptName(dir, "payroll-2026-q3.xlsx")
	ct, _ := decode64(enc)
	for i := range ct {
		for bit := range 8 {
			c := bytes.Clone(ct)
			c[i] ^= 1 << bit
			if got, err := k.DecryptName(dir, b64.EncodeToString(c)); !errors.Is(err, ErrAuthentication) {
				t.Fatalf("byte %d bit %d: %q, %v", i, bit, got, err)
			}
		}
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range enc {
		for _, c := range alphabet + "=.+/\x00\n" {
			if byte(c) == enc[i] {
				continue
			}
			e := enc[:i] + string(c) + enc[i+1:]
			got, err := k.DecryptName(dir, e)
			if err == nil {
				t.Fatalf("position %d %q: decrypted to %q", i, c, got)
			}
			if !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrEncoding) {
				t.Fatalf("position %d %q: %v", i, c, err)
			}
		}
	}
	for _, e := range []string{"", "A", enc[:len(enc)-1], enc + "A", enc + "AA", "." + enc, enc[:22]} {
		if _, err := k.DecryptName(dir, e); !errors.Is(err, ErrEncoding) && !errors.Is(err, ErrAuthentication) {
			t.Errorf("%q: %v", e, err)
		}
	}
}

func TestNameTooLongCiphertext(t *testing.T) {
	k := testKeys(t)
	enc := rawName(k, testDirID(), []byte(nameOfLen(NameMax+1)))
	if _, err := k.DecryptName(testDirID(), enc); !errors.Is(err, ErrNameTooLong) {
		t.Fatalf("%v, want ErrNameTooLong", err)
	}
}

func TestSidecarRejects(t *testing.T) {
	k := testKeys(t)
	enc, _ := k.EncryptName(testDirID(), nameOfLen(200))
	other, _ := k.EncryptName(testDirID(), nameOfLen(201))
	hashed := HashedName(enc)
	good := MarshalSidecar(enc)
	short, _ := k.EncryptName(testDirID(), "short")
	for _, c := range []struct {
		what    string
		hashed  string
		content []byte
		want    error
	}{
		{"another name's sidecar", hashed, MarshalSidecar(other), ErrHashMismatch},
		{"sidecar beside another entry", HashedName(other), good, ErrHashMismatch},
		{"empty", hashed, nil, ErrCorrupt},
		{"header only", hashed, good[:6], ErrCorrupt},
		{"bad magic", hashed, append([]byte("KMSX"), good[4:]...), ErrCorrupt},
		{"bad version", hashed, append([]byte("KMSL\x00\x01"), good[6:]...), ErrCorrupt},
		{"cut", hashed, good[:len(good)-1], ErrCorrupt},
		{"trailing newline", hashed, append(bytes.Clone(good), '\n'), ErrCorrupt},
		{"short name in a sidecar", HashedName(short), MarshalSidecar(short), ErrCorrupt},
		{"too large", hashed, append(bytes.Clone(good), make([]byte, MaxSidecarSize)...), ErrCorrupt},
	} {
		if _, err := ParseSidecar(c.hashed, c.content); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
	}
}

func TestClassify(t *testing.T) {
	enc, _ := testKeys(t).EncryptName(testDirID(), "a")
	h := HashedName(strings.Repeat("A", 300))
	for name, want := range map[string]Kind{
		enc:               KindName,
		h:                 KindLongName,
		SidecarName(h):    KindSidecar,
		DirIDFileName:     KindDirID,
		TempPrefix + "x1": KindTemp,
		TargetsDirName:    KindTargets,
		"kmsfs.conf":      KindOther,
		"kmsfs.long.abc":  KindOther,
		h + ".name.x":     KindOther,
		"hello":           KindOther, // not a possible ciphertext length
		enc + "=":         KindOther,
		".":               KindOther,
	} {
		if got := Classify(name); got != want {
			t.Errorf("Classify(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestDirIDFile(t *testing.T) {
	k := testKeys(t)
	id := NewDirID()
	if id == (DirID{}) || NewDirID() == id {
		t.Fatal("NewDirID is not random")
	}
	b := k.MarshalDirID(id)
	if len(b) != DirIDFileSize {
		t.Fatalf("size %d", len(b))
	}
	if got, err := k.ParseDirID(b); err != nil || got != id {
		t.Fatalf("ParseDirID = %v, %v", got, err)
	}
	for i := range b {
		for bit := range 8 {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			_, err := k.ParseDirID(c)
			want := ErrAuthentication
			if i < 6 {
				want = ErrCorrupt
			}
			if !errors.Is(err, want) {
				t.Fatalf("byte %d bit %d: %v, want %v", i, bit, err, want)
			}
		}
	}
	other, _ := New(pattern(KeySize, 9))
	if _, err := other.ParseDirID(b); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("another filesystem's ID file: %v", err)
	}
	for _, c := range [][]byte{nil, b[:DirIDFileSize-1], append(bytes.Clone(b), 0)} {
		if _, err := k.ParseDirID(c); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%d bytes: %v, want ErrCorrupt", len(c), err)
		}
	}
}

func TestTargetRoundTrip(t *testing.T) {
	k := testKeys(t)
	for n := 1; n <= MaxTargetLen; n++ {
		target := "/" + nameOfLen(n-1)
		link, file, err := k.EncryptTarget(target)
		if err != nil {
			t.Fatalf("len %d: %v", n, err)
		}
		if len(link) > MaxBackingTargetLen || strings.IndexByte(link, 0) >= 0 {
			t.Fatalf("len %d: backing target of %d bytes", n, len(link))
		}
		name, long := TargetFileName(link)
		if wantLong := n > 735; long != wantLong || (file != nil) != long {
			t.Fatalf("len %d: long = %v, file %d bytes", n, long, len(file))
		}
		if long && (len(file) > MaxTargetFileSize || len(name) != 43) {
			t.Fatalf("len %d: file %d bytes, name %q", n, len(file), name)
		}
		got, err := k.DecryptTarget(link, file)
		if err != nil || got != target {
			t.Fatalf("len %d: DecryptTarget = %.30q, %v", n, got, err)
		}
	}
	l1, _, _ := k.EncryptTarget("a")
	l2, _, _ := k.EncryptTarget("a")
	if l1 == l2 {
		t.Fatal("symlink targets are not encrypted with a fresh nonce")
	}
}

func TestTargetRejects(t *testing.T) {
	k := testKeys(t)
	for target, want := range map[string]error{"": ErrEmptyTarget, "a\x00b": ErrInvalidTarget, nameOfLen(MaxTargetLen + 1): ErrTargetTooLong} {
		if _, _, err := k.EncryptTarget(target); !errors.Is(err, want) {
			t.Errorf("EncryptTarget(%.20q) = %v, want %v", target, err, want)
		}
	}
	link, _, _ := k.EncryptTarget("../x")
	blob, _ := decode64(link)
	for i := range blob {
		c := bytes.Clone(blob)
		c[i] ^= 0x80
		want := ErrAuthentication
		if i == 0 {
			want = ErrCorrupt
		}
		if _, err := k.DecryptTarget(b64.EncodeToString(c), nil); !errors.Is(err, want) {
			t.Fatalf("byte %d flipped: %v, want %v", i, err, want)
		}
	}
	long := "/" + nameOfLen(3000)
	llink, file, _ := k.EncryptTarget(long)
	other, ofile, _ := k.EncryptTarget(long)
	sf := shortFile(k)
	flipped := bytes.Clone(file)
	flipped[len(flipped)-1] ^= 1
	for _, c := range []struct {
		what string
		link string
		file []byte
		want error
	}{
		{"short link, bad base64", link + "!", nil, ErrEncoding},
		{"short link, cut", link[:len(link)-2], nil, ErrEncoding},
		{"long link, missing file", llink, nil, ErrCorrupt},
		{"long link, another target's file", llink, ofile, ErrHashMismatch},
		{"long link, file edited", llink, flipped, ErrHashMismatch},
		{"long link, bad hash", LongTargetPrefix + "abc", file, ErrEncoding},
		{"a target file of the right hash but a short blob", LongTargetPrefix + hashOf(sf), sf, ErrCorrupt},
	} {
		if _, err := k.DecryptTarget(c.link, c.file); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
	}
	if got, err := k.DecryptTarget(other, ofile); err != nil || got != long {
		t.Fatal(err)
	}
	// A forged file with a matching hash but a tampered blob fails
	// authentication.
	forged := bytes.Clone(file)
	forged[40] ^= 1
	sumLink := LongTargetPrefix + hashOf(forged)
	if _, err := k.DecryptTarget(sumLink, forged); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("forged long target: %v", err)
	}
}

// shortFile is a long-target file holding a blob that fits a link: not
// canonical.
func shortFile(k *Keys) []byte {
	link, _, _ := k.EncryptTarget("x")
	blob, _ := decode64(link)
	return append([]byte("KMST\x00\x02"), blob...)
}

func TestXattrRoundTrip(t *testing.T) {
	k := testKeys(t)
	obj := ObjectID(pattern(16, 0xc0))
	for n := 1; n <= maxXattrSuffix; n++ {
		name := UserXattrPrefix + nameOfLen(n)
		maxV, err := MaxXattrValueSize(name)
		if err != nil {
			t.Fatal(err)
		}
		values := [][]byte{{}, pattern(n, 3)}
		if n == 1 || n == 159 || n == 160 || n == maxXattrSuffix {
			values = append(values, pattern(maxV, 4))
		}
		for _, v := range values {
			backing, blob, err := k.EncryptXattr(obj, name, v)
			if err != nil {
				t.Fatalf("len %d, value %d: %v", n, len(v), err)
			}
			if len(backing) > XattrNameMax || !IsXattrBackingName(backing) || IsHashedXattrName(backing) != (n >= 160) {
				t.Fatalf("len %d: backing name %q", n, backing)
			}
			if o, _ := XattrValueOverhead(name); len(blob) != len(v)+o {
				t.Fatalf("len %d: blob %d bytes for %d, overhead says %d", n, len(blob), len(v), o)
			}
			if want, _ := k.XattrBackingName(obj, name); want != backing {
				t.Fatalf("XattrBackingName = %q, EncryptXattr %q", want, backing)
			}
			var nameBlob []byte
			if IsHashedXattrName(backing) {
				nameBlob = blob
			}
			if got, err := k.DecryptXattrName(obj, backing, nameBlob); err != nil || got != name {
				t.Fatalf("len %d: DecryptXattrName = %q, %v", n, got, err)
			}
			if got, err := k.DecryptXattrValue(obj, name, blob); err != nil || !bytes.Equal(got, v) {
				t.Fatalf("len %d: DecryptXattrValue: %v", n, err)
			}
			if sz, err := XattrValueSize(blob); err != nil || sz != len(v) {
				t.Fatalf("XattrValueSize = %d, %v", sz, err)
			}
		}
		if _, _, err := k.EncryptXattr(obj, name, make([]byte, maxV+1)); !errors.Is(err, ErrValueTooLarge) {
			t.Fatalf("len %d: value of %d bytes: %v, want ErrValueTooLarge", n, maxV+1, err)
		}
	}
	if m, _ := MaxXattrValueSize("user.a"); m != 65505 {
		t.Errorf("MaxXattrValueSize(short) = %d, want 65505", m)
	}
	if m, _ := MaxXattrValueSize(UserXattrPrefix + nameOfLen(maxXattrSuffix)); m != 65536-31-363 {
		t.Errorf("MaxXattrValueSize(longest) = %d, want %d", m, 65536-31-363)
	}
}

func TestXattrRejects(t *testing.T) {
	k := testKeys(t)
	obj := ObjectID(pattern(16, 0xc0))
	otherObj := obj
	otherObj[0] ^= 1
	for name, want := range map[string]error{
		"trusted.x": ErrNotUserXattr, "security.selinux": ErrNotUserXattr, "user.": ErrEmptyName,
		"user.a\x00": ErrInvalidName, UserXattrPrefix + nameOfLen(maxXattrSuffix+1): ErrNameTooLong,
	} {
		if _, _, err := k.EncryptXattr(obj, name, nil); !errors.Is(err, want) {
			t.Errorf("EncryptXattr(%.20q) = %v, want %v", name, err, want)
		}
	}
	for _, name := range []string{"user.comment", UserXattrPrefix + nameOfLen(200)} {
		backing, blob, _ := k.EncryptXattr(obj, name, []byte("secret value"))
		var nameBlob []byte
		if IsHashedXattrName(backing) {
			nameBlob = blob
		}
		if _, err := k.DecryptXattrValue(otherObj, name, blob); !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%.20s: value copied to another object: %v", name, err)
		}
		if _, err := k.DecryptXattrValue(obj, "user.other", blob); !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%.20s: value renamed to another attribute: %v", name, err)
		}
		if _, err := k.DecryptXattrName(otherObj, backing, nameBlob); !errors.Is(err, ErrAuthentication) {
			t.Errorf("%.20s: name on another object: %v", name, err)
		}
		for i := range blob {
			c := bytes.Clone(blob)
			c[i] ^= 1
			if _, err := k.DecryptXattrValue(obj, name, c); err == nil {
				t.Fatalf("%.20s: byte %d flipped: accepted", name, i)
			}
		}
		if _, err := k.DecryptXattrValue(obj, name, blob[:len(blob)-1]); err == nil {
			t.Errorf("%.20s: cut value accepted", name)
		}
	}
	// The same attribute name with the same value on another object:
	// separated by the object ID in the AD even for short names.
	_, blobA, _ := k.encryptXattr(obj, "user.a", []byte("v"), pattern(12, 1))
	_, blobB, _ := k.encryptXattr(otherObj, "user.a", []byte("v"), pattern(12, 1))
	if _, err := k.DecryptXattrValue(otherObj, "user.a", blobA); !errors.Is(err, ErrAuthentication) || bytes.Equal(blobA, blobB) {
		t.Errorf("short name, value of another object: %v", err)
	}
	if _, err := k.DecryptXattrName(obj, "user.kmsfs.key", nil); !errors.Is(err, ErrEncoding) {
		t.Errorf("kmsfs's own attribute: %v", err)
	}
	if IsXattrBackingName("user.kmsfs.key") || IsXattrBackingName("user.kmsfs.x.") || IsXattrBackingName("user.plain") {
		t.Error("IsXattrBackingName accepts a name kmsfs does not encrypt")
	}
}

// TestConcurrent drives every operation from several goroutines on one
// Keys under -race.
func TestConcurrent(t *testing.T) {
	k := testKeys(t)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			dir := NewDirID()
			for i := range 200 {
				name := nameOfLen(1 + (g*200+i)%NameMax)
				enc, err := k.EncryptName(dir, name)
				if err != nil {
					t.Error(err)
					return
				}
				if got, err := k.DecryptName(dir, enc); err != nil || got != name {
					t.Errorf("DecryptName = %v", err)
					return
				}
				link, file, _ := k.EncryptTarget(name)
				if got, err := k.DecryptTarget(link, file); err != nil || got != name {
					t.Errorf("DecryptTarget = %v", err)
					return
				}
				_, blob, _ := k.EncryptXattr(ObjectID(dir), "user."+name[:min(len(name), 250)], []byte(name))
				if _, err := k.DecryptXattrValue(ObjectID(dir), "user."+name[:min(len(name), 250)], blob); err != nil {
					t.Error(err)
					return
				}
				if _, err := k.ParseDirID(k.MarshalDirID(dir)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkEncryptName(b *testing.B) {
	k := testKeys(b)
	dir := testDirID()
	name := "IMG_20260514_1234.jpg"[:20]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.EncryptName(dir, name); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecryptName(b *testing.B) {
	k := testKeys(b)
	dir := testDirID()
	enc, _ := k.EncryptName(dir, "IMG_20260514_1234.jpg"[:20])
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.DecryptName(dir, enc); err != nil {
			b.Fatal(err)
		}
	}
}

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return b64.EncodeToString(sum[:])
}
