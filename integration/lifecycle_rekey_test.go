package integration

import (
	"bytes"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRekeyKeepsEverything rekeys files (one through the mount, one by its
// backing path) while a reader keeps reading them, one through a
// descriptor opened before the rekey: content, mode, owner, times, user
// xattrs and hard links stay, the file ID and the key record change.
func TestRekeyKeepsEverything(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	rng := newRand(testSeed(t))
	big := randomBytes(rng, 5*fs.ChunkSize+17)
	small := randomBytes(rng, 100)
	if err := os.Mkdir(fs.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, fs.Path("big"), big)
	mustWrite(t, fs.Path("small"), small)
	if err := os.Link(fs.Path("big"), fs.Path("d", "big-link")); err != nil {
		t.Fatal(err)
	}
	// A sparse file: a hole in the middle.
	sparse, err := os.Create(fs.Path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sparse.WriteAt([]byte("end"), 1<<20); err != nil {
		t.Fatal(err)
	}
	sparse.Close()
	sparseWant := make([]byte, 1<<20+3)
	copy(sparseWant[1<<20:], "end")

	if err := os.Chmod(fs.Path("big"), 0o640); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(fs.Path("big"), 1234, 5678); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Setxattr(fs.Path("big"), "user.note", []byte("kept"), 0); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2020, 2, 29, 12, 0, 0, 123456789, time.UTC)
	atime := time.Date(2021, 3, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(fs.Path("big"), atime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(fs.Path("sparse"), atime, mtime); err != nil {
		t.Fatal(err)
	}
	var before, sparseBefore, sparseAfter syscall.Stat_t
	if err := syscall.Stat(fs.Backing("sparse"), &sparseBefore); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(fs.Backing("big"), &before); err != nil {
		t.Fatal(err)
	}
	oldBig, oldSmall := fs.info(fs.Path("big")), fs.info(fs.Path("small"))

	rd := startReader(t, map[string][]byte{fs.Path("big"): big, fs.Path("d", "big-link"): big, fs.Path("small"): small})
	time.Sleep(50 * time.Millisecond)
	out := fs.Run("rekey", fs.Path("big"), fs.Backing("small"), fs.Path("sparse"))
	if n := strings.Count(out, "rekeyed "); n != 3 {
		t.Errorf("rekey printed %q, want three 'rekeyed' lines", out)
	}
	if err := syscall.Stat(fs.Backing("sparse"), &sparseAfter); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	rd.stop(t)

	newBig, newSmall := fs.info(fs.Path("big")), fs.info(fs.Path("small"))
	if newBig.FileID == oldBig.FileID || newSmall.FileID == oldSmall.FileID {
		t.Errorf("rekey kept the file ID: big %s → %s, small %s → %s", oldBig.FileID, newBig.FileID, oldSmall.FileID, newSmall.FileID)
	}
	if link := fs.info(fs.Path("d", "big-link")); link.FileID != newBig.FileID {
		t.Errorf("the hard link names file ID %s, the file %s", link.FileID, newBig.FileID)
	}
	checkContent(t, fs.Path("big"), big)
	checkContent(t, fs.Path("d", "big-link"), big)
	checkContent(t, fs.Path("small"), small)
	checkContent(t, fs.Path("sparse"), sparseWant)

	var after, link syscall.Stat_t
	if err := syscall.Stat(fs.Backing("big"), &after); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(fs.Backing("d", "big-link"), &link); err != nil {
		t.Fatal(err)
	}
	if after.Ino == before.Ino {
		t.Errorf("rekey did not replace the backing inode")
	}
	if link.Ino != after.Ino || after.Nlink != 2 {
		t.Errorf("hard links: file inode %d (nlink %d), link inode %d; want one inode with 2 links", after.Ino, after.Nlink, link.Ino)
	}
	if after.Mode != before.Mode || after.Uid != before.Uid || after.Gid != before.Gid {
		t.Errorf("mode/owner %o %d:%d → %o %d:%d", before.Mode, before.Uid, before.Gid, after.Mode, after.Uid, after.Gid)
	}
	if after.Mtim != before.Mtim {
		t.Errorf("mtime %v → %v", before.Mtim, after.Mtim)
	}
	// The reader updates big's atime; sparse is read by nobody but rekey.
	if sparseAfter.Atim != sparseBefore.Atim || sparseAfter.Mtim != sparseBefore.Mtim {
		t.Errorf("times of the sparse file: atime %v → %v, mtime %v → %v", sparseBefore.Atim, sparseAfter.Atim, sparseBefore.Mtim, sparseAfter.Mtim)
	}
	buf := make([]byte, 64)
	n, err := syscall.Getxattr(fs.Path("big"), "user.note", buf)
	if err != nil || !bytes.Equal(buf[:n], []byte("kept")) {
		t.Errorf("user.note after rekey: %q, %v", buf[:n], err)
	}
	_ = filepath.WalkDir(fs.CipherDir, func(p string, d iofs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), "kmsfs-rekey") {
			t.Errorf("rekey left a temporary file behind: %s", p)
		}
		return nil
	})
	// A new mount reads the rekeyed files from scratch.
	fs.Remount()
	checkContent(t, fs.Path("big"), big)
	checkContent(t, fs.Path("small"), small)
}

// TestRekeyRefusesOutsideLinks: a file with a hard link outside CIPHERDIR
// cannot be rekeyed without leaving that link on the old key, so rekey
// refuses (exit 8) and changes nothing.
func TestRekeyRefusesOutsideLinks(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	mustWrite(t, fs.Path("f"), []byte("linked from outside"))
	outside := fs.CipherDir + "-outside-link"
	if err := os.Link(fs.Backing("f"), outside); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(outside)
	old := fs.info(fs.Path("f"))
	res := fs.Exec("rekey", fs.Path("f"))
	if res.Code != 8 || !strings.Contains(res.Stderr, "hard links") {
		t.Errorf("rekey of a file linked from outside: exit %d, stderr %q; want 8 naming the hard links", res.Code, res.Stderr)
	}
	if fi := fs.info(fs.Path("f")); fi.FileID != old.FileID {
		t.Errorf("a refused rekey changed the file ID")
	}
	checkContent(t, fs.Path("f"), []byte("linked from outside"))
}
