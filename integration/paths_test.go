package integration

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDeepPaths builds a directory chain whose total path length is far
// beyond PATH_MAX (4096) by working relative to directory descriptors, then
// creates, writes, reads, renames and removes a file at the bottom. ext4
// allows this; a daemon that joins absolute backing paths fails near
// PATH_MAX, one that uses *at syscalls does not.
func TestDeepPaths(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	const depth = 30
	name := strings.Repeat("d", 200)
	dirfd, err := unix.Open(fs.Mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fds := []int{dirfd}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for i := 0; i < depth; i++ {
		if err := unix.Mkdirat(dirfd, name, 0o755); err != nil {
			t.Fatalf("mkdirat at depth %d (path length %d): %v", i, (i+1)*201, err)
		}
		dirfd, err = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("openat at depth %d (path length %d): %v", i, (i+1)*201, err)
		}
		fds = append(fds, dirfd)
	}
	data := bytes.Repeat([]byte("deep "), 2000)
	fd, err := unix.Openat(dirfd, "file", unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatalf("create at path length %d: %v", depth*201+5, err)
	}
	if n, err := unix.Pwrite(fd, data, 0); err != nil || n != len(data) {
		t.Fatalf("write deep file: %d, %v", n, err)
	}
	unix.Close(fd)
	if err := unix.Renameat(dirfd, "file", dirfd, "renamed"); err != nil {
		t.Errorf("renameat deep: %v", err)
	}
	if err := unix.Symlinkat("renamed", dirfd, "link"); err != nil {
		t.Errorf("symlinkat deep: %v", err)
	}
	if err := unix.Setxattr("/proc/self/fd/"+strconv.Itoa(dirfd)+"/renamed", "user.deep", []byte("v"), 0); err != nil {
		t.Errorf("setxattr deep: %v", err)
	}
	fd, err = unix.Openat(dirfd, "link", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open deep file through a symlink: %v", err)
	}
	got := make([]byte, len(data)+10)
	n, err := unix.Pread(fd, got, 0)
	unix.Close(fd)
	if err != nil || !bytes.Equal(got[:n], data) {
		t.Errorf("read deep file: %d bytes, %v", n, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, "renamed", &st, 0); err != nil || st.Size != int64(len(data)) {
		t.Errorf("fstatat deep: size %d, %v", st.Size, err)
	}
	if err := unix.Unlinkat(dirfd, "link", 0); err != nil {
		t.Errorf("unlinkat deep symlink: %v", err)
	}
	if err := unix.Unlinkat(dirfd, "renamed", 0); err != nil {
		t.Errorf("unlinkat deep: %v", err)
	}
}

// TestLongNames checks names of 255 bytes (NAME_MAX), one byte more
// (ENAMETOOLONG), and symlink targets of 4095 bytes.
func TestLongNames(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	long := strings.Repeat("n", 255)
	mustWrite(t, fs.Path(long), []byte("long name"))
	if err := os.Mkdir(fs.Path(strings.Repeat("D", 255)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fs.Path(long+"n"), nil, 0o644); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("create with a 256-byte name: %v, want ENAMETOOLONG", err)
	}
	target := strings.Repeat("t/", 2047) + "x" // 4095 bytes
	if err := os.Symlink(target, fs.Path("longlink")); err != nil {
		t.Fatalf("symlink with a 4095-byte target: %v", err)
	}
	fs.Remount()
	checkContent(t, fs.Path(long), []byte("long name"))
	if got, err := os.Readlink(fs.Path("longlink")); err != nil || got != target {
		t.Errorf("readlink of a 4095-byte target: %d bytes, %v", len(got), err)
	}
	ents, err := os.ReadDir(fs.Mnt)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range ents {
		found = found || e.Name() == long
	}
	if !found {
		t.Errorf("readdir does not list the 255-byte name")
	}
}

// TestLargeOffsets writes beyond 4 GiB and truncates beyond 16 GiB in a
// sparse file, checking sizes, the bytes written, zeros in the holes and the
// backing size, before and after remount (64-bit offset arithmetic).
func TestLargeOffsets(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	const gib = int64(1) << 30
	f, err := os.OpenFile(fs.Path("huge"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	marks := map[int64]string{5*gib + 123: "past 4 GiB", 4*gib - 3: "across 4 GiB"}
	for off, s := range marks {
		if _, err := f.WriteAt([]byte(s), off); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
	}
	f.Close()
	check := func(when string, size int64) {
		t.Helper()
		fi, err := os.Stat(fs.Path("huge"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != size {
			t.Errorf("%s: size %d, want %d", when, fi.Size(), size)
		}
		g, err := os.Open(fs.Path("huge"))
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		for off, s := range marks {
			buf := make([]byte, len(s)+20)
			n, err := g.ReadAt(buf, off-10)
			if wantN := min(int64(len(buf)), size-(off-10)); int64(n) != wantN || (err != nil && !errors.Is(err, io.EOF)) {
				t.Errorf("%s: read at %d: %d, %v; want %d bytes", when, off-10, n, err, wantN)
				continue
			}
			want := append(append(make([]byte, 10), s...), make([]byte, 10)...)
			if !bytes.Equal(buf[:n], want[:n]) {
				t.Errorf("%s: around %d: %q, want %q", when, off, buf[:n], want[:n])
			}
		}
		zeros := make([]byte, 8192)
		if n, err := g.ReadAt(zeros, 2*gib); err != nil || n != len(zeros) || !bytes.Equal(zeros, make([]byte, 8192)) {
			t.Errorf("%s: hole at 2 GiB: %d, %v", when, n, err)
		}
		bfi, err := os.Stat(fs.Backing("huge"))
		if err != nil {
			t.Fatal(err)
		}
		if want := backingSize(size, fs.ChunkSize); bfi.Size() != want {
			t.Errorf("%s: backing size %d, want %d", when, bfi.Size(), want)
		}
	}
	check("after writes", 5*gib+123+int64(len("past 4 GiB")))
	if err := os.Truncate(fs.Path("huge"), 17*gib+1); err != nil {
		t.Fatalf("truncate to 17 GiB: %v", err)
	}
	check("after growing to 17 GiB", 17*gib+1)
	fs.Remount()
	check("after remount", 17*gib+1)
	if err := os.Truncate(fs.Path("huge"), 5*gib+128); err != nil {
		t.Fatal(err)
	}
	marks[5*gib+123] = "past "
	check("after shrinking", 5*gib+128)
}
