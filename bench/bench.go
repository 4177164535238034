package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// run is one measurement: one job on one target in one round.
type runResult struct {
	Round  int     `json:"round"`
	Job    string  `json:"job"`
	Target string  `json:"target"`
	Order  int     `json:"order"` // position within the round's target order
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	// Elapsed is the wall time of the run, setup of fio included.
	Elapsed float64 `json:"elapsed_s"`
	// FioRuntime is the time fio measured over, end_fsync included
	// (summed over the jobs of a 2-job run).
	FioRuntime float64 `json:"fio_runtime_s,omitempty"`
	// Mounts is how many mounts the contention job's writers used (2 on
	// kmsfs-shared, 1 elsewhere); 0 for the other jobs.
	Mounts int `json:"mounts,omitempty"`
	// DaemonCPU is the user+system CPU time the FUSE daemon spent in the run
	// (0 for plain).
	DaemonCPU float64 `json:"daemon_cpu_s"`
	// DaemonPeakRSS is the daemon's peak resident set (VmHWM, MiB) from
	// its start to the end of this run (0 for plain).
	DaemonPeakRSS float64     `json:"daemon_peak_rss_mib"`
	Metadata      *metaResult `json:"metadata,omitempty"`
	Error         string      `json:"error,omitempty"`
}

// report is the JSON written to bench/results/<time>.json.
type report struct {
	Started  time.Time   `json:"started"`
	Finished time.Time   `json:"finished"`
	Duration float64     `json:"duration_s"`
	Machine  machine     `json:"machine"`
	Settings settings    `json:"settings"`
	Targets  []*target   `json:"targets"`
	Jobs     []job       `json:"jobs"`
	Runs     []runResult `json:"runs"`
	// Medians[job][target] over the rounds.
	Medians map[string]map[string]float64 `json:"medians"`
	// Ratios[job]["a/b"] is the median over rounds of a's value / b's value
	// in the same round.
	Ratios map[string]map[string]float64 `json:"ratios"`
	// DaemonCPU[job][target] is the median daemon CPU seconds per run.
	DaemonCPU map[string]map[string]float64 `json:"daemon_cpu_s"`
	// PeakRSS[target] is the daemon's peak resident set over the whole
	// benchmark (VmHWM, MiB).
	PeakRSS map[string]float64 `json:"daemon_peak_rss_mib"`
}

