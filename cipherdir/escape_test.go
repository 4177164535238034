package cipherdir

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Tools run as root on trees whose directories users own. A user can
// swap a directory for a symlink at any moment; nothing a tool does may
// then land outside CIPHERDIR. These tests swap at the worst moment,
// deterministically.

// swapForSymlink moves the directory dir aside and puts a symlink to
// target in its place.
func swapForSymlink(t *testing.T, dir, target string) {
	t.Helper()
	if err := os.Rename(dir, dir+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, dir); err != nil {
		t.Fatal(err)
	}
}

// TestRekeyRelinkDoesNotFollowSwappedDir: between finding the other hard
// links of a file and re-linking them, a user swaps the directory of one
// link for a symlink to a directory outside CIPHERDIR. Rekey must report
// an error for that link and leave nothing outside.
func TestRekeyRelinkDoesNotFollowSwappedDir(t *testing.T) {
	tt := newTestTree(t)
	data := bytes.Repeat([]byte("rekey me "), 1000)
	tt.write(t, "a/f", data)
	if err := os.MkdirAll(tt.path("b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(tt.path("a/f"), tt.path("b/g")); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	before := snapshot(t, outside)
	rk, err := NewRekeyer(context.Background(), tt.dir, tt.cfg, tt.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rk.Close()
	rk.beforeRelink = func() { swapForSymlink(t, tt.path("b"), outside) }
	_, _, err = rk.Rekey(context.Background(), "a/f")
	if err == nil || !strings.Contains(err.Error(), "b/g") {
		t.Errorf("Rekey with b swapped for a symlink: err %v, want an error naming b/g", err)
	}
	if after := snapshot(t, outside); !sameSnapshot(before, after) {
		t.Errorf("rekey created or changed files outside CIPHERDIR: %d entries, %d before", len(after), len(before))
	}
	if got := tt.read(t, "a/f"); !bytes.Equal(got, data) {
		t.Error("a/f does not read back after rekey")
	}
	// The link that was moved aside still names the old inode, readable.
	if got := tt.read(t, "b.moved/g"); !bytes.Equal(got, data) {
		t.Error("b.moved/g does not read back")
	}
}

// plantOutside puts a copy of the backing file rel (header, slot and key
// xattr) in a directory outside the tree and returns that directory.
func plantOutside(t *testing.T, tt *testTree, rel string) string {
	t.Helper()
	outside := t.TempDir()
	b, err := os.ReadFile(tt.path(rel))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(outside, filepath.Base(rel))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return outside
}

// TestRewrapDoesNotFollowSwappedDir: after the walk, a directory is
// swapped for a symlink to a directory holding a copy of one of its
// files. Rewrap must fail that file and leave the copy alone.
func TestRewrapDoesNotFollowSwappedDir(t *testing.T) {
	tt := newTestTree(t)
	tt.write(t, "d/f", []byte("rewrap"))
	outside := plantOutside(t, tt, "d/f")
	before := snapshot(t, outside)
	second := newLocalKey(t, tt.store)
	var failed []string
	rw, err := NewRewrapper(context.Background(), RewrapOptions{
		CipherDir: tt.dir, Config: tt.cfg, Source: tt.store, DestKey: second,
		Files: func(int) { swapForSymlink(t, tt.path("d"), outside) },
		Done: func(rel string, err error) {
			if err != nil {
				failed = append(failed, rel)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := rw.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failed != 1 || len(failed) != 1 || failed[0] != "d/f" {
		t.Errorf("rewrap: %+v, failed %v; want d/f failed", sum, failed)
	}
	if after := snapshot(t, outside); !sameSnapshot(before, after) {
		t.Error("rewrap changed the file outside CIPHERDIR")
	}
}

// TestCheckRepairDoesNotFollowSwappedDir: fsck --repair, with a directory
// swapped for a symlink after the walk, must not repair the file it
// points to (here: restore its removed key xattr).
func TestCheckRepairDoesNotFollowSwappedDir(t *testing.T) {
	tt := newTestTree(t)
	tt.write(t, "d/f", []byte("repair"))
	outside := plantOutside(t, tt, "d/f")
	// The copy lost its xattr (os.WriteFile copies bytes only): the
	// slot still opens it, so a repair would put the xattr back.
	before := snapshot(t, outside)
	sum, err := Check(context.Background(), CheckOptions{
		CipherDir: tt.dir, Config: tt.cfg, Keys: tt.store, Repair: true,
		Files: func(int) { swapForSymlink(t, tt.path("d"), outside) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Repaired != 0 || sum.Damaged != 1 {
		t.Errorf("check --repair: %+v; want the swapped file reported, nothing repaired", sum)
	}
	if after := snapshot(t, outside); !sameSnapshot(before, after) {
		t.Error("fsck --repair changed the file outside CIPHERDIR")
	}
}

// TestCheckSkipsRekeyTemp: a temporary file left by an interrupted rekey
// (RekeyTempMarker, in any directory) is kmsfs's own: fsck neither counts
// nor reports it, and rewrap leaves it alone.
func TestCheckSkipsRekeyTemp(t *testing.T) {
	tt := newTestTree(t)
	tt.write(t, "d/f", []byte("clean"))
	tmp := tt.path("d/" + RekeyTempMarker + "0011223344556677")
	if err := os.WriteFile(tmp, []byte("half-written ciphertext"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, err := Check(context.Background(), CheckOptions{CipherDir: tt.dir, Config: tt.cfg, Keys: tt.store})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Files != 1 || sum.Damaged != 0 || sum.Found != 0 {
		t.Errorf("check with a rekey temporary file: %+v; want 1 clean file", sum)
	}
	files, err := Files(mustRoot(t, tt.dir), true)
	if err != nil || len(files) != 1 || files[0] != "d/f" {
		t.Errorf("Files = %v, %v; want [d/f]", files, err)
	}
}

func mustRoot(t *testing.T, dir string) int {
	t.Helper()
	fd, err := OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}
