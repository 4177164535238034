package names

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json and the fuzz seed corpora from the implementation")

// vectorFile is the layout of testdata/vectors.json (FORMAT.md, "Test
// vectors"). Byte strings are hex; names and targets that are valid UTF-8
// are also given as text for the reader.
type vectorFile struct {
	Comment   string         `json:"comment"`
	NamesKey  string         `json:"names_key"`
	Subkeys   vectorSubkeys  `json:"subkeys"`
	DirID     string         `json:"dir_id"`
	DirIDFile string         `json:"dir_id_file"`
	Names     []vectorName   `json:"names"`
	Targets   []vectorTarget `json:"targets"`
	Xattrs    []vectorXattr  `json:"xattrs"`
}

type vectorSubkeys struct {
	EntryNames     string `json:"entry_names"`
	XattrNames     string `json:"xattr_names"`
	SymlinkTargets string `json:"symlink_targets"`
	XattrValues    string `json:"xattr_values"`
	DirectoryIDs   string `json:"directory_ids"`
}

type vectorName struct {
	Name        string `json:"name,omitempty"`
	NameHex     string `json:"name_hex"`
	Encoded     string `json:"encoded"`
	Backing     string `json:"backing"`
	SidecarName string `json:"sidecar_name,omitempty"`
	Sidecar     string `json:"sidecar,omitempty"`
}

type vectorTarget struct {
	Target    string `json:"target,omitempty"`
	TargetHex string `json:"target_hex"`
	Nonce     string `json:"nonce"`
	Link      string `json:"link"`
	FileName  string `json:"file_name,omitempty"`
	File      string `json:"file,omitempty"`
}

type vectorXattr struct {
	ObjectID string `json:"object_id"`
	Name     string `json:"name"`
	Value    string `json:"value"`
	Nonce    string `json:"nonce"`
	Backing  string `json:"backing"`
	Blob     string `json:"blob"`
}

// pattern returns n deterministic bytes.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// testKey is the fixed names key of tests and vectors: 00 01 … 1f.
func testKey() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// testDirID is the fixed directory ID of tests and vectors: a0 a1 … af.
func testDirID() DirID {
	var d DirID
	for i := range d {
		d[i] = 0xa0 + byte(i)
	}
	return d
}

func testKeys(t testing.TB) *Keys {
	t.Helper()
	k, err := New(testKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// nameOfLen returns a valid entry name of n bytes: a, b, … z, a, …
func nameOfLen(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}

// vectorNames are the entry names of the vectors: ASCII, a whole padding
// block, multibyte UTF-8, the longest short name, the shortest long name
// and the longest name.
func vectorNames() []string {
	return []string{"hello.txt", "0123456789abcdef", "Grüße, 世界 🌍.md", nameOfLen(159), nameOfLen(160), nameOfLen(NameMax)}
}

// vectorTargets are the symlink targets of the vectors: a usual relative
// target, the longest short one, the shortest long one and the longest.
func vectorTargets() []string {
	return []string{"../lib/libfoo.so.1", "/" + nameOfLen(734), "/" + nameOfLen(735), "/" + nameOfLen(MaxTargetLen-1)}
}

func subkey(t testing.TB, label string, n int) string {
	k, err := hkdf.Key(sha256.New, testKey(), nil, label, n)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(k)
}

func textIfUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return ""
}

func generateVectors(t testing.TB) vectorFile {
	k := testKeys(t)
	dir := testDirID()
	vf := vectorFile{
		Comment: "kmsfs tree format v2 names known-answer vectors; see FORMAT.md. Checked by TestVectors (the package) " +
			"and testdata/check_vectors.py (a second construction from FORMAT.md). Regenerate only for a new format " +
			"version: go test ./names -run TestVectors -update",
		NamesKey: hex.EncodeToString(testKey()),
		Subkeys: vectorSubkeys{
			EntryNames:     subkey(t, labelEntryNames, 64),
			XattrNames:     subkey(t, labelXattrNames, 64),
			SymlinkTargets: subkey(t, labelTargets, 32),
			XattrValues:    subkey(t, labelXattrValues, 32),
			DirectoryIDs:   subkey(t, labelDirIDs, 32),
		},
		DirID:     hex.EncodeToString(dir[:]),
		DirIDFile: hex.EncodeToString(k.MarshalDirID(dir)),
	}
	for _, n := range vectorNames() {
		enc, err := k.EncryptName(dir, n)
		if err != nil {
			t.Fatal(err)
		}
		v := vectorName{Name: textIfUTF8([]byte(n)), NameHex: hex.EncodeToString([]byte(n)), Encoded: enc, Backing: BackingName(enc)}
		if IsLong(enc) {
			v.SidecarName = SidecarName(v.Backing)
			v.Sidecar = hex.EncodeToString(MarshalSidecar(enc))
		}
		vf.Names = append(vf.Names, v)
	}
	for i, tg := range vectorTargets() {
		nonce := pattern(nonceSize, byte(0x30+i))
		link, file, err := k.encryptTarget(tg, nonce)
		if err != nil {
			t.Fatal(err)
		}
		v := vectorTarget{Target: textIfUTF8([]byte(tg)), TargetHex: hex.EncodeToString([]byte(tg)), Nonce: hex.EncodeToString(nonce), Link: link}
		if file != nil {
			v.FileName, _ = TargetFileName(link)
			v.File = hex.EncodeToString(file)
		}
		vf.Targets = append(vf.Targets, v)
	}
	fileID := ObjectID(pattern(16, 0xc0))
	for i, x := range []struct {
		obj   ObjectID
		name  string
		value []byte
	}{
		{fileID, "user.comment", []byte("hello, world")},
		{ObjectID(dir), "user.xdg.origin.url", []byte{}},
		{fileID, "user." + nameOfLen(159), pattern(100, 1)},
		{fileID, "user." + nameOfLen(maxXattrSuffix), pattern(33, 2)},
	} {
		nonce := pattern(nonceSize, byte(0x50+i))
		backing, blob, err := k.encryptXattr(x.obj, x.name, x.value, nonce)
		if err != nil {
			t.Fatal(err)
		}
		vf.Xattrs = append(vf.Xattrs, vectorXattr{
			ObjectID: hex.EncodeToString(x.obj[:]), Name: x.name, Value: hex.EncodeToString(x.value),
			Nonce: hex.EncodeToString(nonce), Backing: backing, Blob: hex.EncodeToString(blob),
		})
	}
	return vf
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readVectors(t testing.TB) vectorFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Names) == 0 || len(vf.Targets) == 0 || len(vf.Xattrs) == 0 {
		t.Fatal("vectors.json has an empty section")
	}
	return vf
}

