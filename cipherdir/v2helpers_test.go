package cipherdir

import (
	"crypto/sha256"
	"encoding/base64"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/kmsfs/kmsfs/names"
)

// v2Tree builds a backing tree of format v2 by hand (no FUSE): the root's
// ID file, directories with theirs, sidecars for long names, entries under
// encrypted names.
type v2Tree struct {
	dir  string
	k    *names.Keys
	root int // O_PATH descriptor of dir
}

// newV2Tree makes dir (a new temporary directory when "") a v2 tree root.
func newV2Tree(t *testing.T, dir string) *v2Tree {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	v := &v2Tree{dir: dir, k: newNamesKeys(t), root: openDir(t, dir)}
	if err := WriteRootDirID(v.root, v.k); err != nil {
		t.Fatal(err)
	}
	return v
}

// entry returns the backing path of plainRel, whose parent must exist,
// after writing its sidecar when its name is long.
func (v *v2Tree) entry(t *testing.T, plainRel string) string {
	t.Helper()
	brel, err := EncryptPath(v.root, v.k, plainRel)
	if err != nil {
		t.Fatal(err)
	}
	pdir, bname := path.Split(brel)
	pfd := openDir(t, filepath.Join(v.dir, pdir))
	id, err := ReadDirID(pfd, v.k)
	if err != nil {
		t.Fatal(err)
	}
	backing, long, err := EntryName(v.k, id, path.Base(plainRel))
	if err != nil || backing != bname {
		t.Fatalf("EntryName = %q, %v; EncryptPath said %q", backing, err, bname)
	}
	if long != "" {
		if err := EnsureSidecar(pfd, long); err != nil {
			t.Fatal(err)
		}
	}
	return brel
}

// mkdir makes the directory plainRel with a fresh ID and returns its
// backing path.
func (v *v2Tree) mkdir(t *testing.T, plainRel string) string {
	t.Helper()
	brel := v.entry(t, plainRel)
	p := filepath.Join(v.dir, brel)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteDirID(openDir(t, p), v.k, names.NewDirID()); err != nil {
		t.Fatal(err)
	}
	return brel
}

// symlink makes the symlink plainRel pointing at target.
func (v *v2Tree) symlink(t *testing.T, plainRel, target string) string {
	t.Helper()
	brel := v.entry(t, plainRel)
	link, err := WriteTarget(v.root, v.k, target)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(link, filepath.Join(v.dir, brel)); err != nil {
		t.Fatal(err)
	}
	return brel
}

// empty makes the empty regular file plainRel.
func (v *v2Tree) empty(t *testing.T, plainRel string) string {
	t.Helper()
	brel := v.entry(t, plainRel)
	if err := os.WriteFile(filepath.Join(v.dir, brel), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return brel
}

// b64sum is the name of a long-target file with content b.
func b64sum(b []byte) string {
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
