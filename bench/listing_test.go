package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFanoutTree(t *testing.T) {
	for _, tc := range []struct {
		files, dirs, leaves, top int
	}{
		{100000, 1110, 1000, 10}, // 10 × 10 × 10 leaves of 100
		{10000, 124, 100, 4},     // fan-out 5: 4 top, 20 middle, 100 leaves
		{250, 6, 3, 1},           // fan-out 2: d00, d00/d00, d00/d01 and leaves of 100, 100, 50
		{1, 3, 1, 1},
	} {
		tr := fanoutTree("find", tc.files, 100, 3)
		if tr.files() != tc.files || tr.subdirs() != tc.dirs || tr.entries() != tc.files+tc.dirs {
			t.Errorf("%d files: %d files in %d dirs, want %d dirs", tc.files, tr.files(), tr.subdirs(), tc.dirs)
		}
		seen := map[string]bool{}
		leaves, top, next := 0, 0, 0
		for _, d := range tr.Dirs {
			if seen[d.Path] {
				t.Errorf("%d files: %s twice", tc.files, d.Path)
			}
			seen[d.Path] = true
			if parent := filepath.Dir(d.Path); parent != "." && !seen[parent] {
				t.Errorf("%d files: %s before its parent", tc.files, d.Path)
			}
			depth := strings.Count(d.Path, "/") + 1
			if depth == 1 {
				top++
			}
			if d.Files > 0 {
				leaves++
				if depth != 3 || d.Files > 100 || d.First != next {
					t.Errorf("%d files: leaf %+v (depth %d, want first %d)", tc.files, d, depth, next)
				}
				next += d.Files
			}
		}
		if leaves != tc.leaves || top != tc.top {
			t.Errorf("%d files: %d leaves, %d top directories; want %d, %d", tc.files, leaves, top, tc.leaves, tc.top)
		}
	}
	if tr := fanoutTree("find", 0, 100, 3); tr.entries() != 0 {
		t.Errorf("empty tree has %d entries", tr.entries())
	}
}

func TestListedEntries(t *testing.T) {
	for _, tc := range []struct {
		job, out string
		want     int
		ok       bool
	}{
		{"lsl", "total 0\n-rw-r--r-- 1 root root 0 Jan  1 00:00 a\n-rw-r--r-- 1 root root 0 Jan  1 00:00 b\n", 2, true},
		{"lsl", "total 0\n", 0, true},
		{"lsl", "ls: cannot access\n", 0, false},
		{"find", "....", 3, true},
		{"find", ".", 0, true},
		{"find", "", 0, false},
		{"find", "./a\n", 0, false},
		{"metadata", "", 0, false},
	} {
		got, err := listedEntries(tc.job, []byte(tc.out))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("listedEntries(%s, %q) = %d, %v; want %d, ok %v", tc.job, tc.out, got, err, tc.want, tc.ok)
		}
	}
}

// TestBuildAndListTree builds small trees on the test's own directory and
// lists them with the real ls and find: the counts must match the layout.
func TestBuildAndListTree(t *testing.T) {
	dir := t.TempDir()
	s := settings{LsFiles: 150, TreeFiles: 250}
	for _, job := range []string{"lsl", "find"} {
		tr := listingTree(job, s)
		if err := buildTree(context.Background(), dir, tr); err != nil {
			t.Fatalf("%s: %v", job, err)
		}
		n, err := runListing(context.Background(), job, dir, tr)
		if err != nil || n != tr.entries() {
			t.Fatalf("%s listed %d, %v; want %d", job, n, err, tr.entries())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "find", "d00", "d00", "d01", treeFileName(199))); err != nil {
		t.Errorf("second leaf's last file: %v", err)
	}
	// A missing entry is an error, not a faster run.
	if err := os.Remove(filepath.Join(dir, "lsl", treeFileName(7))); err != nil {
		t.Fatal(err)
	}
	if _, err := runListing(context.Background(), "lsl", dir, listingTree("lsl", s)); err == nil {
		t.Error("lsl of a directory missing a file succeeded")
	}
	// A tree is built once: building over an existing one fails.
	if err := buildTree(context.Background(), dir, listingTree("lsl", s)); err == nil {
		t.Error("building over an existing tree succeeded")
	}
	// Ctrl-C stops a build.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := buildTree(ctx, t.TempDir(), listingTree("find", s)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled build: %v", err)
	}
}

