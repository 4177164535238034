package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
	awskms "github.com/kmsfs/kmsfs/keysvc/aws"
)

// rewrapCallTimeout bounds the key service calls made for one file.
const rewrapCallTimeout = 30 * time.Second

// defaultRewrapJobs is how many files `kmsfs rewrap` works on at once.
const defaultRewrapJobs = 4

// maxRewrapJobs bounds --jobs: more only queues up at the key service.
const maxRewrapJobs = 256

// rekeyTempMarker is part of the name of the temporary file `kmsfs rekey`
// writes next to the file it re-encrypts; rewrap leaves such files alone.
const rekeyTempMarker = ".kmsfs-rekey-"

// keyService is a key service together with the one call that only a
// cross-service move needs: Encrypt, which wraps a plaintext data key
// that kmsfs holds in memory. *local.Store and *awskms.Client have it.
type keyService interface {
	keysvc.Service
	Encrypt(ctx context.Context, keyID string, plaintext []byte, ec keysvc.EncryptionContext) (keysvc.WrappedKey, error)
}

// openService opens the key service of kind (cipherdir.KMSLocal or cipherdir.KMSAWS):
// the local keystore through ks, or the AWS KMS client with endpoint.
func openService(ctx context.Context, kind string, ks *keystoreFlags, endpoint string, env *Env) (keyService, func(), error) {
	switch kind {
	case cipherdir.KMSLocal:
		store, err := ks.open(env, slog.New(slog.DiscardHandler))
		if err != nil {
			return nil, nil, err
		}
		return store, func() { store.Close() }, nil
	case cipherdir.KMSAWS:
		client, err := awskms.New(ctx, awskms.Options{Endpoint: endpoint})
		if err != nil {
			return nil, nil, err
		}
		return client, func() {}, nil
	}
	return nil, nil, withKind(errCipherDir, fmt.Errorf("unknown kms %q", kind))
}

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

// rewrapper re-wraps the data keys of one CIPHERDIR.
type rewrapper struct {
	cfg    cipherdir.Config
	src    keyService // the service the files' records are wrapped by
	dst    keyService // the service to wrap under; == src unless moving
	moving bool       // src and dst are different services
	dest   string     // the destination key named by --key, "" for each file's own key
	dryRun bool
	force  bool

	mu      sync.Mutex
	targets map[string]*rewrapTarget // by key reference (record key ID or --key)

	seen, rewrapped, current, skipped, failed atomic.Int64
}

// rewrapTarget is a destination key, described once per run.
type rewrapTarget struct {
	once sync.Once
	info keysvc.KeyInfo
	err  error
}

// outcome is what happened to one file.
type outcome int

const (
	outRewrapped outcome = iota
	outCurrent
	outSkipped
)

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
	cfg, err := cipherdir.LoadConfig(dir)
	if err != nil {
		return withHint(withKind(errCipherDir, err), "CIPHERDIR must be a directory made by 'kmsfs init'")
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

	src, closeSrc, err := openService(ctx, cfg.KMS, &f.ks, f.endpoint, env)
	if err != nil {
		return err
	}
	defer closeSrc()
	dst := src
	if moving {
		d, closeDst, err := openService(ctx, f.toKMS, &f.ks, f.endpoint, env)
		if err != nil {
			return err
		}
		defer closeDst()
		dst = d
	}
	rw := &rewrapper{cfg: cfg, src: src, dst: dst, moving: moving, dest: f.key, dryRun: f.dryRun, force: f.force,
		targets: map[string]*rewrapTarget{}}
	var destInfo keysvc.KeyInfo
	if f.key != "" {
		// Check the destination once, before touching any file.
		if destInfo, err = rw.target(ctx, f.key); err != nil {
			return fmt.Errorf("rewrap: %w", err)
		}
	}

	files, err := listBackingFiles(dir)
	if err != nil {
		return withKind(errCipherDir, fmt.Errorf("rewrap: %w", err))
	}
	start := time.Now()
	prog := newProgress(env.Stderr, "rewrap", int64(len(files)))
	rw.run(ctx, files, f.jobs, prog)
	prog.stop()
	elapsed := time.Since(start)

	verb := "rewrapped"
	if f.dryRun {
		verb = "to rewrap"
	}
	fmt.Fprintf(env.Stdout, "rewrap: %d files seen, %d %s, %d already current, %d skipped, %d failed in %s (%s files/s)\n",
		rw.seen.Load(), rw.rewrapped.Load(), verb, rw.current.Load(), rw.skipped.Load(), rw.failed.Load(),
		elapsed.Round(time.Millisecond), rate(rw.seen.Load(), elapsed))
	if n := rw.failed.Load(); n > 0 {
		return withHint(withKind(errIncomplete, fmt.Errorf("rewrap: %d files failed (named above); the others are done", n)),
			"fix the cause and run the same command again: files already re-wrapped are skipped")
	}
	if f.key != "" && !f.dryRun && (moving || destInfo.ARN != cfg.KeyID) {
		// Every file is under the new key now: so must new files be.
		cfg.KMS, cfg.KeyID = f.toKMS, destInfo.ARN
		if err := replaceConfig(dir, cfg); err != nil {
			return withKind(errCipherDir, fmt.Errorf("rewrap: every file was re-wrapped, but %s was not updated: %w", cipherdir.ConfigName, err))
		}
		fmt.Fprintf(env.Stdout, "rewrap: %s now names kms %s, key %s (remount for new files to use it)\n", cipherdir.ConfigName, cfg.KMS, cfg.KeyID)
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

// isInternalName reports whether a backing entry belongs to kmsfs itself:
// the config file and its temporary copies in the root, and the temporary
// files of `kmsfs rekey` anywhere.
func isInternalName(atRoot bool, name string) bool {
	if atRoot && (name == cipherdir.ConfigName || strings.HasPrefix(name, cipherdir.ConfigName+".")) {
		return true
	}
	return strings.Contains(name, rekeyTempMarker)
}

// listBackingFiles returns every regular file of the tree under dir, one
// path per inode (the other hard links of a file share its key), skipping
// kmsfs's own files. Symlinks are not followed.
func listBackingFiles(dir string) ([]string, error) {
	var files []string
	type inode struct{ dev, ino uint64 }
	linked := map[inode]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if isInternalName(filepath.Dir(path) == dir, d.Name()) {
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			k := inode{st.Dev, st.Ino}
			if linked[k] {
				return nil
			}
			linked[k] = true
		}
		files = append(files, path)
		return nil
	})
	return files, err
}

