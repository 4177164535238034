package integration

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What a kill -9 of the daemon can and cannot do (TestCrash checks it):
//
// The daemon writes every acknowledged FUSE WRITE to the backing file with
// pwrite before it answers (there is no FUSE writeback cache), so after the
// daemon dies every acknowledged byte, fsync'd or not, is in the backing
// filesystem's page cache and reads back after a remount; fsync makes the
// same bytes survive a crash of the whole machine. A write in flight at the
// kill may have reached the backing file in full, not at all, or in part:
// Linux checks for a fatal signal between the pages of one pwrite, so a
// chunk being rewritten can be left half new, half old. Such a chunk fails
// its tag and reads as EIO (fsck reports it); it never reads as wrong data.
// Every other chunk reads as old or new data.

// crashOp is one content operation of a crash writer.
type crashOp struct {
	truncate bool
	off      int64 // write offset
	data     []byte
	size     int64 // truncate size
}

// apply returns content after op; content itself may be changed.
func (op *crashOp) apply(content []byte) []byte {
	if op.truncate {
		if op.size <= int64(len(content)) {
			return content[:op.size]
		}
		return append(content, make([]byte, op.size-int64(len(content)))...)
	}
	end := op.off + int64(len(op.data))
	if end > int64(len(content)) {
		content = append(content, make([]byte, end-int64(len(content)))...)
	}
	copy(content[op.off:], op.data)
	return content
}

// chunks returns the inclusive range of chunks op rewrites in a file of
// size oldSize: its own range and, when it moves the end of file, the old
// last chunk.
func (op *crashOp) chunks(cs, oldSize int64) (first, last int64) {
	var start, end int64
	if op.truncate {
		start, end = min(op.size, oldSize), max(op.size, oldSize)
	} else {
		start, end = op.off, op.off+int64(len(op.data))
		if end > oldSize {
			start = min(start, oldSize)
		}
	}
	if start > 0 && start == oldSize {
		start-- // the old last chunk
	}
	return start / cs, max(start, end-1) / cs
}

// crashWriter owns one file in the mount and models it: acked is the
// content after every acknowledged operation, synced the content at the
// last successful fsync, inflight the operation that was running when the
// daemon died.
type crashWriter struct {
	name     string
	fd       int
	r        *rand.Rand
	cs       int64
	acked    []byte
	synced   []byte
	inflight *crashOp
	ops      atomic.Int64
	err      error // the error that stopped the writer

	target  int64         // after this many operations, close reached
	reached chan struct{} // closed once ops reaches target

	// Since the last successful fsync: the chunks changed and the range
	// of sizes the file had (for mounts with --writeback-cache, where
	// only fsync'd data must survive).
	dirty            map[int64]bool
	minSize, maxSize int64
}

// markSynced records a successful fsync.
func (w *crashWriter) markSynced() {
	w.synced = bytes.Clone(w.acked)
	w.dirty = map[int64]bool{}
	w.minSize, w.maxSize = int64(len(w.acked)), int64(len(w.acked))
}

// markDirty records op, about to run on a file of size oldSize.
func (w *crashWriter) markDirty(op *crashOp, oldSize int64) {
	first, last := op.chunks(w.cs, oldSize)
	for i := first; i <= last; i++ {
		w.dirty[i] = true
	}
	newSize := max(oldSize, op.off+int64(len(op.data)))
	if op.truncate {
		newSize = op.size
	}
	w.minSize, w.maxSize = min(w.minSize, newSize), max(w.maxSize, newSize)
}

// done counts one finished operation.
func (w *crashWriter) done() {
	if w.ops.Add(1) == w.target {
		close(w.reached)
	}
}

const crashMaxSize = 2 << 20

