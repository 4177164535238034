// Application locks across mounts: several mounts of one CIPHERDIR (each
// its own daemon, the stand-in for several hosts) see each other's flock,
// POSIX fcntl and OFD locks, because kmsfs takes them on the backing file.

package integration

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lockWait bounds every wait of these tests for something that must happen
// (a blocked lock granted, a process gone). It is a safety net only: no
// assertion depends on timing.
const lockWait = 30 * time.Second

// pidUnknown is the l_pid F_GETLK reports for a lock held through another
// mount: the kernel renders the daemon's "-1" (an OFD lock, no process)
// as 0 for F_GETLK, and F_OFD_GETLK reports -1 for any OFD lock.
const pidUnknown = 0

// openLocked opens path with flags and returns the descriptor and a
// function that closes it (once: it is closed at cleanup unless before).
func openLocked(t *testing.T, path string, flags int) (int, func()) {
	t.Helper()
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd()), func() { f.Close() }
}

// openRW opens path read-write for the whole test.
func openRW(t *testing.T, path string) int {
	t.Helper()
	fd, _ := openLocked(t, path, os.O_RDWR)
	return fd
}

// setLock runs fcntl cmd (F_SETLK, F_SETLKW, F_OFD_SETLK, F_OFD_SETLKW)
// for typ on [start, start+length) (length 0: to end of file), retrying
// when a signal interrupts it (the Go runtime's preemption signals do).
func setLock(fd, cmd int, typ int16, start, length int64) error {
	for {
		fl := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: length}
		err := unix.FcntlFlock(uintptr(fd), cmd, &fl)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// getLock runs F_GETLK (or F_OFD_GETLK) for typ on [start, start+length).
func getLock(t *testing.T, fd, cmd int, typ int16, start, length int64) unix.Flock_t {
	t.Helper()
	fl := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: length}
	if err := unix.FcntlFlock(uintptr(fd), cmd, &fl); err != nil {
		t.Fatalf("fcntl get lock: %v", err)
	}
	return fl
}

// flock runs flock(2), retrying on EINTR.
func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// wantConflict checks the answer of a get-lock command: a lock of typ on
// [start, start+length) held by pid.
func wantConflict(t *testing.T, what string, got unix.Flock_t, typ int16, start, length int64, pid int32) {
	t.Helper()
	if got.Type != typ || got.Start != start || got.Len != length || got.Pid != pid {
		t.Errorf("%s: got type %d start %d len %d pid %d; want type %d start %d len %d pid %d",
			what, got.Type, got.Start, got.Len, got.Pid, typ, start, length, pid)
	}
}

// blocked is a lock call running on a thread of its own, so that the test
// can see it wait in the kernel.
type blocked struct {
	tid  int
	done chan error
}

// startBlocked runs call (a blocking lock call) on a locked OS thread.
func startBlocked(call func() error) *blocked {
	b := &blocked{done: make(chan error, 1)}
	tid := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		b.done <- call()
	}()
	b.tid = <-tid
	return b
}

