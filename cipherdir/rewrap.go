package cipherdir

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/keysvc"
)

// DefaultRewrapCallTimeout bounds the key service calls Rewrap makes for
// one file when RewrapOptions.CallTimeout is zero.
const DefaultRewrapCallTimeout = 30 * time.Second

// Encrypter is a key service that can also wrap a plaintext data key it
// did not make (the KMS Encrypt call): only a move of the data keys to
// another key service needs it. *local.Store and *awskms.Client have it.
type Encrypter interface {
	keysvc.Service
	Encrypt(ctx context.Context, keyID string, plaintext []byte, ec keysvc.EncryptionContext) (keysvc.WrappedKey, error)
}

// RewrapOptions configure Rewrap.
type RewrapOptions struct {
	CipherDir string
	Config    Config
	// Source is the key service the files' records are wrapped by.
	Source keysvc.Service
	// Dest, when not nil, is another key service to move the data keys
	// to (unwrapped by Source, wrapped by Dest.Encrypt under DestKey).
	Dest Encrypter
	// DestKey is the key to wrap under, "" for each file's own key (its
	// newest key material). Required with Dest.
	DestKey string
	// DestKMS is the kms of Dest (KMSLocal or KMSAWS), for the config.
	DestKMS string
	// KeepPrevious leaves Config.PreviousKeys in place when a migration
	// to DestKey completes: the tree is mounted, and its mount may still
	// make files under a previous key until it is remounted (a second
	// run after the remount finishes the migration).
	KeepPrevious bool
	// DryRun counts what would be re-wrapped and changes nothing.
	DryRun bool
	// Force re-wraps files that look current too.
	Force bool
	// Jobs is how many files are re-wrapped at once (0: 4).
	Jobs int
	// CallTimeout bounds the key service calls of one file (0:
	// DefaultRewrapCallTimeout).
	CallTimeout time.Duration
	// Files, when not nil, receives the number of files found before the
	// work starts: for a progress bar.
	Files func(n int)
	// Done, when not nil, is called once per file with its path relative
	// to CIPHERDIR and its error (nil when it was re-wrapped, current or
	// skipped), from several goroutines at once.
	Done func(rel string, err error)
}

// RewrapSummary counts what Rewrap did.
type RewrapSummary struct {
	Seen, Rewrapped, Current, Skipped, Failed int64
	// Dest describes RewrapOptions.DestKey (zero without it).
	Dest keysvc.KeyInfo
	// Config is the tree's config after the run; ConfigChanged says Run
	// rewrote kmsfs.conf (a migration to DestKey started or completed).
	Config        Config
	ConfigChanged bool
	// NamesKey is what happened to a v2 tree's names key: NamesRewrapped
	// (with DryRun: it would be), NamesCurrent, or "" for a v1 tree.
	NamesKey string
}

// RewrapSummary.NamesKey values.
const (
	NamesRewrapped = "rewrapped"
	NamesCurrent   = "current"
)

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

// Rewrapper re-wraps the data keys of one CIPHERDIR: every regular file's
// data key goes under the current key material of its key (or under
// DestKey) with the KMS ReEncrypt call, or, moving to another key
// service, with Decrypt and the destination's Encrypt, and its key record
// is replaced (WriteKeyRecord: the slot, then the xattr). File contents
// are never touched. Files already wrapped under the destination's
// current material are skipped, so a second run after an interruption
// only does what is left. Hard-linked files are done once.
type Rewrapper struct {
	opts   RewrapOptions
	root   int
	dst    keysvc.Service // the service to wrap under: Dest, else Source
	moving bool
	dest   keysvc.KeyInfo // DestKey described; zero without it
	trust  *Trust         // the keys whose records may be re-wrapped
	// names is the re-wrapped names key (Config.NamesKey) while it waits
	// for a config write: a move to another key service writes it with
	// the new service's key at the end; "" when there is nothing to write.
	names string

	mu      sync.Mutex
	targets map[string]*rewrapTarget // by key reference (record key ID or DestKey)

	seen, rewrapped, current, skipped, failed atomic.Int64
}

