package integration

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDirectories covers mkdir, readdir, rmdir (empty and not) and nested
// paths, before and after remount.
func TestDirectories(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	if err := os.MkdirAll(fs.Path("a", "b", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, fs.Path("a", "b", "c", "file"), []byte("deep"))
	if err := os.Mkdir(fs.Path("a"), 0o755); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("mkdir existing: got %v, want EEXIST", err)
	}
	if err := syscall.Rmdir(fs.Path("a", "b")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir non-empty: got %v, want ENOTEMPTY", err)
	}
	if err := syscall.Rmdir(fs.Path("a", "b", "c", "file")); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("rmdir of a file: got %v, want ENOTDIR", err)
	}
	if err := os.Mkdir(fs.Path("empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(fs.Path("empty"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("mkdir 0700: got mode %v", fi.Mode())
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(fs.Mnt, &sfs); err != nil {
		t.Errorf("statfs: %v", err)
	} else if sfs.Bsize <= 0 || sfs.Blocks == 0 || sfs.Bavail > sfs.Blocks || sfs.Namelen < 255 {
		t.Errorf("statfs: implausible %+v", sfs)
	}
	fs.Remount()
	names, err := os.ReadDir(fs.Mnt)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range names {
		got = append(got, e.Name())
	}
	if len(got) != 2 || got[0] != "a" || got[1] != "empty" {
		t.Errorf("root listing after remount: %q, want [a empty] (the config file must be hidden)", got)
	}
	checkContent(t, fs.Path("a", "b", "c", "file"), []byte("deep"))
	if err := os.Remove(fs.Path("empty")); err != nil {
		t.Errorf("rmdir: %v", err)
	}
	if err := os.RemoveAll(fs.Path("a")); err != nil {
		t.Errorf("remove tree: %v", err)
	}
	if _, err := os.Stat(fs.Backing("a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backing dir after rmdir: %v, want ErrNotExist", err)
	}
}

// TestRename covers plain rename, overwrite, across directories,
// RENAME_NOREPLACE and RENAME_EXCHANGE, with content checks after remount.
func TestRename(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	if err := os.Mkdir(fs.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, fs.Path("a"), []byte("content of a"))
	mustWrite(t, fs.Path("b"), []byte("content of b, longer"))
	mustWrite(t, fs.Path("c"), []byte("c"))

	if err := os.Rename(fs.Path("a"), fs.Path("d", "a2")); err != nil {
		t.Fatalf("rename across directories: %v", err)
	}
	if _, err := os.Stat(fs.Path("a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old name after rename: %v", err)
	}
	// Overwrite: c replaces b.
	if err := os.Rename(fs.Path("c"), fs.Path("b")); err != nil {
		t.Fatalf("rename over existing: %v", err)
	}
	// RENAME_NOREPLACE onto an existing name fails and changes nothing.
	mustWrite(t, fs.Path("x"), []byte("x stays"))
	err := unix.Renameat2(unix.AT_FDCWD, fs.Path("x"), unix.AT_FDCWD, fs.Path("b"), unix.RENAME_NOREPLACE)
	if !errors.Is(err, syscall.EEXIST) {
		t.Errorf("RENAME_NOREPLACE onto existing: got %v, want EEXIST", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, fs.Path("x"), unix.AT_FDCWD, fs.Path("y"), unix.RENAME_NOREPLACE); err != nil {
		t.Errorf("RENAME_NOREPLACE onto a free name: %v", err)
	}
	// RENAME_EXCHANGE swaps a file and a directory.
	if err := os.Mkdir(fs.Path("dir2"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, fs.Path("dir2", "inner"), []byte("inner"))
	if err := unix.Renameat2(unix.AT_FDCWD, fs.Path("y"), unix.AT_FDCWD, fs.Path("dir2"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	// RENAME_EXCHANGE of two files.
	mustWrite(t, fs.Path("p"), []byte("ppp"))
	mustWrite(t, fs.Path("q"), []byte("qqqqqq"))
	if err := unix.Renameat2(unix.AT_FDCWD, fs.Path("p"), unix.AT_FDCWD, fs.Path("q"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("RENAME_EXCHANGE files: %v", err)
	}
	err = unix.Renameat2(unix.AT_FDCWD, fs.Path("p"), unix.AT_FDCWD, fs.Path("nonexistent"), unix.RENAME_EXCHANGE)
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("RENAME_EXCHANGE with a missing target: got %v, want ENOENT", err)
	}
	// A file kept open across a rename still reads and writes.
	f, err := os.OpenFile(fs.Path("q"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fs.Path("q"), fs.Path("d", "q-moved")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("P"), 0); err != nil {
		t.Errorf("write to an open file after rename: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		checkContent(t, fs.Path("d", "a2"), []byte("content of a"))
		checkContent(t, fs.Path("b"), []byte("c"))
		checkContent(t, fs.Path("y", "inner"), []byte("inner"))
		checkContent(t, fs.Path("dir2"), []byte("x stays"))
		checkContent(t, fs.Path("p"), []byte("qqqqqq"))
		checkContent(t, fs.Path("d", "q-moved"), []byte("Ppp"))
		for _, gone := range []string{"a", "c", "x", "q"} {
			if _, err := os.Lstat(fs.Path(gone)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s: got %v, want ErrNotExist", when, gone, err)
			}
		}
	}
	check("before remount")
	fs.Remount()
	check("after remount")
}

// TestLinks covers hard links (shared content and DEK, nlink, unlink of one
// name), symlinks and readlink.
func TestLinks(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	mustWrite(t, fs.Path("orig"), []byte("shared content"))
	if err := os.Link(fs.Path("orig"), fs.Path("hard")); err != nil {
		t.Fatalf("link: %v", err)
	}
	var st1, st2 unix.Stat_t
	if err := unix.Stat(fs.Path("orig"), &st1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(fs.Path("hard"), &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino != st2.Ino || st2.Nlink != 2 {
		t.Errorf("hard link: inodes %d/%d nlink %d, want the same inode and nlink 2", st1.Ino, st2.Ino, st2.Nlink)
	}
	// A write through one name is visible through the other.
	f, err := os.OpenFile(fs.Path("hard"), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(", appended via link")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	checkContent(t, fs.Path("orig"), []byte("shared content, appended via link"))
	if err := os.Link(fs.Path("orig"), fs.Path("hard")); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("link onto an existing name: got %v, want EEXIST", err)
	}

	if err := os.Symlink("orig", fs.Path("sym")); err != nil {
		t.Fatalf("symlink: %v", err)
	}
	if err := os.Symlink("/nonexistent/target/of/some/length", fs.Path("dangling")); err != nil {
		t.Fatalf("symlink: %v", err)
	}
	if err := os.Mkdir(fs.Path("sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../orig", fs.Path("sub", "up")); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		for link, target := range map[string]string{
			"sym":      "orig",
			"dangling": "/nonexistent/target/of/some/length",
			"sub/up":   "../orig",
		} {
			got, err := os.Readlink(fs.Path(link))
			if err != nil || got != target {
				t.Errorf("%s: readlink %s: %q, %v; want %q", when, link, got, err, target)
			}
			fi, err := os.Lstat(fs.Path(link))
			if err != nil || fi.Mode()&os.ModeSymlink == 0 || fi.Size() != int64(len(target)) {
				t.Errorf("%s: lstat %s: %v, %v; want a symlink of size %d", when, link, fi, err, len(target))
			}
		}
		checkContent(t, fs.Path("sym"), []byte("shared content, appended via link"))
		checkContent(t, fs.Path("sub", "up"), []byte("shared content, appended via link"))
		checkContent(t, fs.Path("hard"), []byte("shared content, appended via link"))
	}
	check("before remount")
	fs.Remount()
	check("after remount")

	// Unlinking one name keeps the other.
	if err := os.Remove(fs.Path("orig")); err != nil {
		t.Fatal(err)
	}
	checkContent(t, fs.Path("hard"), []byte("shared content, appended via link"))
	if err := unix.Stat(fs.Path("hard"), &st2); err != nil || st2.Nlink != 1 {
		t.Errorf("after unlink of the other name: nlink %d, %v; want 1", st2.Nlink, err)
	}
	if _, err := os.Stat(fs.Path("sym")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat through a dangling symlink: %v, want ErrNotExist", err)
	}
	for _, name := range []string{"hard", "sym", "dangling", "sub/up"} {
		if err := os.Remove(fs.Path(name)); err != nil {
			t.Errorf("unlink %s: %v", name, err)
		}
	}
	if err := os.Remove(fs.Path("gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unlink of a missing name: %v, want ErrNotExist", err)
	}
}

// TestUnlinkOpenFile checks that an unlinked file stays readable and writable
// through a descriptor opened before.
func TestUnlinkOpenFile(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	data := randomBytes(newRand(1), 3*4096+5)
	mustWrite(t, fs.Path("f"), data)
	f, err := os.OpenFile(fs.Path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(fs.Path("f")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("after unlink"), 5000); err != nil {
		t.Errorf("write after unlink: %v", err)
	}
	copy(data[5000:], "after unlink")
	got := make([]byte, len(data))
	if n, err := f.ReadAt(got, 0); err != nil || n != len(data) {
		t.Fatalf("read after unlink: %d, %v", n, err)
	}
	if firstDiff(got, data) != len(data) {
		t.Errorf("read after unlink: content differs at %d", firstDiff(got, data))
	}
}

// TestAttributes covers chmod, chown, utimens (incl. symlinks with
// AT_SYMLINK_NOFOLLOW), and the caller's umask applied once.
func TestAttributes(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	mustWrite(t, fs.Path("f"), []byte("x"))
	if err := os.Mkdir(fs.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", fs.Path("l")); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o600, 0o755, 0o4711, 0o2750, 0o1777, 0o000} {
		if err := os.Chmod(fs.Path("f"), mode); err != nil {
			t.Fatalf("chmod %o: %v", mode, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(fs.Path("f"), &st); err != nil {
			t.Fatal(err)
		}
		if got := st.Mode & 0o7777; got != uint32(unixMode(mode)) {
			t.Errorf("chmod %o: got %o", unixMode(mode), got)
		}
	}
	if err := os.Chmod(fs.Path("f"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fs.Path("d"), 0o711); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(fs.Path("f"), 1234, 5678); err != nil {
			t.Fatalf("chown: %v", err)
		}
		if err := os.Lchown(fs.Path("l"), 4321, 8765); err != nil {
			t.Fatalf("lchown: %v", err)
		}
	}
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 789000000, time.UTC)
	atime := time.Date(1999, 12, 31, 23, 59, 59, 123456789, time.UTC)
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, fs.Path("f"), ts, 0); err != nil {
		t.Fatalf("utimensat: %v", err)
	}
	lts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano() + 1e9)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, fs.Path("l"), lts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatalf("utimensat on a symlink: %v", err)
	}

	check := func(when string) {
		t.Helper()
		var st, lst unix.Stat_t
		if err := unix.Stat(fs.Path("f"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != 0o640 {
			t.Errorf("%s: mode %o, want 640", when, st.Mode&0o7777)
		}
		if os.Geteuid() == 0 && (st.Uid != 1234 || st.Gid != 5678) {
			t.Errorf("%s: owner %d:%d, want 1234:5678", when, st.Uid, st.Gid)
		}
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", when, got.UTC(), mtime)
		}
		if got := time.Unix(st.Atim.Unix()); !got.Equal(atime) {
			t.Errorf("%s: atime %v, want %v", when, got.UTC(), atime)
		}
		if err := unix.Lstat(fs.Path("l"), &lst); err != nil {
			t.Fatal(err)
		}
		if got := time.Unix(lst.Mtim.Unix()); !got.Equal(mtime.Add(time.Second)) {
			t.Errorf("%s: symlink mtime %v, want %v", when, got.UTC(), mtime.Add(time.Second))
		}
		if os.Geteuid() == 0 && (lst.Uid != 4321 || lst.Gid != 8765) {
			t.Errorf("%s: symlink owner %d:%d, want 4321:8765", when, lst.Uid, lst.Gid)
		}
		var dst unix.Stat_t
		if err := unix.Stat(fs.Path("d"), &dst); err != nil {
			t.Fatal(err)
		}
		if dst.Mode&0o7777 != 0o711 {
			t.Errorf("%s: dir mode %o, want 711", when, dst.Mode&0o7777)
		}
	}
	check("before remount")
	fs.Remount()
	check("after remount")

}

// TestCreateModes checks that the caller's umask applies exactly once to new
// files and directories and that an unusual directory mode is right at once.
// Not parallel: the umask belongs to the whole test process.
func TestCreateModes(t *testing.T) {
	fs := newFS(t)
	old := unix.Umask(0o027)
	fd, err := unix.Open(fs.Path("created"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
	if err == nil {
		unix.Close(fd)
	}
	derr := unix.Mkdir(fs.Path("madedir"), 0o777)
	unix.Umask(0)
	oerr := unix.Mkdir(fs.Path("oddmode"), 0o151)
	// Modes the daemon's own umask would cut, and set-ID bits: the
	// daemon creates these files with a chmod after the open.
	var cerrs []error
	for name, mode := range map[string]uint32{"open-0666": 0o666, "open-4755": 0o4755, "open-2775": 0o2775} {
		fd, err := unix.Open(fs.Path(name), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, mode)
		if err == nil {
			unix.Close(fd)
		}
		cerrs = append(cerrs, err)
	}
	unix.Umask(old)
	if err != nil || derr != nil || oerr != nil || errors.Join(cerrs...) != nil {
		t.Fatalf("create %v, mkdir %v, mkdir 0151 %v, creates %v", err, derr, oerr, cerrs)
	}
	for name, want := range map[string]uint32{"created": 0o640, "madedir": 0o750, "oddmode": 0o151,
		"open-0666": 0o666, "open-4755": 0o4755, "open-2775": 0o2775} {
		var st unix.Stat_t
		if err := unix.Lstat(fs.Path(name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != want {
			t.Errorf("%s: mode %o right after creation, want %o", name, st.Mode&0o7777, want)
		}
	}
}

// unixMode converts an os.FileMode with special bits to the st_mode bits.
func unixMode(m os.FileMode) uint32 {
	v := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		v |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		v |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		v |= unix.S_ISVTX
	}
	return v
}

// TestSpecialFiles covers mknod of a FIFO and a socket: they exist with the
// right type, a FIFO passes data, and they survive remount.
func TestSpecialFiles(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	if err := unix.Mkfifo(fs.Path("fifo"), 0o644); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	if err := unix.Mknod(fs.Path("sock"), unix.S_IFSOCK|0o600, 0); err != nil {
		t.Fatalf("mknod socket: %v", err)
	}
	check := func(when string) {
		t.Helper()
		for name, typ := range map[string]uint32{"fifo": unix.S_IFIFO, "sock": unix.S_IFSOCK} {
			var st unix.Stat_t
			if err := unix.Lstat(fs.Path(name), &st); err != nil {
				t.Fatalf("%s: lstat %s: %v", when, name, err)
			}
			if st.Mode&unix.S_IFMT != typ {
				t.Errorf("%s: %s has type %o, want %o", when, name, st.Mode&unix.S_IFMT, typ)
			}
		}
	}
	check("before remount")

	// The FIFO works: a writer and a reader through the mount.
	done := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(fs.Path("fifo"), os.O_WRONLY, 0)
		if err != nil {
			done <- err
			return
		}
		_, err = w.Write([]byte("through the fifo"))
		w.Close()
		done <- err
	}()
	r, err := os.Open(fs.Path("fifo"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	r.Close()
	if err := <-done; err != nil {
		t.Fatalf("fifo writer: %v", err)
	}
	if string(buf[:n]) != "through the fifo" {
		t.Errorf("fifo read %q", buf[:n])
	}
	fs.Remount()
	check("after remount")
}
