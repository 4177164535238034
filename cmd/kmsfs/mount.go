package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/codec"
	kfs "github.com/kmsfs/kmsfs/fs"
	"github.com/kmsfs/kmsfs/internal/secmem"
	"github.com/kmsfs/kmsfs/keysvc"
)

// envDaemonFD names the environment variable through which `kmsfs mount`
// tells the daemon it re-executed which file descriptor is its readiness
// pipe. Its presence also means "you are the background daemon". It is
// internal: the parent sets it, the daemon unsets it at once.
const envDaemonFD = "KMSFS_DAEMON_READY_FD"

// readyTimeout bounds how long `kmsfs mount` waits for its daemon to report
// (the key check inside is bounded by the KMS timeout already).
const readyTimeout = 2 * time.Minute

// keyCheckTimeout bounds the DescribeKey a daemon makes before mounting.
const keyCheckTimeout = 30 * time.Second

// mountFlags are the parsed flags of `kmsfs mount`.
type mountFlags struct {
	foreground  bool
	readOnly    bool
	allowOther  bool
	debug       bool
	logFile     string
	cacheMaxAge time.Duration
	endpoint    string
	ks          keystoreFlags
	metrics     string // --metrics ADDR: serve Prometheus metrics there
	metricsAny  bool   // --metrics-any-address: allow a non-loopback ADDR
	pprof       bool   // --pprof: Go's profiler on the (loopback) metrics port
	writeback   bool   // --writeback-cache
	shared      bool   // --shared (or shared in kmsfs.conf)

	cipherDir  string // absolute, symlinks resolved
	mountpoint string // absolute, symlinks resolved
}

// parseMountFlags parses and checks the command line of `kmsfs mount`.
func parseMountFlags(args []string, env *Env) (*mountFlags, error) {
	f := &mountFlags{}
	fset := newFlagSet("mount")
	fset.BoolVar(&f.foreground, "foreground", false, "stay attached")
	fset.BoolVar(&f.readOnly, "ro", false, "mount read-only")
	fset.BoolVar(&f.allowOther, "allow-other", false, "let other users in (with default_permissions)")
	fset.BoolVar(&f.debug, "debug", false, "log every FUSE request")
	fset.StringVar(&f.logFile, "log-file", "", "append the log to this file")
	fset.DurationVar(&f.cacheMaxAge, "cache-max-age", keysvc.DefaultCacheMaxAge, "keep unwrapped data keys at most this long (0: no cache)")
	fset.StringVar(&f.endpoint, "kms-endpoint", "", "AWS KMS endpoint URL")
	fset.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics on this address (loopback, e.g. 127.0.0.1:9101)")
	fset.BoolVar(&f.metricsAny, "metrics-any-address", false, "allow a non-loopback --metrics address")
	fset.BoolVar(&f.pprof, "pprof", false, "serve Go's profiler under /debug/pprof/ on the loopback --metrics address")
	fset.BoolVar(&f.writeback, "writeback-cache", false, "let the kernel cache writes (only for a tree nothing else changes)")
	fset.BoolVar(&f.shared, "shared", false, "several hosts mount the tree at once: byte-range locks, bounded caches, close-to-open (forced by init --shared)")
	f.ks.register(fset)
	pos, err := parseArgs(fset, "mount", args, env, 2, 2)
	if err != nil {
		return nil, err
	}
	if f.shared && f.writeback {
		return nil, usageErrorf("mount: --shared and --writeback-cache exclude each other (the writeback cache holds writes back and trusts its own file size, which other hosts change)")
	}
	if f.cacheMaxAge < 0 {
		return nil, usageErrorf("mount: --cache-max-age must not be negative")
	}
	if f.metrics != "" && !f.metricsAny && !isLoopback(f.metrics) {
		return nil, usageErrorf("mount: --metrics %s is not a loopback address; add --metrics-any-address to serve it anyway", f.metrics)
	}
	if f.pprof && (f.metrics == "" || !isLoopback(f.metrics)) {
		return nil, usageErrorf("mount: --pprof needs a loopback --metrics address (the profiler must never leave the host)")
	}
	if f.logFile != "" {
		if f.logFile, err = filepath.Abs(f.logFile); err != nil {
			return nil, withKind(errUsage, err)
		}
	}
	if f.cipherDir, err = resolveDir(pos[0], "CIPHERDIR"); err != nil {
		return nil, withKind(errCipherDir, err)
	}
	if f.mountpoint, err = resolveDir(pos[1], "MOUNTPOINT"); err != nil {
		return nil, withKind(errMountFailed, err)
	}
	if within(f.mountpoint, f.cipherDir) || within(f.cipherDir, f.mountpoint) {
		return nil, usageErrorf("mount: CIPHERDIR %s and MOUNTPOINT %s must not contain each other", f.cipherDir, f.mountpoint)
	}
	// Stacking a second FUSE mount on a live one would hide the first and
	// its open files: refuse.
	entries, err := readMountinfo()
	if err != nil {
		return nil, withKind(errMountFailed, err)
	}
	if m, ok := fuseMountAt(entries, f.mountpoint); ok {
		return nil, withHint(withKind(errMountFailed, fmt.Errorf("%s is already mounted (%s from %s)", f.mountpoint, m.FSType, m.Source)),
			"unmount it first with 'kmsfs unmount "+f.mountpoint+"'")
	}
	return f, nil
}

