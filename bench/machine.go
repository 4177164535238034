package main

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// machine describes where the numbers were measured.
type machine struct {
	Hostname      string  `json:"hostname"`
	NProc         int     `json:"nproc"`
	CPU           string  `json:"cpu"`
	MemTotalMiB   int64   `json:"mem_total_mib"`
	Kernel        string  `json:"kernel"`
	BackingFS     string  `json:"backing_fs"`
	BackingDevice string  `json:"backing_device"`
	WorkDir       string  `json:"work_dir"`
	Fio           string  `json:"fio"`
	Gocryptfs     string  `json:"gocryptfs"`
	Go            string  `json:"go"`
	KmsfsVersion  string  `json:"kmsfs"`
	GitCommit     string  `json:"git_commit"`
	CachesDropped bool    `json:"caches_dropped"`
	LoadAvg1      float64 `json:"load_avg_1m_start"`
	LoadAvgEnd    float64 `json:"load_avg_1m_end"`
}

func describeMachine(ctx context.Context, root, work string) machine {
	m := machine{NProc: runtime.NumCPU(), Go: runtime.Version(), WorkDir: work, LoadAvg1: loadAvg()}
	m.Hostname, _ = os.Hostname()
	m.Kernel = readTrim("/proc/sys/kernel/osrelease")
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if info, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kib, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemTotalMiB = kib >> 10
			}
		}
	}
	// The backing filesystem is the mount with the longest prefix of work.
	best := ""
	for _, e := range mountPoints() {
		if (work == e.point || strings.HasPrefix(work, strings.TrimSuffix(e.point, "/")+"/")) && len(e.point) >= len(best) {
			best, m.BackingFS, m.BackingDevice = e.point, e.fstype, e.source
		}
	}
	if v, err := runCmd(ctx, nil, "fio", "--version"); err == nil {
		m.Fio = v
	}
	if v, err := runCmd(ctx, nil, "gocryptfs", "--version"); err == nil {
		m.Gocryptfs, _, _ = strings.Cut(firstLine(v), ";")
	} else {
		m.Gocryptfs = "not installed"
	}
	if v, err := runCmd(ctx, nil, "git", "-C", root, "rev-parse", "--short", "HEAD"); err == nil {
		m.GitCommit = v
		if st, err := runCmd(ctx, nil, "git", "-C", root, "status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
			m.GitCommit += "+dirty"
		}
	}
	return m
}

func loadAvg() float64 {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
