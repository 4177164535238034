package integration

import (
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTimestamps checks that content changes move mtime and ctime forward,
// metadata changes move ctime, and reads, renames and opens leave mtime
// alone, as tools like make and rsync expect.
func TestTimestamps(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	p := fs.Path("f")
	mustWrite(t, p, []byte("initial"))
	past := []unix.Timespec{{Sec: 1_000_000_000}, {Sec: 1_000_000_000}}
	setPast := func() {
		t.Helper()
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, past, 0); err != nil {
			t.Fatal(err)
		}
	}
	stat := func() unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	recent := func(ts unix.Timespec) bool {
		return time.Since(time.Unix(ts.Unix())) < time.Hour
	}
	changes := map[string]func() error{
		"write": func() error {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("X"), 3)
			return err
		},
		"truncate":  func() error { return os.Truncate(p, 5000) },
		"ftruncate": func() error { return withFile(p, func(f *os.File) error { return f.Truncate(3) }) },
		"O_TRUNC":   func() error { return os.WriteFile(p, []byte("new"), 0o644) },
		"fallocate": func() error {
			return withFile(p, func(f *os.File) error { return unix.Fallocate(int(f.Fd()), 0, 0, 9000) })
		},
	}
	for name, change := range changes {
		setPast()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st := stat(); !recent(st.Mtim) || !recent(st.Ctim) {
			t.Errorf("%s: mtime %v ctime %v, want both moved to now", name, time.Unix(st.Mtim.Unix()), time.Unix(st.Ctim.Unix()))
		}
	}
	// Metadata changes move ctime only.
	setPast()
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if st := stat(); st.Mtim.Sec != past[1].Sec || !recent(st.Ctim) {
		t.Errorf("chmod: mtime %d ctime %v; want mtime unchanged and ctime now", st.Mtim.Sec, time.Unix(st.Ctim.Unix()))
	}
	// Reads, opens and renames leave mtime alone; after remount too.
	setPast()
	mustRead(t, p)
	if err := os.Rename(p, p+"2"); err != nil {
		t.Fatal(err)
	}
	p += "2"
	fs.Remount()
	if st := stat(); st.Mtim.Sec != past[1].Sec {
		t.Errorf("read, rename and remount changed mtime to %v", time.Unix(st.Mtim.Unix()))
	}
}

// withFile opens path read-write and calls fn.
func withFile(path string, fn func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return fn(f)
}

// TestLargeDirectory creates 3,000 files in one directory, lists them (the
// listing spans many getdents calls), and removes the directory with
// RemoveAll, which deletes while it reads.
func TestLargeDirectory(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	dir := fs.Path("big")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := 0; i < n; i++ {
		f, err := os.Create(fmt.Sprintf("%s/file-with-a-longer-name-%05d", dir, i))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	fs.Remount()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		if seen[e.Name()] {
			t.Errorf("readdir lists %s twice", e.Name())
		}
		seen[e.Name()] = true
	}
	if len(seen) != n {
		t.Errorf("readdir lists %d entries, want %d", len(seen), n)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("RemoveAll: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory still there after RemoveAll: %v", err)
	}
}
