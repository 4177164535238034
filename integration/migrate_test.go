package integration

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMigrateV1ToV2 is the migration doc/OPERATIONS.md describes, from a
// plaintext-names (v1) tree to an encrypted-names (v2) one: mount both,
// copy with rsync -aHAX, compare everything a user can see (types, modes,
// sizes, contents, symlink targets, hard links, user xattrs, times) before
// and after remounting the new tree, and check that the new backing tree
// shows none of the names.
func TestMigrateV1ToV2(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Fatalf("rsync: %v (make deps installs it)", err)
	}
	old := newFS(t, WithInitArgs("--plaintext-names"))
	nu := newFS(t)
	r := newRand(testSeed(t))
	long := "quarterly-" + strings.Repeat("report-", 35) // 255 bytes
	long = long[:255]
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(old.Path("projects", long, "deep"), 0o750))
	mustWrite(t, old.Path("projects", long, "deep", "budget.ods"), randomBytes(r, 70_000))
	mustWrite(t, old.Path("projects", "notes.txt"), []byte("migration notes"))
	mustWrite(t, old.Path("empty-file"), nil)
	must(os.Symlink("projects/notes.txt", old.Path("notes-link")))
	must(os.Symlink(strings.Repeat("./", 2047)+"x", old.Path("very-long-link")))
	must(os.Link(old.Path("projects", "notes.txt"), old.Path("notes-hardlink")))
	must(unix.Setxattr(old.Path("projects", "notes.txt"), "user.origin", []byte("old tree"), 0))
	must(unix.Setxattr(old.Path("projects"), "user."+strings.Repeat("a", 200), []byte("on a directory"), 0))
	must(unix.Mkfifo(old.Path("a-fifo"), 0o640))
	must(os.Chmod(old.Path("projects", "notes.txt"), 0o604))

	// Times in the past: rsync leaves a fresh special file or symlink
	// with the time it was created when the source's time is in the same
	// second (it compares seconds), which would make the digests differ
	// for a reason that is rsync's.
	past := []unix.Timespec{{Sec: 1577934245, Nsec: 123456789}, {Sec: 1577934245, Nsec: 123456789}}
	must(filepath.WalkDir(old.Mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, past, unix.AT_SYMLINK_NOFOLLOW)
	}))
	out, err := exec.Command("rsync", "-aHAX", "--numeric-ids", old.Mnt+"/", nu.Mnt+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("rsync -aHAX: %v\n%s", err, out)
	}
	// The check the migration doc gives: a dry run with checksums lists
	// nothing left to copy.
	if out, err := exec.Command("rsync", "-aHAXn", "--numeric-ids", "--checksum", "--itemize-changes", old.Mnt+"/", nu.Mnt+"/").CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("rsync dry run after the copy: %v\n%s", err, out)
	}
	want := treeDigest(t, old.Mnt)
	if got := treeDigest(t, nu.Mnt); got != want {
		t.Fatalf("after rsync the trees differ:\nold:\n%s\nnew:\n%s", want, got)
	}
	nu.Remount()
	if got := treeDigest(t, nu.Mnt); got != want {
		t.Fatalf("after remounting the new tree:\nold:\n%s\nnew:\n%s", want, got)
	}
	// The new backing tree shows no name of the old one.
	filepath.WalkDir(nu.CipherDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"projects", "quarterly", "budget", "notes", "empty-file", "fifo", "link"} {
			if strings.Contains(d.Name(), s) {
				t.Errorf("backing name %s shows %q", p, s)
			}
		}
		return nil
	})
}

// treeDigest describes a tree as a user sees it, one line per entry in
// path order: type and mode, size and content hash or link target, link
// count and hard-link group, user xattrs, modification time.
func treeDigest(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	inodes := map[uint64]string{} // inode → first path, for hard links
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s mode=%o", rel, st.Mode)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" size=%d sum=%x", st.Size, sha256.Sum256(b))
			if first, ok := inodes[st.Ino]; ok {
				line += " hardlink-of=" + first
			} else {
				inodes[st.Ino] = rel
			}
			line += fmt.Sprintf(" nlink=%d", st.Nlink)
		case syscall.S_IFLNK:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" size=%d target=%x", st.Size, sha256.Sum256([]byte(l)))
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			x, err := userXattrs(p)
			if err != nil {
				return err
			}
			var keys []string
			for k, v := range x {
				keys = append(keys, fmt.Sprintf("%s=%q", k, v))
			}
			sort.Strings(keys)
			line += " xattrs=[" + strings.Join(keys, " ") + "]"
		}
		if rel != "." && st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			line += fmt.Sprintf(" mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}
