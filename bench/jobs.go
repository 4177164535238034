package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// A job is one measurement, run once per target per round.
type job struct {
	Name string `json:"name"`
	// Unit of Value: "MB/s" (10^6 bytes), "IOPS", "files/s" or
	// "entries/s". Higher is better.
	Unit string `json:"unit"`
	// What says in a few words what the job measures.
	What string `json:"what"`
	// fio arguments (besides the common ones) for fio jobs; nil for the
	// metadata and listing jobs, which this process runs.
	fio func(s settings) []string
	// metric picks the job's value from fio's JSON output.
	metric func(r fioJob) float64
	// layout names the files the job expects to exist before it runs.
	layout []string
	// listing marks the listing jobs (listing.go): their tree is built
	// once per target before the first round.
	listing bool
	// writers, when not zero, makes a contention job: fio runs that many
	// jobs at once, each with the fio arguments, all on the one file
	// contentionFile, the first through the target's Dir and the others
	// alternately through Dir2 and Dir (contentionDirs); the value is
	// metric summed over them. After fio the file is read back through
	// every mount used.
	writers int
}

// Files laid out once per target before the first round, so that reads
// find data and random writes overwrite existing chunks.
const (
	seqFile   = "seq.0.0"
	randFile0 = "rand.0.0"
	randFile1 = "rand.1.0"
	seqWFile  = "seqw.0.0" // written by seqwrite, removed after each run
	// contentionFile is the one file the contention job's writers share:
	// the first random job's laid-out file, overwritten by them all.
	contentionFile = randFile0
	metaDir        = "meta"
	randFormat     = "rand.$jobnum.$filenum"
)

var jobs = []job{
	{
		Name: "seqwrite", Unit: "MB/s",
		What: "sequential write, 1 MiB blocks, one new file of BENCH_SIZE, fsync at the end (counted)",
		fio: func(s settings) []string {
			return []string{"--rw=write", "--bs=1M", "--size=" + strconv.FormatInt(s.Size, 10),
				"--end_fsync=1", "--filename_format=seqw.$jobnum.$filenum"}
		},
		metric: func(r fioJob) float64 { return r.Write.BWBytes / 1e6 },
	},
	{
		Name: "seqread", Unit: "MB/s",
		What: "sequential read, 1 MiB blocks, of a file laid out beforehand, caches dropped (cold)",
		fio: func(s settings) []string {
			return []string{"--rw=read", "--bs=1M", "--size=" + strconv.FormatInt(s.Size, 10),
				"--filename_format=seq.$jobnum.$filenum"}
		},
		metric: func(r fioJob) float64 { return r.Read.BWBytes / 1e6 },
		layout: []string{seqFile},
	},
	randJob("randwrite1", "randwrite", 1, "random 4 KiB writes, 1 job, for BENCH_RUNTIME, fsync at the end"),
	randJob("randwrite2", "randwrite", 2, "random 4 KiB writes, 2 jobs on 2 files, for BENCH_RUNTIME, fsync at the end"),
	randJob("randread1", "randread", 1, "random 4 KiB reads, 1 job, cold caches, for BENCH_RUNTIME"),
	randJob("randread2", "randread", 2, "random 4 KiB reads, 2 jobs on 2 files, cold caches, for BENCH_RUNTIME"),
	randJob("randrw", "randrw", 1, "random 4 KiB, 70% reads 30% writes, 1 job, for BENCH_RUNTIME, fsync at the end; read+write IOPS"),
	{
		Name: "randwrite-2m", Unit: "IOPS", writers: 2,
		What: "random 4 KiB writes to ONE file by 2 writers at once, one per mount on kmsfs-shared (two mounts of one tree), " +
			"both on the one mount elsewhere, for BENCH_RUNTIME, fsync at the end; IOPS of both summed",
		fio: func(s settings) []string {
			// The file is named in each writer's section (contentionArgs).
			return []string{"--rw=randwrite", "--bs=4k", "--size=" + strconv.FormatInt(s.Size, 10), "--numjobs=1",
				"--time_based", "--runtime=" + strconv.Itoa(int(s.Runtime/time.Second)) + "s",
				"--randrepeat=0", "--end_fsync=1"}
		},
		metric: func(r fioJob) float64 { return r.Write.IOPS },
		layout: []string{contentionFile},
	},
	{
		Name: "metadata", Unit: "files/s",
		What: "create BENCH_FILES files of 4 KiB (syncfs counted), stat them (caches dropped first), delete them (syncfs counted); files / total time",
	},
	{
		Name: "lsl", Unit: "entries/s", listing: true,
		What: "ls -l of a directory of BENCH_LS_FILES empty files, cold caches; entries / time",
	},
	{
		Name: "find", Unit: "entries/s", listing: true,
		What: "find over BENCH_TREE_FILES empty files in leaf directories of 100, 3 levels deep, cold caches; files and directories / time",
	},
}

