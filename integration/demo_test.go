package integration

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDemo runs `make demo`'s script with the binary under test: init,
// mount, write a file, a directory, a symlink and an xattr, then grep the
// whole backing tree (contents, names, symlink targets, xattr names and
// values) for every plaintext string written, remount and read back. The
// script fails on any plaintext it finds.
func TestDemo(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	requireTool(t, "getfattr")
	cmd := exec.Command("bash", "../.ci/demo.sh")
	cmd.Env = append(os.Environ(), "KMSFS="+binPath, "TMPDIR="+tempRoot)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "demo: ok") {
		t.Fatalf("demo: %v\n%s", err, out)
	}
}