// run re-wraps files with jobs workers, counting outcomes and naming each
// failure on the progress output.
func (rw *rewrapper) run(ctx context.Context, files []string, jobs int, prog *progress) {
	work := make(chan string)
	var wg sync.WaitGroup
	for range jobs {
		wg.Go(func() {
			for path := range work {
				out, err := rw.one(ctx, path)
				rw.seen.Add(1)
				switch {
				case err != nil:
					rw.failed.Add(1)
					prog.printf("kmsfs: rewrap: %s: %v\n", path, err)
				case out == outRewrapped:
					rw.rewrapped.Add(1)
				case out == outCurrent:
					rw.current.Add(1)
				default:
					rw.skipped.Add(1)
				}
				prog.add(1)
			}
		})
	}
	for _, p := range files {
		work <- p
	}
	close(work)
	wg.Wait()
}

// target describes the key ref once per run and fails unless it is
// enabled: nothing is re-wrapped under a key that cannot be used.
func (rw *rewrapper) target(ctx context.Context, ref string) (keysvc.KeyInfo, error) {
	rw.mu.Lock()
	t := rw.targets[ref]
	if t == nil {
		t = &rewrapTarget{}
		rw.targets[ref] = t
	}
	rw.mu.Unlock()
	t.once.Do(func() {
		svc := rw.src
		if ref == rw.dest {
			svc = rw.dst
		}
		cctx, cancel := context.WithTimeout(ctx, rewrapCallTimeout)
		defer cancel()
		t.info, t.err = describeEnabled(cctx, svc, ref)
	})
	return t.info, t.err
}

// one re-wraps the file at path, unless it is already current.
func (rw *rewrapper) one(ctx context.Context, path string) (outcome, error) {
	fd, err := openBacking(path, !rw.dryRun) // writable: the key-record slot is in the file
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return outSkipped, nil // replaced by something else since the walk
	}
	if st.Size == 0 {
		return outSkipped, nil // empty: its key, if any, has no file ID yet
	}
	h, wk, err := readKeyRecord(fd, rw.cfg.KeyRecordMode())
	if err != nil {
		return 0, err
	}
	ref := rw.dest
	if ref == "" {
		ref = wk.KeyID
	}
	dest, err := rw.target(ctx, ref)
	if err != nil {
		return 0, err
	}
	if wk.KeyID == dest.ARN && rw.moving {
		return outCurrent, nil // moved by an earlier, interrupted run
	}
	if wk.KeyID == dest.ARN && !rw.force {
		// Without a current key material ID (some AWS KMS answers) a file
		// already under the key counts as current; --force re-wraps it.
		if dest.CurrentKeyMaterialID == "" || wk.KeyMaterialID == dest.CurrentKeyMaterialID {
			return outCurrent, nil
		}
	}
	if rw.dryRun {
		return outRewrapped, nil
	}
	ec := keysvc.EncryptionContext{keysvc.ContextFilesystemID: rw.cfg.FilesystemID, keysvc.ContextFileID: h.FileID.String()}
	cctx, cancel := context.WithTimeout(ctx, rewrapCallTimeout)
	defer cancel()
	var nw keysvc.WrappedKey
	if rw.moving {
		nw, err = rw.move(cctx, wk, dest.ARN, ec)
	} else {
		nw, err = rw.src.ReEncrypt(cctx, wk.Blob, ec, dest.ARN)
	}
	if err != nil {
		return 0, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	if nw.KeyID == "" {
		nw.KeyID = dest.ARN
	}
	if err := nw.Validate(); err != nil {
		return 0, fmt.Errorf("file %s: new key record: %w", h.FileID, err)
	}
	// The slot first, then the xattr (cipherdir.WriteKeyRecord): a crash in
	// between leaves the old record in one place and the new one in the
	// other, both holding the same data key; fsck tells them apart.
	place, err := cipherdir.WriteKeyRecord(fd, nil, nw.MarshalRecord(), rw.cfg.KeyRecordMode())
	if err != nil {
		return 0, fmt.Errorf("file %s: replace key record: %w", h.FileID, err)
	}
	if place&cipherdir.PlaceSlot == 0 {
		return outRewrapped, fmt.Errorf("file %s: the new key record does not fit the key-record slot; it is in the xattr only", h.FileID)
	}
	return outRewrapped, nil
}

