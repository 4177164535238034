package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
)

// defaultRewrapJobs is how many files `kmsfs rewrap` works on at once.
const defaultRewrapJobs = 4

// maxRewrapJobs bounds --jobs: more only queues up at the key service.
const maxRewrapJobs = 256

// rewrapFlags are the parsed flags of `kmsfs rewrap`.
type rewrapFlags struct {
	key      string
	toKMS    string
	dryRun   bool
	force    bool
	jobs     int
	endpoint string
	ks       keystoreFlags
}

// runRewrap implements `kmsfs rewrap`: every regular file's wrapped data
// key is re-wrapped under the current key material of its key (or under
// --key) with the KMS ReEncrypt call, and its key xattr replaced in one
// setxattr. File contents are never touched. Files already wrapped under
// the destination's current material are skipped, so a second run after
// an interruption only does what is left.
func runRewrap(ctx context.Context, args []string, env *Env) error {
	var f rewrapFlags
	fset := newFlagSet("rewrap")
	fset.StringVar(&f.key, "key", "", "wrap under this key instead of each file's own key")
	fset.StringVar(&f.toKMS, "to-kms", "", "move the data keys to this key service (local or aws); needs --key")
	fset.BoolVar(&f.dryRun, "dry-run", false, "count what would be re-wrapped; change nothing")
	fset.BoolVar(&f.force, "force", false, "re-wrap even files that look current")
	fset.IntVar(&f.jobs, "jobs", defaultRewrapJobs, "files re-wrapped at once")
	fset.StringVar(&f.endpoint, "kms-endpoint", "", "AWS KMS endpoint URL (for the aws side)")
	f.ks.register(fset)
	pos, err := parseArgs(fset, "rewrap", args, env, 1, 1)
	if err != nil {
		return err
	}
	if f.jobs < 1 || f.jobs > maxRewrapJobs {
		return usageErrorf("rewrap: --jobs must be 1..%d", maxRewrapJobs)
	}
	dir, err := resolveDir(pos[0], "CIPHERDIR")
	if err != nil {
		return withKind(errCipherDir, fmt.Errorf("rewrap: %w", err))
	}
	cfg, err := loadConfig(dir, "CIPHERDIR must be a directory made by 'kmsfs init'")
	if err != nil {
		return err
	}
	if f.toKMS == "" {
		f.toKMS = cfg.KMS
	}
	if f.toKMS != cipherdir.KMSLocal && f.toKMS != cipherdir.KMSAWS {
		return usageErrorf("rewrap: --to-kms must be local or aws, got %q", f.toKMS)
	}
	moving := f.toKMS != cfg.KMS
	if moving && f.key == "" {
		return usageErrorf("rewrap: --to-kms %s needs --key KEY (a key of that service)", f.toKMS)
	}
	if moving && !f.dryRun {
		// A running mount would keep unwrapping with the old service.
		if m, ok := mountOf(dir); ok {
			return withHint(withKind(errCipherDir, fmt.Errorf("rewrap: %s is mounted at %s; moving to another key service needs it unmounted", dir, m)),
				"run 'kmsfs unmount "+m+"' first")
		}
	}

	src, closeSrc, err := openKeyService(ctx, cfg.KMS, &f.ks, f.endpoint, env, nil)
	if err != nil {
		return err
	}
	defer closeSrc()
	mountpoint, mounted := mountOf(dir)
	opts := cipherdir.RewrapOptions{CipherDir: dir, Config: cfg, Source: src, DestKey: f.key, DestKMS: f.toKMS,
		DryRun: f.dryRun, Force: f.force, Jobs: f.jobs, KeepPrevious: mounted}
	if moving {
		dst, closeDst, err := openKeyService(ctx, f.toKMS, &f.ks, f.endpoint, env, nil)
		if err != nil {
			return err
		}
		defer closeDst()
		opts.Dest = dst
	}
	var prog *progress
	opts.Files = func(n int) { prog = newProgress(env.Stderr, "rewrap", int64(n)) }
	opts.Done = func(rel string, err error) {
		if err != nil {
			prog.printf("kmsfs: rewrap: %s: %v\n", filepath.Join(dir, rel), err)
		}
		prog.add(1)
	}
	rw, err := cipherdir.NewRewrapper(ctx, opts)
	if err != nil {
		return fmt.Errorf("rewrap: %w", err)
	}
	start := time.Now()
	sum, err := rw.Run(ctx)
	if prog != nil {
		prog.stop()
	}
	elapsed := time.Since(start)
	if err != nil {
		return withKind(errCipherDir, fmt.Errorf("rewrap: %w", err))
	}

	verb := "rewrapped"
	if f.dryRun {
		verb = "to rewrap"
	}
	fmt.Fprintf(env.Stdout, "rewrap: %d files seen, %d %s, %d already current, %d skipped, %d failed in %s (%s files/s)\n",
		sum.Seen, sum.Rewrapped, verb, sum.Current, sum.Skipped, sum.Failed,
		elapsed.Round(time.Millisecond), rate(sum.Seen, elapsed))
	switch {
	case sum.NamesKey == cipherdir.NamesCurrent:
		fmt.Fprintln(env.Stdout, "rewrap: names key already current")
	case sum.NamesKey != cipherdir.NamesRewrapped:
	case f.dryRun:
		fmt.Fprintln(env.Stdout, "rewrap: the names key would be re-wrapped")
	case sum.Config.NamesKey == cfg.NamesKey:
		// A move writes it with the config, once every file has moved.
		fmt.Fprintf(env.Stdout, "rewrap: the names key moves to %s with the config, when every file has moved\n", f.toKMS)
	default:
		wk, _ := sum.Config.NamesKeyRecord()
		fmt.Fprintf(env.Stdout, "rewrap: names key re-wrapped under %s (in %s and %s)\n", wk.KeyID, cipherdir.ConfigName, cipherdir.ConfigCopyName)
	}
	if sum.ConfigChanged && (sum.Config.KMS != cfg.KMS || sum.Config.KeyID != cfg.KeyID) {
		fmt.Fprintf(env.Stdout, "rewrap: %s now names kms %s, key %s (remount for new files to use it)\n", cipherdir.ConfigName, sum.Config.KMS, sum.Config.KeyID)
	}
	if sum.Failed > 0 {
		return withHint(withKind(errIncomplete, fmt.Errorf("rewrap: %d files failed (named above); the others are done", sum.Failed)),
			"fix the cause and run the same command again: files already re-wrapped are skipped")
	}
	if f.key != "" && !f.dryRun && len(sum.Config.PreviousKeys) > 0 && mounted {
		fmt.Fprintf(env.Stdout, "rewrap: %s still trusts the previous keys %s: %s is mounted at %s, and its mount makes new files under the key it was mounted with; remount, then run this rewrap again to finish\n",
			cipherdir.ConfigName, strings.Join(sum.Config.PreviousKeys, ", "), dir, mountpoint)
	}
	return nil
}

