package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// tableRatios are the ratios printed in the table, numerator first.
var tableRatios = [][2]string{
	{"kmsfs", "gocryptfs"},
	{"kmsfs", "kmsfs-plainnames"},
	{"kmsfs", "ceiling"},
	{"gocryptfs", "ceiling"},
	{"kmsfs-aws", "kmsfs"},
	{"kmsfs-shared", "kmsfs"},
}

// ratioPairs are the paired ratios computed for every job: the table's and
// a few more for the JSON.
var ratioPairs = append(append([][2]string{}, tableRatios...), [2]string{"ceiling", "plain"})

// namesJobs and namesBars are issue 12's requirement on encrypted names:
// on each of these jobs, kmsfs (names encrypted) at no less than the bar
// against each other target, measured in the same run.
var (
	namesJobs = []string{"metadata", "lsl", "find"}
	namesBars = []struct {
		ratio string
		min   float64
	}{{"kmsfs/kmsfs-plainnames", 0.9}, {"kmsfs/gocryptfs", 1.0}}
)

// namesCheck holds the ratios of namesJobs against namesBars, one line per
// job that has at least one of the ratios, and a first line saying how
// kmsfs stored names (from its target note): nil when no job has a ratio.
func namesCheck(rep *report) []string {
	var lines []string
	for _, j := range rep.Jobs {
		if !contains(namesJobs, j.Name) {
			continue
		}
		var parts []string
		for _, bar := range namesBars {
			v, ok := rep.Ratios[j.Name][bar.ratio]
			if !ok {
				continue
			}
			verdict := "met"
			if v < bar.min {
				verdict = "NOT met"
			}
			parts = append(parts, fmt.Sprintf("%s %.2f (>= %.2f: %s)", bar.ratio, v, bar.min, verdict))
		}
		if len(parts) > 0 {
			lines = append(lines, fmt.Sprintf("%-8s %s", j.Name, strings.Join(parts, "; ")))
		}
	}
	if lines == nil {
		return nil
	}
	head := "names (issue 12): kmsfs target not run"
	for _, t := range rep.Targets {
		if t.Name == "kmsfs" && t.Status == "ok" {
			head = "names (issue 12): kmsfs " + t.Note
			if strings.Contains(t.Note, "names in plaintext") {
				head += " (this build does not encrypt names yet: kmsfs/kmsfs-plainnames does not measure them)"
			}
		}
	}
	return append([]string{head}, lines...)
}

// sharedRatio and sharedBar are issue 13's requirement on shared mode:
// on every job, kmsfs-shared (kmsfs init --shared) at no less than 0.8×
// kmsfs (the default mount), measured in the same run.
const (
	sharedRatio = "kmsfs-shared/kmsfs"
	sharedBar   = 0.8
)

// sharedCheck holds each job's kmsfs-shared/kmsfs against sharedBar, one
// line per job that has the ratio, a first line saying how kmsfs-shared
// was set up (its target note) and a last line with the verdict over all
// of them: nil when no job has the ratio. The contention job's line says
// that it compares two mounts with one.
func sharedCheck(rep *report) []string {
	var lines, missed []string
	for _, j := range rep.Jobs {
		v, ok := rep.Ratios[j.Name][sharedRatio]
		if !ok {
			continue
		}
		verdict := "met"
		if v < sharedBar {
			verdict = "NOT met"
			missed = append(missed, j.Name)
		}
		line := fmt.Sprintf("%-8s %s %.2f (>= %.2f: %s)", j.Name, sharedRatio, v, sharedBar, verdict)
		if j.writers > 0 {
			line += fmt.Sprintf("; %d writers on one file through 2 mounts against %d through kmsfs's one", j.writers, j.writers)
		}
		lines = append(lines, line)
	}
	if lines == nil {
		return nil
	}
	head := "shared mode (issue 13)"
	for _, t := range rep.Targets {
		if t.Name == "kmsfs-shared" && t.Status == "ok" {
			head += ": kmsfs-shared " + t.Note
		}
	}
	verdict := fmt.Sprintf("%-8s every job's %s >= %.2f: met", "all", sharedRatio, sharedBar)
	if missed != nil {
		verdict = fmt.Sprintf("%-8s every job's %s >= %.2f: NOT met (%s)", "all", sharedRatio, sharedBar, strings.Join(missed, ", "))
	}
	return append(append([]string{head}, lines...), verdict)
}

