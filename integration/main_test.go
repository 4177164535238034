// Package integration builds the real kmsfs binary once and tests what users
// do on real FUSE mounts: the binary is run as a subprocess, `kmsfs mount`
// returning is the readiness signal, and nothing ever sleeps.
//
// Helpers for other test files in this package:
//
//	requireTool(t, "fio")                 // skip, or fail when CI=true
//	fs := newFS(t, WithChunkSize(512))    // init + mount, unmounted by cleanup
//	out := fs.Run("info", "--json", p)    // kmsfs with the keystore of fs
//	fs.Remount("--ro")
//	runKmsfs(t, env, args...)             // any kmsfs command, fails on exit != 0
//
// The harness is split by job: main_test.go (TestMain, building the binary,
// prerequisites), command_test.go (running kmsfs), mount_harness_test.go
// (testFS and newFS), process_test.go (daemon processes), mounts_test.go
// (the mount table) and data_test.go (test data and file checks).
//
// KMSFS_BIN=/path/to/kmsfs tests that binary instead of building ./cmd/kmsfs;
// KMSFS_SEED replays a randomized test; CI=true turns skips for missing tools
// into failures.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binPath is the kmsfs binary built by TestMain; tempRoot is the directory
// under which every CIPHERDIR, mount point and keystore of this run lives, so
// that mounts left behind can be told apart from those of other test runs.
// Both are set once in TestMain before any test runs and never change.
var (
	binPath  string
	tempRoot string
)

// commandTimeout bounds every kmsfs invocation so that a hanging mount or
// unmount fails the test instead of the whole run.
const commandTimeout = 2 * time.Minute

// exitTimeout bounds how long we wait for a daemon to exit after unmount or
// a signal. Waiting uses a pidfd and returns as soon as the process exits.
const exitTimeout = 30 * time.Second

// configName is the config file kmsfs init writes into CIPHERDIR.
const configName = "kmsfs.conf"

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	root, err := os.MkdirTemp("", "kmsfs-integration-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	tempRoot = root
	if bin := os.Getenv("KMSFS_BIN"); bin != "" {
		// A binary built elsewhere (say, from a clean checkout).
		if binPath, err = filepath.Abs(bin); err != nil {
			fmt.Fprintf(os.Stderr, "integration: KMSFS_BIN: %v\n", err)
			os.RemoveAll(root)
			return 1
		}
	} else {
		binPath = filepath.Join(root, "kmsfs")
		if err := buildBinary(binPath); err != nil {
			fmt.Fprintf(os.Stderr, "integration: %v\n", err)
			os.RemoveAll(root)
			return 1
		}
	}

	code := m.Run()

	if left := leftoverMounts(root); len(left) > 0 {
		code = 1
		for _, e := range left {
			fmt.Fprintf(os.Stderr, "integration: FAIL: mount left behind: %s on %s type %s; forcing lazy unmount\n",
				e.Source, e.Mountpoint, e.FSType)
			if out, err := exec.Command("fusermount3", "-uz", e.Mountpoint).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "integration: fusermount3 -uz %s: %v: %s\n", e.Mountpoint, err, out)
			}
		}
	}
	// Only daemons of this run: their command line names a path under root.
	ours := func(_ int, args []string) bool {
		for _, a := range args {
			if strings.HasPrefix(a, root+"/") {
				return true
			}
		}
		return false
	}
	if pids := daemonPIDs(ours); len(pids) > 0 {
		code = 1
		for _, pid := range pids {
			fmt.Fprintf(os.Stderr, "integration: FAIL: kmsfs process %d still running after the tests; killing it\n", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if len(leftoverMounts(root)) == 0 {
		os.RemoveAll(root)
	} else {
		fmt.Fprintf(os.Stderr, "integration: keeping %s: mounts remain under it\n", root)
	}
	return code
}

// buildBinary builds ./cmd/kmsfs (without -race: the race detector belongs to
// the test process, and a race-instrumented daemon would be far slower).
func buildBinary(out string) error {
	repo, err := filepath.Abs("..")
	if err != nil {
		return fmt.Errorf("locating repository root: %w", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building kmsfs needs the go command in PATH: %w", err)
	}
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/kmsfs")
	cmd.Dir = repo
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/kmsfs: %w\n%s", err, b)
	}
	return nil
}

// requireTool skips the test when name (a command in $PATH, or an absolute
// path such as /dev/fuse) is missing. With CI=true a missing tool fails the
// test instead, so that CI cannot silently skip whole suites.
func requireTool(t testing.TB, name string) {
	t.Helper()
	var err error
	if filepath.IsAbs(name) {
		_, err = os.Stat(name)
	} else {
		_, err = exec.LookPath(name)
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("required tool %s is missing (CI=true): %v", name, err)
	}
	t.Skipf("skipping: %s is not available: %v", name, err)
}

// requireFUSE skips (or fails under CI) unless this process can mount FUSE
// filesystems: /dev/fuse plus either root or fusermount3.
func requireFUSE(t testing.TB) {
	t.Helper()
	requireTool(t, "/dev/fuse")
	if os.Geteuid() != 0 {
		requireTool(t, "fusermount3")
	}
}

// requireRoot skips (or fails under CI) unless the test runs as root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this test needs root (CI=true)")
	}
	t.Skipf("skipping: this test needs root")
}
