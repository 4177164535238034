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
// KMSFS_BIN=/path/to/kmsfs tests that binary instead of building ./cmd/kmsfs;
// KMSFS_SEED replays a randomized test; CI=true turns skips for missing tools
// into failures.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// Option configures newFS.
type Option func(*fsOptions)

type fsOptions struct {
	chunkSize int
	initArgs  []string
	mountArgs []string
	env       []string
	noMount   bool
}

// WithChunkSize initialises the filesystem with `--chunk-size n`.
func WithChunkSize(n int) Option { return func(o *fsOptions) { o.chunkSize = n } }

// WithInitArgs adds flags to `kmsfs init`.
func WithInitArgs(args ...string) Option {
	return func(o *fsOptions) { o.initArgs = append(o.initArgs, args...) }
}

// WithMountArgs adds flags (such as --ro) to every `kmsfs mount` of the
// filesystem.
func WithMountArgs(args ...string) Option {
	return func(o *fsOptions) { o.mountArgs = append(o.mountArgs, args...) }
}

// WithEnv adds environment variables (NAME=value) to every kmsfs
// invocation of the filesystem.
func WithEnv(env ...string) Option {
	return func(o *fsOptions) { o.env = append(o.env, env...) }
}

// WithoutMount leaves the filesystem initialised but unmounted.
func WithoutMount() Option { return func(o *fsOptions) { o.noMount = true } }

// testFS is one initialised kmsfs filesystem of a test: its CIPHERDIR, its
// mount point, its own local keystore and the daemon's log file.
type testFS struct {
	CipherDir string
	Mnt       string
	Keystore  string
	LogFile   string
	ChunkSize int // from kmsfs.conf after init

	t         testing.TB
	dir       string
	mountArgs []string
	env       []string
	mounted   bool
	pid       int // the daemon of the current mount, 0 when unknown
}

