package fs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// TestLockAppRange checks the mapping of FUSE lock ranges to the backing
// range of application locks and back, at its edges.
func TestLockAppRange(t *testing.T) {
	for _, c := range []struct {
		start, end uint64
		ok         bool
		bs, be     uint64
	}{
		{0, 0, true, 0, 0},
		{10, 109, true, 10, 109},
		{0, offsetMax, true, 0, lockSpaceEnd - 1},                               // to end of file
		{5, lockSpaceEnd, true, 5, lockSpaceEnd - 1},                            // one byte past the space
		{lockSpaceEnd - 1, offsetMax, true, lockSpaceEnd - 1, lockSpaceEnd - 1}, // last byte
		{lockSpaceEnd, offsetMax, false, 0, 0},                                  // starts past the space
		{flockByte, flockByte, false, 0, 0},                                     // the flock byte is not reachable
		{10, 9, false, 0, 0},                                                    // empty
	} {
		s, e, ok := appRange(&fuse.FileLock{Start: c.start, End: c.end})
		if ok != c.ok || ok && (s != c.bs || e != c.be) {
			t.Errorf("appRange [%d, %d] = [%d, %d] %v, want [%d, %d] %v", c.start, c.end, s, e, ok, c.bs, c.be, c.ok)
		}
	}
	if got := reportEnd(lockSpaceEnd - 1); got != offsetMax {
		t.Errorf("reportEnd(lockSpaceEnd-1) = %d, want offsetMax", got)
	}
	if got := reportEnd(lockSpaceEnd - 2); got != lockSpaceEnd-2 {
		t.Errorf("reportEnd(lockSpaceEnd-2) = %d", got)
	}
	if flockByte != 0x6000000000000000 || lockSpaceEnd != 0x4000000000000000 {
		t.Errorf("the layout of chunk/FORMAT.md changed: lockSpaceEnd %#x, flockByte %#x", lockSpaceEnd, flockByte)
	}
}

// TestLockApplyRange checks one owner's lock bookkeeping against what the
// kernel does with one owner's POSIX locks: replace, split, merge.
func TestLockApplyRange(t *testing.T) {
	const r, w, u = syscall.F_RDLCK, syscall.F_WRLCK, syscall.F_UNLCK
	h := func(s, e uint64, typ uint32) heldRange { return heldRange{start: s, end: e, typ: typ, pid: 7} }
	for _, c := range []struct {
		name string
		held []heldRange
		r    heldRange
		want []heldRange
	}{
		{"new", nil, h(0, 9, w), []heldRange{h(0, 9, w)}},
		{"unlock nothing", nil, h(0, 9, u), []heldRange{}},
		{"split", []heldRange{h(0, 99, w)}, h(40, 59, u), []heldRange{h(0, 39, w), h(60, 99, w)}},
		{"convert middle", []heldRange{h(0, 99, w)}, h(40, 59, r), []heldRange{h(0, 39, w), h(40, 59, r), h(60, 99, w)}},
		{"merge touching", []heldRange{h(0, 9, r)}, h(10, 19, r), []heldRange{h(0, 19, r)}},
		{"no merge across types", []heldRange{h(0, 9, r)}, h(10, 19, w), []heldRange{h(0, 9, r), h(10, 19, w)}},
		{"cover all", []heldRange{h(5, 9, r), h(20, 29, w)}, h(0, 99, w), []heldRange{h(0, 99, w)}},
		{"fill hole", []heldRange{h(0, 39, w), h(60, 99, w)}, h(40, 59, w), []heldRange{h(0, 99, w)}},
		{"unlock to end", []heldRange{h(0, 39, w), h(60, lockSpaceEnd-1, w)}, h(30, lockSpaceEnd-1, u), []heldRange{h(0, 29, w)}},
	} {
		got := applyRange(slices.Clone(c.held), c.r)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: applyRange(%v, %v) = %v, want %v", c.name, c.held, c.r, got, c.want)
		}
	}
	held := []heldRange{h(0, 9, r), h(20, 29, w)}
	for _, c := range []struct {
		s, e uint64
		typ  uint32
		want bool
	}{
		{0, 9, r, false}, {0, 9, w, true}, {10, 19, w, false}, {29, 40, r, true}, {30, 40, w, false},
	} {
		if _, got := conflicting(held, c.s, c.e, c.typ); got != c.want {
			t.Errorf("conflicting(%v, [%d, %d], %d) = %v, want %v", held, c.s, c.e, c.typ, got, c.want)
		}
	}
}

// lockFile returns a handle of the file path for a lock table test: its
// own descriptor and a content of inode 1.
func lockFile(t *testing.T, path string) *handle {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &handle{raw: fd, c: &content{ino: 1}}
}

