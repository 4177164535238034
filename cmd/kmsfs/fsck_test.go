package main

import (
	"strings"
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
		{"busy", cipherdir.CheckSummary{Busy: 1, Warnings: 1}, false, ExitFsckBusy},
		{"problems beat busy", cipherdir.CheckSummary{Found: 1, Remaining: 1, Busy: 1}, false, ExitFsckProblems},
		{"unavailable beats busy", cipherdir.CheckSummary{Unavailable: 1, Busy: 1}, false, ExitFsckUnavailable},
		{"busy beats repaired", cipherdir.CheckSummary{Found: 1, Repaired: 1, Busy: 1}, true, ExitFsckBusy},
		{"tails punched: no problem", cipherdir.CheckSummary{Freed: 1 << 20}, true, ExitOK},
	}
	for _, tt := range tests {
		if got := exitCode(fsckResult(tt.sum, tt.repair)); got != tt.want {
			t.Errorf("%s: exit %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestPrintFileReportPlainPath: a v2 finding names the plaintext path and
// the backing one; kmsfs's own entries and v1 files their backing path.
func TestPrintFileReportPlainPath(t *testing.T) {
	var b strings.Builder
	p := []cipherdir.Problem{{Kind: cipherdir.ProblemNameBad, Chunk: cipherdir.NoChunk, Detail: "d"}}
	printFileReport(&b, cipherdir.FileReport{Path: "Xa/Yb", PlainPath: "docs/?", Problems: p})
	printFileReport(&b, cipherdir.FileReport{Path: "kmsfs.tmp.1", Problems: p})
	want := "docs/? (backing Xa/Yb): file -: file: name-bad: d\nkmsfs.tmp.1: file -: file: name-bad: d\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
