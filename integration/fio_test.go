package integration

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// TestFio runs fio with crc32c verification on sequential and random writes
// with small and large blocks, then verifies the same data again with
// --verify_only after a remount.
func TestFio(t *testing.T) {
	t.Parallel()
	requireTool(t, "fio")
	fs := newFS(t)
	jobs := []struct{ rw, bs string }{
		{"write", "4k"}, {"write", "128k"}, {"randwrite", "4k"}, {"randwrite", "128k"},
	}
	args := func(rw, bs string) []string {
		return []string{
			"--name=" + rw + "-" + bs,
			"--directory=" + fs.Mnt,
			"--filename=" + rw + "-" + bs,
			"--rw=" + rw, "--bs=" + bs, "--size=32m",
			"--ioengine=psync", "--direct=0", "--end_fsync=1",
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
			"--randrepeat=1", "--randseed=4242", "--verify_state_save=0",
		}
	}
	for _, j := range jobs {
		runFio(t, args(j.rw, j.bs)...)
	}

	fs.Remount()
	for _, j := range jobs {
		runFio(t, append(args(j.rw, j.bs), "--verify_only")...)
	}
}

// runFio runs fio and fails the test on a non-zero exit.
func runFio(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "fio", args...)
	cmd.Dir = t.TempDir() // fio may write state files into its working directory
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("fio %v: %v\n%s", args, err, out)
	}
}