// A kmsfs whose init does not know --plaintext-names makes
// kmsfs-plainnames fail with a note that says so.
func TestKmsfsPlainNamesNeedsTheFlag(t *testing.T) {
	dir := t.TempDir()
	e := env{work: dir, bin: filepath.Join(dir, "bin"), logDir: dir}
	if err := os.Mkdir(e.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := "#!/bin/sh\necho 'kmsfs: error: flag provided but not defined: -plaintext-names' >&2\nexit 2\n"
	if err := os.WriteFile(filepath.Join(e.bin, "kmsfs"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	tg := &target{Name: "kmsfs-plainnames"}
	err := setupTarget(context.Background(), e, tg)
	if err == nil || !strings.Contains(err.Error(), "does not accept --plaintext-names") || errors.Is(err, errSkip) {
		t.Fatalf("setup error = %v, want a failure naming the flag", err)
	}
	if err := tg.teardown(); err != nil {
		t.Fatalf("teardown: %v", err)
	}
}

func TestProbeNames(t *testing.T) {
	backing, mnt := t.TempDir(), t.TempDir()
	// Same directory: what a mount with plaintext names looks like from below.
	if got, err := probeNames(mnt, mnt); err != nil || got != "names in plaintext" {
		t.Errorf("probeNames(same dir) = %q, %v", got, err)
	}
	if got, err := probeNames(backing, mnt); err != nil || got != "names encrypted" {
		t.Errorf("probeNames(other dir) = %q, %v", got, err)
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
		t.Errorf("probe left %d entries behind", len(ents))
	}
}

// namesCheck holds kmsfs to 0.9× kmsfs-plainnames and 1.0× gocryptfs on
// the metadata and listing jobs, and says how the kmsfs target stored names.
func TestNamesCheck(t *testing.T) {
	rep := &report{
		Targets: []*target{{Name: "gocryptfs", Status: "ok"}, {Name: "kmsfs", Status: "ok", Note: "names encrypted"},
			{Name: "kmsfs-plainnames", Status: "ok"}},
		Jobs: []job{jobByName("seqread"), jobByName("metadata"), jobByName("lsl"), jobByName("find")},
	}
	// Rounds 1..3; the paired ratios are the medians of 0.8, 0.9, 1.0 and so on.
	vals := map[string]map[string][]float64{
		"seqread":  {"gocryptfs": {1, 1, 1}, "kmsfs": {1, 1, 1}, "kmsfs-plainnames": {1, 1, 1}},
		"metadata": {"gocryptfs": {10, 10, 10}, "kmsfs": {8, 9, 10}, "kmsfs-plainnames": {10, 10, 10}},
		"lsl":      {"gocryptfs": {10, 10, 10}, "kmsfs": {11, 12, 13}, "kmsfs-plainnames": {10, 10, 10}},
		"find":     {"gocryptfs": {10, 10, 10}, "kmsfs": {8, 8, 9}, "kmsfs-plainnames": {10, 10, 10}},
	}
	for jn, byT := range vals {
		for tn, vs := range byT {
			for i, v := range vs {
				rep.Runs = append(rep.Runs, runResult{Round: i + 1, Job: jn, Target: tn, Value: v})
			}
		}
	}
	summarise(rep)
	got := strings.Join(namesCheck(rep), "\n")
	want := strings.Join([]string{
		"names (issue 12): kmsfs names encrypted",
		"metadata kmsfs/kmsfs-plainnames 0.90 (>= 0.90: met); kmsfs/gocryptfs 0.90 (>= 1.00: NOT met)",
		"lsl      kmsfs/kmsfs-plainnames 1.20 (>= 0.90: met); kmsfs/gocryptfs 1.20 (>= 1.00: met)",
		"find     kmsfs/kmsfs-plainnames 0.80 (>= 0.90: NOT met); kmsfs/gocryptfs 0.80 (>= 1.00: NOT met)",
	}, "\n")
	if got != want {
		t.Errorf("namesCheck:\n%s\nwant:\n%s", got, want)
	}
	table := formatTable(rep)
	if !strings.Contains(table, "kmsfs/kmsfs-plainnames") || !strings.Contains(table, "NOT met") {
		t.Errorf("table lacks the names ratios:\n%s", table)
	}
	md := formatMarkdown(rep, "x.png")
	if !strings.Contains(md, "- `find`: kmsfs/kmsfs-plainnames 0.80") {
		t.Errorf("markdown lacks the names lines:\n%s", md)
	}

	// Without kmsfs-plainnames and gocryptfs there is nothing to hold
	// kmsfs to.
	rep.Ratios = map[string]map[string]float64{"lsl": {"kmsfs/ceiling": 1}}
	if lines := namesCheck(rep); lines != nil {
		t.Errorf("namesCheck without the ratios = %q", lines)
	}
}