// waitInSyscall waits until thread tid of process pid sits in system call
// nr (as /proc/PID/task/TID/syscall shows a thread blocked in the
// kernel), failing the test when done delivers first: the call was not
// supposed to return yet.
func waitInSyscall(t *testing.T, pid, tid int, nr uintptr, done <-chan error) {
	t.Helper()
	p := fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid)
	want := strconv.FormatUint(uint64(nr), 10) + " "
	deadline := time.Now().Add(lockWait)
	for {
		b, err := os.ReadFile(p)
		if err == nil && strings.HasPrefix(string(b), want) {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("the blocking lock call returned (%v) while the lock was held elsewhere", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d never blocked in system call %d (%s: %q, %v)", tid, nr, p, b, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// await returns what done delivers, failing the test after lockWait.
func await(t *testing.T, what string, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(lockWait):
		t.Fatalf("%s: still waiting after %v", what, lockWait)
		return nil
	}
}

// newLockFile creates name with 4 KiB of data through fs and returns its
// path on each of the mounts.
func newLockFile(t *testing.T, name string, mounts ...*testFS) []string {
	t.Helper()
	mustWrite(t, mounts[0].Path(name), make([]byte, 4096))
	var paths []string
	for _, m := range mounts {
		paths = append(paths, m.Path(name))
	}
	return paths
}

// TestLockFcntlAcrossMounts: a POSIX write lock taken through mount A makes
// F_SETLK through mount B fail with EAGAIN, F_GETLK through B reports it,
// and F_SETLKW through B waits in the kernel until A unlocks. Read locks
// share; a write lock on a range next to a held one is granted.
func TestLockFcntlAcrossMounts(t *testing.T) {
	a := newFS(t)
	b := a.SecondMount()
	p := newLockFile(t, "f", a, b)
	fa, fb := openRW(t, p[0]), openRW(t, p[1])

	if err := setLock(fa, unix.F_SETLK, unix.F_WRLCK, 10, 100); err != nil {
		t.Fatalf("F_SETLK F_WRLCK through A: %v", err)
	}
	if err := setLock(fb, unix.F_SETLK, unix.F_WRLCK, 50, 1); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("F_SETLK F_WRLCK through B on a range A holds: %v, want EAGAIN", err)
	}
	if err := setLock(fb, unix.F_SETLK, unix.F_RDLCK, 0, 11); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("F_SETLK F_RDLCK through B overlapping A's write lock by one byte: %v, want EAGAIN", err)
	}
	wantConflict(t, "F_GETLK through B", getLock(t, fb, unix.F_GETLK, unix.F_RDLCK, 0, 0), unix.F_WRLCK, 10, 100, pidUnknown)
	wantConflict(t, "F_OFD_GETLK through B", getLock(t, fb, unix.F_OFD_GETLK, unix.F_WRLCK, 100, 50), unix.F_WRLCK, 10, 100, -1)
	if got := getLock(t, fb, unix.F_GETLK, unix.F_WRLCK, 110, 0); got.Type != unix.F_UNLCK {
		t.Errorf("F_GETLK through B past A's range: type %d, want F_UNLCK", got.Type)
	}
	if err := setLock(fb, unix.F_SETLK, unix.F_WRLCK, 110, 0); err != nil {
		t.Fatalf("F_SETLK F_WRLCK through B from the end of A's range to EOF: %v", err)
	}
	wantConflict(t, "F_GETLK through A of B's lock to EOF", getLock(t, fa, unix.F_GETLK, unix.F_RDLCK, 1<<40, 1), unix.F_WRLCK, 110, 0, pidUnknown)
	if err := setLock(fb, unix.F_SETLK, unix.F_UNLCK, 0, 0); err != nil {
		t.Fatal(err)
	}

	// F_SETLKW waits until A unlocks.
	w := startBlocked(func() error { return setLock(fb, unix.F_SETLKW, unix.F_WRLCK, 0, 0) })
	waitInSyscall(t, os.Getpid(), w.tid, unix.SYS_FCNTL, w.done)
	if err := setLock(fa, unix.F_SETLK, unix.F_UNLCK, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := await(t, "F_SETLKW through B after A unlocked", w.done); err != nil {
		t.Fatalf("F_SETLKW through B: %v", err)
	}
	if err := setLock(fa, unix.F_SETLK, unix.F_RDLCK, 0, 1); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("F_SETLK F_RDLCK through A while B holds the whole file: %v, want EAGAIN", err)
	}
	if err := setLock(fb, unix.F_SETLK, unix.F_RDLCK, 0, 0); err != nil {
		t.Fatalf("B downgrading its write lock: %v", err)
	}
	if err := setLock(fa, unix.F_SETLK, unix.F_RDLCK, 0, 1); err != nil {
		t.Fatalf("F_SETLK F_RDLCK through A while B holds a read lock: %v", err)
	}
}

