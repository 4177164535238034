package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// kmsfs-shared runs by default, kmsfs-slot only when asked for, and the
// default order is the canonical one.
func TestDefaultTargets(t *testing.T) {
	if !contains(defaultTargets, "kmsfs-shared") {
		t.Errorf("defaultTargets %v lack kmsfs-shared", defaultTargets)
	}
	if contains(defaultTargets, "kmsfs-slot") {
		t.Errorf("defaultTargets %v hold the opt-in kmsfs-slot", defaultTargets)
	}
	want := slices.DeleteFunc(slices.Clone(allTargets), func(s string) bool { return s == "kmsfs-slot" })
	if !slices.Equal(defaultTargets, want) {
		t.Errorf("defaultTargets = %v, want %v", defaultTargets, want)
	}
	for _, name := range kmsfsTargets {
		if !contains(allTargets, name) {
			t.Errorf("kmsfs target %s is not in allTargets", name)
		}
	}
}

// The usage text lists every job and every default target.
func TestUsageListsJobsAndTargets(t *testing.T) {
	if !strings.Contains(usage, strings.Join(jobNames(), ",")) {
		t.Errorf("usage does not list the jobs %s", strings.Join(jobNames(), ","))
	}
	for _, name := range allTargets {
		if !strings.Contains(usage, name) {
			t.Errorf("usage does not name target %s", name)
		}
	}
}

func TestContentionDirs(t *testing.T) {
	shared := &target{Dir: "/m1", Dir2: "/m2"}
	one := &target{Dir: "/m"}
	for _, tc := range []struct {
		t    *target
		n    int
		want []string
	}{
		{shared, 2, []string{"/m1", "/m2"}},
		{shared, 3, []string{"/m1", "/m2", "/m1"}},
		{one, 2, []string{"/m", "/m"}},
		{one, 1, []string{"/m"}},
	} {
		if got := contentionDirs(tc.t, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("contentionDirs(%+v, %d) = %v, want %v", *tc.t, tc.n, got, tc.want)
		}
	}
}

// The contention job's fio command line: its arguments global (before the
// first --name), one section per writer naming the file by its absolute
// path (a global --filename is resolved against fio's working directory,
// whatever a section's --directory says), no group reporting (each
// writer's result is checked).
func TestContentionArgs(t *testing.T) {
	j := jobByName("randwrite-2m")
	if j.writers != 2 {
		t.Fatalf("randwrite-2m has %d writers, want 2", j.writers)
	}
	s := settings{Size: 64 << 20, Runtime: 3 * time.Second}
	paths := contentionPaths([]string{"/m1", "/m2"})
	if want := []string{"/m1/" + contentionFile, "/m2/" + contentionFile}; !slices.Equal(paths, want) {
		t.Fatalf("contentionPaths = %v, want %v", paths, want)
	}
	args := contentionArgs(paths, j.fio(s))
	first := slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, "--name=") })
	if first < 0 {
		t.Fatalf("no job section: %v", args)
	}
	global, sections := args[:first], args[first:]
	for _, want := range []string{"--rw=randwrite", "--bs=4k", "--numjobs=1",
		"--end_fsync=1", "--runtime=3s", "--output-format=json", "--thread"} {
		if !contains(global, want) {
			t.Errorf("global options lack %s: %v", want, global)
		}
	}
	for _, a := range global {
		if strings.HasPrefix(a, "--filename") || strings.HasPrefix(a, "--directory") {
			t.Errorf("global option %s: fio would resolve it against its working directory", a)
		}
	}
	if contains(args, "--group_reporting") {
		t.Errorf("contention run reports as a group: %v", args)
	}
	want := []string{"--name=writer1", "--filename=/m1/" + contentionFile, "--name=writer2", "--filename=/m2/" + contentionFile}
	if !slices.Equal(sections, want) {
		t.Errorf("job sections = %v, want %v", sections, want)
	}
	if !contains(j.layout, contentionFile) {
		t.Errorf("randwrite-2m does not lay out %s: %v", contentionFile, j.layout)
	}
}

func TestSumWriters(t *testing.T) {
	w := func(file string, iops, ios, ms float64) fioJob {
		return fioJob{Write: fioDir{IOPS: iops, TotalIOs: ios}, JobRuntime: ms,
			Options: map[string]string{"name": "w", "filename": file}}
	}
	paths := []string{"/m1/f", "/m2/f"}
	metric := jobByName("randwrite-2m").metric
	v, rt, err := sumWriters([]fioJob{w("/m1/f", 1000, 3000, 3000), w("/m2/f", 500, 1500, 3100)}, paths, metric)
	if err != nil || v != 1500 || rt != 6.1 {
		t.Errorf("sumWriters = %v, %v, %v; want 1500, 6.1, nil", v, rt, err)
	}
	for _, tc := range []struct {
		res  []fioJob
		want string
	}{
		{[]fioJob{w("/m1/f", 1000, 3000, 3000), w("/m2/f", 0, 0, 3000)}, "writer 2 of 2 did no I/O"},
		{[]fioJob{w("/m1/f", 1000, 3000, 3000), w("f", 900, 2700, 3000)}, `writer 2 of 2 wrote "f", want "/m2/f"`},
		{[]fioJob{w("/m1/f", 1000, 3000, 3000)}, "1 writer results for 2 writers"},
	} {
		if _, _, err := sumWriters(tc.res, paths, metric); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("sumWriters: err = %v, want %q", err, tc.want)
		}
	}
}