// randJob is a time-limited 4 KiB random job on numjobs laid-out files.
func randJob(name, rw string, numjobs int, what string) job {
	j := job{
		Name: name, Unit: "IOPS", What: what,
		fio: func(s settings) []string {
			a := []string{"--rw=" + rw, "--bs=4k", "--size=" + strconv.FormatInt(s.Size, 10),
				"--numjobs=" + strconv.Itoa(numjobs), "--filename_format=" + randFormat,
				"--time_based", "--runtime=" + strconv.Itoa(int(s.Runtime/time.Second)) + "s",
				"--randrepeat=0"}
			if rw != "randread" {
				a = append(a, "--end_fsync=1")
			}
			if rw == "randrw" {
				a = append(a, "--rwmixread=70")
			}
			return a
		},
		layout: []string{randFile0},
	}
	switch rw {
	case "randwrite":
		j.metric = func(r fioJob) float64 { return r.Write.IOPS }
	case "randread":
		j.metric = func(r fioJob) float64 { return r.Read.IOPS }
	default:
		j.metric = func(r fioJob) float64 { return r.Read.IOPS + r.Write.IOPS }
	}
	if numjobs == 2 {
		j.layout = append(j.layout, randFile1)
	}
	return j
}

func jobNames() []string {
	var names []string
	for _, j := range jobs {
		names = append(names, j.Name)
	}
	return names
}

func jobByName(name string) job {
	for _, j := range jobs {
		if j.Name == name {
			return j
		}
	}
	panic("bench: internal error: unknown job " + name)
}

// fioCommon are the arguments every fio run gets: synchronous pread/pwrite
// (what applications do and what a FUSE daemon sees), threads rather than
// processes (one process to stop on Ctrl-C), no fallocate (not every FUSE
// filesystem has it), one summary for all jobs.
var fioCommon = []string{"--ioengine=psync", "--thread", "--group_reporting",
	"--fallocate=none", "--output-format=json"}

// fioJob is the part of fio's JSON output the jobs read.
type fioJob struct {
	Error int    `json:"error"`
	Read  fioDir `json:"read"`
	Write fioDir `json:"write"`
	// JobRuntime is in milliseconds; it includes the end_fsync.
	JobRuntime float64 `json:"job_runtime"`
	// Options are the options of the job's own section (not the global
	// ones), as fio parsed them.
	Options map[string]string `json:"job options"`
}

type fioDir struct {
	IOBytes  float64 `json:"io_bytes"`
	BWBytes  float64 `json:"bw_bytes"`
	IOPS     float64 `json:"iops"`
	TotalIOs float64 `json:"total_ios"`
}

// runFio runs fio with args in dir and returns its (group) result.
func runFio(ctx context.Context, dir string, args []string) (fioJob, error) {
	all := append([]string{"--name=bench", "--directory=" + dir}, fioCommon...)
	all = append(all, args...)
	res, err := execFio(ctx, all, 1)
	if err != nil {
		return fioJob{}, err
	}
	return res[0], nil
}

// contentionDirs are the directories of the contention job's n writers on
// t: on a target with a second mount (Dir2) they alternate between the two
// mounts, starting with Dir; elsewhere they all run in Dir.
func contentionDirs(t *target, n int) []string {
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.Dir
		if i%2 == 1 && t.Dir2 != "" {
			dirs[i] = t.Dir2
		}
	}
	return dirs
}

