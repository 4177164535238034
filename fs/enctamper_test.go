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
