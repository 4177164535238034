package cipherdir

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/names"
)

// fileObjectID returns the object ID of the backing file p's user
// attributes: its file ID.
func fileObjectID(t *testing.T, p string) names.ObjectID {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hb [chunk.HeaderSize]byte
	h, err := ReadHeader(int(f.Fd()), hb[:])
	if err != nil {
		t.Fatal(err)
	}
	return names.ObjectID(h.FileID)
}

// encryptedXattrs returns the backing names of p's encrypted user
// attributes.
func encryptedXattrs(t *testing.T, p string) []string {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if names.IsXattrBackingName(s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func getX(t *testing.T, p, name string) []byte {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s: %v", name, err)
	}
	return buf[:n]
}

// TestRekeyReencryptsXattrs: a v2 file's user attributes are bound to its
// file ID; after rekey (a new ID) they decrypt under the new ID, with the
// same names and values, and the old backing attributes are gone.
func TestRekeyReencryptsXattrs(t *testing.T) {
	tt := newTestTree(t)
	k := newNamesKeys(t)
	tt.write(t, "f", []byte("content"))
	p := tt.path("f")
	oldID := fileObjectID(t, p)
	attrs := map[string][]byte{
		"user.comment":                     []byte("hello, world"),
		"user." + strings.Repeat("n", 200): []byte("hashed name"), // the hashed backing form
		"user.empty":                       {},
	}
	var oldBacking []string
	for name, val := range attrs {
		b, blob, err := k.EncryptXattr(oldID, name, val)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Lsetxattr(p, b, blob, 0); err != nil {
			t.Skipf("user xattrs unsupported here: %v", err)
		}
		oldBacking = append(oldBacking, b)
	}
	slices.Sort(oldBacking)
	if err := unix.Lsetxattr(p, "user.plain", []byte("v1-style"), 0); err != nil {
		t.Fatal(err)
	}

	rk, err := NewRekeyer(context.Background(), tt.dir, tt.cfg, tt.store, nil, k)
	if err != nil {
		t.Fatal(err)
	}
	defer rk.Close()
	if _, _, err := rk.Rekey(context.Background(), "f"); err != nil {
		t.Fatal(err)
	}
	newID := fileObjectID(t, p)
	if newID == oldID {
		t.Fatal("rekey kept the file ID")
	}
	got := encryptedXattrs(t, p)
	if len(got) != len(attrs) {
		t.Fatalf("after rekey: %d encrypted attributes, want %d", len(got), len(attrs))
	}
	for _, b := range got {
		if slices.Contains(oldBacking, b) {
			t.Errorf("old backing attribute %s is still there", b)
		}
		blob := getX(t, p, b)
		name, err := k.DecryptXattrName(newID, b, blob)
		if err != nil {
			t.Errorf("%s does not decrypt under the new ID: %v", b, err)
			continue
		}
		val, err := k.DecryptXattrValue(newID, name, blob)
		if err != nil || !bytes.Equal(val, attrs[name]) {
			t.Errorf("%s: value %q, %v; want %q", name, val, err, attrs[name])
		}
	}
	if v := getX(t, p, "user.plain"); string(v) != "v1-style" {
		t.Errorf("user.plain = %q", v)
	}
	if !bytes.Equal(tt.read(t, "f"), []byte("content")) {
		t.Error("content changed")
	}

	// An attribute that does not decrypt under the file's ID (copied from
	// another file) fails the rekey; the file is left as it was.
	other, blob, _ := k.EncryptXattr(names.ObjectID{1}, "user.stray", []byte("x"))
	if err := unix.Lsetxattr(p, other, blob, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rk.Rekey(context.Background(), "f"); !errors.Is(err, names.ErrAuthentication) {
		t.Errorf("rekey with a stray attribute: %v, want ErrAuthentication", err)
	}
	if fileObjectID(t, p) != newID {
		t.Error("a failed rekey replaced the file")
	}
	if es, _ := os.ReadDir(tt.dir); len(es) != 2 { // kmsfs.conf and f: no temporary left
		t.Errorf("CIPHERDIR holds %d entries after a failed rekey", len(es))
	}
}