// run performs random writes, truncations and fsyncs until one fails
// (the daemon is gone).
func (w *crashWriter) run() {
	for {
		var op *crashOp
		size := int64(len(w.acked))
		switch p := w.r.IntN(100); {
		case p < 12:
			var err error
			if p < 6 {
				err = unix.Fsync(w.fd)
			} else {
				err = unix.Fdatasync(w.fd)
			}
			if err != nil {
				w.err = fmt.Errorf("fsync: %w", err)
				return
			}
			w.markSynced()
			w.done()
			continue
		case p < 17 || size > crashMaxSize:
			op = &crashOp{truncate: true, size: w.r.Int64N(size + 2*w.cs)}
			if size > crashMaxSize {
				op.size = w.r.Int64N(size / 2)
			}
		default:
			n := 1 + w.r.IntN(int(4*w.cs))
			if w.r.IntN(4) == 0 {
				n = 1 + w.r.IntN(256<<10)
			}
			op = &crashOp{off: w.r.Int64N(size + 2*w.cs), data: randomBytes(w.r, n)}
		}
		w.inflight = op
		w.markDirty(op, size)
		var err error
		if op.truncate {
			err = unix.Ftruncate(w.fd, op.size)
		} else {
			var n int
			n, err = unix.Pwrite(w.fd, op.data, op.off)
			if err == nil && n != len(op.data) {
				// The kernel split the write into requests and the
				// daemon died after the first: those bytes are
				// acknowledged, the rest is in flight.
				done := &crashOp{off: op.off, data: op.data[:n]}
				w.acked = done.apply(w.acked)
				w.inflight = &crashOp{off: op.off + int64(n), data: op.data[n:]}
				err = fmt.Errorf("short write %d of %d", n, len(op.data))
			}
		}
		if err != nil {
			w.err = err
			return
		}
		w.acked = op.apply(w.acked)
		w.inflight = nil
		w.done()
	}
}

// crashReport counts what a verification found.
type crashReport struct {
	eioChunks   int // chunks touched by an in-flight write that read as EIO
	syncedLost  int // fsync'd bytes (not rewritten by the in-flight op) in those chunks
	newChunks   int // chunks of an in-flight op that read as new data
	inflightOps int
}

// verify reads the writer's file back chunk by chunk after the crash and
// remount: chunks no in-flight operation touched must hold exactly the
// acknowledged content; those it touched hold the old or the new content,
// or read as EIO. It returns the content as now stored, with EIO chunks
// replaced by their acknowledged content, so the next round can start from
// a known state.
func (w *crashWriter) verify(t *testing.T, path string, rep *crashReport) []byte {
	t.Helper()
	old := w.acked
	cands := [][]byte{old}
	var first, last int64 = -1, -1
	if w.inflight != nil {
		rep.inflightOps++
		cands = append(cands, w.inflight.apply(bytes.Clone(old)))
		first, last = w.inflight.chunks(w.cs, int64(len(old)))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("%s: stat after the crash: %v", w.name, err)
		return old
	}
	size := fi.Size()
	okSize := false
	for _, c := range cands {
		okSize = okSize || size == int64(len(c))
	}
	if len(cands) == 2 {
		// An extending write torn by the kill (the kernel stops a large
		// pwrite at a page boundary) leaves a size in between: the whole
		// chunks it stored. Their content is checked chunk by chunk below.
		lo, hi := int64(len(cands[0])), int64(len(cands[1]))
		okSize = okSize || (min(lo, hi) < size && size < max(lo, hi))
	}
	if !okSize {
		t.Errorf("%s: size %d after the crash, want %d (acknowledged) or the in-flight op's %d",
			w.name, size, len(old), len(cands[len(cands)-1]))
		return old
	}
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("%s: open after the crash: %v", w.name, err)
		return old
	}
	defer f.Close()
	stored := make([]byte, size)
	for i := int64(0); i*w.cs < size; i++ {
		start, end := i*w.cs, min(size, (i+1)*w.cs)
		got := stored[start:end]
		_, err := f.ReadAt(got, start)
		touched := i >= first && i <= last
		if err != nil {
			if !touched || !errors.Is(err, syscall.EIO) {
				t.Errorf("%s: chunk %d (bytes %d-%d): %v; no write in flight at the kill touched it", w.name, i, start, end, err)
				continue
			}
			rep.eioChunks++
			var keep []byte
			for j := start; j < end; j++ {
				if j < int64(len(old)) {
					keep = append(keep, old[j])
				} else {
					keep = append(keep, 0)
				}
				if j < int64(len(old)) && j < int64(len(w.synced)) && old[j] == w.synced[j] &&
					(w.inflight.truncate || j < w.inflight.off || j >= w.inflight.off+int64(len(w.inflight.data))) {
					rep.syncedLost++
				}
			}
			copy(got, keep)
			continue
		}
		if !touched {
			if end > int64(len(old)) || !bytes.Equal(got, old[start:end]) {
				t.Errorf("%s: chunk %d (bytes %d-%d), which no in-flight write touched, differs from the acknowledged content",
					w.name, i, start, end)
			}
			continue
		}
		switch {
		case end <= int64(len(old)) && bytes.Equal(got, old[start:end]):
		case len(cands) > 1 && end <= int64(len(cands[1])) && bytes.Equal(got, cands[1][start:end]):
			rep.newChunks++
		default:
			t.Errorf("%s: chunk %d (bytes %d-%d), touched by the write in flight at the kill, holds neither the old nor the new data",
				w.name, i, start, end)
		}
	}
	return stored
}

