// Command bench runs fio jobs, a metadata job and two listing jobs (ls -l,
// find) side by side on several filesystems — the plain backing directory,
// the go-fuse ceiling (cmd/fuseceiling), gocryptfs, and kmsfs with
// encrypted and with plaintext names, on the embedded and on the AWS key
// service, and in shared mode with two mounts of one tree — and reports
// medians and paired ratios as a table, a JSON file and a PNG chart. See
// bench/README.md.
//
//	go run ./bench          # the full benchmark (make bench)
//	go run ./bench -quick   # one short round, a smoke test (make bench-quick)
//
// Runs are interleaved: every round runs each job on every target back to
// back, the first target rotating from round to round, with the page cache
// dropped before each run. Only ratios of runs made close together mean
// much on a shared or virtual machine, so each ratio is the median of the
// per-round ratios.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// settings is what one invocation runs; every field can be set from the
// environment (BENCH_*).
type settings struct {
	Quick     bool          `json:"quick"`
	Targets   []string      `json:"targets"`
	Jobs      []string      `json:"jobs"`
	Rounds    int           `json:"rounds"`
	Size      int64         `json:"size_bytes"`     // sequential file size and each random job's file
	Runtime   time.Duration `json:"runtime_ns"`     // time limit of each random job
	MetaFiles int           `json:"metadata_files"` // files the metadata job creates, stats and deletes
	MetaSize  int           `json:"metadata_file_bytes"`
	LsFiles   int           `json:"lsl_files"`  // files in the lsl job's directory
	TreeFiles int           `json:"find_files"` // files in the find job's tree
	WorkDir   string        `json:"work_dir"`   // parent of the temporary backing directories
	Results   string        `json:"-"`
	Keep      bool          `json:"-"`
}

func main() {
	os.Exit(run())
}

func run() int {
	quick := flag.Bool("quick", false, "one short round with small sizes (smoke test)")
	keep := flag.Bool("keep", false, "keep the work directory (backing trees, logs) after the run")
	du := flag.Bool("du", false, "measure disk space (du) with and without compression instead (du.go)")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	s, err := loadSettings(*quick, *keep)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if *du {
		if err := diskSpace(ctx, s); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}
	if err := benchmark(ctx, s); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		if errors.Is(err, context.Canceled) {
			return 130
		}
		return 1
	}
	return 0
}

const usage = `Usage: go run ./bench [-quick] [-keep] [-du]

Runs fio, a metadata job and listing jobs (ls -l, find) on plain, ceiling,
gocryptfs, kmsfs (encrypted names), kmsfs-plainnames, kmsfs-aws, kmsfs-zstd
and kmsfs-shared (init --shared, two mounts of one tree), interleaved, with
caches dropped before each run, and prints medians and paired ratios; writes
bench/results/<time>.json, .txt, .md and .png.

Environment (defaults for the full run; -quick in brackets):
  BENCH_TARGETS   comma list of targets (plain,ceiling,gocryptfs,kmsfs,kmsfs-plainnames,
                  kmsfs-aws,kmsfs-zstd,kmsfs-shared; also kmsfs-slot: key records
                  without the xattr)
  BENCH_JOBS      comma list of jobs (all: ` + "seqwrite,seqread,randwrite1,randwrite2,randread1,randread2,randrw,randwrite-2m,metadata,lsl,find" + `)
  BENCH_ROUNDS    rounds (5) [1]
  BENCH_SIZE      sequential file size and random-job file size (1GiB) [64MiB]
  BENCH_RUNTIME   time limit of each random job (10s) [3s]
  BENCH_FILES     files of the metadata job (5000) [500]
  BENCH_LS_FILES  files in the directory the lsl job lists (10000) [1000]
  BENCH_TREE_FILES files in the tree the find job walks (100000) [10000]
  BENCH_DIR       where the temporary backing directories go (/var/tmp)
  BENCH_RESULTS   where results are written (bench/results)

Flags:
`

func loadSettings(quick, keep bool) (settings, error) {
	s := settings{
		Quick:     quick,
		Targets:   defaultTargets,
		Jobs:      jobNames(),
		Rounds:    5,
		Size:      1 << 30,
		Runtime:   10 * time.Second,
		MetaFiles: 5000,
		MetaSize:  4096,
		LsFiles:   10000,
		TreeFiles: 100000,
		WorkDir:   "/var/tmp",
		Results:   filepath.Join("bench", "results"),
		Keep:      keep,
	}
	if quick {
		s.Rounds, s.Size, s.Runtime, s.MetaFiles = 1, 64<<20, 3*time.Second, 500
		s.LsFiles, s.TreeFiles = 1000, 10000
	}
	var err error
	if v := os.Getenv("BENCH_TARGETS"); v != "" {
		if s.Targets, err = pickList(v, allTargets, "target"); err != nil {
			return s, err
		}
	}
	if v := os.Getenv("BENCH_JOBS"); v != "" {
		if s.Jobs, err = pickList(v, jobNames(), "job"); err != nil {
			return s, err
		}
	}
	if v := os.Getenv("BENCH_ROUNDS"); v != "" {
		if s.Rounds, err = strconv.Atoi(v); err != nil || s.Rounds < 1 {
			return s, fmt.Errorf("BENCH_ROUNDS=%q: want a positive integer", v)
		}
	}
	if v := os.Getenv("BENCH_SIZE"); v != "" {
		if s.Size, err = parseSize(v); err != nil || s.Size < 1<<20 {
			return s, fmt.Errorf("BENCH_SIZE=%q: want a size of at least 1MiB, e.g. 512M or 1GiB", v)
		}
	}
	if v := os.Getenv("BENCH_RUNTIME"); v != "" {
		if s.Runtime, err = time.ParseDuration(v); err != nil || s.Runtime < time.Second {
			return s, fmt.Errorf("BENCH_RUNTIME=%q: want a duration of at least 1s, e.g. 15s", v)
		}
	}
	for _, c := range []struct {
		env string
		n   *int
	}{{"BENCH_FILES", &s.MetaFiles}, {"BENCH_LS_FILES", &s.LsFiles}, {"BENCH_TREE_FILES", &s.TreeFiles}} {
		if v := os.Getenv(c.env); v != "" {
			if *c.n, err = strconv.Atoi(v); err != nil || *c.n < 1 {
				return s, fmt.Errorf("%s=%q: want a positive integer", c.env, v)
			}
		}
	}
	if v := os.Getenv("BENCH_DIR"); v != "" {
		s.WorkDir = v
	}
	if v := os.Getenv("BENCH_RESULTS"); v != "" {
		s.Results = v
	}
	return s, nil
}

// pickList parses a comma list, keeping the canonical order of known.
func pickList(v string, known []string, what string) ([]string, error) {
	want := map[string]bool{}
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		ok := false
		for _, k := range known {
			ok = ok || k == name
		}
		if !ok {
			return nil, fmt.Errorf("unknown %s %q: want some of %s", what, name, strings.Join(known, ","))
		}
		want[name] = true
	}
	var out []string
	for _, k := range known {
		if want[k] {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s selected", what)
	}
	return out, nil
}

// parseSize reads "1GiB", "512M", "64m", "1048576" (binary units).
func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(strings.ToLower(v))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "ib"), "b")
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		case 't':
			mult = 1 << 40
		}
		if mult != 1 {
			s = s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", v)
	}
	return n * mult, nil
}
