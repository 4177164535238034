package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keysvc"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, ExitOK},
		{"help", fmt.Errorf("x: %w", flag.ErrHelp), ExitOK},
		{"usage", usageErrorf("bad"), ExitUsage},
		{"not implemented", withKind(errNotImplemented, errors.New("later")), ExitNotImplemented},
		{"cipherdir", withKind(errCipherDir, fs.ErrNotExist), ExitCipherDir},
		{"mount", withKind(errMountFailed, errors.New("no fuse")), ExitMount},
		{"unmount", withKind(errUnmountFailed, errors.New("busy")), ExitUnmount},
		{"keystore", withKind(errKeystore, errors.New("wrong passphrase")), ExitKeyService},
		{"general", errors.New("boom"), ExitFailure},
		// The cause wins over the step: a mount that failed on a disabled
		// key is a key-service failure.
		{"key inside mount", withKind(errMountFailed, fmt.Errorf("key k: %w", keysvc.ErrDisabled)), ExitKeyService},
		{"hinted", withHint(withKind(errCipherDir, errors.New("x")), "h"), ExitCipherDir},
		{"daemon", withHint(&daemonError{code: ExitKeyService, msg: "key is disabled"}, "h"), ExitKeyService},
	}
	for _, s := range []error{keysvc.ErrNotFound, keysvc.ErrDisabled, keysvc.ErrInvalidState,
		keysvc.ErrInvalidCiphertext, keysvc.ErrIncorrectKey, keysvc.ErrAccessDenied,
		keysvc.ErrUnavailable, keysvc.ErrInvalidArgument, keysvc.ErrAlreadyExists, keysvc.ErrLimitExceeded} {
		tests = append(tests, struct {
			name string
			err  error
			want int
		}{s.Error(), fmt.Errorf("op: %w", s), ExitKeyService})
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("%s: exitCode(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}

// The documented codes are distinct and the fsck range is kept free.
func TestExitCodesDistinct(t *testing.T) {
	codes := []int{ExitOK, ExitFailure, ExitUsage, ExitCipherDir, ExitKeyService, ExitMount, ExitNotImplemented, ExitUnmount, ExitIncomplete}
	seen := map[int]bool{}
	for _, c := range codes {
		if seen[c] || (c >= 10 && c <= 19) {
			t.Errorf("exit code %d reused or inside the fsck range", c)
		}
		seen[c] = true
	}
	for _, c := range []int{ExitFsckProblems, ExitFsckRemain, ExitFsckUnavailable, ExitFsckRepaired, ExitFsckBusy} {
		if seen[c] || c < 10 || c > 19 {
			t.Errorf("fsck exit code %d reused or outside 10..19", c)
		}
		seen[c] = true
	}
}

func TestReport(t *testing.T) {
	te := newTestEnv(nil)
	code := report(&te.Env, withHint(withKind(errCipherDir, errors.New("cipherdir /x is not empty")), "use an empty directory"))
	want := "kmsfs: error: cipherdir /x is not empty\nkmsfs: hint: use an empty directory\n"
	if code != ExitCipherDir || te.stderr.String() != want {
		t.Errorf("report: code %d, stderr %q; want %d, %q", code, te.stderr.String(), ExitCipherDir, want)
	}
	te = newTestEnv(nil)
	report(&te.Env, fmt.Errorf("key alias/x: %w", keysvc.ErrDisabled))
	if !strings.Contains(te.stderr.String(), "kmsfs: hint: enable the key") {
		t.Errorf("no default hint for a disabled key: %q", te.stderr.String())
	}
	te = newTestEnv(nil)
	if code := report(&te.Env, nil); code != ExitOK || te.stderr.Len() != 0 {
		t.Errorf("report(nil) = %d, %q", code, te.stderr.String())
	}
}

func TestUnknownCommandAndStubs(t *testing.T) {
	te := newTestEnv(nil)
	if code := runCmd(t, te, "frobnicate"); code != ExitUsage || !strings.HasPrefix(te.stderr.String(), "kmsfs: error: unknown command") {
		t.Errorf("unknown command: exit %d, %q", code, te.stderr.String())
	}
	if code := runCmd(t, te, "fsck", "/nonexistent"); code != ExitCipherDir {
		t.Errorf("fsck /nonexistent: exit %d, %q", code, te.stderr.String())
	}
	if code := runCmd(t, te, "fsck"); code != ExitUsage {
		t.Errorf("fsck without CIPHERDIR: exit %d, want %d", code, ExitUsage)
	}
}

func TestReportOneLine(t *testing.T) {
	te := newTestEnv(nil)
	code := reportOneLine(&te.Env, withHint(withKind(errMountFailed, errors.New("/m is already\nmounted")), "unmount it first"))
	want := "kmsfs: error: /m is already mounted (hint: unmount it first)\n"
	if code != ExitMount || te.stderr.String() != want {
		t.Errorf("reportOneLine: code %d, stderr %q; want %d, %q", code, te.stderr.String(), ExitMount, want)
	}
}
