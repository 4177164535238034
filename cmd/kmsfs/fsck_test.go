package main

import (
	"testing"

	kfs "github.com/kmsfs/kmsfs/fs"
)

// TestFsckResult: the precedence of fsck's exit codes.
func TestFsckResult(t *testing.T) {
	tests := []struct {
		name   string
		sum    kfs.CheckSummary
		repair bool
		want   int
	}{
		{"clean", kfs.CheckSummary{Files: 3}, false, ExitOK},
		{"warnings only", kfs.CheckSummary{Warnings: 2}, false, ExitOK},
		{"problems", kfs.CheckSummary{Found: 2, Remaining: 2}, false, ExitFsckProblems},
		{"problems beat unavailable", kfs.CheckSummary{Found: 1, Remaining: 1, Unavailable: 4}, false, ExitFsckProblems},
		{"remain after repair", kfs.CheckSummary{Found: 3, Repaired: 2, Remaining: 1}, true, ExitFsckRemain},
		{"unavailable", kfs.CheckSummary{Unavailable: 1}, false, ExitFsckUnavailable},
		{"unavailable beats repaired", kfs.CheckSummary{Found: 1, Repaired: 1, Unavailable: 1}, true, ExitFsckUnavailable},
		{"all repaired", kfs.CheckSummary{Found: 2, Repaired: 2}, true, ExitFsckRepaired},
		{"tails punched: no problem", kfs.CheckSummary{Freed: 1 << 20}, true, ExitOK},
	}
	for _, tt := range tests {
		if got := exitCode(fsckResult(tt.sum, tt.repair)); got != tt.want {
			t.Errorf("%s: exit %d, want %d", tt.name, got, tt.want)
		}
	}
}