// TestLockTables runs two lock tables over one file, as two mounts of a
// tree do: owners of either conflict in the backing lock manager, F_GETLK
// names a holder of the same table by pid and one of the other by -1,
// FLUSH drops an owner's POSIX locks, RELEASE the OFD and flock locks of
// an open file, and close (unmount) all of a table's.
func TestLockTables(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ta, tb lockTable
	defer ta.close()
	defer tb.close()
	ha, ha2, hb := lockFile(t, path), lockFile(t, path), lockFile(t, path)
	wr := func(s, e uint64) *fuse.FileLock {
		return &fuse.FileLock{Start: s, End: e, Typ: syscall.F_WRLCK, Pid: 42}
	}
	const flock = fuse.FUSE_LK_FLOCK

	if e := ta.setlk(ctx, ha, 1, wr(0, 9), 0, false); e != 0 {
		t.Fatalf("owner 1 through table A: %v", e)
	}
	if e := tb.setlk(ctx, hb, 1, wr(5, 5), 0, false); e != syscall.EAGAIN {
		t.Fatalf("owner 1 through table B: %v, want EAGAIN", e)
	}
	if e := ta.setlk(ctx, ha2, 2, wr(9, 20), 0, false); e != syscall.EAGAIN {
		t.Fatalf("owner 2 through table A: %v, want EAGAIN", e)
	}
	// One owner's locks through two open files of one table are one set.
	if e := ta.setlk(ctx, ha2, 1, wr(5, 20), 0, false); e != 0 {
		t.Fatalf("owner 1 through another open file of table A: %v", e)
	}
	var out fuse.FileLock
	if e := ta.getlk(ha2, 2, &fuse.FileLock{Start: 0, End: offsetMax, Typ: syscall.F_RDLCK}, &out); e != 0 ||
		out != (fuse.FileLock{Start: 0, End: 20, Typ: syscall.F_WRLCK, Pid: 42}) {
		t.Errorf("F_GETLK through table A: %+v %v, want [0, 20] F_WRLCK pid 42", out, e)
	}
	if e := tb.getlk(hb, 2, &fuse.FileLock{Start: 15, End: offsetMax, Typ: syscall.F_RDLCK}, &out); e != 0 ||
		out != (fuse.FileLock{Start: 0, End: 20, Typ: syscall.F_WRLCK, Pid: unknownPid}) {
		t.Errorf("F_GETLK through table B: %+v %v, want [0, 20] F_WRLCK pid -1", out, e)
	}
	if e := ta.getlk(ha, 1, &fuse.FileLock{Start: 0, End: offsetMax, Typ: syscall.F_WRLCK}, &out); e != 0 || out.Typ != syscall.F_UNLCK {
		t.Errorf("F_GETLK of the holder itself: %+v %v, want F_UNLCK", out, e)
	}
	// flock is independent of fcntl locks, and conflicts across tables.
	if e := ta.setlk(ctx, ha, 1, wr(0, offsetMax), flock, false); e != 0 {
		t.Fatalf("flock through table A: %v", e)
	}
	if e := tb.setlk(ctx, hb, 3, wr(0, offsetMax), flock, false); e != syscall.EAGAIN {
		t.Fatalf("flock through table B: %v, want EAGAIN", e)
	}
	// FLUSH of owner 1 (a close through either open file) drops its POSIX
	// locks, not the flock.
	ta.flush(ha2, 1)
	if e := tb.setlk(ctx, hb, 1, wr(0, offsetMax), 0, false); e != 0 {
		t.Fatalf("table B after owner 1's FLUSH on table A: %v", e)
	}
	tb.setlk(ctx, hb, 1, &fuse.FileLock{Start: 0, End: offsetMax, Typ: syscall.F_UNLCK}, 0, false)
	if e := tb.setlk(ctx, hb, 3, wr(0, offsetMax), flock, false); e != syscall.EAGAIN {
		t.Fatalf("flock through table B after a FLUSH on A: %v, want EAGAIN", e)
	}
	// RELEASE of the open file drops its flock (and OFD) locks.
	if e := ta.setlk(ctx, ha, 9, wr(50, 59), 0, false); e != 0 {
		t.Fatal(e)
	}
	ta.release(ha)
	if e := tb.setlk(ctx, hb, 3, wr(0, offsetMax), flock, false); e != 0 {
		t.Fatalf("flock through table B after table A's RELEASE: %v", e)
	}
	if e := tb.setlk(ctx, hb, 3, wr(50, 50), 0, false); e != 0 {
		t.Fatalf("table B after table A's RELEASE: %v", e)
	}
	if len(ta.inodes) != 0 {
		t.Errorf("table A keeps owners after every lock went: %v", ta.inodes)
	}
	// Close (unmount) drops every lock of the table.
	tb.close()
	if e := ta.setlk(ctx, ha2, 4, wr(0, offsetMax), 0, false); e != 0 {
		t.Fatalf("table A after table B closed: %v", e)
	}
	if e := tb.setlk(ctx, hb, 3, wr(0, 0), 0, false); e != syscall.ENOTCONN {
		t.Errorf("a closed table: %v, want ENOTCONN", e)
	}
}

// TestLockWaitInterrupted checks that a blocking lock gives up with EINTR
// when its request is cancelled (the kernel's INTERRUPT), and leaves no
// owner behind.
func TestLockWaitInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var ta, tb lockTable
	defer ta.close()
	defer tb.close()
	ha, hb := lockFile(t, path), lockFile(t, path)
	lk := &fuse.FileLock{Start: 0, End: offsetMax, Typ: syscall.F_WRLCK}
	if e := ta.setlk(context.Background(), ha, 1, lk, 0, false); e != 0 {
		t.Fatal(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan syscall.Errno, 1)
	go func() { done <- tb.setlk(ctx, hb, 1, lk, 0, true) }()
	cancel()
	if e := <-done; e != syscall.EINTR {
		t.Fatalf("cancelled wait: %v, want EINTR", e)
	}
	if len(tb.inodes) != 0 {
		t.Errorf("the cancelled waiter left an owner: %v", tb.inodes)
	}
}