// resolveDir returns the absolute, symlink-free path of an existing
// directory.
func resolveDir(p, what string) (string, error) {
	abs, err := filepath.Abs(p)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s %s is not a directory", what, abs)
	}
	return abs, nil
}

// runMount implements `kmsfs mount`. Without --foreground it starts the
// daemon (startDaemon) and returns once the daemon reports the mount live.
// In the daemon itself (envDaemonFD set) every outcome, success or
// failure, is reported once through the readiness pipe.
func runMount(ctx context.Context, args []string, env *Env) (err error) {
	var ready *readiness
	if fdStr := env.Getenv(envDaemonFD); fdStr != "" {
		os.Unsetenv(envDaemonFD) // not for anything the daemon may start
		fd, convErr := strconv.Atoi(fdStr)
		if convErr != nil || fd < 3 {
			return usageErrorf("mount: bad %s=%q", envDaemonFD, fdStr)
		}
		ready = &readiness{pipe: os.NewFile(uintptr(fd), "readiness pipe")}
		defer func() { ready.report(err) }() // no-op if serve reported
	}
	f, err := parseMountFlags(args, env)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(f.cipherDir, "is it a CIPHERDIR? create one with 'kmsfs init DIR'")
	if err != nil {
		return err
	}
	if cfg.Shared && f.writeback {
		return usageErrorf("mount: %s is a shared tree (kmsfs init --shared), which --writeback-cache cannot be used on (the writeback cache holds writes back and trusts its own file size, which other hosts change)", f.cipherDir)
	}
	f.shared = f.shared || cfg.Shared
	if ready == nil && !f.foreground {
		return startDaemon(f, cfg, env)
	}
	return serve(ctx, f, cfg, env, ready)
}

// daemonArgs rebuilds the daemon's command line from the parsed flags,
// with every path absolute (the daemon runs in "/").
func daemonArgs(f *mountFlags, cfg cipherdir.Config, env *Env) ([]string, error) {
	args := []string{"mount", "--foreground"}
	if f.readOnly {
		args = append(args, "--ro")
	}
	if f.allowOther {
		args = append(args, "--allow-other")
	}
	if f.debug {
		args = append(args, "--debug")
	}
	if f.logFile != "" {
		args = append(args, "--log-file", f.logFile)
	}
	args = append(args, "--cache-max-age", f.cacheMaxAge.String())
	if f.endpoint != "" {
		args = append(args, "--kms-endpoint", f.endpoint)
	}
	if f.metrics != "" {
		args = append(args, "--metrics", f.metrics)
	}
	if f.metricsAny {
		args = append(args, "--metrics-any-address")
	}
	if f.pprof {
		args = append(args, "--pprof")
	}
	if f.writeback {
		args = append(args, "--writeback-cache")
	}
	if f.shared {
		args = append(args, "--shared")
	}
	if cfg.KMS == cipherdir.KMSLocal {
		dir, passFile, err := f.ks.resolve(env)
		if err != nil {
			return nil, err
		}
		args = append(args, "--keystore", dir)
		if passFile != "" {
			args = append(args, "--passphrase-file", passFile)
		}
	}
	return append(args, "--", f.cipherDir, f.mountpoint), nil
}

