package cipherdir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/names"
)

func TestPathsV1(t *testing.T) {
	root := openDir(t, t.TempDir())
	for _, c := range []struct{ in, want string }{
		{"", "."}, {".", "."}, {"/a/b/", "a/b"}, {"a/kmsfs.conf", "a/kmsfs.conf"}, {"x/.kmsfs-rekey-1/y", ""},
		{"kmsfs.conf", ""}, {"kmsfs.conf.tmp", ""}, {"a/../b", ""}, {"a//b", ""}, {"a/./b", ""},
	} {
		for _, f := range []func(int, *names.Keys, string) (string, error){EncryptPath, DecryptPath} {
			got, err := f(root, nil, c.in)
			if c.want == "" {
				if err == nil {
					t.Errorf("%q: %q, want an error", c.in, got)
				}
				continue
			}
			if err != nil || got != c.want {
				t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
			}
		}
	}
}

func TestPathsV2(t *testing.T) {
	v := newV2Tree(t, "")
	long := strings.Repeat("L", 200)
	plain := []string{"docs", "docs/" + long, "docs/" + long + "/report.pdf", "docs/a b", "top.txt"}
	v.mkdir(t, "docs")
	v.mkdir(t, "docs/"+long)
	v.empty(t, "docs/"+long+"/report.pdf")
	v.symlink(t, "docs/a b", "../top.txt")
	v.empty(t, "top.txt")
	for _, p := range plain {
		brel, err := EncryptPath(v.root, v.k, p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(brel, "/") != strings.Count(p, "/") || strings.Contains(brel, "docs") {
			t.Errorf("EncryptPath(%q) = %q", p, brel)
		}
		if _, err := os.Lstat(filepath.Join(v.dir, brel)); err != nil {
			t.Errorf("EncryptPath(%q) = %q, which does not exist: %v", p, brel, err)
		}
		back, err := DecryptPath(v.root, v.k, brel)
		if err != nil || back != p {
			t.Errorf("DecryptPath(%q) = %q, %v; want %q", brel, back, err, p)
		}
		if back, err := DecryptPath(v.root, v.k, "/"+brel+"/"); err != nil || back != p {
			t.Errorf("DecryptPath(/%q/) = %q, %v", brel, back, err)
		}
	}
	// The last name need not exist for EncryptPath; the directories must.
	if _, err := EncryptPath(v.root, v.k, "docs/new-file"); err != nil {
		t.Errorf("EncryptPath of a new name: %v", err)
	}
	if _, err := EncryptPath(v.root, v.k, "nodir/x"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("EncryptPath below a missing directory: %v, want ENOENT", err)
	}
	for _, rel := range []string{".", ""} {
		if got, err := EncryptPath(v.root, v.k, rel); err != nil || got != "." {
			t.Errorf("EncryptPath(%q) = %q, %v", rel, got, err)
		}
		if got, err := DecryptPath(v.root, v.k, rel); err != nil || got != "." {
			t.Errorf("DecryptPath(%q) = %q, %v", rel, got, err)
		}
	}

	docs, _ := EncryptPath(v.root, v.k, "docs")
	for _, internal := range []string{names.DirIDFileName, docs + "/" + names.DirIDFileName, "kmsfs.conf", "foreign.txt", names.TargetsDirName} {
		if _, err := DecryptPath(v.root, v.k, internal); !errors.Is(err, ErrNotUserEntry) {
			t.Errorf("DecryptPath(%q): %v, want ErrNotUserEntry", internal, err)
		}
	}
	// A directory whose ID file is gone: its entries cannot be named.
	os.Remove(filepath.Join(v.dir, docs, names.DirIDFileName))
	if _, err := EncryptPath(v.root, v.k, "docs/a b"); !errors.Is(err, ErrNoDirID) {
		t.Errorf("EncryptPath in a directory without ID: %v, want ErrNoDirID", err)
	}
	// Never through a symlink: a backing symlink in place of a directory.
	link, _ := EncryptPath(v.root, v.k, "docs/a b")
	if _, err := DecryptPath(v.root, v.k, link+"/x"); err == nil {
		t.Error("DecryptPath through a backing symlink succeeded")
	}
	top, _ := EncryptPath(v.root, v.k, "top.txt")
	os.Remove(filepath.Join(v.dir, top))
	if err := os.Symlink(docs, filepath.Join(v.dir, top)); err != nil {
		t.Fatal(err)
	}
	if _, err := EncryptPath(v.root, v.k, "top.txt/a b"); !errors.Is(err, unix.ENOTDIR) && !errors.Is(err, unix.ELOOP) {
		t.Errorf("EncryptPath through a backing symlink: %v, want ENOTDIR or ELOOP", err)
	}
}