// NewRewrapper checks opts and describes DestKey, before any file is
// touched: it fails unless DestKey is an enabled key.
func NewRewrapper(ctx context.Context, opts RewrapOptions) (*Rewrapper, error) {
	if opts.Jobs <= 0 {
		opts.Jobs = 4
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultRewrapCallTimeout
	}
	rw := &Rewrapper{opts: opts, root: -1, dst: opts.Source, targets: map[string]*rewrapTarget{}}
	if opts.Dest != nil {
		if opts.DestKey == "" {
			return nil, errors.New("moving to another key service needs a destination key")
		}
		rw.dst, rw.moving = opts.Dest, true
	}
	trusted := opts.Config
	if opts.DestKey != "" {
		info, err := rw.target(ctx, opts.DestKey)
		if err != nil {
			return nil, err
		}
		rw.dest = info
		// Files an interrupted run moved already name the destination.
		trusted.PreviousKeys = append(slices.Clone(trusted.PreviousKeys), info.ARN)
	}
	tctx, cancel := context.WithTimeout(ctx, opts.CallTimeout)
	rw.trust = NewTrust(tctx, opts.Source, trusted, nil)
	cancel()
	return rw, nil
}

// migrating reports whether the run moves the tree to another key of
// the same key service: kmsfs.conf then names the new key from the
// start, and keeps trusting the old one until every file has moved.
func (rw *Rewrapper) migrating() bool {
	return rw.opts.DestKey != "" && !rw.opts.DryRun && !rw.moving && rw.dest.ARN != rw.opts.Config.KeyID
}

// startMigration writes the config of a migration to the destination
// key: KeyID the new key, the old one (and earlier ones not yet done)
// in PreviousKeys, so that both stay trusted while files move.
func (rw *Rewrapper) startMigration() (Config, error) {
	cfg := rw.opts.Config
	prev := slices.DeleteFunc(append(slices.Clone(cfg.PreviousKeys), cfg.KeyID), func(k string) bool { return k == rw.dest.ARN })
	slices.Sort(prev)
	cfg.PreviousKeys, cfg.KeyID = slices.Compact(prev), rw.dest.ARN
	if rw.names != "" {
		cfg.NamesKey = rw.names // under the new key from the start
	}
	if err := replaceConfig(rw.opts.CipherDir, cfg); err != nil {
		return rw.opts.Config, fmt.Errorf("start the migration to key %s: %w", rw.dest.ARN, err)
	}
	return cfg, nil
}

// finish writes the config of a run that re-wrapped every file under
// DestKey: the destination key service and key, and no previous keys
// (unless KeepPrevious). It reports whether the config changed.
func (rw *Rewrapper) finish(cfg Config) (Config, bool, error) {
	if rw.opts.DestKey == "" || rw.opts.DryRun {
		return cfg, false, nil
	}
	next := cfg
	if rw.moving {
		next.KMS, next.KeyID = rw.opts.DestKMS, rw.dest.ARN
		next.PreviousKeys = nil // keys of another key service mean nothing here
		if rw.names != "" {
			next.NamesKey = rw.names // wrapped by the new service
		}
	} else if !rw.opts.KeepPrevious {
		next.PreviousKeys = nil
	}
	if next.KMS == cfg.KMS && next.KeyID == cfg.KeyID && slices.Equal(next.PreviousKeys, cfg.PreviousKeys) && next.NamesKey == cfg.NamesKey {
		return cfg, false, nil
	}
	if err := replaceConfig(rw.opts.CipherDir, next); err != nil {
		return cfg, false, fmt.Errorf("every file was re-wrapped, but %s was not updated: %w", ConfigName, err)
	}
	return next, true, nil
}

// Dest describes RewrapOptions.DestKey (zero without it).
func (rw *Rewrapper) Dest() keysvc.KeyInfo { return rw.dest }