// TestVectors pins the format: the package must regenerate the checked-in
// vectors exactly, and decrypt every one of them back.
func TestVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	if *update {
		b, err := json.MarshalIndent(generateVectors(t), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vf := readVectors(t)
	if got := generateVectors(t); !reflect.DeepEqual(got, vf) {
		g, _ := json.MarshalIndent(got, "", "  ")
		t.Fatalf("the package no longer produces testdata/vectors.json (a format change needs a new version):\n%s", g)
	}
	k, err := New(unhex(t, vf.NamesKey))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := k.ParseDirID(unhex(t, vf.DirIDFile))
	if err != nil || hex.EncodeToString(dir[:]) != vf.DirID {
		t.Fatalf("ParseDirID(vector) = %v, %v", dir, err)
	}
	for _, v := range vf.Names {
		enc := v.Backing
		if v.Sidecar != "" {
			if enc, err = ParseSidecar(v.Backing, unhex(t, v.Sidecar)); err != nil {
				t.Fatalf("ParseSidecar(%s): %v", v.Backing, err)
			}
		}
		if got, err := k.DecryptName(dir, enc); err != nil || got != string(unhex(t, v.NameHex)) {
			t.Errorf("DecryptName(%s) = %q, %v", enc, got, err)
		}
	}
	for _, v := range vf.Targets {
		if got, err := k.DecryptTarget(v.Link, unhex(t, v.File)); err != nil || got != string(unhex(t, v.TargetHex)) {
			t.Errorf("DecryptTarget(%.40s…) = %.40q…, %v", v.Link, got, err)
		}
	}
	for _, v := range vf.Xattrs {
		obj := ObjectID(unhex(t, v.ObjectID))
		blob := unhex(t, v.Blob)
		if got, err := k.DecryptXattrName(obj, v.Backing, blob); err != nil || got != v.Name {
			t.Errorf("DecryptXattrName(%s) = %q, %v", v.Backing, got, err)
		}
		if got, err := k.DecryptXattrValue(obj, v.Name, blob); err != nil || hex.EncodeToString(got) != v.Value {
			t.Errorf("DecryptXattrValue(%s) = %x, %v", v.Name, got, err)
		}
	}
}

// TestVectorsSecondConstruction runs testdata/check_vectors.py, written
// from FORMAT.md with Python's cryptography package (AESSIV, AESGCM, HKDF,
// HMAC), over testdata/vectors.json. Without python3 or the module the
// test skips, and fails under CI=true (.ci/deps.sh installs
// python3-cryptography).
func TestVectorsSecondConstruction(t *testing.T) {
	py := pythonWithCryptography(t)
	if py == "" {
		msg := "no python3 with the cryptography package (Debian: python3-cryptography)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	cmd := exec.Command(py, filepath.Join("testdata", "check_vectors.py"), filepath.Join("testdata", "vectors.json"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s check_vectors.py: %v\n%s", py, err, out)
	}
	if !strings.Contains(string(out), "vectors ok") {
		t.Fatalf("check_vectors.py did not confirm the vectors:\n%s", out)
	}
	t.Logf("%s", out)
}

// pythonWithCryptography returns the first python3 (on PATH, then
// /usr/bin) that imports AESSIV from the cryptography package, or "".
func pythonWithCryptography(t *testing.T) string {
	var cands []string
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	cands = append(cands, "/usr/bin/python3")
	for _, p := range cands {
		err := exec.Command(p, "-c", "from cryptography.hazmat.primitives.ciphers.aead import AESSIV, AESGCM").Run()
		if err == nil {
			return p
		}
		t.Logf("%s: no usable cryptography module: %v", p, err)
	}
	return ""
}