// contentionArgs is the fio command line of a contention run: the common
// arguments but group reporting and the job's args as global options,
// then one job section per path, so that fio runs the writers at once and
// reports each. Each section names its file by its absolute path: fio
// resolves a global --filename against its working directory, whatever a
// section's --directory says.
func contentionArgs(paths, args []string) []string {
	var all []string
	for _, a := range fioCommon {
		if a != "--group_reporting" {
			all = append(all, a)
		}
	}
	all = append(all, args...)
	for i, p := range paths {
		all = append(all, "--name=writer"+strconv.Itoa(i+1), "--filename="+p)
	}
	return all
}

// contentionPaths are the paths of contentionFile through dirs.
func contentionPaths(dirs []string) []string {
	var paths []string
	for _, d := range dirs {
		paths = append(paths, filepath.Join(d, contentionFile))
	}
	return paths
}

// runContention runs job j's writers at once on paths (contentionArgs)
// and returns their summed value and fio runtimes (sumWriters).
func runContention(ctx context.Context, j job, s settings, paths []string) (value, runtime float64, err error) {
	res, err := execFio(ctx, contentionArgs(paths, j.fio(s)), len(paths))
	if err != nil {
		return 0, 0, err
	}
	return sumWriters(res, paths, j.metric)
}

// sumWriters sums metric and the job runtimes (seconds) over the writers'
// results, and fails if a writer did no I/O (a writer starved to nothing
// is a failure, not a slow run) or fio's record of its options names
// another file than paths[i].
func sumWriters(res []fioJob, paths []string, metric func(fioJob) float64) (value, runtime float64, err error) {
	if len(res) != len(paths) {
		return 0, 0, fmt.Errorf("%d writer results for %d writers", len(res), len(paths))
	}
	for i, r := range res {
		if got := r.Options["filename"]; got != paths[i] {
			return 0, 0, fmt.Errorf("writer %d of %d wrote %q, want %q", i+1, len(res), got, paths[i])
		}
		if r.Read.TotalIOs+r.Write.TotalIOs == 0 {
			return 0, 0, fmt.Errorf("writer %d of %d did no I/O", i+1, len(res))
		}
		value += metric(r)
		runtime += r.JobRuntime / 1e3
	}
	return value, runtime, nil
}

// modifiedSince fails unless every path was modified at or after t: the
// contention job's writers wrote the file they were meant to (through each
// mount, the same file).
func modifiedSince(paths []string, t time.Time) error {
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("after the writers: %w", err)
		}
		if st.ModTime().Before(t) {
			return fmt.Errorf("after the writers: %s last modified %s, before the run started (%s)",
				p, st.ModTime().Format(time.RFC3339Nano), t.Format(time.RFC3339Nano))
		}
	}
	return nil
}

// readBack reads the file at each path to its end (in 1 MiB blocks,
// together) and fails on a read error (an EIO from a chunk that does not
// authenticate), a size other than size, or paths whose contents differ:
// the contention job's check that the writers left a readable file that
// every mount sees alike.
func readBack(paths []string, size int64) error {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("read back: %w", err)
		}
		files = append(files, f)
	}
	bufs := make([][]byte, len(files))
	for i := range bufs {
		bufs[i] = make([]byte, 1<<20)
	}
	var off int64
	for {
		n := -1
		for i, f := range files {
			k, err := io.ReadFull(f, bufs[i])
			if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
				return fmt.Errorf("read back %s at offset %d: %w", paths[i], off, err)
			}
			if n >= 0 && (k != n || !bytes.Equal(bufs[i][:k], bufs[0][:n])) {
				return fmt.Errorf("read back: %s and %s differ in the 1 MiB block at offset %d", paths[0], paths[i], off)
			}
			n = k
		}
		off += int64(n)
		if n < len(bufs[0]) {
			break
		}
	}
	if off != size {
		return fmt.Errorf("read back %s: %d bytes, want %d", paths[0], off, size)
	}
	return nil
}

