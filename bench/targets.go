package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/kmsfs/kmsfs/internal/mountinfo"
)

// allTargets in their canonical order.
var allTargets = []string{"plain", "ceiling", "gocryptfs", "kmsfs", "kmsfs-plainnames", "kmsfs-aws", "kmsfs-zstd",
	"kmsfs-shared", "kmsfs-slot"}

// optInTargets answer one question each and run only when BENCH_TARGETS
// names them: kmsfs-slot is kmsfs with key records in the file's slot
// only, as on a backing file system without user xattrs, to measure what
// the user.kmsfs.key xattr costs (on ext4 with 256-byte inodes, a block
// per file).
var optInTargets = []string{"kmsfs-slot"}

// defaultTargets are the targets of a run without BENCH_TARGETS: every
// target but the opt-in ones. kmsfs-plainnames and kmsfs-shared are
// defaults because issues 12 and 13 set requirements against kmsfs
// measured in the same run (names: kmsfs/kmsfs-plainnames; shared mode:
// kmsfs-shared/kmsfs).
var defaultTargets = func() []string {
	var out []string
	for _, t := range allTargets {
		if !contains(optInTargets, t) {
			out = append(out, t)
		}
	}
	return out
}()

// kmsfsTargets are the targets that run ./cmd/kmsfs.
var kmsfsTargets = []string{"kmsfs", "kmsfs-plainnames", "kmsfs-aws", "kmsfs-zstd", "kmsfs-shared", "kmsfs-slot"}

// A target is one filesystem the jobs run on.
type target struct {
	Name string `json:"name"`
	// Dir is where the jobs run: the mount point, or the plain directory.
	Dir string `json:"dir"`
	// Dir2 is a second mount of the same tree (kmsfs-shared only), where
	// the two-mount job's second writer runs; empty for the other
	// targets, whose two writers share Dir (contentionDirs).
	Dir2 string `json:"dir2,omitempty"`
	// Status is "ok" or "skipped".
	Status string `json:"status"`
	// Note says why a target was skipped, or how it was set up.
	Note string `json:"note,omitempty"`
	// Prepared[job] is how long building a listing job's tree took, in
	// seconds (once per target, before the first round).
	Prepared map[string]float64 `json:"prepare_s,omitempty"`
	// pids are the daemons whose CPU time and resident set each run
	// records (both mounts' daemons for kmsfs-shared).
	pids []int
	// undo tears down what setup made, last first.
	undo []func() error
}

// addUndo registers a teardown step.
func (t *target) addUndo(f func() error) { t.undo = append(t.undo, f) }

// teardown runs the undo steps, last first, and returns the first error.
func (t *target) teardown() error {
	var first error
	for i := len(t.undo) - 1; i >= 0; i-- {
		if err := t.undo[i](); err != nil && first == nil {
			first = err
		}
	}
	t.undo = nil
	return first
}

// env is what target setup needs from the run.
type env struct {
	work   string // the run's work directory
	bin    string // built binaries: kmsfs, fuseceiling
	logDir string
	// buildErr holds the binaries (by name) that did not build.
	buildErr map[string]error
}