// benchmark runs everything s asks for and writes the results.
func benchmark(ctx context.Context, s settings) (err error) {
	rep := &report{Started: time.Now().UTC(), Settings: s}
	for _, name := range s.Jobs {
		rep.Jobs = append(rep.Jobs, jobByName(name))
	}
	if _, err := exec.LookPath("fio"); err != nil {
		return errors.New("fio is not installed (make bench installs it as root: bash bench/deps.sh)")
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.WorkDir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(s.WorkDir, "kmsfs-bench-")
	if err != nil {
		return err
	}
	e := env{work: work, bin: filepath.Join(work, "bin"), logDir: filepath.Join(work, "logs")}
	for _, d := range []string{e.bin, e.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	rep.Machine = describeMachine(ctx, root, work)
	dropper := newCacheDropper()
	rep.Machine.CachesDropped = dropper.ok

	printf("bench: work directory %s\n", work)
	if !dropper.ok {
		printf("bench: WARNING: not root, caches are not dropped: reads may come from the page cache\n")
	}
	if rep.Machine.LoadAvg1 >= 1.5 {
		printf("bench: WARNING: load average %.2f: other work on this machine makes results noisy\n", rep.Machine.LoadAvg1)
	}
	if err := checkSpace(work, s); err != nil {
		return err
	}
	e.buildErr = build(ctx, root, e.bin, s.Targets)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if v, err := runCmd(ctx, nil, filepath.Join(e.bin, "kmsfs"), "version"); err == nil {
		rep.Machine.KmsfsVersion = strings.TrimPrefix(v, "kmsfs ")
	}

	// Every target is torn down, whatever happens; then nothing of ours
	// may stay mounted.
	defer func() {
		for i := len(rep.Targets) - 1; i >= 0; i-- {
			if terr := rep.Targets[i].teardown(); terr != nil {
				printf("bench: tear down %s: %v\n", rep.Targets[i].Name, terr)
				if err == nil {
					err = terr
				}
			}
		}
		if left := leftoverMounts(work); len(left) > 0 {
			printf("bench: ERROR: still mounted: %s\n", strings.Join(left, ", "))
			if err == nil {
				err = fmt.Errorf("mounts left behind: %s", strings.Join(left, ", "))
			}
			return
		}
		if !s.Keep {
			_ = os.RemoveAll(work)
		} else {
			printf("bench: kept %s\n", work)
		}
	}()

	var active []*target
	for _, name := range s.Targets {
		t := &target{Name: name}
		rep.Targets = append(rep.Targets, t)
		start := time.Now()
		err := setupTarget(ctx, e, t)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			// One line: a tool's output may have several.
			t.Status, t.Note = "skipped", strings.Join(strings.Fields(strings.TrimPrefix(err.Error(), errSkip.Error()+": ")), " ")
			printf("bench: target %-16s SKIPPED: %s\n", name, t.Note)
			if terr := t.teardown(); terr != nil {
				return fmt.Errorf("tear down %s after failed setup: %w", name, terr)
			}
			continue
		}
		t.Status = "ok"
		printf("bench: target %-16s ready in %.1fs at %s %s\n", name, time.Since(start).Seconds(), t.Dir, t.Note)
		active = append(active, t)
	}
	if len(active) == 0 {
		return errors.New("no target could be set up")
	}

	// Lay out the files the jobs read and overwrite.
	var layout []string
	for _, j := range rep.Jobs {
		for _, f := range j.layout {
			if !contains(layout, f) {
				layout = append(layout, f)
			}
		}
	}
	if len(layout) > 0 {
		for _, t := range active {
			start := time.Now()
			if err := layoutFiles(ctx, t.Dir, layout, s.Size); err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			}
			printf("bench: laid out %s on %s in %.1fs\n", strings.Join(layout, ", "), t.Name, time.Since(start).Seconds())
		}
	}

	// Build the listing jobs' trees, once per target: they are only read.
	for _, j := range rep.Jobs {
		if !j.listing {
			continue
		}
		for _, t := range active {
			took, err := prepareListing(ctx, j.Name, t.Dir, s)
			if err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			}
			if t.Prepared == nil {
				t.Prepared = map[string]float64{}
			}
			t.Prepared[j.Name] = took.Seconds()
			printf("bench: built the %s tree (%s) on %s in %.1fs\n", j.Name, describeTree(listingTree(j.Name, s)),
				t.Name, took.Seconds())
		}
	}

	total := s.Rounds * len(rep.Jobs) * len(active)
	n := 0
	runStart := time.Now()
	for r := 0; r < s.Rounds; r++ {
		order := rotate(active, r)
		for _, j := range rep.Jobs {
			for pos, t := range order {
				n++
				res, err := runOne(ctx, s, j, t, dropper)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				res.Round, res.Order = r+1, pos
				if err != nil {
					res.Error = err.Error()
					printf("bench: [%d/%d] round %d %-12s %-16s FAILED: %v\n", n, total, r+1, j.Name, t.Name, err)
				} else {
					printf("bench: [%d/%d] round %d %-12s %-16s %10.1f %-9s daemon CPU %5.2fs  (%.1fs)\n",
						n, total, r+1, j.Name, t.Name, res.Value, j.Unit, res.DaemonCPU, res.Elapsed)
				}
				rep.Runs = append(rep.Runs, res)
			}
		}
		if r == 0 && s.Rounds > 1 {
			per := time.Since(runStart)
			printf("bench: one round took %s; about %s to go\n", per.Round(time.Second),
				(per * time.Duration(s.Rounds-1)).Round(time.Second))
		}
	}
	rep.Finished = time.Now().UTC()
	rep.Duration = rep.Finished.Sub(rep.Started).Seconds()
	rep.Machine.LoadAvgEnd = loadAvg()
	summarise(rep)
	return writeResults(ctx, rep, s.Results)
}

// runOne drops the caches and runs job j on target t once.
func runOne(ctx context.Context, s settings, j job, t *target, d *cacheDropper) (runResult, error) {
	res := runResult{Job: j.Name, Target: t.Name, Unit: j.Unit}
	if j.Name == "seqwrite" {
		_ = os.Remove(filepath.Join(t.Dir, seqWFile))
		defer os.Remove(filepath.Join(t.Dir, seqWFile))
	}
	if err := d.drop(); err != nil {
		return res, err
	}
	cpu0 := cpuSeconds(t.pids)
	start := time.Now()
	switch {
	case j.listing:
		n, err := runListing(ctx, j.Name, t.Dir, listingTree(j.Name, s))
		if err != nil {
			return res, err
		}
		res.Value = float64(n) / time.Since(start).Seconds()
	case j.fio == nil:
		m, err := runMetadata(ctx, t.Dir, s.MetaFiles, s.MetaSize, d.drop)
		if err != nil {
			return res, err
		}
		res.Metadata = &m
		res.Value = float64(s.MetaFiles) / (m.Create + m.Stat + m.Delete).Seconds()
	case j.writers > 0:
		dirs := contentionDirs(t, j.writers)
		v, rt, err := runContention(ctx, j, s, contentionPaths(dirs))
		if err != nil {
			return res, err
		}
		res.Value, res.FioRuntime = v, rt
		res.Mounts = len(uniq(dirs))
	default:
		r, err := runFio(ctx, t.Dir, j.fio(s))
		if err != nil {
			return res, err
		}
		res.Value = j.metric(r)
		res.FioRuntime = r.JobRuntime / 1e3
	}
	res.Elapsed = time.Since(start).Seconds()
	res.DaemonCPU = cpuSeconds(t.pids) - cpu0
	res.DaemonPeakRSS = peakRSS(t.pids)
	if j.writers > 0 {
		// Not timed: the file the writers shared must have been written in
		// the run and must read back whole through every mount they used,
		// alike, from cold caches.
		if err := d.drop(); err != nil {
			return res, err
		}
		paths := contentionPaths(uniq(contentionDirs(t, j.writers)))
		if err := modifiedSince(paths, start); err != nil {
			return res, err
		}
		if err := readBack(paths, s.Size); err != nil {
			return res, err
		}
	}
	return res, nil
}

