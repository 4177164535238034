package main

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/names"
)

// TestPathsCommandV1: in a v1 tree names map to themselves, kmsfs's own
// files are refused, absolute paths must be inside CIPHERDIR, "-" reads
// standard input, and no key service is needed.
func TestPathsCommandV1(t *testing.T) {
	lt := newLifecycleTree(t)
	lt.write(t, "docs/a.txt", []byte("a"))
	te := lt.te
	if code := runCmd(t, te, "paths", lt.dir, "--decrypt", "docs/a.txt", filepath.Join(lt.dir, "docs/a.txt"), "docs/missing"); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if got := te.stdout.String(); got != "docs/a.txt\ndocs/a.txt\ndocs/missing\n" {
		t.Errorf("stdout %q", got)
	}
	if code := runCmd(t, te, "paths", "--encrypt", lt.dir, "docs/a.txt"); code != ExitOK || te.stdout.String() != "docs/a.txt\n" {
		t.Errorf("--encrypt: exit %d, %q", code, te.stdout.String())
	}

	// A name that starts with "-", as an encrypted backing name may: after
	// "--" it is a path, not a flag.
	lt.write(t, "-dash", []byte("d"))
	if code := runCmd(t, te, "paths", "--decrypt", "--", lt.dir, "-dash"); code != ExitOK || te.stdout.String() != "-dash\n" {
		t.Errorf("a path starting with '-' after --: exit %d, %q, %s", code, te.stdout.String(), te.stderr.String())
	}

	// Failures: kmsfs's own file, a path outside CIPHERDIR, an absolute
	// --encrypt path without a mount. Each is named on stderr; the others
	// are still printed.
	code := runCmd(t, te, "paths", lt.dir, "--decrypt", cipherdir.ConfigName, "/etc/passwd", "docs/a.txt")
	if code != ExitCipherDir || te.stdout.String() != "docs/a.txt\n" || !strings.Contains(te.stderr.String(), "/etc/passwd: not inside CIPHERDIR") {
		t.Errorf("bad inputs: exit %d", code)
	}
	if code := runCmd(t, te, "paths", lt.dir, "--encrypt", "/x/y"); code != ExitCipherDir {
		t.Errorf("absolute --encrypt path without a mount: exit %d", code)
	}

	// Standard input and JSON.
	te.Stdin = strings.NewReader("docs/a.txt\n\nkmsfs.conf\r\n")
	code = runCmd(t, te, "paths", "--json", lt.dir, "--decrypt", "-")
	var doc pathsReport
	if err := json.Unmarshal(te.stdout.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if code != ExitCipherDir || doc.Mode != "decrypt" || len(doc.Paths) != 2 ||
		doc.Paths[0] != (pathResult{Input: "docs/a.txt", Output: "docs/a.txt"}) || doc.Paths[1].Error == "" {
		t.Errorf("--json with stdin: exit %d, %+v", code, doc)
	}

	// Usage errors.
	for _, args := range [][]string{{"paths", lt.dir, "x"}, {"paths", lt.dir, "--encrypt", "--decrypt", "x"}, {"paths", lt.dir, "--encrypt"}} {
		if code := runCmd(t, te, args...); code != ExitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, ExitUsage)
		}
	}
}

// TestPathMapperV2: the mapping core of `kmsfs paths` on a v2 tree built
// by hand (the names key comes from the key service once v2 configs
// exist; here it is a random one).
func TestPathMapperV2(t *testing.T) {
	key := make([]byte, names.KeySize)
	rand.Read(key)
	k, err := names.New(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root, err := cipherdir.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	if err := cipherdir.WriteRootDirID(root, k); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 170)
	plain := []string{"docs", "docs/" + long}
	for i, p := range plain {
		brel, err := cipherdir.EncryptPath(root, k, p)
		if err != nil {
			t.Fatal(err)
		}
		pdir, err := cipherdir.OpenRoot(filepath.Join(dir, filepath.Dir(brel)))
		if err != nil {
			t.Fatal(err)
		}
		id, err := cipherdir.ReadDirID(pdir, k)
		if err != nil {
			t.Fatal(err)
		}
		if _, enc, _ := cipherdir.EntryName(k, id, filepath.Base(p)); enc != "" {
			if err := cipherdir.EnsureSidecar(pdir, enc); err != nil {
				t.Fatal(err)
			}
		}
		unix.Close(pdir)
		if i == 0 {
			if err := os.Mkdir(filepath.Join(dir, brel), 0o755); err != nil {
				t.Fatal(err)
			}
			d, _ := cipherdir.OpenRoot(filepath.Join(dir, brel))
			if err := cipherdir.WriteDirID(d, k, names.NewDirID()); err != nil {
				t.Fatal(err)
			}
			unix.Close(d)
		} else if err := os.WriteFile(filepath.Join(dir, brel), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mnt := "/mnt/plain"
	enc := pathMapper{root: root, names: k, dirs: []string{dir}, mounts: []string{mnt}}
	dec := pathMapper{root: root, names: k, decrypt: true, dirs: []string{dir}, mounts: []string{mnt}}
	for _, p := range plain {
		brel, err := enc.mapPath(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(brel, "docs") || strings.Contains(brel, long) {
			t.Errorf("--encrypt %q = %q: a plaintext name shows", p, brel)
		}
		if abs, err := enc.mapPath(filepath.Join(mnt, p)); err != nil || abs != brel {
			t.Errorf("--encrypt of the absolute path: %q, %v", abs, err)
		}
		for _, in := range []string{brel, filepath.Join(dir, brel)} {
			if got, err := dec.mapPath(in); err != nil || got != p {
				t.Errorf("--decrypt %q = %q, %v; want %q", in, got, err, p)
			}
		}
	}
	if _, err := dec.mapPath(names.DirIDFileName); err == nil {
		t.Error("--decrypt of the root's ID file succeeded")
	}
}