// checks are the requirement sections printed under the table, each a
// head line and then lines that start with a job name (or "all").
var checks = []func(*report) []string{namesCheck, sharedCheck}

// median of xs (NaN when empty); xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// pairedRatio is the median over rounds of a/b, using only rounds in which
// both have a value.
func pairedRatio(a, b map[int]float64) float64 {
	var rs []float64
	for round, va := range a {
		if vb, ok := b[round]; ok && vb > 0 {
			rs = append(rs, va/vb)
		}
	}
	return median(rs)
}

// summarise fills the medians, ratios and daemon CPU of rep from its runs.
func summarise(rep *report) {
	// values[job][target][round]
	values := map[string]map[string]map[int]float64{}
	cpu := map[string]map[string][]float64{}
	for _, r := range rep.Runs {
		if r.Error != "" {
			continue
		}
		if values[r.Job] == nil {
			values[r.Job] = map[string]map[int]float64{}
			cpu[r.Job] = map[string][]float64{}
		}
		if values[r.Job][r.Target] == nil {
			values[r.Job][r.Target] = map[int]float64{}
		}
		values[r.Job][r.Target][r.Round] = r.Value
		cpu[r.Job][r.Target] = append(cpu[r.Job][r.Target], r.DaemonCPU)
	}
	rep.PeakRSS = map[string]float64{}
	for _, r := range rep.Runs {
		if r.DaemonPeakRSS > rep.PeakRSS[r.Target] {
			rep.PeakRSS[r.Target] = r.DaemonPeakRSS
		}
	}
	rep.Medians = map[string]map[string]float64{}
	rep.Ratios = map[string]map[string]float64{}
	rep.DaemonCPU = map[string]map[string]float64{}
	for job, byTarget := range values {
		rep.Medians[job] = map[string]float64{}
		rep.DaemonCPU[job] = map[string]float64{}
		for t, byRound := range byTarget {
			var vs []float64
			for _, v := range byRound {
				vs = append(vs, v)
			}
			rep.Medians[job][t] = median(vs)
			rep.DaemonCPU[job][t] = median(cpu[job][t])
		}
		rep.Ratios[job] = map[string]float64{}
		for _, p := range ratioPairs {
			a, b := byTarget[p[0]], byTarget[p[1]]
			if a != nil && b != nil {
				if r := pairedRatio(a, b); !math.IsNaN(r) {
					rep.Ratios[job][p[0]+"/"+p[1]] = r
				}
			}
		}
	}
}

// okTargets are the names of the targets that ran.
func okTargets(rep *report) []string {
	var out []string
	for _, t := range rep.Targets {
		if t.Status == "ok" {
			out = append(out, t.Name)
		}
	}
	return out
}

