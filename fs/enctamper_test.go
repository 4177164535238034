package fs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/names"
)

// TestEncryptedLongTargetMissing: a symlink whose long-target file is gone
// from kmsfs.targets is damage ("What is detected" in names/FORMAT.md), not
// a missing entry: the symlink is listed, so lstat and readlink answer EIO
// (not ENOENT) and the log names it.
func TestEncryptedLongTargetMissing(t *testing.T) {
	tf := mountFS(t, withNames(t))
	target := strings.Repeat("t", 1000) // the long form: over 735 bytes
	if err := os.Symlink(target, tf.path("link")); err != nil {
		t.Fatal(err)
	}
	backing := backingOf(t, tf, "link")
	link, err := os.Readlink(backing)
	if err != nil {
		t.Fatal(err)
	}
	file, long := names.TargetFileName(link)
	if !long {
		t.Fatalf("backing target %q is not of the long form", link)
	}
	if err := os.Remove(filepath.Join(tf.cipher, names.TargetsDirName, file)); err != nil {
		t.Fatal(err)
	}
	tf2 := remount(t, tf)
	if got := listDir(t, tf2.path(".")); !equal(got, []string{"link"}) {
		t.Fatalf("the root lists %q, want the symlink", got)
	}
	if _, err := os.Lstat(tf2.path("link")); !errors.Is(err, syscall.EIO) {
		t.Errorf("lstat of a symlink without its long-target file: %v, want EIO", err)
	}
	if got, err := os.Readlink(tf2.path("link")); !errors.Is(err, syscall.EIO) {
		t.Errorf("readlink of a symlink without its long-target file: %q, %v; want EIO", got, err)
	}
	if !strings.Contains(tf.log.String(), filepath.Base(backing)) {
		t.Errorf("no log line names the symlink %s:\n%s", filepath.Base(backing), tf.log.String())
	}
}

// TestEncryptedDirIDLogNamesDirectory: the log line about a directory
// whose ID file is forged, or missing while it holds entries, names the
// directory (its backing path), as names/FORMAT.md promises: without it an
// operator cannot tell which directory of the tree to restore.
func TestEncryptedDirIDLogNamesDirectory(t *testing.T) {
	tf := mountFS(t, withNames(t))
	for _, d := range []string{"p/forged", "p/missing"} {
		if err := os.MkdirAll(tf.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tf.path(d+"/x"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	forged, missing := backingOf(t, tf, "p/forged"), backingOf(t, tf, "p/missing")
	idFile := filepath.Join(forged, names.DirIDFileName)
	b, err := os.ReadFile(idFile)
	if err != nil {
		t.Fatal(err)
	}
	b[30] ^= 1 // the MAC
	os.Remove(idFile)
	if err := os.WriteFile(idFile, b, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(missing, names.DirIDFileName)); err != nil {
		t.Fatal(err)
	}
	tf2 := remount(t, tf)
	for _, c := range []struct{ dir, backing, msg string }{
		{"p/forged", forged, "directory ID file is damaged or forged"},
		{"p/missing", missing, "directory has entries but no ID file"},
	} {
		if _, err := os.ReadDir(tf2.path(c.dir)); !errors.Is(err, syscall.EIO) {
			t.Errorf("listing %s: %v, want EIO", c.dir, err)
		}
		rel, err := filepath.Rel(tf.cipher, c.backing)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, line := range strings.Split(tf.log.String(), "\n") {
			found = found || strings.Contains(line, c.msg) && strings.Contains(line, rel)
		}
		if !found {
			t.Errorf("no log line says %q naming %s:\n%s", c.msg, rel, tf.log.String())
		}
	}
}