// TestLockFlockAcrossMounts: flock(LOCK_EX) through A makes
// flock(LOCK_EX|LOCK_NB) through B fail with EWOULDBLOCK and a blocking one
// wait until A unlocks; shared flocks share; flock and fcntl locks do not
// interfere, as on Linux.
func TestLockFlockAcrossMounts(t *testing.T) {
	a := newFS(t)
	b := a.SecondMount()
	p := newLockFile(t, "f", a, b)
	fa, fb := openRW(t, p[0]), openRW(t, p[1])

	if err := flock(fa, unix.LOCK_EX); err != nil {
		t.Fatalf("flock LOCK_EX through A: %v", err)
	}
	if err := flock(fb, unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("flock LOCK_EX|LOCK_NB through B: %v, want EWOULDBLOCK", err)
	}
	if err := flock(fb, unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("flock LOCK_SH|LOCK_NB through B: %v, want EWOULDBLOCK", err)
	}
	// fcntl locks of the whole file, either kind, are independent of flock.
	if err := setLock(fb, unix.F_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Fatalf("F_SETLK F_WRLCK through B while A holds flock LOCK_EX: %v", err)
	}
	if err := setLock(fb, unix.F_OFD_SETLK, unix.F_RDLCK, 0, 0); !errors.Is(err, syscall.EAGAIN) {
		// B's POSIX write lock and B's OFD lock conflict, as locally.
		t.Fatalf("F_OFD_SETLK through B over B's own POSIX lock: %v, want EAGAIN", err)
	}

	w := startBlocked(func() error { return flock(fb, unix.LOCK_EX) })
	waitInSyscall(t, os.Getpid(), w.tid, unix.SYS_FLOCK, w.done)
	if err := flock(fa, unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := await(t, "flock LOCK_EX through B after A unlocked", w.done); err != nil {
		t.Fatalf("flock LOCK_EX through B: %v", err)
	}
	if err := flock(fa, unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("flock LOCK_SH|LOCK_NB through A while B holds LOCK_EX: %v, want EWOULDBLOCK", err)
	}
	if err := flock(fb, unix.LOCK_SH); err != nil {
		t.Fatalf("B converting to LOCK_SH: %v", err)
	}
	if err := flock(fa, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		t.Fatalf("flock LOCK_SH|LOCK_NB through A while B holds LOCK_SH: %v", err)
	}
	// A's fcntl lock through A conflicts with B's, flock or not.
	if err := setLock(fa, unix.F_SETLK, unix.F_RDLCK, 0, 1); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("F_SETLK through A while B holds a POSIX write lock: %v, want EAGAIN", err)
	}
}

// TestLockOFDAcrossMounts: OFD locks through A and B conflict, one open
// file description's locks merge and split as locally, and two
// descriptions of one mount conflict.
func TestLockOFDAcrossMounts(t *testing.T) {
	a := newFS(t)
	b := a.SecondMount()
	p := newLockFile(t, "f", a, b)
	fa, fa2, fb := openRW(t, p[0]), openRW(t, p[0]), openRW(t, p[1])

	if err := setLock(fa, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 100); err != nil {
		t.Fatal(err)
	}
	if err := setLock(fb, unix.F_OFD_SETLK, unix.F_RDLCK, 99, 1); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("F_OFD_SETLK through B: %v, want EAGAIN", err)
	}
	if err := setLock(fa2, unix.F_OFD_SETLK, unix.F_RDLCK, 99, 1); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("F_OFD_SETLK through another description of A: %v, want EAGAIN", err)
	}
	wantConflict(t, "F_OFD_GETLK through B", getLock(t, fb, unix.F_OFD_GETLK, unix.F_RDLCK, 0, 0), unix.F_WRLCK, 0, 100, -1)
	// Unlocking the middle leaves two locks; B gets the hole.
	if err := setLock(fa, unix.F_OFD_SETLK, unix.F_UNLCK, 40, 20); err != nil {
		t.Fatal(err)
	}
	if err := setLock(fb, unix.F_OFD_SETLK, unix.F_WRLCK, 40, 20); err != nil {
		t.Fatalf("F_OFD_SETLK through B on the hole A unlocked: %v", err)
	}
	wantConflict(t, "F_OFD_GETLK through A2", getLock(t, fa2, unix.F_OFD_GETLK, unix.F_RDLCK, 60, 0), unix.F_WRLCK, 60, 40, -1)

	w := startBlocked(func() error { return setLock(fb, unix.F_OFD_SETLKW, unix.F_WRLCK, 0, 0) })
	waitInSyscall(t, os.Getpid(), w.tid, unix.SYS_FCNTL, w.done)
	if err := setLock(fa, unix.F_OFD_SETLK, unix.F_UNLCK, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := await(t, "F_OFD_SETLKW through B", w.done); err != nil {
		t.Fatalf("F_OFD_SETLKW through B: %v", err)
	}
}

