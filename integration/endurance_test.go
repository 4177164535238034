package integration

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Endurance: the differential test of differential_test.go (every
// operation on the mount and on a plain reference directory, identical
// results required) with hard links on top (link, unlink a link, reopen
// through a link, compare link counts), run long, sequentially and with
// several writers on distinct files at once, while the daemon's memory is
// sampled from /proc/PID/status.
//
// The normal suite runs 20,000 operations (sequential) plus 4 × 5,000
// (parallel). KMSFS_ENDURANCE=1 (`make endurance`) runs 200,000 plus
// 4 × 50,000; KMSFS_ENDURANCE_OPS overrides the sequential count.

// enduranceOps returns the sequential and per-writer parallel operation
// counts.
func enduranceOps(t *testing.T) (seq, par int) {
	seq, par = 20000, 5000
	if os.Getenv("KMSFS_ENDURANCE") == "1" {
		seq, par = 200000, 50000
	}
	if s := os.Getenv("KMSFS_ENDURANCE_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("KMSFS_ENDURANCE_OPS=%q: %v", s, err)
		}
		seq, par = n, n/4
	}
	return seq, par
}

// memSample is one reading of a daemon's memory, in KiB.
type memSample struct {
	ops       int
	rss, hwm  int64
	pid       int
	elapsedMs int64
}

// readMem reads VmRSS and VmHWM of pid.
func readMem(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseInt(fields[1], 10, 64)
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(fields[1], 10, 64)
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return rss, hwm, sc.Err()
}

// memCheck collects samples and checks that memory stays bounded: the
// highest RSS of the last quarter of the run may exceed the highest of the
// first half by at most slack (a leak grows with the operation count;
// caches and pools do not).
type memCheck struct {
	mu      sync.Mutex
	start   time.Time
	samples []memSample
}

func (m *memCheck) sample(t *testing.T, pid, ops int) {
	rss, hwm, err := readMem(pid)
	if err != nil {
		t.Errorf("sampling daemon %d: %v", pid, err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.start.IsZero() {
		m.start = time.Now()
	}
	m.samples = append(m.samples, memSample{ops: ops, rss: rss, hwm: hwm, pid: pid, elapsedMs: time.Since(m.start).Milliseconds()})
}

func (m *memCheck) report(t *testing.T, total int) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.samples) < 4 {
		t.Errorf("only %d memory samples", len(m.samples))
		return
	}
	var firstHalf, lastQuarter, maxRSS, maxHWM int64
	var series []string
	step := max(1, len(m.samples)/10)
	for i, s := range m.samples {
		if s.ops <= total/2 {
			firstHalf = max(firstHalf, s.rss)
		}
		if s.ops >= total*3/4 {
			lastQuarter = max(lastQuarter, s.rss)
		}
		maxRSS, maxHWM = max(maxRSS, s.rss), max(maxHWM, s.hwm)
		if i%step == 0 || i == len(m.samples)-1 {
			series = append(series, fmt.Sprintf("%d ops: %d MiB", s.ops, s.rss>>10))
		}
	}
	t.Logf("daemon memory over %d operations: VmRSS max %.1f MiB (first half max %.1f MiB, last quarter max %.1f MiB), VmHWM max %.1f MiB; RSS by progress: %s",
		total, float64(maxRSS)/1024, float64(firstHalf)/1024, float64(lastQuarter)/1024, float64(maxHWM)/1024, strings.Join(series, ", "))
	const slackKiB = 48 << 10
	if lastQuarter > firstHalf+slackKiB {
		t.Errorf("daemon RSS grows with the run: last quarter max %d KiB, first half max %d KiB", lastQuarter, firstHalf)
	}
	if maxHWM > 512<<10 {
		t.Errorf("daemon VmHWM %d KiB exceeds 512 MiB", maxHWM)
	}
}

// linker adds hard links to a differ's files.
type linker struct {
	d     *differ
	links map[string][]string // file name → its extra link names
	seq   int
}

// linkOp performs one hard-link operation on f, on both sides.
func (l *linker) linkOp(f *diffFile) {
	d := l.d
	links := l.links[f.name]
	mp, rp := d.paths(f)
	switch p := d.r.IntN(100); {
	case p < 35 && len(links) < 3: // link
		l.seq++
		name := fmt.Sprintf("%s.l%d", f.name, l.seq)
		d.record("link %s %s", f.name, name)
		merr := unix.Link(mp, d.fs.Path(name))
		rerr := unix.Link(rp, filepath.Join(d.ref, name))
		if errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("link %s %s: mount %v, reference %v", f.name, name, merr, rerr)
		}
		if merr == nil {
			l.links[f.name] = append(links, name)
		}
	case p < 55 && len(links) > 0: // unlink a link (maybe while open through it)
		i := d.r.IntN(len(links))
		name := links[i]
		d.record("unlink %s", name)
		merr := unix.Unlink(d.fs.Path(name))
		rerr := unix.Unlink(filepath.Join(d.ref, name))
		if errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("unlink %s: mount %v, reference %v", name, merr, rerr)
		}
		l.links[f.name] = append(links[:i:i], links[i+1:]...)
	case p < 85 && len(links) > 0: // reopen through a link
		name := links[d.r.IntN(len(links))]
		flags := []int{unix.O_RDWR, unix.O_RDWR | unix.O_APPEND, unix.O_WRONLY, unix.O_RDONLY, unix.O_RDWR | unix.O_TRUNC}[d.r.IntN(5)]
		d.close(f)
		d.record("open %s through link %s flags %s", f.name, name, flagString(flags))
		mfd, merr := unix.Open(d.fs.Path(name), flags|unix.O_CLOEXEC, 0)
		rfd, rerr := unix.Open(filepath.Join(d.ref, name), flags|unix.O_CLOEXEC, 0)
		if errnoOf(merr) != errnoOf(rerr) || rerr != nil {
			d.mismatch("open through link %s: mount %v, reference %v", name, merr, rerr)
		}
		f.mnt, f.ref, f.flags = mfd, rfd, flags
	default: // link count and size through a link
		d.record("stat nlink %s", f.name)
		var ms, rs unix.Stat_t
		merr := unix.Stat(mp, &ms)
		rerr := unix.Stat(rp, &rs)
		if merr != nil || rerr != nil || ms.Nlink != rs.Nlink || ms.Size != rs.Size {
			d.mismatch("stat %s: mount nlink %d size %d (%v), reference nlink %d size %d (%v)",
				f.name, ms.Nlink, ms.Size, merr, rs.Nlink, rs.Size, rerr)
		}
		for _, name := range links {
			if err := unix.Stat(d.fs.Path(name), &ms); err != nil || ms.Size != rs.Size || ms.Nlink != rs.Nlink {
				d.mismatch("stat of link %s: nlink %d size %d (%v), want nlink %d size %d", name, ms.Nlink, ms.Size, err, rs.Nlink, rs.Size)
			}
		}
	}
}