// Run walks the tree and re-wraps its files. It returns an error only
// when the tree cannot be walked or its config cannot be written;
// failures of single files are counted in the summary and reported
// through RewrapOptions.Done.
//
// A migration to DestKey (another key of the same key service) writes
// kmsfs.conf before the first file: the new key as KeyID, the old one in
// PreviousKeys, so mounts (which re-read the config for a key they do not
// know) trust both while files move. When every file has moved, the old
// keys are dropped (unless KeepPrevious); after a failure they stay, and
// running the same command again finishes the job. A move to another key
// service changes the config only when every file has moved.
//
// The names key of a v2 tree is re-wrapped first, like a file's key (same
// trust check, same "current" rule, same destination), and a failure
// ends the run before any file is touched. Its new record is written with
// the config of a migration's start, with the config of a move's end
// (kmsfs.conf names the old service until then, and the old record stays
// good), else at once; every config write goes to kmsfs.conf.copy first.
func (rw *Rewrapper) Run(ctx context.Context) (RewrapSummary, error) {
	sum := RewrapSummary{Dest: rw.dest, Config: rw.opts.Config}
	root, err := OpenRoot(rw.opts.CipherDir)
	if err != nil {
		return sum, err
	}
	defer unix.Close(root)
	rw.root = root
	files, err := Files(root, rw.opts.Config.EncryptedNames(), true)
	if err != nil {
		return sum, err
	}
	if rw.opts.Config.EncryptedNames() {
		if rw.names, sum.NamesKey, err = rw.rewrapNames(ctx); err != nil {
			return sum, err
		}
		if rw.names != "" && !rw.migrating() && !rw.moving {
			next := sum.Config
			next.NamesKey = rw.names
			if err := replaceConfig(rw.opts.CipherDir, next); err != nil {
				return sum, fmt.Errorf("the names key was re-wrapped, but %s was not updated: %w", ConfigName, err)
			}
			sum.Config, sum.ConfigChanged, rw.names = next, true, ""
		}
	}
	if rw.migrating() {
		if sum.Config, err = rw.startMigration(); err != nil {
			return sum, err
		}
		sum.ConfigChanged = true
	}
	if rw.opts.Files != nil {
		rw.opts.Files(len(files))
	}
	rw.run(ctx, files)
	sum.Seen, sum.Rewrapped, sum.Current = rw.seen.Load(), rw.rewrapped.Load(), rw.current.Load()
	sum.Skipped, sum.Failed = rw.skipped.Load(), rw.failed.Load()
	if sum.Failed == 0 {
		cfg, changed, err := rw.finish(sum.Config)
		if err != nil {
			return sum, err
		}
		sum.Config, sum.ConfigChanged = cfg, sum.ConfigChanged || changed
	}
	return sum, nil
}

