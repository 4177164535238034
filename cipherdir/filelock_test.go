package cipherdir

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// openTwice opens one new file as n separate open file descriptions (each
// its own OFD lock owner), read-write.
func openTwice(t *testing.T, n int) []int {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		fds[i] = fd
	}
	return fds
}

// tryOFD sets an OFD lock without waiting, as a mount's writer would, and
// reports whether it was granted (released at once).
func tryOFD(t *testing.T, fd int, typ int16, start, n int64) bool {
	t.Helper()
	lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: n}
	err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
	if err == unix.EAGAIN {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	lk.Type = unix.F_UNLCK
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	return true
}

// TestLockFileModes checks what each mode excludes, against the locks a
// shared-mode mount's writers and readers take (chunk/FORMAT.md): a write
// inside the file (size shared, its chunks exclusive), a size change (size
// exclusive), a read retry (size and chunks shared).
func TestLockFileModes(t *testing.T) {
	const chunk5 = ChunkLockOffset + 5
	for _, tc := range []struct {
		mode                        LockMode
		inFile, sizeChange, readers bool // granted to another description
	}{
		{LockHeader, true, false, true},
		{LockContent, false, false, true},
		{LockExclusive, false, false, false},
	} {
		fds := openTwice(t, 2)
		unlock, err := LockFile(fds[0], tc.mode, false)
		if err != nil {
			t.Fatalf("mode %d: %v", tc.mode, err)
		}
		inFile := tryOFD(t, fds[1], unix.F_RDLCK, SizeLockOffset, 1) && tryOFD(t, fds[1], unix.F_WRLCK, chunk5, 1)
		sizeChange := tryOFD(t, fds[1], unix.F_WRLCK, SizeLockOffset, 1)
		readers := tryOFD(t, fds[1], unix.F_RDLCK, SizeLockOffset, 1) && tryOFD(t, fds[1], unix.F_RDLCK, chunk5, 1)
		if inFile != tc.inFile || sizeChange != tc.sizeChange || readers != tc.readers {
			t.Errorf("mode %d: write inside the file granted %v (want %v), size change %v (want %v), read retry %v (want %v)",
				tc.mode, inFile, tc.inFile, sizeChange, tc.sizeChange, readers, tc.readers)
		}
		// The application's ranges are never touched.
		if !tryOFD(t, fds[1], unix.F_WRLCK, 0, SizeLockOffset) || !tryOFD(t, fds[1], unix.F_WRLCK, InternalLockEnd, 1) {
			t.Errorf("mode %d: a lock outside the internal range conflicts", tc.mode)
		}
		unlock()
		if !tryOFD(t, fds[1], unix.F_WRLCK, SizeLockOffset, InternalLockEnd-SizeLockOffset) {
			t.Errorf("mode %d: locks left after unlock", tc.mode)
		}
	}
}

// TestLockFileBusy checks that a second description gets ErrBusy without
// waiting while an exclusive lock is held, and the lock once it is gone;
// and that a waiting LockFile returns once the holder unlocks.
func TestLockFileBusy(t *testing.T) {
	fds := openTwice(t, 3)
	unlock, err := LockFile(fds[0], LockExclusive, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []LockMode{LockHeader, LockContent, LockExclusive} {
		if _, err := LockFile(fds[1], mode, false); !errors.Is(err, ErrBusy) {
			t.Errorf("mode %d while exclusive is held: %v, want ErrBusy", mode, err)
		}
	}
	got := make(chan error, 1)
	go func() {
		u, err := LockFile(fds[2], LockExclusive, true)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	if err := <-got; err != nil {
		t.Fatalf("waiting LockFile: %v", err)
	}
	u, err := LockFile(fds[1], LockExclusive, false)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	u()

	// Two LockContent holders share; either keeps an exclusive out.
	u1, err := LockFile(fds[0], LockContent, false)
	if err != nil {
		t.Fatal(err)
	}
	u2, err := LockFile(fds[1], LockContent, false)
	if err != nil {
		t.Fatalf("second LockContent: %v", err)
	}
	u1()
	if _, err := LockFile(fds[2], LockExclusive, false); !errors.Is(err, ErrBusy) {
		t.Errorf("exclusive while LockContent is held: %v, want ErrBusy", err)
	}
	u2()
}

// TestLockFileReadOnly: LockContent needs only read access (rekey of a
// file without write permission); LockExclusive needs write access and
// says so with an error that is not ErrBusy.
func TestLockFileReadOnly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	u, err := LockFile(fd, LockContent, false)
	if err != nil {
		t.Fatalf("LockContent on a read-only descriptor: %v", err)
	}
	u()
	if _, err := LockFile(fd, LockExclusive, false); err == nil || errors.Is(err, ErrBusy) {
		t.Errorf("LockExclusive on a read-only descriptor: %v, want EBADF", err)
	}
}

// TestRetire checks the mark Retire leaves and Retired finds, and that an
// ordinary file, or one with only one half of the mark, is not retired.
func TestRetire(t *testing.T) {
	fd := openTwice(t, 1)[0]
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if Retired(&st) {
		t.Fatal("a new file is retired")
	}
	if err := unix.Fchmod(fd, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if Retired(&st) {
		t.Fatal("mode 0 alone counts as retired")
	}
	if err := Retire(fd); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if !Retired(&st) {
		t.Fatalf("not retired after Retire: mode %o, mtime %v", st.Mode, st.Mtim)
	}
}