// startDaemon re-executes kmsfs as `mount --foreground` in a new session
// with stdin and stdout on /dev/null, stderr on /dev/null or the log file,
// its cwd "/" and a pipe on fd 3, and waits until the daemon writes to the
// pipe:
//
//	ready                      the mount is live
//	error CODE MESSAGE         it failed; CODE is its exit code
//	hint MESSAGE               (optional, after error)
//
// EOF without a line means the daemon died; the log says why.
func startDaemon(f *mountFlags, cfg cipherdir.Config, env *Env) error {
	exe, err := os.Executable()
	if err != nil {
		return withKind(errMountFailed, fmt.Errorf("find own executable: %w", err))
	}
	args, err := daemonArgs(f, cfg, env)
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return withKind(errMountFailed, fmt.Errorf("readiness pipe: %w", err))
	}
	defer r.Close()
	cmd := exec.Command(exe, args...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), envDaemonFD+"=3")
	cmd.ExtraFiles = []*os.File{w} // becomes fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// stdin and stdout are /dev/null. stderr too, unless there is a log
	// file: then what the daemon cannot log itself (a Go panic, the
	// fusermount3 helper's complaint) lands there rather than nowhere.
	if f.logFile != "" {
		lf, err := openLogFile(f.logFile)
		if err != nil {
			w.Close()
			return withKind(errUsage, fmt.Errorf("log file: %w", err))
		}
		defer lf.Close()
		cmd.Stderr = lf
	}
	err = cmd.Start()
	w.Close() // only the daemon holds the write end now: EOF when it exits
	if err != nil {
		return withKind(errMountFailed, fmt.Errorf("start daemon: %w", err))
	}
	_ = r.SetReadDeadline(time.Now().Add(readyTimeout))
	status, readErr := readReady(r)
	if status == nil && readErr == nil {
		return cmd.Process.Release()
	}
	if errors.Is(readErr, os.ErrDeadlineExceeded) {
		_ = cmd.Process.Kill()
	}
	waitErr := cmd.Wait()
	if status != nil {
		return status
	}
	e := fmt.Errorf("mount daemon exited before the mount was ready (%v)", waitErr)
	if readErr != nil && !errors.Is(readErr, io.EOF) {
		e = fmt.Errorf("mount daemon did not report readiness: %w (daemon: %v)", readErr, waitErr)
	}
	hint := "run with --foreground or --log-file FILE to see why"
	if f.logFile != "" {
		hint = "see " + f.logFile
	}
	return withHint(withKind(errMountFailed, e), hint)
}

// daemonError is a failure reported by the daemon through the readiness
// pipe, with the exit code the daemon chose for it.
type daemonError struct {
	code int
	msg  string
}

func (e *daemonError) Error() string { return e.msg }

// readReady reads the daemon's report. It returns (nil, nil) for "ready",
// (error, nil) for a reported failure and (nil, err) when the pipe gave
// nothing usable (err is io.EOF when the daemon closed it silently).
func readReady(r io.Reader) (status error, err error) {
	sc := bufio.NewScanner(r)
	if !sc.Scan() {
		if sc.Err() != nil {
			return nil, sc.Err()
		}
		return nil, io.EOF
	}
	line := sc.Text()
	if line == "ready" {
		return nil, nil
	}
	rest, ok := strings.CutPrefix(line, "error ")
	if !ok {
		return nil, fmt.Errorf("unexpected readiness message %q", line)
	}
	codeStr, msg, _ := strings.Cut(rest, " ")
	code, cerr := strconv.Atoi(codeStr)
	if cerr != nil || code <= 0 || code > 125 {
		code = ExitMount
	}
	var result error = &daemonError{code: code, msg: msg}
	if sc.Scan() {
		if h, ok := strings.CutPrefix(sc.Text(), "hint "); ok {
			result = withHint(result, h)
		}
	}
	return result, nil
}

// readiness is the daemon's end of the readiness pipe (see startDaemon).
// A nil *readiness (the --foreground case) reports nothing.
type readiness struct {
	pipe *os.File
}

