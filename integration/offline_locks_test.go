package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Offline tools with live mounts (issue 13, item 5): rekey, fsck and
// rewrap take a file's internal locks, so they never race a shared-mode
// mount's writer on another host.

// liveWriter rewrites one file through a mount over and over, each
// generation the whole content (3 chunks and a bit), every fifth after
// truncating it to 0 (a size change: the size lock's write side). It
// keeps its descriptor open; a write that fails with ESTALE (the file was
// rekeyed under it) is repeated on a fresh open. ack is the content of the
// last write that succeeded.
type liveWriter struct {
	path string
	stop atomic.Bool
	done chan struct{}

	mu    sync.Mutex
	ack   []byte
	gens  int
	stale int
	err   error
}

func startWriter(t *testing.T, path string) *liveWriter {
	t.Helper()
	w := &liveWriter{path: path, done: make(chan struct{})}
	go w.run()
	t.Cleanup(w.finish)
	return w
}

func (w *liveWriter) run() {
	defer close(w.done)
	f, err := os.OpenFile(w.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		w.fail(err)
		return
	}
	defer func() { f.Close() }()
	for gen := 1; !w.stop.Load(); gen++ {
		data := bytes.Repeat(fmt.Appendf(nil, "gen %08d|", gen), 3*4096/13+10)
		for {
			err := w.write(f, data, gen%5 == 0)
			if errors.Is(err, unix.ESTALE) {
				f.Close()
				if f, err = os.OpenFile(w.path, os.O_RDWR, 0); err == nil {
					w.mu.Lock()
					w.stale++
					w.mu.Unlock()
					continue
				}
			}
			if err != nil {
				w.fail(fmt.Errorf("generation %d: %w", gen, err))
				return
			}
			break
		}
		w.mu.Lock()
		w.ack, w.gens = data, gen
		w.mu.Unlock()
		time.Sleep(2 * time.Millisecond) // let the tools' tries without waiting find the file free
	}
}

func (w *liveWriter) write(f *os.File, data []byte, truncate bool) error {
	if truncate {
		if err := f.Truncate(0); err != nil {
			return err
		}
	}
	_, err := f.WriteAt(data, 0)
	return err
}

func (w *liveWriter) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// waitStarted waits until the file has content (or the writer failed).
func (w *liveWriter) waitStarted() {
	for {
		w.mu.Lock()
		n, err := w.gens, w.err
		w.mu.Unlock()
		if n >= 3 || err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// finish stops the writer and waits for it.
func (w *liveWriter) finish() {
	w.stop.Store(true)
	<-w.done
}

// checkLastAck stops the writer and checks that the file, opened afresh
// through every mount, holds the last acknowledged write.
func (w *liveWriter) checkLastAck(t *testing.T, mounts []*testFS, name string) {
	t.Helper()
	w.finish()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	t.Logf("writer: %d generations, %d writes repeated after ESTALE", w.gens, w.stale)
	for i, m := range mounts {
		got, err := os.ReadFile(m.Path(name))
		if err != nil {
			t.Fatalf("mount %d: read: %v", i, err)
		}
		if !bytes.Equal(got, w.ack) {
			t.Fatalf("mount %d: the file holds %q… (%d bytes), the last acknowledged write was %q… (%d bytes): a write was lost",
				i, got[:min(len(got), 13)], len(got), w.ack[:13], len(w.ack))
		}
	}
}

// TestSharedRekeyLiveWriter: rekey of a file another mount keeps writing
// either rekeys it (between two writes; the writer's next write on its old
// descriptor fails with ESTALE and is repeated on a new open) or leaves it
// busy (exit 8). Afterwards the file, read through both mounts, holds the
// writer's last acknowledged write: nothing lost, nothing torn. Without
// the locks and Retire, the writer keeps writing into the replaced inode
// after the first rekey, and the check fails.
func TestSharedRekeyLiveWriter(t *testing.T) {
	ms := sharedMounts(t, 2)
	a, b := ms[0], ms[1]
	w := startWriter(t, a.Path("f"))
	w.waitStarted()
	rekeyed, busy := 0, 0
	for i := 0; i < 30 && rekeyed < 3; i++ {
		res := b.Exec("rekey", b.Path("f"))
		switch {
		case res.Code == 0 && strings.Contains(res.Stdout, "rekeyed"):
			rekeyed++
		case res.Code == 8 && strings.Contains(res.Stderr, "busy"):
			busy++
		default:
			t.Fatalf("rekey: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
		}
		time.Sleep(20 * time.Millisecond) // let the writer go on
	}
	t.Logf("rekey: %d rekeyed, %d busy", rekeyed, busy)
	if rekeyed == 0 {
		t.Fatal("rekey never found the file free between two writes")
	}
	w.checkLastAck(t, ms, "f")
}

// TestSharedFsckLiveWriter: fsck (with and without --repair) of a tree
// whose file another mount keeps writing finds nothing (exit 0) or reports
// the file busy (exit 14): never a torn chunk, never a repair of one; and
// the file holds the writer's last acknowledged write afterwards.
func TestSharedFsckLiveWriter(t *testing.T) {
	ms := sharedMounts(t, 2)
	a, b := ms[0], ms[1]
	w := startWriter(t, a.Path("f"))
	w.waitStarted()
	codes := map[int]int{}
	for i := 0; i < 20; i++ {
		args := []string{"fsck", b.CipherDir}
		if i%2 == 1 {
			args = []string{"fsck", "--repair", "--force", b.CipherDir}
		}
		res := b.Exec(args...)
		codes[res.Code]++
		if res.Code != 0 && res.Code != 14 {
			t.Fatalf("%v: exit %d\n%s%s", args, res.Code, res.Stdout, res.Stderr)
		}
		if res.Code == 14 && !strings.Contains(res.Stdout, "busy") {
			t.Fatalf("%v: exit 14 without a busy file:\n%s", args, res.Stdout)
		}
	}
	t.Logf("fsck exit codes: %v", codes)
	w.checkLastAck(t, ms, "f")
	b.Run("fsck", b.CipherDir)
}