// formatTable renders the header and the results table.
func formatTable(rep *report) string {
	var b strings.Builder
	m, s := rep.Machine, rep.Settings
	fmt.Fprintf(&b, "kmsfs bench %s (%s, %d round(s), %s)\n", rep.Started.Format("2006-01-02 15:04 MST"),
		map[bool]string{true: "quick", false: "full"}[s.Quick], s.Rounds, time.Duration(rep.Duration*float64(time.Second)).Round(time.Second))
	fmt.Fprintf(&b, "machine: %d CPU (%s), %d MiB RAM, Linux %s, backing %s on %s (%s)\n",
		m.NProc, m.CPU, m.MemTotalMiB, m.Kernel, m.BackingFS, m.BackingDevice, m.WorkDir)
	fmt.Fprintf(&b, "tools: %s, %s, %s, kmsfs %s (%s)\n", m.Fio, m.Gocryptfs, m.Go, m.KmsfsVersion, m.GitCommit)
	dropped := "page/dentry/inode caches dropped before each run"
	if !m.CachesDropped {
		dropped = "caches NOT dropped (not root): reads may be cached"
	}
	fmt.Fprintf(&b, "sizes: %s per file, random jobs %s each, metadata %d files of %d B, lsl %d files, find %d files; %s; load %.2f -> %.2f\n",
		humanBytes(s.Size), s.Runtime, s.MetaFiles, s.MetaSize, s.LsFiles, s.TreeFiles, dropped, m.LoadAvg1, m.LoadAvgEnd)
	for _, t := range rep.Targets {
		if t.Status != "ok" {
			fmt.Fprintf(&b, "skipped %s: %s\n", t.Name, t.Note)
		}
	}
	b.WriteString("\n")

	targets := okTargets(rep)
	header := []string{"job", "unit"}
	header = append(header, targets...)
	var ratios [][2]string
	for _, p := range tableRatios {
		if contains(targets, p[0]) && contains(targets, p[1]) {
			ratios = append(ratios, p)
			header = append(header, p[0]+"/"+p[1])
		}
	}
	rows := [][]string{header}
	for _, j := range rep.Jobs {
		row := []string{j.Name, j.Unit}
		for _, t := range targets {
			v, ok := rep.Medians[j.Name][t]
			row = append(row, formatValue(v, ok))
		}
		for _, p := range ratios {
			v, ok := rep.Ratios[j.Name][p[0]+"/"+p[1]]
			if ok {
				row = append(row, fmt.Sprintf("%.2f", v))
			} else {
				row = append(row, "-")
			}
		}
		rows = append(rows, row)
	}
	writeColumns(&b, rows)
	b.WriteString("\nmedians over rounds; ratios are medians of per-round (paired) ratios; higher is better\n")
	for _, check := range checks {
		if lines := check(rep); lines != nil {
			b.WriteString("\n" + lines[0] + ":\n")
			for _, l := range lines[1:] {
				b.WriteString("  " + l + "\n")
			}
		}
	}
	b.WriteString("\ndaemon CPU seconds per run (median):\n")
	rows = [][]string{append([]string{"job"}, targets...)}
	for _, j := range rep.Jobs {
		row := []string{j.Name}
		for _, t := range targets {
			v, ok := rep.DaemonCPU[j.Name][t]
			if t == "plain" || !ok {
				row = append(row, "-")
			} else {
				row = append(row, fmt.Sprintf("%.2f", v))
			}
		}
		rows = append(rows, row)
	}
	writeColumns(&b, rows)
	b.WriteString("\ndaemon peak resident set over the whole run:\n")
	rows = [][]string{append([]string{""}, targets...), {"VmHWM MiB"}}
	for _, t := range targets {
		if v, ok := rep.PeakRSS[t]; ok && v > 0 {
			rows[1] = append(rows[1], fmt.Sprintf("%.1f", v))
		} else {
			rows[1] = append(rows[1], "-")
		}
	}
	writeColumns(&b, rows)
	return b.String()
}