// setupTarget makes target name ready under e.work. On error the target's
// undo steps still run (the caller tears down every target).
func setupTarget(ctx context.Context, e env, t *target) error {
	base := filepath.Join(e.work, t.Name)
	backing := filepath.Join(base, "backing")
	mnt := filepath.Join(base, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	bin := map[string]string{"ceiling": "fuseceiling"}[t.Name]
	if contains(kmsfsTargets, t.Name) {
		bin = "kmsfs"
	}
	if err := e.buildErr[bin]; err != nil {
		return fmt.Errorf("%w: %w", errSkip, err)
	}
	switch t.Name {
	case "plain":
		t.Dir = backing
		return nil
	case "ceiling":
		return setupCeiling(ctx, e, t, backing, mnt)
	case "gocryptfs":
		return setupGocryptfs(ctx, e, t, base, backing, mnt)
	case "kmsfs":
		return setupKmsfs(ctx, e, t, base, backing, mnt)
	case "kmsfs-plainnames":
		return setupKmsfsPlainNames(ctx, e, t, base, backing, mnt)
	case "kmsfs-zstd":
		return setupKmsfs(ctx, e, t, base, backing, mnt, "--compress", "zstd")
	case "kmsfs-aws":
		return setupKmsfsAWS(ctx, e, t, base, backing, mnt)
	case "kmsfs-shared":
		return setupKmsfsShared(ctx, e, t, base, backing, mnt)
	case "kmsfs-slot":
		return setupKmsfsSlot(ctx, e, t, base, backing, mnt)
	}
	return fmt.Errorf("unknown target %q", t.Name)
}

func setupCeiling(ctx context.Context, e env, t *target, backing, mnt string) error {
	logf, err := os.Create(filepath.Join(e.logDir, "ceiling.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(e.bin, "fuseceiling"), backing, mnt)
	// Its own process group: a Ctrl-C in the terminal reaches us, and we
	// unmount in order.
	stdout, _, err := startChild(t, cmd, logf, "fuseceiling", 15*time.Second, func() error { return forceUnmount(mnt) })
	if err != nil {
		return err
	}
	line, err := readLine(ctx, stdout, 15*time.Second)
	if err != nil {
		return fmt.Errorf("fuseceiling did not mount (see %s): %w", logf.Name(), err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	t.Dir, t.pids, t.Note = mnt, []int{cmd.Process.Pid}, strings.TrimPrefix(line, "fuseceiling: ")
	return nil
}

func setupGocryptfs(ctx context.Context, e env, t *target, base, backing, mnt string) error {
	if _, err := exec.LookPath("gocryptfs"); err != nil {
		return fmt.Errorf("%w: gocryptfs is not installed (apt-get install gocryptfs)", errSkip)
	}
	pass := filepath.Join(base, "passfile")
	if err := os.WriteFile(pass, []byte("kmsfs-bench-password\n"), 0o600); err != nil {
		return err
	}
	if out, err := runCmd(ctx, nil, "gocryptfs", "-init", "-quiet", "-passfile", pass, backing); err != nil {
		return fmt.Errorf("gocryptfs -init: %w: %s", err, out)
	}
	if out, err := runCmd(ctx, nil, "gocryptfs", "-quiet", "-passfile", pass, backing, mnt); err != nil {
		return fmt.Errorf("gocryptfs mount: %w: %s", err, out)
	}
	t.addUndo(func() error {
		pids := daemonPIDs("gocryptfs", mnt)
		_, err := runCmd(context.Background(), nil, "fusermount3", "-u", mnt)
		waitGone(pids, 10*time.Second)
		if err != nil {
			return forceUnmount(mnt)
		}
		return nil
	})
	t.Dir, t.pids = mnt, daemonPIDs("gocryptfs", mnt)
	return nil
}

func setupKmsfs(ctx context.Context, e env, t *target, base, backing, mnt string, initArgs ...string) error {
	kenv := []string{"KMSFS_KEYSTORE=" + filepath.Join(base, "keystore")}
	kmsfs := filepath.Join(e.bin, "kmsfs")
	if out, err := runCmd(ctx, kenv, kmsfs, append(append([]string{"init"}, initArgs...), backing)...); err != nil {
		return fmt.Errorf("kmsfs init: %w: %s", err, out)
	}
	return mountKmsfs(ctx, e, t, kenv, nil, backing, mnt)
}

// setupKmsfsPlainNames makes a CIPHERDIR with `kmsfs init
// --plaintext-names` (names in the backing directory as they are in the
// mount, issue 12) and mounts it; it fails with a clear note when this
// build's init does not know the flag, or when the names still come out
// encrypted.
func setupKmsfsPlainNames(ctx context.Context, e env, t *target, base, backing, mnt string) error {
	err := setupKmsfs(ctx, e, t, base, backing, mnt, "--plaintext-names")
	if err != nil {
		if strings.Contains(err.Error(), "flag provided but not defined") {
			return fmt.Errorf("this build's `kmsfs init` does not accept --plaintext-names (issue 12): %w", err)
		}
		return err
	}
	if t.Note != "names in plaintext" {
		return fmt.Errorf("`kmsfs init --plaintext-names` made a tree whose names are not plaintext (%s)", t.Note)
	}
	return nil
}

// kmsfsMount runs `kmsfs mount` of backing on mnt with its log in
// e.logDir/logName, registers `kmsfs unmount` on t and returns the
// daemon's pids.
func kmsfsMount(ctx context.Context, e env, t *target, kenv, extra []string, backing, mnt, logName string) ([]int, error) {
	kmsfs := filepath.Join(e.bin, "kmsfs")
	args := append([]string{"mount", "--log-file", filepath.Join(e.logDir, logName)}, extra...)
	args = append(args, backing, mnt)
	if out, err := runCmd(ctx, kenv, kmsfs, args...); err != nil {
		return nil, fmt.Errorf("kmsfs mount: %w: %s", err, out)
	}
	t.addUndo(func() error {
		if out, err := runCmd(context.Background(), kenv, kmsfs, "unmount", mnt); err != nil {
			if ferr := forceUnmount(mnt); ferr != nil {
				return fmt.Errorf("kmsfs unmount: %w: %s", err, out)
			}
		}
		return nil
	})
	return daemonPIDs("kmsfs", mnt), nil
}

// setupKmsfsShared makes a CIPHERDIR with `kmsfs init --shared` (issue
// 13: every mount of it runs in shared mode), checks that kmsfs.conf
// records shared mode, and mounts it twice with the same keystore, as two
// hosts of shared storage would: Dir is the first mount, where every job
// runs, Dir2 the second, where the two-mount job's second writer runs.
// Both daemons' pids are recorded, so their CPU time is summed.
func setupKmsfsShared(ctx context.Context, e env, t *target, base, backing, mnt string) error {
	err := setupKmsfs(ctx, e, t, base, backing, mnt, "--shared")
	if err != nil {
		if strings.Contains(err.Error(), "flag provided but not defined") {
			return fmt.Errorf("this build's `kmsfs init` does not accept --shared (issue 13): %w", err)
		}
		return err
	}
	if err := checkSharedConf(filepath.Join(backing, "kmsfs.conf")); err != nil {
		return err
	}
	mnt2 := filepath.Join(base, "mnt2")
	if err := os.MkdirAll(mnt2, 0o755); err != nil {
		return err
	}
	kenv := []string{"KMSFS_KEYSTORE=" + filepath.Join(base, "keystore")}
	pids, err := kmsfsMount(ctx, e, t, kenv, nil, backing, mnt2, t.Name+"-2.log")
	if err != nil {
		return fmt.Errorf("second mount: %w", err)
	}
	if err := probeSecondMount(mnt, mnt2); err != nil {
		return err
	}
	t.Dir2, t.pids = mnt2, append(t.pids, pids...)
	t.Note = "shared mode, 2 mounts; " + t.Note
	return nil
}

// checkSharedConf fails unless the kmsfs.conf at path records shared
// mode ("shared": true), which `kmsfs init --shared` writes.
func checkSharedConf(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var conf struct {
		Shared bool `json:"shared"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	if !conf.Shared {
		return fmt.Errorf("`kmsfs init --shared` made a tree without \"shared\": true in %s", path)
	}
	return nil
}

// probeSecondMount checks that a file written through mnt reads back the
// same through mnt2 (the second mount opens the first one's files), and
// leaves nothing behind.
func probeSecondMount(mnt, mnt2 string) error {
	const probe = "kmsfs-bench-shared-probe"
	want := []byte("written through the first mount\n")
	if err := os.WriteFile(filepath.Join(mnt, probe), want, 0o644); err != nil {
		return fmt.Errorf("probe second mount: %w", err)
	}
	defer os.Remove(filepath.Join(mnt, probe))
	got, err := os.ReadFile(filepath.Join(mnt2, probe))
	if err != nil {
		return fmt.Errorf("probe second mount: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("probe second mount: read %q through %s, wrote %q through %s", got, mnt2, want, mnt)
	}
	return nil
}

// probeNames tells whether the mount at mnt stores names as they are (a
// file made through the mount shows up under its own name in backing) or
// encrypts them, and leaves nothing behind.
func probeNames(backing, mnt string) (string, error) {
	const probe = "kmsfs-bench-name-probe"
	f, err := os.OpenFile(filepath.Join(mnt, probe), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", fmt.Errorf("probe names: %w", err)
	}
	f.Close()
	defer os.Remove(filepath.Join(mnt, probe))
	if _, err := os.Lstat(filepath.Join(backing, probe)); err == nil {
		return "names in plaintext", nil
	}
	return "names encrypted", nil
}

// setupKmsfsSlot makes a CIPHERDIR like setupKmsfs and, before mounting,
// sets "key_record": "slot" in its kmsfs.conf, which is what `kmsfs init`
// writes on a backing file system without user xattrs.
func setupKmsfsSlot(ctx context.Context, e env, t *target, base, backing, mnt string) error {
	kenv := []string{"KMSFS_KEYSTORE=" + filepath.Join(base, "keystore")}
	if out, err := runCmd(ctx, kenv, filepath.Join(e.bin, "kmsfs"), "init", backing); err != nil {
		return fmt.Errorf("kmsfs init: %w: %s", err, out)
	}
	if err := setSlotOnly(filepath.Join(backing, "kmsfs.conf")); err != nil {
		return err
	}
	t.Note = "key records in the slot only (no user.kmsfs.key xattr)"
	return mountKmsfs(ctx, e, t, kenv, nil, backing, mnt)
}

// mountKmsfs mounts with `kmsfs mount`, registers `kmsfs unmount`, makes
// mnt the target's directory and notes how the tree stores names.
func mountKmsfs(ctx context.Context, e env, t *target, kenv, extra []string, backing, mnt string) error {
	pids, err := kmsfsMount(ctx, e, t, kenv, extra, backing, mnt, t.Name+".log")
	if err != nil {
		return err
	}
	t.Dir, t.pids = mnt, pids
	names, err := probeNames(backing, mnt)
	if err != nil {
		return err
	}
	if t.Note == "" {
		t.Note = names
	} else {
		t.Note += "; " + names
	}
	return nil
}

// setupKmsfsAWS starts `kmsfs keysvc serve` on its own keystore, makes a
// credential and a key through the KMS API, and mounts a CIPHERDIR made
// with `kmsfs init --kms aws` against it.
func setupKmsfsAWS(ctx context.Context, e env, t *target, base, backing, mnt string) error {
	kmsfs := filepath.Join(e.bin, "kmsfs")
	kenv := []string{"KMSFS_KEYSTORE=" + filepath.Join(base, "keystore")}
	logf, err := os.Create(filepath.Join(e.logDir, "keysvc.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(kmsfs, "keysvc", "serve", "--listen", "127.0.0.1:0")
	cmd.Env = childEnv(kenv)
	stdout, exited, err := startChild(t, cmd, logf, "kmsfs keysvc serve", 10*time.Second, nil)
	if err != nil {
		return err
	}
	line, err := readLine(ctx, stdout, 15*time.Second)
	if err != nil {
		_ = cmd.Process.Kill() // harmless when it has exited already
		<-exited
		msg, _ := os.ReadFile(logf.Name())
		if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == 6 || bytes.Contains(msg, []byte("not implemented")) {
			return fmt.Errorf("%w: `kmsfs keysvc serve` is not implemented yet in this build", errSkip)
		}
		return fmt.Errorf("kmsfs keysvc serve did not start: %w: %s", err, lastLine(string(msg)))
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	i := strings.Index(line, "http")
	if i < 0 {
		return fmt.Errorf("kmsfs keysvc serve: no URL in %q", line)
	}
	endpoint := strings.TrimSpace(line[i:])

	out, err := runCmd(ctx, kenv, kmsfs, "keysvc", "credentials", "--admin", "bench")
	if err != nil {
		return fmt.Errorf("kmsfs keysvc credentials: %w: %s", err, out)
	}
	awsEnv := append([]string{}, kenv...)
	var id, secret string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "AWS_ACCESS_KEY_ID="); ok {
			id = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "AWS_SECRET_ACCESS_KEY="); ok {
			secret = strings.TrimSpace(v)
		}
	}
	if id == "" || secret == "" {
		return errors.New("kmsfs keysvc credentials: no access key in its output")
	}
	const region = "us-east-1"
	awsEnv = append(awsEnv, "AWS_ACCESS_KEY_ID="+id, "AWS_SECRET_ACCESS_KEY="+secret,
		"AWS_REGION="+region, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")

	client := kms.NewFromConfig(aws.Config{
		Region:       region,
		Credentials:  credentials.NewStaticCredentialsProvider(id, secret, ""),
		BaseEndpoint: aws.String(endpoint),
	})
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	key, err := client.CreateKey(cctx, &kms.CreateKeyInput{Description: aws.String("kmsfs bench")})
	if err != nil {
		return fmt.Errorf("CreateKey on %s: %w", endpoint, err)
	}
	arn := aws.ToString(key.KeyMetadata.Arn)
	if out, err := runCmd(ctx, awsEnv, kmsfs, "init", "--kms", "aws", "--kms-endpoint", endpoint, "--key", arn, backing); err != nil {
		return fmt.Errorf("kmsfs init --kms aws: %w: %s", err, out)
	}
	if err := mountKmsfs(ctx, e, t, awsEnv, []string{"--kms-endpoint", endpoint}, backing, mnt); err != nil {
		return err
	}
	t.Note = "key server " + endpoint + "; " + t.Note
	return nil
}

// childEnv is our environment without kmsfs and AWS settings, plus extra.
func childEnv(extra []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KMSFS_") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, extra...)
}

// runCmd runs a command to completion and returns its combined output.
func runCmd(ctx context.Context, extraEnv []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = childEnv(extraEnv)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// readLine returns the first line r produces within d.
func readLine(ctx context.Context, r io.Reader, d time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		ch <- result{strings.TrimSpace(line), err}
	}()
	select {
	case res := <-ch:
		if res.err != nil && res.line == "" {
			return "", fmt.Errorf("no output: %w", res.err)
		}
		return res.line, nil
	case <-time.After(d):
		return "", fmt.Errorf("no output within %v", d)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// mounted reports whether path is a mount point, from /proc/self/mountinfo.
func mounted(path string) bool {
	for _, m := range mountPoints() {
		if m.point == path {
			return true
		}
	}
	return false
}

type mountEntry struct{ point, fstype, source string }

// mountPoints lists the mounts in /proc/self/mountinfo.
func mountPoints() []mountEntry {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mountEntry
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		out = append(out, mountEntry{point: mountinfo.Unescape(f[4]), fstype: f[sep+1], source: f[sep+2]})
	}
	return out
}

// forceUnmount makes sure nothing stays mounted on mnt: a normal unmount,
// then a lazy one.
func forceUnmount(mnt string) error {
	for i := 0; i < 20 && mounted(mnt); i++ {
		if i < 10 {
			_ = syscall.Unmount(mnt, 0)
			if mounted(mnt) {
				_, _ = runCmd(context.Background(), nil, "fusermount3", "-u", mnt)
			}
		} else {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
			_, _ = runCmd(context.Background(), nil, "fusermount3", "-u", "-z", mnt)
		}
		if mounted(mnt) {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if mounted(mnt) {
		return fmt.Errorf("%s is still mounted", mnt)
	}
	return nil
}

// daemonPIDs finds the processes named comm whose command line has mnt as
// an argument: the FUSE daemon serving mnt.
func daemonPIDs(comm, mnt string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		c, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(c)) != comm {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(cl), "\x00") {
			if arg == mnt {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// waitGone waits until none of pids exists, at most d.
func waitGone(pids []int, d time.Duration) {
	deadline := time.Now().Add(d)
	for _, pid := range pids {
		for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// cpuSeconds is the user+system CPU time of pids so far, in seconds.
func cpuSeconds(pids []int) float64 {
	var ticks float64
	for _, pid := range pids {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name; utime and stime are
		// fields 14 and 15 of the whole line.
		s := string(data)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			s = s[i+1:]
		}
		f := strings.Fields(s)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		ticks += u + st
	}
	return ticks / clockTicks
}

// peakRSS returns the summed VmHWM (peak resident set) of pids, in MiB.
func peakRSS(pids []int) float64 {
	var kib float64
	for _, pid := range pids {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				f := strings.Fields(v) // "12345 kB"
				if len(f) > 0 {
					n, _ := strconv.ParseFloat(f[0], 64)
					kib += n
				}
			}
		}
	}
	return kib / 1024
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// startChild starts cmd in its own process group (a Ctrl-C in the terminal
// reaches the harness, which then stops its children in order) with stderr
// to logf, which it closes when cmd exits, and returns cmd's stdout and a
// channel closed once cmd has exited. The undo step it registers on t
// sends SIGTERM, kills cmd after grace, then runs after (if not nil).
func startChild(t *target, cmd *exec.Cmd, logf *os.File, name string, grace time.Duration, after func() error) (io.ReadCloser, <-chan struct{}, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	t.addUndo(func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(grace):
			_ = cmd.Process.Kill()
			<-exited
		}
		if after != nil {
			return after()
		}
		return nil
	})
	return stdout, exited, nil
}
