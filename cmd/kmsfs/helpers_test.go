package main

import (
	"bytes"
	"context"
	"testing"
)

// testEnv is an Env with captured output and a fixed environment.
type testEnv struct {
	Env
	stdout, stderr bytes.Buffer
}

func newTestEnv(vars map[string]string) *testEnv {
	te := &testEnv{}
	te.Env = Env{
		Stdout: &te.stdout,
		Stderr: &te.stderr,
		Getenv: func(k string) string { return vars[k] },
	}
	return te
}

// runCmd runs the command line args in env and returns the exit code.
func runCmd(t *testing.T, te *testEnv, args ...string) int {
	t.Helper()
	te.stdout.Reset()
	te.stderr.Reset()
	code := run(context.Background(), args, &te.Env)
	t.Logf("kmsfs %q: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, te.stdout.String(), te.stderr.String())
	return code
}