// execFio runs fio with the whole argument list all and returns the
// results of its want job groups.
func execFio(ctx context.Context, all []string, want int) ([]fioJob, error) {
	cmd := exec.CommandContext(ctx, "fio", all...)
	// Stop fio gently so that it closes its files before a mount is torn down.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 15 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("fio %v: %w: %s", all, err, lastLine(stderr.String()))
	}
	out := stdout.Bytes()
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:] // fio may print notes before the JSON
	}
	var res struct {
		Jobs []fioJob `json:"jobs"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("fio %v: parse output: %w", all, err)
	}
	if len(res.Jobs) != want {
		return nil, fmt.Errorf("fio %v: %d job results, want %d", all, len(res.Jobs), want)
	}
	for _, j := range res.Jobs {
		if j.Error != 0 {
			return nil, fmt.Errorf("fio %v: job error %d (%s): %s", all, j.Error,
				syscall.Errno(j.Error), lastLine(stderr.String()))
		}
	}
	return res.Jobs, nil
}

// layoutFiles writes the named files (BENCH_SIZE each, 1 MiB blocks,
// fsync) that are missing in dir, through the filesystem under test.
func layoutFiles(ctx context.Context, dir string, names []string, size int64) error {
	for _, name := range names {
		if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.Size() == size {
			continue
		}
		_, err := runFio(ctx, dir, []string{"--rw=write", "--bs=1M", "--size=" + strconv.FormatInt(size, 10),
			"--end_fsync=1", "--filename=" + name})
		if err != nil {
			return fmt.Errorf("lay out %s: %w", name, err)
		}
	}
	return nil
}

// metaResult is the metadata job's measurement.
type metaResult struct {
	Create time.Duration `json:"create_ns"`
	Stat   time.Duration `json:"stat_ns"`
	Delete time.Duration `json:"delete_ns"`
}

// runMetadata creates n files of size bytes in a new directory under dir,
// makes them durable (syncfs), drops the caches, stats each one, deletes
// them all and makes that durable too. The cache drop is not timed; it
// makes the stats real lookups rather than dentry cache hits.
func runMetadata(ctx context.Context, dir string, n, size int, drop func() error) (metaResult, error) {
	var res metaResult
	d := filepath.Join(dir, metaDir)
	_ = os.RemoveAll(d)
	if err := os.Mkdir(d, 0o755); err != nil {
		return res, err
	}
	defer os.RemoveAll(d)
	data := bytes.Repeat([]byte{0x5a}, size)
	name := func(i int) string { return filepath.Join(d, "f"+strconv.Itoa(i)) }

	start := time.Now()
	for i := 0; i < n; i++ {
		if i%256 == 0 && ctx.Err() != nil {
			return res, ctx.Err()
		}
		if err := os.WriteFile(name(i), data, 0o644); err != nil {
			return res, fmt.Errorf("metadata: create: %w", err)
		}
	}
	if err := syncfs(d); err != nil {
		return res, err
	}
	res.Create = time.Since(start)

	if err := drop(); err != nil {
		return res, err
	}
	start = time.Now()
	for i := 0; i < n; i++ {
		if i%256 == 0 && ctx.Err() != nil {
			return res, ctx.Err()
		}
		st, err := os.Stat(name(i))
		if err != nil {
			return res, fmt.Errorf("metadata: stat: %w", err)
		}
		if st.Size() != int64(size) {
			return res, fmt.Errorf("metadata: %s has %d bytes, want %d", name(i), st.Size(), size)
		}
	}
	res.Stat = time.Since(start)

	start = time.Now()
	for i := 0; i < n; i++ {
		if i%256 == 0 && ctx.Err() != nil {
			return res, ctx.Err()
		}
		if err := os.Remove(name(i)); err != nil {
			return res, fmt.Errorf("metadata: delete: %w", err)
		}
	}
	if err := syncfs(d); err != nil {
		return res, err
	}
	res.Delete = time.Since(start)
	return res, nil
}

// syncfs flushes the filesystem holding path.
func syncfs(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syncfsFd(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", path, err)
	}
	return nil
}

func lastLine(s string) string {
	s = string(bytes.TrimSpace([]byte(s)))
	if i := bytes.LastIndexByte([]byte(s), '\n'); i >= 0 {
		s = s[i+1:]
	}
	if s == "" {
		return "no error output"
	}
	return s
}

var errSkip = errors.New("skipped")