func TestModifiedSince(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	if err := modifiedSince([]string{p}, old.Add(-time.Second)); err != nil {
		t.Errorf("modified after the start: %v", err)
	}
	if err := modifiedSince([]string{p}, old.Add(time.Second)); err == nil || !strings.Contains(err.Error(), "before the run started") {
		t.Errorf("modified before the start: err = %v", err)
	}
	if err := modifiedSince([]string{p + ".missing"}, old); err == nil {
		t.Error("a missing file passed")
	}
}

func TestReadBack(t *testing.T) {
	dir := t.TempDir()
	const size = 3<<20 + 123 // three full 1 MiB blocks and a short one
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := write("a", data), write("b", data)
	changed := slices.Clone(data)
	changed[2<<20+5] ^= 1
	c := write("c", changed)
	short := write("short", data[:size-1])

	for _, paths := range [][]string{{a}, {a, b}} {
		if err := readBack(paths, size); err != nil {
			t.Errorf("readBack(%v): %v", paths, err)
		}
	}
	for _, tc := range []struct {
		paths []string
		want  string
	}{
		{[]string{a, c}, "differ in the 1 MiB block at offset 2097152"},
		{[]string{a, short}, "differ in the 1 MiB block at offset 3145728"},
		{[]string{short}, "bytes, want"},
		{[]string{filepath.Join(dir, "missing")}, "no such file"},
		{[]string{dir}, "at offset 0"}, // reading a directory fails like an EIO would
	} {
		err := readBack(tc.paths, size)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("readBack(%v) = %v, want an error with %q", tc.paths, err, tc.want)
		}
	}
}

func TestCheckSharedConf(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		conf string
		ok   bool
	}{
		{`{"version": 2, "shared": true}`, true},
		{`{"version": 2}`, false},
		{`{"shared": false}`, false},
		{`not json`, false},
	} {
		p := filepath.Join(dir, "kmsfs.conf")
		if err := os.WriteFile(p, []byte(tc.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := checkSharedConf(p); (err == nil) != tc.ok {
			t.Errorf("checkSharedConf(%s) = %v, want ok %v", tc.conf, err, tc.ok)
		}
	}
}

// A kmsfs build whose init does not know --shared fails kmsfs-shared with
// a note that says so.
func TestKmsfsSharedWithoutSharedFlag(t *testing.T) {
	dir := t.TempDir()
	e := env{work: dir, bin: filepath.Join(dir, "bin"), logDir: dir}
	if err := os.Mkdir(e.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := "#!/bin/sh\necho 'flag provided but not defined: -shared' >&2\nexit 2\n"
	if err := os.WriteFile(filepath.Join(e.bin, "kmsfs"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	tg := &target{Name: "kmsfs-shared"}
	err := setupTarget(context.Background(), e, tg)
	if err == nil || !strings.Contains(err.Error(), "does not accept --shared") {
		t.Fatalf("setup error = %v, want one saying init lacks --shared", err)
	}
	if err := tg.teardown(); err != nil {
		t.Fatalf("teardown: %v", err)
	}
}

// sharedReport is a run of kmsfs and kmsfs-shared on two jobs, the
// contention job below the bar.
func sharedReport() *report {
	rep := &report{
		Targets: []*target{{Name: "kmsfs", Status: "ok"}, {Name: "kmsfs-shared", Status: "ok", Note: "shared mode, 2 mounts; names encrypted"}},
		Jobs:    []job{jobByName("randwrite1"), jobByName("randwrite-2m")},
	}
	for round := 1; round <= 3; round++ {
		rep.Runs = append(rep.Runs,
			runResult{Round: round, Job: "randwrite1", Target: "kmsfs", Value: 1000},
			runResult{Round: round, Job: "randwrite1", Target: "kmsfs-shared", Value: 900},
			runResult{Round: round, Job: "randwrite-2m", Target: "kmsfs", Value: 2000},
			runResult{Round: round, Job: "randwrite-2m", Target: "kmsfs-shared", Value: 1000 + 100*float64(round)})
	}
	summarise(rep)
	return rep
}

func TestSharedCheck(t *testing.T) {
	rep := sharedReport()
	if got := rep.Ratios["randwrite-2m"][sharedRatio]; got != 0.6 {
		t.Fatalf("randwrite-2m %s = %v, want the median 0.6", sharedRatio, got)
	}
	lines := sharedCheck(rep)
	want := []string{
		"shared mode (issue 13): kmsfs-shared shared mode, 2 mounts; names encrypted",
		"randwrite1 kmsfs-shared/kmsfs 0.90 (>= 0.80: met)",
		"randwrite-2m kmsfs-shared/kmsfs 0.60 (>= 0.80: NOT met); 2 writers on one file through 2 mounts against 2 through kmsfs's one",
		"all      every job's kmsfs-shared/kmsfs >= 0.80: NOT met (randwrite-2m)",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("sharedCheck =\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	table := formatTable(rep)
	for _, s := range []string{"kmsfs-shared/kmsfs", "\nshared mode (issue 13): kmsfs-shared", "  all      every job's"} {
		if !strings.Contains(table, s) {
			t.Errorf("table lacks %q:\n%s", s, table)
		}
	}
	md := formatMarkdown(rep, "x.png")
	for _, s := range []string{"| kmsfs-shared/kmsfs |", "Shared mode (issue 13)", "- `randwrite-2m`: kmsfs-shared/kmsfs 0.60"} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q:\n%s", s, md)
		}
	}

	// Without kmsfs-shared there is no section.
	rep.Targets, rep.Runs = rep.Targets[:1], rep.Runs[:0]
	summarise(rep)
	if lines := sharedCheck(rep); lines != nil {
		t.Errorf("sharedCheck without kmsfs-shared = %v", lines)
	}
}