// run re-wraps files with opts.Jobs workers, counting outcomes.
func (rw *Rewrapper) run(ctx context.Context, files []string) {
	work := make(chan string)
	var wg sync.WaitGroup
	for range rw.opts.Jobs {
		wg.Go(func() {
			for rel := range work {
				out, err := rw.one(ctx, rel)
				rw.seen.Add(1)
				switch {
				case err != nil:
					rw.failed.Add(1)
				case out == outRewrapped:
					rw.rewrapped.Add(1)
				case out == outCurrent:
					rw.current.Add(1)
				default:
					rw.skipped.Add(1)
				}
				if rw.opts.Done != nil {
					rw.opts.Done(rel, err)
				}
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
func (rw *Rewrapper) target(ctx context.Context, ref string) (keysvc.KeyInfo, error) {
	rw.mu.Lock()
	t := rw.targets[ref]
	if t == nil {
		t = &rewrapTarget{}
		rw.targets[ref] = t
	}
	rw.mu.Unlock()
	t.once.Do(func() {
		svc := rw.opts.Source
		if ref == rw.opts.DestKey {
			svc = rw.dst
		}
		cctx, cancel := context.WithTimeout(ctx, rw.opts.CallTimeout)
		defer cancel()
		t.info, t.err = DescribeEnabled(cctx, svc, ref)
	})
	return t.info, t.err
}

// one re-wraps the file rel, unless it is already current.
func (rw *Rewrapper) one(ctx context.Context, rel string) (outcome, error) {
	fd, err := OpenFile(rw.root, rel, !rw.opts.DryRun) // writable: the key-record slot is in the file
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
	cfg := rw.opts.Config
	var hb [chunk.HeaderSize]byte
	h, err := ReadHeader(fd, hb[:])
	if err != nil {
		return 0, err
	}
	wk, _, err := ReadKeyRecord(fd, cfg.KeyRecordMode())
	if err != nil {
		return 0, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	// Never re-wrap a record of a key the tree does not trust under one
	// it does: that would adopt a planted file.
	if err := rw.trust.Allow(ctx, wk.KeyID); err != nil {
		return 0, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	ref := rw.opts.DestKey
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
	if wk.KeyID == dest.ARN && !rw.opts.Force {
		// Without a current key material ID (some AWS KMS answers) a file
		// already under the key counts as current; Force re-wraps it.
		if dest.CurrentKeyMaterialID == "" || wk.KeyMaterialID == dest.CurrentKeyMaterialID {
			return outCurrent, nil
		}
	}
	if rw.opts.DryRun {
		return outRewrapped, nil
	}
	nw, err := rw.rewrapKey(ctx, wk, dest.ARN, keysvc.FileContext(cfg.FilesystemID, h.FileID.String()))
	if err != nil {
		return 0, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	if nw.KeyID == "" {
		nw.KeyID = dest.ARN
	}
	if err := nw.Validate(); err != nil {
		return 0, fmt.Errorf("file %s: new key record: %w", h.FileID, err)
	}
	// The record is replaced under the size lock's read side (LockHeader):
	// a mount in shared mode writes a header and its record only under
	// the write side (the first key of an empty file), so the two never
	// interleave. The lock is taken after the key service call, not
	// around it, and the header and record are read again under it: one
	// that changed meanwhile is left alone.
	unlock, err := lockSoon(fd, LockHeader, false)
	if err != nil {
		return 0, fmt.Errorf("file %s: %w; run rewrap again", h.FileID, err)
	}
	defer unlock()
	var hb2 [chunk.HeaderSize]byte
	if _, err := ReadHeader(fd, hb2[:]); err != nil {
		return 0, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	wk2, _, err := ReadKeyRecord(fd, cfg.KeyRecordMode())
	if err != nil || hb2 != hb || !bytes.Equal(wk2.MarshalRecord(), wk.MarshalRecord()) {
		return 0, fmt.Errorf("file %s: its header or key record changed while it was re-wrapped; nothing was replaced, run rewrap again", h.FileID)
	}
	// The slot first, then the xattr (WriteKeyRecord): a crash in between
	// leaves the old record in one place and the new one in the other,
	// both holding the same data key; Check tells them apart.
	place, err := WriteKeyRecord(fd, nil, nw.MarshalRecord(), cfg.KeyRecordMode())
	if err != nil {
		return 0, fmt.Errorf("file %s: replace key record: %w", h.FileID, err)
	}
	if place&PlaceSlot == 0 {
		return outRewrapped, fmt.Errorf("file %s: the new key record does not fit the key-record slot; it is in the xattr only", h.FileID)
	}
	return outRewrapped, nil
}

// rewrapNames re-wraps the tree's names key as one would re-wrap a file's
// key and returns its new Config.NamesKey ("" when it is current or the
// run is dry) and the outcome for RewrapSummary.NamesKey.
func (rw *Rewrapper) rewrapNames(ctx context.Context) (string, string, error) {
	cfg := rw.opts.Config
	wk, err := cfg.NamesKeyRecord()
	if err != nil {
		return "", "", fmt.Errorf("names key: %w", err)
	}
	if err := rw.trust.Allow(ctx, wk.KeyID); err != nil {
		return "", "", fmt.Errorf("names key: %w", err)
	}
	ref := rw.opts.DestKey
	if ref == "" {
		ref = wk.KeyID
	}
	dest, err := rw.target(ctx, ref)
	if err != nil {
		return "", "", fmt.Errorf("names key: %w", err)
	}
	if wk.KeyID == dest.ARN && !rw.opts.Force &&
		(rw.moving || dest.CurrentKeyMaterialID == "" || wk.KeyMaterialID == dest.CurrentKeyMaterialID) {
		return "", NamesCurrent, nil
	}
	if rw.opts.DryRun {
		return "", NamesRewrapped, nil
	}
	nw, err := rw.rewrapKey(ctx, wk, dest.ARN, keysvc.NamesContext(cfg.FilesystemID))
	if err != nil {
		return "", "", fmt.Errorf("re-wrap the names key: %w", aboutKey(wk.KeyID, err))
	}
	if nw.KeyID == "" {
		nw.KeyID = dest.ARN
	}
	rec, err := encodeNamesKey(nw)
	if err != nil {
		return "", "", err
	}
	return rec, NamesRewrapped, nil
}

// move unwraps wk with the source service and wraps the plaintext data key
// under destKey of the destination service, then checks that the new blob
// unwraps to the same key. The plaintext is zeroed before move returns.
func (rw *Rewrapper) move(ctx context.Context, wk keysvc.WrappedKey, destKey string, ec keysvc.EncryptionContext) (keysvc.WrappedKey, error) {
	u, err := rw.opts.Source.Decrypt(ctx, wk.Blob, wk.KeyID, ec)
	if err != nil {
		return keysvc.WrappedKey{}, err
	}
	defer keysvc.Zero(u.Plaintext)
	nw, err := rw.opts.Dest.Encrypt(ctx, destKey, u.Plaintext, ec)
	if err != nil {
		return keysvc.WrappedKey{}, err
	}
	back, err := rw.opts.Dest.Decrypt(ctx, nw.Blob, destKey, ec)
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

// rewrapKey re-wraps one wrapped key (a file's or the names key, with its
// encryption context ec) under destARN, within one call timeout: ReEncrypt
// inside one key service, or Decrypt and Encrypt across two (move).
func (rw *Rewrapper) rewrapKey(ctx context.Context, wk keysvc.WrappedKey, destARN string, ec keysvc.EncryptionContext) (keysvc.WrappedKey, error) {
	cctx, cancel := context.WithTimeout(ctx, rw.opts.CallTimeout)
	defer cancel()
	if rw.moving {
		return rw.move(cctx, wk, destARN, ec)
	}
	return rw.opts.Source.ReEncrypt(cctx, wk.Blob, wk.KeyID, ec, destARN)
}

// DescribeEnabled describes the key ref and fails unless it is enabled
// (keysvc.ErrDisabled, keysvc.ErrInvalidState), naming the key.
func DescribeEnabled(ctx context.Context, svc keysvc.Service, ref string) (keysvc.KeyInfo, error) {
	info, err := svc.DescribeKey(ctx, ref)
	if err != nil {
		return keysvc.KeyInfo{}, aboutKey(ref, err)
	}
	if info.Enabled {
		return info, nil
	}
	if info.State == "Disabled" {
		return keysvc.KeyInfo{}, fmt.Errorf("key %s is disabled: %w", ref, keysvc.ErrDisabled)
	}
	return keysvc.KeyInfo{}, fmt.Errorf("key %s is %s: %w", ref, info.State, keysvc.ErrInvalidState)
}

// aboutKey names the key ref in err unless the backend already did.
func aboutKey(ref string, err error) error {
	if strings.Contains(err.Error(), ref) {
		return err
	}
	return fmt.Errorf("key %s: %w", ref, err)
}