// rate formats n per elapsed second.
func rate(n int64, elapsed time.Duration) string {
	if elapsed <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(n)/elapsed.Seconds())
}

// mountOf returns the mountpoint of a kmsfs mount of dir, if there is one.
func mountOf(dir string) (string, bool) {
	entries, err := readMountinfo()
	if err != nil {
		return "", false
	}
	for _, e := range entries {
		if e.FSType == kmsfsFSType && filepath.Clean(e.Source) == dir {
			return e.Mountpoint, true
		}
	}
	return "", false
}

// progress reports how far a long command is: a bar with rate and ETA
// redrawn in place when out is a terminal, else a plain line every
// progressLineEvery. Lines printed through printf never tear the bar.
type progress struct {
	out   io.Writer
	name  string
	total int64
	tty   bool
	start time.Time
	done  atomic.Int64

	mu   sync.Mutex
	quit chan struct{}
	wg   sync.WaitGroup
}

const (
	progressRedraw    = 200 * time.Millisecond
	progressLineEvery = 5 * time.Second
	progressBarWidth  = 30
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newProgress(out io.Writer, name string, total int64) *progress {
	p := &progress{out: out, name: name, total: total, tty: isTerminal(out), start: time.Now(), quit: make(chan struct{})}
	every := progressLineEvery
	if p.tty {
		every = progressRedraw
	}
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.mu.Lock()
				p.drawLocked()
				p.mu.Unlock()
			case <-p.quit:
				return
			}
		}
	})
	return p
}

func (p *progress) add(n int64) { p.done.Add(n) }

// printf prints a line (a failure) above the bar.
func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		io.WriteString(p.out, "\r\033[K")
	}
	fmt.Fprintf(p.out, format, args...)
	if p.tty {
		p.drawLocked()
	}
}

func (p *progress) drawLocked() {
	done := p.done.Load()
	elapsed := time.Since(p.start)
	perSec := float64(done) / elapsed.Seconds()
	eta := "-"
	if perSec > 0 && done <= p.total {
		eta = (time.Duration(float64(p.total-done)/perSec) * time.Second).Round(time.Second).String()
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(done) / float64(p.total)
	}
	if !p.tty {
		fmt.Fprintf(p.out, "kmsfs: %s: %d/%d files (%.0f%%), %.0f files/s, ETA %s\n", p.name, done, p.total, pct, perSec, eta)
		return
	}
	filled := int(pct / 100 * progressBarWidth)
	bar := strings.Repeat("#", filled) + strings.Repeat(".", progressBarWidth-filled)
	fmt.Fprintf(p.out, "\r\033[K%s [%s] %d/%d %.0f%% %.0f files/s ETA %s", p.name, bar, done, p.total, pct, perSec, eta)
}

// stop ends the reporting; on a terminal the bar is drawn a last time
// and the line ended.
func (p *progress) stop() {
	close(p.quit)
	p.wg.Wait()
	if p.tty {
		p.mu.Lock()
		p.drawLocked()
		io.WriteString(p.out, "\n")
		p.mu.Unlock()
	}
}