// report writes the outcome of the mount and closes the pipe; only the
// first call does anything.
func (r *readiness) report(err error) {
	if r == nil || r.pipe == nil {
		return
	}
	msg := "ready\n"
	if err != nil {
		msg = fmt.Sprintf("error %d %s\n", exitCode(err), oneLine(err.Error()))
		if h := hintFor(err); h != "" {
			msg += "hint " + oneLine(h) + "\n"
		}
	}
	_, _ = io.WriteString(r.pipe, msg) // the parent may be gone: nothing to do then
	_ = r.pipe.Close()
	r.pipe = nil
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ") }

// serve runs the filesystem in this process until it is unmounted: by
// `kmsfs unmount`, fusermount3 -u, or SIGINT/SIGTERM/SIGHUP here. ready is the
// readiness pipe of a background daemon, nil in --foreground mode.
func serve(ctx context.Context, f *mountFlags, cfg cipherdir.Config, env *Env, ready *readiness) error {
	// The caller's umask is applied once, by the kernel or (with POSIX
	// ACLs) by fs; ours must not apply a second time.
	unix.Umask(0)
	// Catch signals before mounting: while go-fuse's Mount waits for the
	// kernel it holds a file open inside the new mount, and dying there by
	// the default action leaves a dead mount or a daemon stuck in its own
	// flush. A signal that arrives early is handled once the mount is up,
	// by unmounting. SIGHUP too: a --foreground mount whose terminal goes
	// away must not leave a dead mount behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	logger, closeLog, err := daemonLogger(f, env, ready != nil)
	if err != nil {
		return err
	}
	defer closeLog()
	fail := func(err error) error {
		logger.Error("mount failed", "cipherdir", f.cipherDir, "mountpoint", f.mountpoint, "err", err)
		ready.report(err)
		return err
	}

	backend, closeSvc, err := openKeyService(ctx, cfg.KMS, &f.ks, f.endpoint, env, logger)
	if err != nil {
		return fail(err)
	}
	defer closeSvc()
	// Count every call that reaches the key service, under the cache.
	metered := keysvc.NewMetered(backend)
	var svc keysvc.Service = metered
	if err := checkMountKey(ctx, svc, cfg.KeyID); errors.Is(err, keysvc.ErrAccessDenied) {
		// A least-privilege key policy may allow only GenerateDataKey and
		// Decrypt: file opens will tell.
		logger.Warn("cannot check the key before mounting", "key", cfg.KeyID, "err", err)
	} else if err != nil {
		return fail(err)
	}
	// The names key is unwrapped once, without the DEK cache, before
	// anything is mounted: a disabled key stops the mount here.
	namesKeys, err := openNames(ctx, svc, f.cipherDir, cfg)
	if err != nil {
		return fail(err)
	}
	keys := svc
	// Open files re-validate their data key as often as the cache keeps
	// one, so revocation reaches them within --cache-max-age; without a
	// cache, every second.
	recheck := time.Second
	metrics := &mountMetrics{kms: metered, fs: &kfs.Metrics{}}
	// The data keys kept for a while (DEK cache, key pool) share locked
	// memory left out of core dumps; a refusal by the kernel is logged
	// once. Closed after the cache (defers run last first).
	keyMem := secmem.New(secmem.Options{Logger: logger})
	defer keyMem.Close()
	if f.cacheMaxAge > 0 {
		recheck = f.cacheMaxAge
		cache := keysvc.NewCache(svc, keysvc.CacheOptions{MaxAge: f.cacheMaxAge, Memory: keyMem})
		// Zero every cached data key however we leave.
		defer cache.Close()
		keys = cache
		metrics.cache = cache
	}
	if f.metrics != "" {
		stop, err := startMetrics(f.metrics, f.metricsAny, f.pprof, metrics, logger)
		if err != nil {
			return fail(err)
		}
		defer stop()
	}

	server, err := kfs.Mount(f.mountpoint, kfs.Options{
		CipherDir:  f.cipherDir,
		Config:     cfg,
		Names:      namesKeys,
		Keys:       keys,
		Codecs:     codec.All(),
		ReadOnly:   f.readOnly,
		AllowOther: f.allowOther,
		Logger:     logger,
		Debug:      f.debug,
		KeyRecheck: recheck,
		KeyCheck:   svc,
		Metrics:    metrics.fs,
		Memory:     keyMem,

		WritebackCache: f.writeback,
		Shared:         f.shared,
	})
	if err != nil {
		err = withKind(errMountFailed, err)
		if hint := mountHint(f); hint != "" {
			err = withHint(err, hint)
		}
		return fail(err)
	}

	// State file next, readiness last: once the parent returns,
	// `kmsfs unmount` must find the state.
	statePath, err := recordMount(f, cfg, env)
	if err != nil {
		_ = server.Unmount()
		server.Wait()
		return fail(err)
	}
	defer removeState(statePath, os.Getpid())

	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	logger.Info("mounted", "cipherdir", f.cipherDir, "mountpoint", f.mountpoint, "kms", cfg.KMS,
		"key", cfg.KeyID, "read_only", f.readOnly, "allow_other", f.allowOther)
	ready.report(nil)

	for {
		select {
		case sig := <-sigs:
			logger.Info("signal received, unmounting", "signal", sig.String())
			if err := server.Unmount(); err != nil {
				// Typically EBUSY: keep serving rather than strand open files.
				logger.Warn("unmount failed, still serving", "err", err)
			}
		case <-done:
			logger.Info("unmounted", "mountpoint", f.mountpoint)
			return nil
		}
	}
}

// mountHint guesses why the kernel or fusermount3 refused a mount, for
// the usual causes of a non-root mount.
func mountHint(f *mountFlags) string {
	switch {
	case os.Geteuid() == 0:
		return ""
	case unix.Access("/dev/fuse", unix.R_OK|unix.W_OK) != nil:
		return "/dev/fuse is not readable and writable for this user: see 'ls -l /dev/fuse'"
	case f.allowOther:
		return "--allow-other needs 'user_allow_other' in /etc/fuse.conf"
	}
	return ""
}

// daemonLogger returns the logger of a mount: --log-file if given; else
// stderr in the foreground; else, for a background daemon, syslog when
// /dev/log exists, else nowhere.
func daemonLogger(f *mountFlags, env *Env, background bool) (*slog.Logger, func(), error) {
	level := slog.LevelInfo
	if f.debug {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	var w io.Writer = io.Discard
	closeFn := func() {}
	switch {
	case f.logFile != "":
		lf, err := openLogFile(f.logFile)
		if err != nil {
			return nil, nil, withKind(errUsage, fmt.Errorf("log file: %w", err))
		}
		w, closeFn = lf, func() { lf.Close() }
	case !background:
		w = env.Stderr
	default:
		if _, err := os.Stat("/dev/log"); err == nil {
			if sl, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "kmsfs"); err == nil {
				w, closeFn = sl, func() { sl.Close() }
			}
		}
	}
	return slog.New(slog.NewTextHandler(w, opts)), closeFn, nil
}

// checkMountKey refuses to mount when the config's key is unusable: every
// open would fail later with EIO, far from the cause. (A caller that may
// not DescribeKey gets ErrAccessDenied, which serve tolerates.)
func checkMountKey(ctx context.Context, svc keysvc.Service, keyID string) error {
	ctx, cancel := context.WithTimeout(ctx, keyCheckTimeout)
	defer cancel()
	_, err := cipherdir.DescribeEnabled(ctx, svc, keyID)
	return err
}

// recordMount writes this daemon's state file (see mountState).
func recordMount(f *mountFlags, cfg cipherdir.Config, env *Env) (string, error) {
	start, _, err := procStartTime(os.Getpid())
	if err != nil {
		return "", withKind(errMountFailed, fmt.Errorf("own start time: %w", err))
	}
	path, err := writeState(stateDir(env), mountState{
		PID:        os.Getpid(),
		StartTime:  start,
		CipherDir:  f.cipherDir,
		Mountpoint: f.mountpoint,
		KMS:        cfg.KMS,
		Started:    time.Now().UTC().Truncate(time.Second),
	})
	if err != nil {
		return "", withKind(errMountFailed, err)
	}
	return path, nil
}
