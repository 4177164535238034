package main

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

func TestPairedRatioUsesRoundsWithBothValues(t *testing.T) {
	a := map[int]float64{1: 10, 2: 30, 3: 50, 4: 7}
	b := map[int]float64{1: 10, 2: 10, 3: 100}
	// Rounds 1..3: ratios 1, 3, 0.5; round 4 has no partner.
	if got := pairedRatio(a, b); got != 1 {
		t.Errorf("pairedRatio = %v, want 1", got)
	}
}

func TestRotateStartsAtRound(t *testing.T) {
	ts := []*target{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	for r, want := range []string{"abc", "bca", "cab", "abc"} {
		var got strings.Builder
		for _, x := range rotate(ts, r) {
			got.WriteString(x.Name)
		}
		if got.String() != want {
			t.Errorf("round %d: order %s, want %s", r, got.String(), want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "512M": 512 << 20, "64m": 64 << 20, "4k": 4096, "1048576": 1 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1G", "0"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
}

func TestLoadSettingsFromEnvironment(t *testing.T) {
	t.Setenv("BENCH_TARGETS", "kmsfs, plain")
	t.Setenv("BENCH_JOBS", "metadata,seqread")
	t.Setenv("BENCH_ROUNDS", "7")
	t.Setenv("BENCH_SIZE", "256M")
	t.Setenv("BENCH_RUNTIME", "15s")
	s, err := loadSettings(false, false)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Targets, ",") != "plain,kmsfs" || strings.Join(s.Jobs, ",") != "seqread,metadata" ||
		s.Rounds != 7 || s.Size != 256<<20 || s.Runtime != 15*time.Second {
		t.Errorf("settings = %+v", s)
	}
	t.Setenv("BENCH_TARGETS", "kmsfs-plainnames,gocryptfs,kmsfs")
	t.Setenv("BENCH_JOBS", "find,lsl")
	t.Setenv("BENCH_LS_FILES", "300")
	t.Setenv("BENCH_TREE_FILES", "4000")
	if s, err = loadSettings(true, false); err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Targets, ",") != "gocryptfs,kmsfs,kmsfs-plainnames" || strings.Join(s.Jobs, ",") != "lsl,find" ||
		s.LsFiles != 300 || s.TreeFiles != 4000 {
		t.Errorf("settings = %+v", s)
	}
	t.Setenv("BENCH_TREE_FILES", "0")
	if _, err := loadSettings(false, false); err == nil {
		t.Error("BENCH_TREE_FILES=0 accepted")
	}
	t.Setenv("BENCH_TREE_FILES", "")
	t.Setenv("BENCH_TARGETS", "zfs")
	if _, err := loadSettings(false, false); err == nil {
		t.Error("unknown target accepted")
	}
}

func TestRandomJobsAreTimeLimitedAndSynced(t *testing.T) {
	s := settings{Size: 1 << 30, Runtime: 10 * time.Second}
	for _, j := range jobs {
		if j.fio == nil {
			continue
		}
		args := strings.Join(j.fio(s), " ")
		if strings.HasPrefix(j.Name, "rand") && !strings.Contains(args, "--runtime=10s") {
			t.Errorf("%s: no runtime limit: %s", j.Name, args)
		}
		if strings.Contains(args, "write") || strings.Contains(args, "randrw") {
			if !strings.Contains(args, "--end_fsync=1") {
				t.Errorf("%s writes without end_fsync: %s", j.Name, args)
			}
		}
	}
}

// TestPeakRSS checks peakRSS on this process and that the report keeps
// each target's largest figure over all runs.
func TestPeakRSS(t *testing.T) {
	if v := peakRSS([]int{os.Getpid()}); v <= 0 || v > 1<<20 {
		t.Fatalf("peakRSS(self) = %v MiB", v)
	}
	if v := peakRSS([]int{-1}); v != 0 {
		t.Fatalf("peakRSS(no such process) = %v", v)
	}
	rep := &report{
		Targets: []*target{{Name: "kmsfs", Status: "ok"}},
		Jobs:    []job{jobByName("seqread"), jobByName("metadata")},
		Runs: []runResult{
			{Round: 0, Job: "seqread", Target: "kmsfs", Value: 1, DaemonPeakRSS: 40},
			{Round: 0, Job: "metadata", Target: "kmsfs", Value: 1, DaemonPeakRSS: 52.5},
			{Round: 1, Job: "seqread", Target: "kmsfs", Value: 1, DaemonPeakRSS: 50},
		},
	}
	summarise(rep)
	if rep.PeakRSS["kmsfs"] != 52.5 {
		t.Fatalf("PeakRSS = %v, want 52.5 for kmsfs", rep.PeakRSS)
	}
	if !strings.Contains(formatTable(rep), "52.5") {
		t.Fatalf("table lacks the peak:\n%s", formatTable(rep))
	}
}