// verifySynced checks the writer's file after a crash of a mount with
// --writeback-cache, where unsynced writes may be lost: the size is one the
// file had since the last fsync, and every chunk no operation touched since
// then holds exactly its fsync'd content. Touched chunks may hold any
// version or read as EIO. It returns the content now stored, touched
// chunks that read as EIO replaced by their fsync'd content.
func (w *crashWriter) verifySynced(t *testing.T, path string, rep *crashReport) []byte {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("%s: stat after the crash: %v", w.name, err)
		return w.synced
	}
	size := fi.Size()
	if size < w.minSize || size > w.maxSize {
		t.Errorf("%s: size %d after the crash, want %d to %d (the sizes since the last fsync)", w.name, size, w.minSize, w.maxSize)
		return w.synced
	}
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("%s: open after the crash: %v", w.name, err)
		return w.synced
	}
	defer f.Close()
	stored := make([]byte, size)
	for i := int64(0); i*w.cs < size; i++ {
		start, end := i*w.cs, min(size, (i+1)*w.cs)
		got := stored[start:end]
		_, err := f.ReadAt(got, start)
		switch {
		case w.dirty[i] && err != nil && errors.Is(err, syscall.EIO):
			rep.eioChunks++
			clear(got)
			if start < int64(len(w.synced)) {
				copy(got, w.synced[start:min(end, int64(len(w.synced)))])
			}
		case w.dirty[i] && err == nil:
		case err != nil:
			t.Errorf("%s: chunk %d (bytes %d-%d), unchanged since the last fsync: %v", w.name, i, start, end, err)
		case end > int64(len(w.synced)) || !bytes.Equal(got, w.synced[start:end]):
			t.Errorf("%s: chunk %d (bytes %d-%d), unchanged since the last fsync, differs from its fsync'd content", w.name, i, start, end)
			rep.syncedLost += int(end - start)
		}
	}
	return stored
}

