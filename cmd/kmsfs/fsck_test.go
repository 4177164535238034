package main

import (
	"testing"

	"github.com/kmsfs/kmsfs/cipherdir"
)

// TestFsckResult: the precedence of fsck's exit codes.
func TestFsckResult(t *testing.T) {
	tests := []struct {
		name   string
		sum    cipherdir.CheckSummary
		repair bool
		want   int
	}{
		{"clean", cipherdir.CheckSummary{Files: 3}, false, ExitOK},
		{"warnings only", cipherdir.CheckSummary{Warnings: 2}, false, ExitOK},
		{"problems", cipherdir.CheckSummary{Found: 2, Remaining: 2}, false, ExitFsckProblems},
		{"problems beat unavailable", cipherdir.CheckSummary{Found: 1, Remaining: 1, Unavailable: 4}, false, ExitFsckProblems},
		{"remain after repair", cipherdir.CheckSummary{Found: 3, Repaired: 2, Remaining: 1}, true, ExitFsckRemain},
		{"unavailable", cipherdir.CheckSummary{Unavailable: 1}, false, ExitFsckUnavailable},
		{"unavailable beats repaired", cipherdir.CheckSummary{Found: 1, Repaired: 1, Unavailable: 1}, true, ExitFsckUnavailable},
		{"all repaired", cipherdir.CheckSummary{Found: 2, Repaired: 2}, true, ExitFsckRepaired},
		{"tails punched: no problem", cipherdir.CheckSummary{Freed: 1 << 20}, true, ExitOK},
	}
	for _, tt := range tests {
		if got := exitCode(fsckResult(tt.sum, tt.repair)); got != tt.want {
			t.Errorf("%s: exit %d, want %d", tt.name, got, tt.want)
		}
	}
}
