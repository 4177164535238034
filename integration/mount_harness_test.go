// testFS: one initialised (and usually mounted) kmsfs filesystem of a
// test, made by newFS and torn down at cleanup.

package integration

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

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
	// peers counts the extra mounts made with SecondMount; peer is set on
	// those: their cleanup unmounts, the first mount's removes the files.
	peers int
	peer  bool
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

// SecondMount mounts fs's CIPHERDIR once more, on a mount point of its own
// and served by a daemon of its own, with the same keystore, environment
// and mount flags (plus extra): the stand-in for another host sharing the
// tree. Each call makes another mount (mnt2, mnt3, …). Its cleanup, which
// runs before fs's, unmounts it and leaves the files to fs's.
func (fs *testFS) SecondMount(extra ...string) *testFS {
	fs.t.Helper()
	fs.peers++
	n := strconv.Itoa(fs.peers + 1)
	p := &testFS{
		CipherDir: fs.CipherDir,
		Mnt:       filepath.Join(fs.dir, "mnt"+n),
		Keystore:  fs.Keystore,
		LogFile:   filepath.Join(fs.dir, "kmsfs"+n+".log"),
		ChunkSize: fs.ChunkSize,
		t:         fs.t,
		dir:       fs.dir,
		mountArgs: fs.mountArgs,
		env:       fs.env,
		peer:      true,
	}
	if err := os.Mkdir(p.Mnt, 0o755); err != nil {
		fs.t.Fatal(err)
	}
	fs.t.Cleanup(p.cleanup)
	p.Mount(extra...)
	return p
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
	b, err := os.ReadFile(fs.BackingRaw(configName))
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

// Backing returns the backing path of a path in the mount (elements
// joined): in a tree with encrypted names (format 2) the encrypted path,
// mapped by `kmsfs paths --encrypt` (the entry must exist), otherwise the
// same names under CIPHERDIR. Internal files (kmsfs.conf) are reached with
// BackingRaw.
func (fs *testFS) Backing(elem ...string) string {
	fs.t.Helper()
	rel := filepath.Join(elem...)
	if rel == "" || rel == "." || fs.Config().FormatVersion < 2 {
		return fs.BackingRaw(elem...)
	}
	args := []string{"paths", "--encrypt", "--json"}
	if i := slices.Index(fs.mountArgs, "--kms-endpoint"); i >= 0 && i+1 < len(fs.mountArgs) {
		args = append(args, fs.mountArgs[i:i+2]...) // the names key comes from the mount's key service
	}
	out := fs.Run(append(args, "--", fs.CipherDir, rel)...)
	var doc struct {
		Paths []struct{ Output, Error string }
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Paths) != 1 || doc.Paths[0].Output == "" {
		fs.t.Fatalf("kmsfs paths --encrypt %s: %v\n%s", rel, err, out)
	}
	return filepath.Join(fs.CipherDir, doc.Paths[0].Output)
}

// Plain is the inverse of Backing: the path in the mount of a backing path
// relative to CIPHERDIR (`kmsfs paths --decrypt` in a tree with encrypted
// names).
func (fs *testFS) Plain(backingRel string) string {
	fs.t.Helper()
	if fs.Config().FormatVersion < 2 {
		return backingRel
	}
	args := []string{"paths", "--decrypt", "--json"}
	if i := slices.Index(fs.mountArgs, "--kms-endpoint"); i >= 0 && i+1 < len(fs.mountArgs) {
		args = append(args, fs.mountArgs[i:i+2]...)
	}
	out := fs.Run(append(args, "--", fs.CipherDir, backingRel)...)
	var doc struct {
		Paths []struct{ Output, Error string }
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Paths) != 1 || doc.Paths[0].Output == "" {
		fs.t.Fatalf("kmsfs paths --decrypt %s: %v\n%s", backingRel, err, out)
	}
	return doc.Paths[0].Output
}

// BackingRaw joins elements onto CIPHERDIR as they are: for kmsfs's own
// files and for backing names already known.
func (fs *testFS) BackingRaw(elem ...string) string {
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
	if fs.peer {
		return // the first mount's cleanup removes the directories
	}
	if left := leftoverMounts(fs.dir); len(left) > 0 {
		t.Errorf("cleanup: %s is still mounted; keeping %s", left[0].Mountpoint, fs.dir)
		return
	}
	if err := os.RemoveAll(fs.dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}