// lockHolderPy takes a lock on argv[1] with argv[2] (posix: F_SETLKW of
// F_WRLCK on [argv[3], +argv[4]); flock: LOCK_EX; wait: like posix but
// reports "waiting" first), prints "locked", and holds it until stdin
// closes.
const lockHolderPy = `
import fcntl, os, sys
path, kind = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
if kind == "flock":
    fcntl.flock(fd, fcntl.LOCK_EX)
else:
    if kind == "wait":
        print("waiting", flush=True)
    fcntl.lockf(fd, fcntl.LOCK_EX, int(sys.argv[4]), int(sys.argv[3]))
print("locked", flush=True)
sys.stdin.read()
`

// holder is a child process holding (or waiting for) a lock.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

// startHolder starts lockHolderPy with args and waits for its first line.
func startHolder(t *testing.T, args ...string) (*holder, string) {
	t.Helper()
	requireTool(t, "python3")
	cmd := exec.Command("python3", append([]string{"-c", lockHolderPy}, args...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{cmd: cmd, stdin: stdin, lines: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return h, h.line(t)
}

// line returns the holder's next line of output.
func (h *holder) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			t.Fatalf("lock holder %d exited", h.cmd.Process.Pid)
		}
		return l
	case <-time.After(lockWait):
		t.Fatalf("lock holder %d: no output after %v", h.cmd.Process.Pid, lockWait)
		return ""
	}
}

// kill sends SIGKILL and waits until the holder is gone.
func (h *holder) kill(t *testing.T) {
	t.Helper()
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	await(t, "the killed lock holder's exit", done)
}

// TestLockProcessesSameMount: two processes on one mount conflict; F_GETLK
// through that mount reports the holder's pid, through another mount pid
// 0 (unknown); the lock goes when the holder is killed with SIGKILL.
func TestLockProcessesSameMount(t *testing.T) {
	a := newFS(t)
	b := a.SecondMount()
	p := newLockFile(t, "f", a, b)
	h, l := startHolder(t, p[0], "posix", "5", "10")
	if l != "locked" {
		t.Fatalf("lock holder: %q", l)
	}
	fa, fb := openRW(t, p[0]), openRW(t, p[1])
	if err := setLock(fa, unix.F_SETLK, unix.F_WRLCK, 0, 0); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("F_SETLK through A while another process holds a lock through A: %v, want EAGAIN", err)
	}
	pid := int32(h.cmd.Process.Pid)
	wantConflict(t, "F_GETLK through A", getLock(t, fa, unix.F_GETLK, unix.F_RDLCK, 0, 0), unix.F_WRLCK, 5, 10, pid)
	wantConflict(t, "F_GETLK through B", getLock(t, fb, unix.F_GETLK, unix.F_RDLCK, 0, 0), unix.F_WRLCK, 5, 10, pidUnknown)

	// A second process waits through B; killing it while it waits must not
	// leave it stuck in the kernel (the daemon answers the interrupt).
	w, l := startHolder(t, p[1], "wait", "0", "0")
	if l != "waiting" {
		t.Fatalf("waiter: %q", l)
	}
	waitInSyscall(t, w.cmd.Process.Pid, w.cmd.Process.Pid, unix.SYS_FCNTL, nil)
	w.kill(t)

	h.kill(t)
	if err := setLock(fa, unix.F_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Fatalf("F_SETLK through A after the holder was killed: %v", err)
	}
	if err := setLock(fa, unix.F_SETLK, unix.F_UNLCK, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := setLock(fb, unix.F_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Fatalf("F_SETLK through B after the holder was killed: %v", err)
	}
}