// uniq returns xs without repeats, in order of first appearance.
func uniq(xs []string) []string {
	var out []string
	for _, x := range xs {
		if !contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// rotate returns ts starting at index r mod len(ts).
func rotate(ts []*target, r int) []*target {
	k := r % len(ts)
	return append(append([]*target{}, ts[k:]...), ts[:k]...)
}

// cacheDropper empties the page, dentry and inode caches (root only).
type cacheDropper struct{ ok bool }

func newCacheDropper() *cacheDropper {
	f, err := os.OpenFile("/proc/sys/vm/drop_caches", os.O_WRONLY, 0)
	if err != nil {
		return &cacheDropper{}
	}
	f.Close()
	return &cacheDropper{ok: true}
}

// drop writes dirty pages back (sync) and drops clean caches.
func (d *cacheDropper) drop() error {
	syscall.Sync()
	if !d.ok {
		return nil
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// build compiles the binaries the selected targets need (kmsfs,
// fuseceiling) from the work tree into bin. A binary that does not build
// skips its targets rather than the whole run.
func build(ctx context.Context, root, bin string, targets []string) map[string]error {
	need := map[string]bool{}
	for _, t := range targets {
		switch t {
		case "ceiling":
			need["fuseceiling"] = true
		}
		if contains(kmsfsTargets, t) {
			need["kmsfs"] = true
		}
	}
	errs := map[string]error{}
	for _, p := range []string{"kmsfs", "fuseceiling"} {
		if !need[p] {
			continue
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, p), "./cmd/"+p)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			errs[p] = fmt.Errorf("build ./cmd/%s: %w: %s", p, err, strings.Join(strings.Fields(string(out)), " "))
		}
	}
	return errs
}

// repoRoot finds the module root from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "cmd", "fuseceiling")); err == nil {
				return d, nil
			}
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("run from the kmsfs repository (no go.mod with cmd/fuseceiling above %s)", dir)
		}
	}
}

// checkSpace refuses to start when the work directory's filesystem cannot
// hold the laid-out files of every target plus the sequential write file,
// or the listing jobs' trees: up to 8 KiB and one inode per empty file (a
// kmsfs file's header block and its key xattr's block on ext4).
func checkSpace(work string, s settings) error {
	var st unix.Statfs_t
	if err := unix.Statfs(work, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", work, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	need := int64(len(s.Targets)) * 4 * s.Size * 11 / 10
	var files int64
	for _, name := range s.Jobs {
		if jobByName(name).listing {
			files += int64(listingTree(name, s).entries())
		}
	}
	files *= int64(len(s.Targets))
	need += files * 8 << 10
	if free < need {
		return fmt.Errorf("%s has %d MiB free, the run needs about %d MiB (lower BENCH_SIZE, BENCH_TREE_FILES or set BENCH_DIR)",
			work, free>>20, need>>20)
	}
	if st.Files > 0 && int64(st.Ffree) < files*11/10 {
		return fmt.Errorf("%s has %d free inodes, the listing jobs need about %d (lower BENCH_TREE_FILES or set BENCH_DIR)",
			work, st.Ffree, files*11/10)
	}
	return nil
}

// leftoverMounts lists mounts under work.
func leftoverMounts(work string) []string {
	var out []string
	for _, m := range mountPoints() {
		if strings.HasPrefix(m.point, work+"/") {
			out = append(out, m.point)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// printf writes progress to stderr, keeping stdout for the table.
func printf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format, args...)
}

func syncfsFd(fd int) error { return unix.Syncfs(fd) }