// enduranceRun drives d for ops operations with hard links mixed in (4% of
// operations) and compares every file (and every link) at the end. sample
// is called every 500 operations.
func enduranceRun(d *differ, ops int, sample func(ops int)) {
	l := &linker{d: d, links: map[string][]string{}}
	for _, f := range d.files {
		d.open(f, unix.O_RDWR|unix.O_CREAT)
	}
	for d.step = 0; d.step < ops; d.step++ {
		f := d.files[d.r.IntN(len(d.files))]
		if d.r.IntN(100) < 4 {
			l.linkOp(f)
		} else {
			d.randomOp(f)
		}
		if d.t.Failed() {
			return
		}
		if d.step%500 == 0 {
			sample(d.step)
		}
	}
	sample(ops)
	d.closeAll()
	d.compareAll("at the end")
	for _, f := range d.files {
		for _, name := range l.links[f.name] {
			d.compare(&diffFile{name: name}, "through link "+name+" at the end")
		}
	}
}

// TestEndurance runs the differential test with hard links for 20,000
// operations (200,000 with KMSFS_ENDURANCE=1) on one daemon, sampling its
// memory, and compares everything again after a final remount.
// (TestDifferential covers a remount in the middle of a run.)
func TestEndurance(t *testing.T) {
	t.Parallel()
	seqOps, _ := enduranceOps(t)
	seed := testSeed(t)
	fs := newFS(t)
	d := &differ{t: t, fs: fs, ref: t.TempDir(), r: newRand(seed), cs: fs.ChunkSize, seed: seed}
	for i := range diffFiles {
		d.files = append(d.files, &diffFile{name: fmt.Sprintf("f%d", i), mnt: -1, ref: -1})
	}
	t.Cleanup(d.closeQuietly)
	var mem memCheck
	start := time.Now()
	pid := fs.DaemonPID()
	enduranceRun(d, seqOps, func(ops int) { mem.sample(t, pid, ops) })
	if t.Failed() {
		return
	}
	fs.Remount()
	d.compareAll("after the final remount")
	t.Logf("%d operations (hard links, mmap, truncate, reopen) in %v, zero mismatches (seed %d)",
		seqOps, time.Since(start).Round(time.Second), seed)
	mem.report(t, seqOps)
}

// TestEnduranceParallel runs four differential writers at once on one
// mount, each on its own files and reference directory, with hard links,
// 5,000 operations each (50,000 with KMSFS_ENDURANCE=1), sampling the
// daemon's memory; then remounts and compares everything.
func TestEnduranceParallel(t *testing.T) {
	t.Parallel()
	_, perWriter := enduranceOps(t)
	seed := testSeed(t)
	fs := newFS(t)
	pid := fs.DaemonPID()
	const writers = 4
	var mem memCheck
	var progress [writers]int
	var mu sync.Mutex
	var ds [writers]*differ
	refs := t.TempDir() // outlives the subtests: compared after the remount
	start := time.Now()
	// t.Run from several goroutines runs the subtests at once, whatever
	// -parallel says (t.Parallel subtests would wait for free slots).
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			t.Run(fmt.Sprintf("w%d", w), func(t *testing.T) {
				ref := filepath.Join(refs, fmt.Sprintf("w%d", w))
				if err := os.Mkdir(ref, 0o755); err != nil {
					t.Fatal(err)
				}
				d := &differ{t: t, fs: fs, ref: ref, r: newRand(seed + uint64(w)*7919), cs: fs.ChunkSize, seed: seed}
				for i := range diffFiles {
					d.files = append(d.files, &diffFile{name: fmt.Sprintf("w%d_f%d", w, i), mnt: -1, ref: -1})
				}
				t.Cleanup(d.closeQuietly)
				ds[w] = d
				enduranceRun(d, perWriter, func(ops int) {
					mu.Lock()
					progress[w] = ops
					total := 0
					for _, p := range progress {
						total += p
					}
					mu.Unlock()
					mem.sample(t, pid, total)
				})
			})
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	fs.Remount()
	for _, d := range ds {
		d.t = t
		d.compareAll("after the final remount")
	}
	t.Logf("%d writers × %d operations in %v, zero mismatches (seed %d)", writers, perWriter, time.Since(start).Round(time.Second), seed)
	mem.report(t, writers*perWriter)
}