// eventually retries try until it succeeds, failing the test after
// lockWait. OFD and flock locks go with the open file, at the kernel's
// RELEASE, which FUSE sends asynchronously after the last close(2)
// returned: another process may see such a lock for a moment after it was
// closed (POSIX locks go at FLUSH, before close(2) returns).
func eventually(t *testing.T, what string, try func() error) {
	t.Helper()
	deadline := time.Now().Add(lockWait)
	for {
		err := try()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %v", what, err, lockWait)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLockReleaseOnClose: a POSIX lock goes when its process closes any
// descriptor of the file; OFD and flock locks go when their own open file
// is closed, not another; a flock holder killed with SIGKILL releases it.
func TestLockReleaseOnClose(t *testing.T) {
	a := newFS(t)
	b := a.SecondMount()
	p := newLockFile(t, "f", a, b)
	fb := openRW(t, p[1])

	tryB := func(what string, cmd int, want error) {
		t.Helper()
		err := setLock(fb, cmd, unix.F_WRLCK, 0, 0)
		if !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Fatalf("%s: lock through B: %v, want %v", what, err, want)
		}
		if err == nil {
			setLock(fb, cmd, unix.F_UNLCK, 0, 0)
		}
	}

	// POSIX: closing another descriptor of the file drops the lock.
	fa1, close1 := openLocked(t, p[0], os.O_RDWR)
	if err := setLock(fa1, unix.F_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, close2 := openLocked(t, p[0], os.O_RDONLY)
	tryB("POSIX lock held", unix.F_OFD_SETLK, syscall.EAGAIN)
	close2()
	tryB("POSIX lock after closing another descriptor", unix.F_OFD_SETLK, nil)

	// OFD: closing another descriptor leaves it; closing its own drops it.
	if err := setLock(fa1, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, close2 = openLocked(t, p[0], os.O_RDONLY)
	close2()
	tryB("OFD lock after closing another descriptor", unix.F_OFD_SETLK, syscall.EAGAIN)
	close1()
	eventually(t, "OFD lock through B after A closed its descriptor", func() error {
		return setLock(fb, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0)
	})
	setLock(fb, unix.F_OFD_SETLK, unix.F_UNLCK, 0, 0)

	// flock: the same.
	fa1, close1 = openLocked(t, p[0], os.O_RDWR)
	if err := flock(fa1, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, close2 = openLocked(t, p[0], os.O_RDONLY)
	close2()
	if err := flock(fb, unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("flock through B after A closed another descriptor: %v, want EWOULDBLOCK", err)
	}
	close1()
	eventually(t, "flock through B after A closed its descriptor", func() error {
		return flock(fb, unix.LOCK_EX|unix.LOCK_NB)
	})
	flock(fb, unix.LOCK_UN)

	// A flock holder killed with SIGKILL.
	h, l := startHolder(t, p[0], "flock")
	if l != "locked" {
		t.Fatalf("flock holder: %q", l)
	}
	if err := flock(fb, unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("flock through B while a process holds it through A: %v, want EWOULDBLOCK", err)
	}
	h.kill(t)
	eventually(t, "flock through B after the holder was killed", func() error {
		return flock(fb, unix.LOCK_EX|unix.LOCK_NB)
	})
}

// TestLockDaemonKilled: the daemon of mount A is killed with SIGKILL while
// a lock taken through A is held and writers on mounts B and C wait for
// it. The backing lock goes with the dead daemon's descriptors, and the
// writers carry on: each increments a counter in the file under an OFD
// write lock, so a lost lock or a stale read would show as a lost
// increment.
func TestLockDaemonKilled(t *testing.T) {
	const rounds = 200
	a := newFS(t)
	b, c := a.SecondMount(), a.SecondMount()
	p := newLockFile(t, "counter", a, b, c)
	fa, closeA := openLocked(t, p[0], os.O_RDWR)
	if err := setLock(fa, unix.F_SETLK, unix.F_WRLCK, 0, 0); err != nil {
		t.Fatal(err)
	}

	increment := func(fd int) error {
		if err := setLock(fd, unix.F_OFD_SETLKW, unix.F_WRLCK, 0, 0); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		var buf [8]byte
		if _, err := unix.Pread(fd, buf[:], 0); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		binary.LittleEndian.PutUint64(buf[:], binary.LittleEndian.Uint64(buf[:])+1)
		if _, err := unix.Pwrite(fd, buf[:], 0); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return setLock(fd, unix.F_OFD_SETLK, unix.F_UNLCK, 0, 0)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	first := make([]*blocked, 2)
	for i, m := range []*testFS{b, c} {
		fd := openRW(t, m.Path("counter"))
		wg.Add(1)
		first[i] = startBlocked(func() error {
			// The first lock waits for the dead daemon's; the thread stays
			// locked until it is granted.
			return setLock(fd, unix.F_OFD_SETLKW, unix.F_WRLCK, 0, 0)
		})
		go func() {
			defer wg.Done()
			if err := await(t, "first lock after the kill", first[i].done); err != nil {
				errs <- fmt.Errorf("%s: first lock: %w", m.Mnt, err)
				return
			}
			setLock(fd, unix.F_OFD_SETLK, unix.F_UNLCK, 0, 0)
			for range rounds {
				if err := increment(fd); err != nil {
					errs <- fmt.Errorf("%s: %w", m.Mnt, err)
					return
				}
			}
		}()
	}
	for _, w := range first {
		waitInSyscall(t, os.Getpid(), w.tid, unix.SYS_FCNTL, nil)
	}
	pid := a.DaemonPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(pid, exitTimeout); err != nil {
		t.Fatalf("daemon %d after SIGKILL: %v", pid, err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var buf [8]byte
	fd := openRW(t, b.Path("counter"))
	if _, err := unix.Pread(fd, buf[:], 0); err != nil {
		t.Fatal(err)
	}
	if n := binary.LittleEndian.Uint64(buf[:]); n != 2*rounds {
		t.Errorf("counter is %d after 2 × %d locked increments through two mounts, want %d", n, rounds, 2*rounds)
	}
	closeA()
	a.Unmount()
}

// TestLockCoherentReads: what one mount writes under a lock, another mount
// reads under its own lock, although each mount's kernel caches the file's
// pages and attributes: taking a lock drops them, and releasing one first
// writes back what a shared mapping dirtied. A writer on A appends a
// record and rewrites a counter (through write(2), then through a shared
// mapping) under a write lock; after each unlock a reader on B, under a
// read lock, must see the new size and both values.
func TestLockCoherentReads(t *testing.T) {
	const rounds = 100
	a := newFS(t)
	b := a.SecondMount()
	p := newLockFile(t, "f", a, b)
	fa, fb := openRW(t, p[0]), openRW(t, p[1])
	const page = 4096
	m, err := unix.Mmap(fa, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(m)

	var buf [8]byte
	for i := uint64(1); i <= 2*rounds; i++ {
		viaMap := i > rounds
		if err := setLock(fa, unix.F_OFD_SETLKW, unix.F_WRLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint64(buf[:], i)
		if _, err := unix.Pwrite(fa, buf[:], int64(page+8*i)); err != nil {
			t.Fatal(err)
		}
		if viaMap {
			copy(m, buf[:])
		} else if _, err := unix.Pwrite(fa, buf[:], 0); err != nil {
			t.Fatal(err)
		}
		if err := setLock(fa, unix.F_OFD_SETLK, unix.F_UNLCK, 0, 0); err != nil {
			t.Fatal(err)
		}

		if err := setLock(fb, unix.F_OFD_SETLKW, unix.F_RDLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fb, &st); err != nil {
			t.Fatal(err)
		}
		if want := int64(page + 8*(i+1)); st.Size != want {
			t.Fatalf("round %d: size through B %d, want %d", i, st.Size, want)
		}
		for _, off := range []int64{0, int64(page + 8*i)} {
			if _, err := unix.Pread(fb, buf[:], off); err != nil {
				t.Fatal(err)
			}
			if got := binary.LittleEndian.Uint64(buf[:]); got != i {
				t.Fatalf("round %d (written through the mapping: %v): B reads %d at %d, want %d", i, viaMap, got, off, i)
			}
		}
		if err := setLock(fb, unix.F_OFD_SETLK, unix.F_UNLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
}