// startCrashFio starts fio as background load: mixed random reads and
// writes of 1-128 KiB with an fsync every 8 writes, until it is killed or
// the mount dies under it.
func startCrashFio(t *testing.T, dir, name string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command("fio", "--name=crash", "--directory="+dir, "--filename="+name,
		"--rw=randrw", "--rwmixread=30", "--bsrange=1k-128k", "--size=16m",
		"--ioengine=psync", "--direct=0", "--fsync=8", "--time_based", "--runtime=300",
		"--verify=0", "--randrepeat=0")
	cmd.Dir = t.TempDir()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// TestCrash kills the daemon with SIGKILL during heavy mixed writes (four
// writers doing random pwrites, truncations and fsyncs through the mount,
// plus fio), three times. After each kill the dead mount is unmounted with
// `kmsfs unmount` (no lazy unmount is needed once no process holds a file
// in it open) and mounted again, and every writer's file is checked chunk
// by chunk: everything acknowledged before the kill (fsync'd or not, see
// the note above) reads back exactly; the chunks a write in flight at the
// kill touched read as old or new data, or as EIO. The fio file must read
// through, except possibly for chunks its own in-flight writes touched.
func TestCrash(t *testing.T) {
	t.Parallel()
	runCrash(t)
}

// TestCrashWritebackCache is TestCrash on a mount with --writeback-cache:
// the kernel acknowledges writes before the daemon has them, so only what
// was fsync'd must survive the kill; every chunk unchanged since its
// file's last fsync must read back exactly.
func TestCrashWritebackCache(t *testing.T) {
	t.Parallel()
	runCrash(t, "--writeback-cache")
}

// runCrash is TestCrash with extra mount flags; with --writeback-cache it
// checks fsync'd data only.
func runCrash(t *testing.T, mountArgs ...string) {
	requireTool(t, "fio")
	writeback := slices.Contains(mountArgs, "--writeback-cache")
	fs := newFS(t, WithMountArgs(mountArgs...))
	seed := testSeed(t)
	r := newRand(seed)
	cs := int64(fs.ChunkSize)
	const writers = 4

	ws := make([]*crashWriter, writers)
	for i := range ws {
		ws[i] = &crashWriter{name: fmt.Sprintf("w%d", i), fd: -1, r: newRand(seed + uint64(i) + 1), cs: cs}
		ws[i].acked = randomBytes(r, 256<<10+r.IntN(256<<10))
		mustWrite(t, fs.Path(ws[i].name), ws[i].acked)
	}
	defer func() {
		for _, w := range ws {
			if w.fd >= 0 {
				unix.Close(w.fd)
			}
		}
	}()

	var total crashReport
	for round := range 3 {
		for _, w := range ws {
			fd, err := unix.Open(fs.Path(w.name), unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatalf("round %d: open %s: %v", round, w.name, err)
			}
			w.fd, w.inflight, w.err = fd, nil, nil
			w.markSynced()
			w.ops.Store(0)
			w.target, w.reached = int64(100+r.IntN(400)), make(chan struct{})
		}
		fio, fioOut := startCrashFio(t, fs.Mnt, "fio.dat")
		var wg sync.WaitGroup
		var killed atomic.Bool
		for _, w := range ws {
			wg.Go(func() {
				w.run()
				if !killed.Load() {
					t.Errorf("round %d: writer %s failed before the kill: %v", round, w.name, w.err)
				}
			})
		}
		// Kill once every writer has done a random number of operations.
		for _, w := range ws {
			select {
			case <-w.reached:
			case <-time.After(2 * time.Minute):
				t.Errorf("round %d: writer %s did only %d operations in 2 minutes", round, w.name, w.ops.Load())
			}
		}
		pid := fs.DaemonPID()
		killed.Store(true)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if err := waitExit(pid, exitTimeout); err != nil {
			t.Fatalf("daemon %d after SIGKILL: %v", pid, err)
		}
		fioDone := make(chan error, 1)
		go func() { fioDone <- fio.Wait() }()
		select {
		case err := <-fioDone:
			t.Logf("round %d: fio stopped by the dead mount: %v", round, err)
		case <-time.After(time.Minute):
			fio.Process.Kill()
			<-fioDone
			t.Errorf("round %d: fio still running a minute after the kill\n%s", round, fioOut)
		}
		var ops int64
		for _, w := range ws {
			ops += w.ops.Load()
			unix.Close(w.fd)
			w.fd = -1
			if !errors.Is(w.err, syscall.ENOTCONN) && !errors.Is(w.err, syscall.ECONNABORTED) {
				t.Logf("round %d: writer %s stopped with %v", round, w.name, w.err)
			}
		}
		// The mount is dead (ENOTCONN) but still in the mount table. A
		// name never looked up needs the daemon (no kernel cache answers).
		if _, err := os.Stat(fs.Path(fmt.Sprintf("never-seen-%d", round))); !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("round %d: lookup on the dead mount: %v, want ENOTCONN", round, err)
		}
		fs.Unmount()
		fs.Mount()

		var rep crashReport
		for _, w := range ws {
			if writeback {
				w.acked = w.verifySynced(t, fs.Path(w.name), &rep)
			} else {
				w.acked = w.verify(t, fs.Path(w.name), &rep)
			}
			// Start the next round from what is stored, EIO chunks
			// rewritten with their acknowledged content.
			if rep.eioChunks > 0 {
				mustWrite(t, fs.Path(w.name), w.acked)
			}
		}
		fioEIO := countEIOChunks(t, fs.Path("fio.dat"), cs)
		t.Logf("round %d: killed after %d operations: %d writes in flight, %d of their chunks read new, %d read EIO (%d fsync'd bytes in them); fio file: %d chunks EIO",
			round, ops, rep.inflightOps, rep.newChunks, rep.eioChunks, rep.syncedLost, fioEIO)
		if fioEIO > 4*(128<<10)/int(cs) {
			t.Errorf("round %d: %d unreadable chunks in the fio file, more than one in-flight write could touch", round, fioEIO)
		}
		os.Remove(fs.Path("fio.dat"))
		total.eioChunks += rep.eioChunks
		total.syncedLost += rep.syncedLost
		total.newChunks += rep.newChunks
		total.inflightOps += rep.inflightOps
		if t.Failed() {
			return
		}
	}
	t.Logf("3 kills: %d writes in flight, %d chunks read new, %d chunks EIO holding %d fsync'd bytes (seed %d)",
		total.inflightOps, total.newChunks, total.eioChunks, total.syncedLost, seed)
}

// countEIOChunks reads path chunk by chunk and returns how many chunks
// read as EIO; any other error fails the test.
func countEIOChunks(t *testing.T, path string, cs int64) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("open %s: %v", path, err)
		return 0
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Errorf("stat %s: %v", path, err)
		return 0
	}
	buf := make([]byte, cs)
	n := 0
	for off := int64(0); off < fi.Size(); off += cs {
		_, err := f.ReadAt(buf[:min(cs, fi.Size()-off)], off)
		switch {
		case err == nil:
		case errors.Is(err, syscall.EIO):
			n++
		default:
			t.Errorf("read %s at %d: %v", path, off, err)
			return n
		}
	}
	return n
}