func formatValue(v float64, ok bool) string {
	switch {
	case !ok || math.IsNaN(v):
		return "-"
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// writeColumns writes rows as aligned columns: the first left-aligned,
// the rest right-aligned.
func writeColumns(b *strings.Builder, rows [][]string) {
	width := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range rows {
		for i, c := range r {
			if i == 0 {
				fmt.Fprintf(b, "%-*s", width[i], c)
			} else {
				fmt.Fprintf(b, "  %*s", width[i], c)
			}
		}
		b.WriteString("\n")
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// writeResults prints the table and writes the JSON, the table and the
// chart under dir.
func writeResults(ctx context.Context, rep *report, dir string) error {
	table := formatTable(rep)
	fmt.Print(table)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	stem := filepath.Join(dir, rep.Started.Format("20060102T150405Z"))
	if rep.Settings.Quick {
		stem += "-quick"
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(stem+".json", append(data, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(stem+".txt", []byte(table), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(stem+".md", []byte(formatMarkdown(rep, filepath.Base(stem)+".png")), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nresults: %s.json, %s.txt, %s.md", stem, stem, stem)
	if err := drawChart(ctx, rep, stem); err != nil {
		fmt.Printf("\nchart: not drawn: %v\n", err)
		return nil
	}
	fmt.Printf(", %s.png\n", stem)
	return nil
}

// drawChart draws each job's medians relative to the ceiling (or, without
// it, to the first target) as clustered bars with gnuplot.
func drawChart(ctx context.Context, rep *report, stem string) error {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		return fmt.Errorf("gnuplot is not installed (apt-get install gnuplot-nox)")
	}
	// plain is left out: buffered random writes to the native page cache
	// run 10x faster than anything through FUSE and would flatten the rest.
	var targets []string
	for _, t := range okTargets(rep) {
		if t != "plain" {
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		return fmt.Errorf("no FUSE target ran")
	}
	ref := targets[0]
	if contains(targets, "ceiling") {
		ref = "ceiling"
	}
	var dat bytes.Buffer
	dat.WriteString("job")
	for _, t := range targets {
		fmt.Fprintf(&dat, " %q", t)
	}
	dat.WriteString("\n")
	for _, j := range rep.Jobs {
		fmt.Fprintf(&dat, "%q", j.Name)
		base, ok := rep.Medians[j.Name][ref]
		for _, t := range targets {
			v, vok := rep.Medians[j.Name][t]
			if !ok || !vok || base <= 0 || math.IsNaN(v) {
				dat.WriteString(" ?")
			} else {
				fmt.Fprintf(&dat, " %.4f", v/base)
			}
		}
		dat.WriteString("\n")
	}
	datFile := stem + ".dat"
	if err := os.WriteFile(datFile, dat.Bytes(), 0o644); err != nil {
		return err
	}
	defer os.Remove(datFile)
	m := rep.Machine
	title := fmt.Sprintf("kmsfs bench %s: median per job relative to %s, higher is better (plain: see the table)\n%d CPU, Linux %s, backing %s; %d round(s), %s files, random jobs %s",
		rep.Started.Format("2006-01-02 15:04 MST"), ref, m.NProc, m.Kernel, m.BackingFS, rep.Settings.Rounds,
		humanBytes(rep.Settings.Size), rep.Settings.Runtime)
	script := fmt.Sprintf(`set output %q
set title %q
set datafile missing "?"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "median / %s"
set yrange [0:*]
set grid ytics
set key outside right top
set xtics nomirror
plot for [i=2:%d] %q using i:xtic(1) title columnheader(i)
`, stem+".png", title, ref, len(targets)+1, datFile)
	var lastErr error
	for _, term := range []string{"pngcairo size 1280,640 font 'sans,10'", "png size 1280,640"} {
		cmd := exec.CommandContext(ctx, "gnuplot")
		cmd.Stdin = strings.NewReader("set terminal " + term + "\n" + script)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		lastErr = fmt.Errorf("gnuplot: %w: %s", err, lastLine(string(out)))
	}
	return lastErr
}

// formatMarkdown renders the results as a Markdown section for bench/README.md's
// "Latest full run" section: machine, command, table of medians and ratios, chart.
func formatMarkdown(rep *report, chart string) string {
	var b strings.Builder
	m, s := rep.Machine, rep.Settings
	cmd := "make bench"
	if s.Quick {
		cmd = "make bench-quick"
	}
	fmt.Fprintf(&b, "Measured %s with `%s` (kmsfs %s): %d round(s), %s files, random jobs %s, metadata %d files, lsl %d files, find %d files; %s.\n\n",
		rep.Started.Format("2006-01-02"), cmd, m.GitCommit, s.Rounds, humanBytes(s.Size), s.Runtime, s.MetaFiles, s.LsFiles, s.TreeFiles,
		map[bool]string{true: "caches dropped before each run", false: "caches not dropped"}[m.CachesDropped])
	fmt.Fprintf(&b, "Machine: %d CPU (%s), %d MiB RAM, Linux %s, backing %s; %s, %s, %s; load average %.2f at the start.\n\n",
		m.NProc, m.CPU, m.MemTotalMiB, m.Kernel, m.BackingFS, m.Fio, m.Gocryptfs, m.Go, m.LoadAvg1)
	targets := okTargets(rep)
	var ratios []string
	for _, p := range tableRatios {
		if contains(targets, p[0]) && contains(targets, p[1]) {
			ratios = append(ratios, p[0]+"/"+p[1])
		}
	}
	head := append(append([]string{"job", "unit"}, targets...), ratios...)
	b.WriteString("| " + strings.Join(head, " | ") + " |\n")
	b.WriteString("|---|---|" + strings.Repeat("---:|", len(targets)+len(ratios)) + "\n")
	for _, j := range rep.Jobs {
		row := []string{j.Name, j.Unit}
		for _, t := range targets {
			v, ok := rep.Medians[j.Name][t]
			row = append(row, formatValue(v, ok))
		}
		for _, r := range ratios {
			if v, ok := rep.Ratios[j.Name][r]; ok {
				row = append(row, fmt.Sprintf("%.2f", v))
			} else {
				row = append(row, "-")
			}
		}
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	b.WriteString("\nMedians over rounds; ratios are medians of per-round ratios. Higher is better.\n\n")
	for _, check := range checks {
		if lines := check(rep); lines != nil {
			b.WriteString(strings.ToUpper(lines[0][:1]) + lines[0][1:] + ":\n\n")
			for _, l := range lines[1:] {
				f := strings.Fields(l)
				b.WriteString("- `" + f[0] + "`: " + strings.Join(f[1:], " ") + "\n")
			}
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "![median per job relative to the FUSE ceiling](%s)\n", chart)
	return b.String()
}