// newFS creates a fresh filesystem under the run's temporary root, runs
// `kmsfs init` and (unless WithoutMount) `kmsfs mount`. Cleanup unmounts it,
// dumps the daemon log when the test failed and removes the directories.
func newFS(t testing.TB, opts ...Option) *testFS {
	t.Helper()
	requireFUSE(t)
	var o fsOptions
	for _, opt := range opts {
		opt(&o)
	}
	dir, err := os.MkdirTemp(tempRoot, sanitize(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	fs := &testFS{
		CipherDir: filepath.Join(dir, "cipher"),
		Mnt:       filepath.Join(dir, "mnt"),
		Keystore:  filepath.Join(dir, "keystore"),
		LogFile:   filepath.Join(dir, "kmsfs.log"),
		ChunkSize: o.chunkSize,
		t:         t,
		dir:       dir,
		mountArgs: o.mountArgs,
		env:       o.env,
	}
	for _, d := range []string{fs.CipherDir, fs.Mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(fs.cleanup)

	args := []string{"init"}
	if o.chunkSize != 0 {
		args = append(args, "--chunk-size", strconv.Itoa(o.chunkSize))
	}
	args = append(args, o.initArgs...)
	args = append(args, fs.CipherDir)
	fs.Run(args...)
	cfg := fs.Config()
	if o.chunkSize != 0 && cfg.ChunkSize != o.chunkSize {
		t.Fatalf("kmsfs init --chunk-size %d wrote chunk_size %d to kmsfs.conf", o.chunkSize, cfg.ChunkSize)
	}
	fs.ChunkSize = cfg.ChunkSize
	if !o.noMount {
		fs.Mount()
	}
	return fs
}

// sanitize turns a test name into a short file name component.
func sanitize(name string) string {
	name = regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(name, "_")
	if len(name) > 60 {
		name = name[:60]
	}
	return name
}

// fsConfig is the part of CIPHERDIR/kmsfs.conf the tests check.
type fsConfig struct {
	FormatVersion int    `json:"format_version"`
	FilesystemID  string `json:"filesystem_id"`
	KMS           string `json:"kms"`
	KeyID         string `json:"key_id"`
	ChunkSize     int    `json:"chunk_size"`
}

// Config reads and decodes CIPHERDIR/kmsfs.conf.
func (fs *testFS) Config() fsConfig {
	fs.t.Helper()
	b, err := os.ReadFile(fs.Backing(configName))
	if err != nil {
		fs.t.Fatalf("reading config: %v", err)
	}
	var c fsConfig
	if err := json.Unmarshal(b, &c); err != nil {
		fs.t.Fatalf("decoding %s: %v\n%s", configName, err, b)
	}
	return c
}

// Env is the environment every kmsfs invocation of this filesystem gets on
// top of os.Environ().
func (fs *testFS) Env() []string {
	return append([]string{"KMSFS_KEYSTORE=" + fs.Keystore}, fs.env...)
}

// Run runs kmsfs with the filesystem's environment, fails the test unless it
// exits 0 and returns stdout.
func (fs *testFS) Run(args ...string) string {
	fs.t.Helper()
	return runKmsfs(fs.t, fs.Env(), args...)
}

// Exec runs kmsfs with the filesystem's environment and returns the result
// whatever the exit code.
func (fs *testFS) Exec(args ...string) cmdResult {
	return execKmsfs(fs.Env(), args...)
}

// Path joins elements onto the mount point.
func (fs *testFS) Path(elem ...string) string {
	return filepath.Join(append([]string{fs.Mnt}, elem...)...)
}

// Backing joins elements onto CIPHERDIR (file names are not encrypted yet).
func (fs *testFS) Backing(elem ...string) string {
	return filepath.Join(append([]string{fs.CipherDir}, elem...)...)
}

// Mount runs `kmsfs mount --log-file LOG [flags] CIPHERDIR MNT` with the
// filesystem's mount flags plus extra. When it returns the mount must be
// live: kmsfs mount returning is the readiness signal.
func (fs *testFS) Mount(extra ...string) {
	fs.t.Helper()
	if fs.mounted {
		fs.t.Fatalf("Mount: %s is already mounted", fs.Mnt)
	}
	args := []string{"mount", "--log-file", fs.LogFile}
	args = append(args, fs.mountArgs...)
	args = append(args, extra...)
	args = append(args, fs.CipherDir, fs.Mnt)
	res := fs.Exec(args...)
	e, live := findMount(fs.Mnt)
	if live {
		fs.mounted = true
	}
	if res.Err != nil {
		fs.t.Fatalf("kmsfs %s: %v (exit %d)\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), res.Err, res.Code, res.Stdout, res.Stderr)
	}
	if !live {
		fs.t.Fatalf("kmsfs mount exited 0 but %s is not in /proc/mounts: mount must return only once the filesystem is ready", fs.Mnt)
	}
	if !strings.HasPrefix(e.FSType, "fuse") ||
		!(strings.Contains(e.Source, "kmsfs") || strings.Contains(e.FSType, "kmsfs")) {
		fs.t.Errorf("mount entry %q type %q: want a fuse mount whose source or type names kmsfs", e.Source, e.FSType)
	}
	fs.pid = fs.findDaemon()
}

// Unmount runs `kmsfs unmount MNT` and checks that the mount is gone and the
// daemon has exited.
func (fs *testFS) Unmount() {
	fs.t.Helper()
	if !fs.mounted {
		fs.t.Fatalf("Unmount: %s is not mounted", fs.Mnt)
	}
	res := fs.unmountRetryBusy()
	_, live := findMount(fs.Mnt)
	fs.mounted = live
	if res.Err != nil {
		fs.t.Fatalf("kmsfs unmount %s: %v (exit %d)\nstdout:\n%s\nstderr:\n%s",
			fs.Mnt, res.Err, res.Code, res.Stdout, res.Stderr)
	}
	if live {
		fs.t.Fatalf("kmsfs unmount %s exited 0 but the mount is still in /proc/mounts", fs.Mnt)
	}
	if fs.pid != 0 {
		pid := fs.pid
		fs.pid = 0
		if err := waitExit(pid, exitTimeout); err != nil {
			fs.t.Errorf("kmsfs unmount returned but daemon %d: %v", pid, err)
		}
	}
}

// exitBusy is kmsfs's documented exit code for "unmount failed" (the mount
// is in use).
const exitBusy = 7

// unmountRetryBusy runs `kmsfs unmount` and retries a few times, with a
// short growing pause, while it reports the mount busy. Between fork and
// exec, a child process started by any goroutine of this test process holds
// copies of all our descriptors (close-on-exec or not), so a file closed just
// before the unmount can keep the mount busy for a moment.
func (fs *testFS) unmountRetryBusy() cmdResult {
	res := fs.Exec("unmount", fs.Mnt)
	for i, pause := 0, 20*time.Millisecond; i < 6 && res.Code == exitBusy; i, pause = i+1, pause*2 {
		fs.t.Logf("kmsfs unmount: busy (%s); retrying", strings.TrimSpace(res.Stderr))
		time.Sleep(pause)
		res = fs.Exec("unmount", fs.Mnt)
	}
	return res
}

// Remount unmounts and mounts again (a new daemon process), with extra mount
// flags for the new mount only.
func (fs *testFS) Remount(extra ...string) {
	fs.t.Helper()
	fs.Unmount()
	fs.Mount(extra...)
}

// Mounted reports whether the harness believes the filesystem is mounted.
func (fs *testFS) Mounted() bool { return fs.mounted }

// DaemonPID returns the pid of the daemon serving the current mount; the
// test fails when it could not be found.
func (fs *testFS) DaemonPID() int {
	fs.t.Helper()
	if fs.pid == 0 {
		fs.t.Fatalf("no kmsfs daemon process found for %s", fs.Mnt)
	}
	return fs.pid
}

// MarkUnmounted tells the harness that the mount went away by other means
// (for example a signal to the daemon), after checking /proc/mounts.
func (fs *testFS) MarkUnmounted() {
	fs.t.Helper()
	if _, live := findMount(fs.Mnt); live {
		fs.t.Fatalf("%s is still mounted", fs.Mnt)
	}
	fs.mounted = false
	fs.pid = 0
}

// Log returns the daemon log written so far.
func (fs *testFS) Log() string {
	b, err := os.ReadFile(fs.LogFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fs.t.Errorf("reading daemon log: %v", err)
	}
	return string(b)
}

// cleanup unmounts (falling back to fusermount3 and failing the test when
// kmsfs unmount does not work), dumps the log of a failed test and removes
// the test's directories.
func (fs *testFS) cleanup() {
	t := fs.t
	if fs.mounted {
		res := fs.unmountRetryBusy()
		if res.Err != nil {
			t.Errorf("cleanup: kmsfs unmount %s: %v (exit %d)\nstderr:\n%s", fs.Mnt, res.Err, res.Code, res.Stderr)
		}
		if _, live := findMount(fs.Mnt); live {
			if res.Err == nil {
				t.Errorf("cleanup: kmsfs unmount %s exited 0 but the mount is still there", fs.Mnt)
			}
			for _, flag := range []string{"-u", "-uz"} {
				if exec.Command("fusermount3", flag, fs.Mnt).Run() == nil {
					break
				}
			}
		}
		if fs.pid != 0 {
			if err := waitExit(fs.pid, exitTimeout); err != nil {
				t.Errorf("cleanup: daemon %d: %v", fs.pid, err)
				syscall.Kill(fs.pid, syscall.SIGKILL)
			}
		}
		_, fs.mounted = findMount(fs.Mnt)
	}
	if t.Failed() {
		log := fs.Log()
		const max = 64 << 10
		if len(log) > max {
			log = "…" + log[len(log)-max:]
		}
		t.Logf("daemon log %s:\n%s", fs.LogFile, log)
	}
	if _, live := findMount(fs.Mnt); live || fs.mounted {
		t.Errorf("cleanup: %s is still mounted; keeping %s", fs.Mnt, fs.dir)
		return
	}
	if err := os.RemoveAll(fs.dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// findDaemon returns the pid of the kmsfs process serving fs.Mnt: our binary,
// with the mount point on its command line or, failing that, our keystore in
// its environment. 0 when there is none or more than one.
func (fs *testFS) findDaemon() int {
	pids := daemonPIDs(func(pid int, args []string) bool {
		for _, a := range args {
			if a == fs.Mnt {
				return true
			}
		}
		return false
	})
	if len(pids) == 0 {
		want := []byte("KMSFS_KEYSTORE=" + fs.Keystore + "\x00")
		pids = daemonPIDs(func(pid int, _ []string) bool {
			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			return err == nil && bytes.Contains(env, want)
		})
	}
	if len(pids) != 1 {
		fs.t.Logf("found %d kmsfs daemon candidates for %s: %v", len(pids), fs.Mnt, pids)
		return 0
	}
	return pids[0]
}

// daemonPIDs lists running processes whose executable is binPath and for
// which match(pid, argv) is true.
func daemonPIDs(match func(pid int, args []string) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != binPath {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if match(pid, strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitExit waits, without polling loops, until process pid has exited.
func waitExit(pid int, timeout time.Duration) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return fmt.Errorf("still running after %v", timeout)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

// mountEntry is one line of /proc/mounts.
type mountEntry struct {
	Source, Mountpoint, FSType, Options string
}

// readMounts parses /proc/self/mounts.
func readMounts() []mountEntry {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		out = append(out, mountEntry{
			Source:     unescapeMount(fields[0]),
			Mountpoint: unescapeMount(fields[1]),
			FSType:     fields[2],
			Options:    fields[3],
		})
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 etc.) of /proc/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// findMount returns the last (topmost) mount on mountpoint.
func findMount(mountpoint string) (mountEntry, bool) {
	var found mountEntry
	ok := false
	for _, e := range readMounts() {
		if e.Mountpoint == mountpoint {
			found, ok = e, true
		}
	}
	return found, ok
}

// leftoverMounts lists FUSE mounts under root: every one of them is a kmsfs
// mount made by this run (the mount points live there, and root's name
// mentions kmsfs), so any of them after the run is a leak.
func leftoverMounts(root string) []mountEntry {
	var left []mountEntry
	for _, e := range readMounts() {
		inRoot := strings.HasPrefix(e.Mountpoint, root+"/") || strings.HasPrefix(e.Source, root+"/")
		if strings.HasPrefix(e.FSType, "fuse") && inRoot {
			left = append(left, e)
		}
	}
	return left
}

// testSeed returns the seed for a randomized test: $KMSFS_SEED when set,
// else a fresh one. It is logged so that any failure can be replayed.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("KMSFS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KMSFS_SEED=%q: %v", s, err)
		}
		t.Logf("seed %d (from KMSFS_SEED)", seed)
		return seed
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (replay with KMSFS_SEED=%d)", seed, seed)
	return seed
}

// newRand returns a deterministic generator for seed.
func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x6b6d7366735f6974))
}

// randomBytes returns n bytes from r.
func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	fillRandom(r, b)
	return b
}

// fillRandom fills b from r.
func fillRandom(r *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// sha256Hex is the hex SHA-256 of b.
func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sha256File returns the hex SHA-256 and the size of the file at path.
func sha256File(t testing.TB, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// mustWrite writes data to path (0644) and fails the test on error.
func mustWrite(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// mustRead reads path and fails the test on error.
func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkContent fails the test unless path holds exactly want.
func checkContent(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("reading %s: %v", path, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: content differs: got %d bytes (sha256 %.16s), want %d bytes (sha256 %.16s); first difference at %d",
			path, len(got), sha256Hex(got), len(want), sha256Hex(want), firstDiff(got, want))
	}
}

// firstDiff returns the first index where a and b differ.
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// errnoOf extracts the errno from err (0 for nil, -1 when there is none).
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return ^syscall.Errno(0)
}

// backingSize is the backing file size of a plaintext file of n bytes per
// the format contract: header and key-record slot (512 bytes), then per
// chunk nonce and tag around the data.
func backingSize(n int64, chunkSize int) int64 {
	const dataOffset, overhead = 512, 28
	chunks := (n + int64(chunkSize) - 1) / int64(chunkSize)
	return dataOffset + n + chunks*overhead
}

// chunkName names a subtest after a chunk size.
func chunkName(cs int) string { return fmt.Sprintf("chunk%d", cs) }

// commandOutput runs a command (not kmsfs) and returns its combined output.
func commandOutput(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