// move unwraps wk with the source service and wraps the plaintext data key
// under destKey of the destination service, then checks that the new blob
// unwraps to the same key. The plaintext is zeroed before move returns.
func (rw *rewrapper) move(ctx context.Context, wk keysvc.WrappedKey, destKey string, ec keysvc.EncryptionContext) (keysvc.WrappedKey, error) {
	u, err := rw.src.Decrypt(ctx, wk.Blob, wk.KeyID, ec)
	if err != nil {
		return keysvc.WrappedKey{}, err
	}
	defer keysvc.Zero(u.Plaintext)
	nw, err := rw.dst.Encrypt(ctx, destKey, u.Plaintext, ec)
	if err != nil {
		return keysvc.WrappedKey{}, err
	}
	back, err := rw.dst.Decrypt(ctx, nw.Blob, destKey, ec)
	if err != nil {
		return keysvc.WrappedKey{}, fmt.Errorf("the moved key does not unwrap: %w", err)
	}
	defer keysvc.Zero(back.Plaintext)
	if subtle.ConstantTimeCompare(back.Plaintext, u.Plaintext) != 1 {
		return keysvc.WrappedKey{}, fmt.Errorf("the moved key unwraps to another key: %w", keysvc.ErrInvalidCiphertext)
	}
	if nw.KeyMaterialID == "" {
		nw.KeyMaterialID = back.KeyMaterialID
	}
	return nw, nil
}

// openBackingRead opens a backing file for reading without following a
// symlink and, when allowed, without updating its access time.
func openBackingRead(path string) (int, error) { return openBacking(path, false) }

// openBacking is openBackingRead, read-write when write is set.
func openBacking(path string, write bool) (int, error) {
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	if write {
		flags = flags&^unix.O_ACCMODE | unix.O_RDWR
	}
	fd, err := unix.Open(path, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Open(path, flags, 0)
	}
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// readKeyRecord reads the header and the key record (cipherdir.ReadKeyRecord,
// for a tree whose key records are kept as mode says) of an open non-empty
// backing file.
func readKeyRecord(fd int, mode string) (chunk.Header, keysvc.WrappedKey, error) {
	var hb [chunk.HeaderSize]byte
	n, err := unix.Pread(fd, hb[:], 0)
	if err != nil {
		return chunk.Header{}, keysvc.WrappedKey{}, fmt.Errorf("read header: %w", err)
	}
	if n < len(hb) {
		return chunk.Header{}, keysvc.WrappedKey{}, fmt.Errorf("shorter than the %d-byte header: %w", chunk.HeaderSize, chunk.ErrCorrupt)
	}
	h, err := chunk.ParseHeader(hb[:])
	if err != nil {
		return chunk.Header{}, keysvc.WrappedKey{}, err
	}
	wk, _, err := cipherdir.ReadKeyRecord(fd, mode)
	if err != nil {
		return h, keysvc.WrappedKey{}, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	return h, wk, nil
}

// replaceConfig atomically replaces dir/kmsfs.conf with c: written under a
// temporary name (hidden from the mount), fsynced, renamed over, and the
// directory fsynced.
func replaceConfig(dir string, c cipherdir.Config) error {
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, cipherdir.ConfigName+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, cipherdir.ConfigName)); err != nil {
		return err
	}
	return syncDirPath(dir)
}

// syncDirPath fsyncs a directory, making renames in it durable.
func syncDirPath(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
