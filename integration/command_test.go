// kmsfs and other commands run as subprocesses of the tests.

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// cmdResult is the outcome of one kmsfs invocation.
type cmdResult struct {
	Stdout, Stderr string
	Code           int   // exit code; -1 when the process did not exit normally
	Err            error // nil when the command ran and exited 0
}

// execKmsfs runs the kmsfs binary with os.Environ() plus env. Its output is
// collected through pipes with a bounded WaitDelay: a daemon that keeps the
// caller's stdout or stderr open would hang `$(kmsfs mount …)` in scripts,
// and is reported as an error here.
func execKmsfs(env []string, args ...string) cmdResult {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	res := cmdResult{Code: -1}
	if cmd.ProcessState != nil {
		res.Code = cmd.ProcessState.ExitCode()
	}
	switch {
	case errors.Is(err, exec.ErrWaitDelay):
		err = fmt.Errorf("a child process kept kmsfs's stdout/stderr open after it exited: %w", err)
	case ctx.Err() != nil:
		err = fmt.Errorf("timed out after %v: %w", commandTimeout, err)
	}
	res.Stdout, res.Stderr, res.Err = stdout.String(), stderr.String(), err
	return res
}

// runKmsfs runs kmsfs with os.Environ() plus env, fails the test unless it
// exits 0, and returns its stdout.
func runKmsfs(t testing.TB, env []string, args ...string) string {
	t.Helper()
	res := execKmsfs(env, args...)
	if res.Err != nil {
		t.Fatalf("kmsfs %s: %v (exit %d)\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), res.Err, res.Code, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

// commandOutput runs a command (not kmsfs) and returns its combined output.
func commandOutput(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
