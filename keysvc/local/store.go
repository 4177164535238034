// Package local is kmsfs's embedded key management service: a keystore of
// symmetric KMS keys, each with every version of its key material, kept in
// one file encrypted at rest, and the operations AWS KMS offers on them.
// *Store implements keysvc.Service, so the filesystem can use it directly;
// keysvc/kmsserver offers it over the AWS KMS wire protocol. This package
// parses and validates key and identity policies when they are written
// (policy.go); the server evaluates them.
//
// The keystore directory holds keystore.kms (the encrypted keystore),
// keystore.lock (the flock that serialises writers across processes) and,
// unless a passphrase protects the keystore, root.key (32 random bytes,
// mode 0600). Several Stores, in one process or many, may share a
// directory: writes take an exclusive lock and replace the file
// atomically; reads reload only when the file changed.
package local

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/internal/secmem"
	"github.com/kmsfs/kmsfs/keysvc"
)

// File names inside the keystore directory.
const (
	KeystoreFileName = "keystore.kms"
	LockFileName     = "keystore.lock"
	RootKeyFileName  = "root.key"
)

// Options configure Open.
type Options struct {
	// Passphrase protects the keystore when non-nil (it must not be
	// empty): the root key is
	// scrypt(Passphrase, salt). When nil, the root key is the random file
	// root.key (mode 0600) in the keystore directory, created on first
	// use. A keystore is created in one mode and must be opened in it.
	// Open copies it.
	Passphrase []byte
	// ScryptLogN is log2 of the scrypt cost for a new passphrase keystore;
	// 0 means DefaultScryptLogN (17). Tests use small values. Existing
	// keystores keep the cost recorded in their file.
	ScryptLogN int
	// MaxOnDemandRotations caps RotateKey per key; 0 means
	// DefaultMaxOnDemandRotations (25, like AWS KMS), negative means no cap.
	MaxOnDemandRotations int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives key lifecycle events (never material); nil discards.
	Logger *slog.Logger
	// MaxKeys caps the number of keys in the keystore (in every state,
	// as AWS counts them); 0 means DefaultMaxKeys. CreateKey beyond it
	// fails with keysvc.ErrLimitExceeded.
	MaxKeys int
}

// fileIdent is what tells whether keystore.kms changed since it was read.
type fileIdent struct {
	exists      bool
	dev, ino    uint64
	size        int64
	mtime, ctim int64
}

func identOf(fi fs.FileInfo) fileIdent {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileIdent{exists: true, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	}
	return fileIdent{
		exists: true, dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctim: st.Ctim.Nano(),
	}
}

// Store is an open keystore. It is safe for concurrent use by many
// goroutines, and by many processes through many Stores.
type Store struct {
	dir        string
	passphrase []byte
	scryptLogN uint8
	maxOnDmd   int
	now        func() time.Time
	log        *slog.Logger
	lockFile   *os.File
	maxKeys    int

	// fileMu serialises this Store's writers and every use of lockFile
	// (a flock belongs to the open file, so goroutines sharing lockFile
	// must not interleave their locks). Only a holder of fileMu replaces
	// data, so it may read data without mu. It also guards header,
	// hasHdr, rootKey and mem. Lock order: fileMu, the flock, mu.
	fileMu  sync.Mutex
	header  fileHeader // of the file data was read from (or will be written with)
	hasHdr  bool
	rootKey []byte
	mem     *secmem.Arena // holds rootKey (rootkey.go)

	// mu guards the snapshot readers use. Readers hold it shared while
	// they look at data; a writer builds the next keystore in a copy,
	// writes the file without holding mu, and takes mu exclusively only
	// to swap the copy in, so a Decrypt never waits for a file rewrite.
	mu      sync.RWMutex
	closed  bool
	data    *keystoreData // never nil once open; never modified in place
	ident   fileIdent     // of the keystore.kms data was read from
	stale   bool          // data may differ from the file: reload before use
	writing bool          // a writer holds the exclusive flock: a changed file is its own, not yet swapped in
	nextDue time.Time     // earliest scheduled rotation or deletion; zero = none
	loads   int           // times keystore.kms was parsed (tests check the hot path does not)
}

var _ keysvc.Service = (*Store)(nil)

// Open opens (creating when missing) the keystore in dir. The directory is
// created with mode 0700; an existing one must be private to the caller
// (ErrInsecureKeystoreDir otherwise). Open applies any rotation or
// deletion that has come due.
func Open(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create keystore directory: %w", err)
	}
	if err := checkKeystoreDir(dir); err != nil {
		return nil, err
	}
	s := &Store{
		dir:      dir,
		maxOnDmd: opts.MaxOnDemandRotations,
		now:      opts.Now,
		log:      opts.Logger,
		data:     newKeystoreData(),
		stale:    true,
	}
	if opts.Passphrase != nil {
		if len(opts.Passphrase) == 0 {
			return nil, fmt.Errorf("empty keystore passphrase: %w", keysvc.ErrInvalidArgument)
		}
		s.passphrase = append([]byte{}, opts.Passphrase...)
	}
	switch {
	case opts.ScryptLogN == 0:
		s.scryptLogN = DefaultScryptLogN
	case opts.ScryptLogN < 1 || opts.ScryptLogN > maxScryptLogN:
		return nil, fmt.Errorf("scrypt cost 2^%d out of range 2^1..2^%d: %w", opts.ScryptLogN, maxScryptLogN, keysvc.ErrInvalidArgument)
	default:
		s.scryptLogN = uint8(opts.ScryptLogN)
	}
	if s.maxOnDmd == 0 {
		s.maxOnDmd = DefaultMaxOnDemandRotations
	}
	s.maxKeys = opts.MaxKeys
	if s.maxKeys <= 0 {
		s.maxKeys = DefaultMaxKeys
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	lf, err := os.OpenFile(filepath.Join(dir, LockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open keystore lock: %w", err)
	}
	s.lockFile = lf
	// Apply what has come due, and write the keystore file if there is none.
	err = s.mutate(context.Background(), func(*keystoreData, time.Time) (bool, error) {
		return !s.ident.exists, nil
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Dir returns the keystore directory.
func (s *Store) Dir() string { return s.dir }

// Close zeroes the keys held in memory and releases the lock file. The
// Store must not be used afterwards.
func (s *Store) Close() error {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.data.zero()
	s.data = newKeystoreData()
	s.setRootKey(nil)
	keysvc.Zero(s.passphrase)
	return s.lockFile.Close()
}

var errClosed = errors.New("keystore is closed")

// flock takes the keystore lock (unix.LOCK_SH or LOCK_EX), polling so that
// ctx can end the wait.
func (s *Store) flock(ctx context.Context, how int) (unlock func(), err error) {
	delay := time.Millisecond
	for {
		err := unix.Flock(int(s.lockFile.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(s.lockFile.Fd()), unix.LOCK_UN) }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("lock keystore: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for keystore lock: %w: %w", keysvc.ErrUnavailable, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}

func (s *Store) keystorePath() string { return filepath.Join(s.dir, KeystoreFileName) }

// currentIdent stats keystore.kms.
func (s *Store) currentIdent() (fileIdent, error) {
	fi, err := os.Stat(s.keystorePath())
	if errors.Is(err, fs.ErrNotExist) {
		return fileIdent{}, nil
	}
	if err != nil {
		return fileIdent{}, fmt.Errorf("stat keystore: %w", err)
	}
	return identOf(fi), nil
}

// view runs fn on an up-to-date snapshot of the keystore, under a read
// lock. On the hot path (nothing changed, nothing due) this costs one
// stat and no parsing; while this Store rewrites the file it costs not
// even that, and never waits for the rewrite. fn must not keep references
// into d, nor change it.
func (s *Store) view(ctx context.Context, fn func(d *keystoreData, now time.Time) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return errClosed
	}
	now := s.now()
	due := !s.nextDue.IsZero() && !now.Before(s.nextDue)
	fresh := !s.stale && s.writing
	if !fresh && !s.stale {
		id, err := s.currentIdent()
		fresh = err == nil && id == s.ident
	}
	if fresh && !due {
		defer s.mu.RUnlock()
		return fn(s.data, now)
	}
	s.mu.RUnlock()

	if err := s.refresh(ctx, now, due); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	return fn(s.data, now)
}

// refresh reloads the keystore when the file changed and, when due is
// set, applies the rotations and deletions that have come due.
func (s *Store) refresh(ctx context.Context, now time.Time, due bool) error {
	if due {
		err := s.mutate(ctx, func(*keystoreData, time.Time) (bool, error) { return false, nil })
		if errors.Is(err, errClosed) {
			return err
		}
		if err != nil {
			// Reads go on (due deletions are hidden by resolve); retry later.
			s.log.Warn("keystore: cannot apply due rotation or deletion", "err", err)
			s.mu.Lock()
			s.nextDue = now.Add(time.Minute)
			s.mu.Unlock()
		}
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return errClosed
	}
	unlock, err := s.flock(ctx, unix.LOCK_SH)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadIfChangedLocked()
}

// update runs fn on a copy of the freshest keystore under the exclusive
// file lock and saves the copy, which then replaces the snapshot readers
// use. When fn or the save fails, the keystore (file and memory) is left
// as it was.
func (s *Store) update(ctx context.Context, fn func(d *keystoreData, now time.Time) error) error {
	return s.mutate(ctx, func(d *keystoreData, now time.Time) (bool, error) {
		return true, fn(d, now)
	})
}

// mutate is the one write path. Holding fileMu and the exclusive flock,
// it reloads the keystore if another process changed it, copies it,
// applies what has come due to the copy, runs fn on the copy, and saves
// the copy when fn asks to or something came due. Readers keep using the
// previous snapshot until the new file is in place.
func (s *Store) mutate(ctx context.Context, fn func(d *keystoreData, now time.Time) (save bool, err error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return errClosed
	}
	unlock, err := s.flock(ctx, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	err = s.reloadIfChangedLocked()
	s.writing = err == nil
	s.mu.Unlock()
	if err != nil {
		return err
	}
	defer func() {
		s.mu.Lock()
		s.writing = false
		s.mu.Unlock()
	}()
	d, err := s.data.clone()
	if err != nil {
		return err
	}
	now := s.now()
	due := s.applyDue(d, now)
	save, err := fn(d, now)
	if err != nil || !(save || due) {
		d.zero()
		return err
	}
	return s.save(d)
}

func (s *Store) reloadIfChangedLocked() error {
	id, err := s.currentIdent()
	if err != nil {
		return err
	}
	if s.stale || id != s.ident {
		return s.loadLocked()
	}
	return nil
}

// loadLocked reads keystore.kms into memory (an empty keystore when the
// file does not exist). The caller holds s.mu and a file lock.
func (s *Store) loadLocked() error {
	f, err := os.Open(s.keystorePath())
	if errors.Is(err, fs.ErrNotExist) {
		if s.ident.exists {
			// Never treat a keystore that vanished under us as empty: every
			// key would silently be gone. Fail until it is restored.
			return fmt.Errorf("keystore file %s has disappeared: %w", s.keystorePath(), keysvc.ErrUnavailable)
		}
		s.replaceData(newKeystoreData(), fileIdent{})
		s.hasHdr = false
		return nil
	}
	if err != nil {
		return fmt.Errorf("open keystore: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat keystore: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKeystoreSize+1))
	if err != nil {
		return fmt.Errorf("read keystore: %w", err)
	}
	s.loads++
	h, nonce, sealed, err := parseKeystoreFile(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", s.keystorePath(), err)
	}
	root, err := s.rootKeyFor(h)
	if err != nil {
		return err
	}
	plain, err := openKeystore(h, nonce, sealed, root)
	if err != nil {
		return fmt.Errorf("%s: %w", s.keystorePath(), err)
	}
	d, err := decodeKeystoreData(plain)
	keysvc.Zero(plain)
	if err != nil {
		return fmt.Errorf("%s: %w", s.keystorePath(), err)
	}
	s.header, s.hasHdr = h, true
	s.replaceData(d, identOf(fi))
	return nil
}

// replaceData swaps in d, zeroing the material of the old data.
func (s *Store) replaceData(d *keystoreData, id fileIdent) {
	if s.data != d {
		s.data.zero()
	}
	s.data = d
	s.ident = id
	s.stale = false
	s.nextDue = nextDue(d)
}

// rootKeyFor returns the root key that opens a file with header h,
// deriving or reading it when needed.
func (s *Store) rootKeyFor(h fileHeader) ([]byte, error) {
	switch h.mode {
	case modePassphrase:
		if s.passphrase == nil {
			return nil, fmt.Errorf("keystore %s is protected by a passphrase and none was given: %w", s.dir, ErrKeystoreMode)
		}
		if s.rootKey != nil && s.hasHdr && s.header.sameKDF(h) {
			return s.rootKey, nil
		}
		k, err := deriveRootKey(s.passphrase, h)
		if err != nil {
			return nil, err
		}
		s.setRootKey(k)
		s.header, s.hasHdr = h, true
		return s.rootKey, nil
	default:
		if s.passphrase != nil {
			return nil, fmt.Errorf("keystore %s is protected by %s, not a passphrase: %w", s.dir, RootKeyFileName, ErrKeystoreMode)
		}
		if s.rootKey != nil {
			return s.rootKey, nil
		}
		k, err := readRootKeyFile(filepath.Join(s.dir, RootKeyFileName))
		if err != nil {
			return nil, err
		}
		s.setRootKey(k)
		return s.rootKey, nil
	}
}

// headerForSave returns the header to write the keystore with: the
// loaded file's (same salt and cost) or, for a new keystore, a fresh one.
// It makes sure s.rootKey matches it, creating root.key if needed.
func (s *Store) headerForSave() (fileHeader, error) {
	if s.hasHdr {
		if _, err := s.rootKeyFor(s.header); err != nil {
			return fileHeader{}, err
		}
		return s.header, nil
	}
	h, err := newHeader(s.passphrase != nil, s.scryptLogN)
	if err != nil {
		return fileHeader{}, err
	}
	if h.mode == modePassphrase {
		k, err := deriveRootKey(s.passphrase, h)
		if err != nil {
			return fileHeader{}, err
		}
		s.setRootKey(k)
	} else if s.rootKey == nil {
		k, err := loadOrCreateRootKey(s.dir)
		if err != nil {
			return fileHeader{}, err
		}
		s.setRootKey(k)
	}
	s.header, s.hasHdr = h, true
	return h, nil
}

// save writes d to keystore.kms atomically (temp file, fsync, rename,
// fsync of the directory) and makes it the snapshot readers use, zeroing
// the previous one. A keystore the loader would refuse, or one that
// grows past keystoreBudget, is not written: the error wraps
// keysvc.ErrLimitExceeded and d is zeroed. The caller holds fileMu and
// the exclusive flock; save takes mu only for the swap.
func (s *Store) save(d *keystoreData) (err error) {
	defer func() {
		if err != nil {
			d.zero()
		}
	}()
	h, err := s.headerForSave()
	if err != nil {
		return err
	}
	plain, err := encodeKeystoreData(d)
	if err != nil {
		return err
	}
	if err := checkKeystoreSize(sealedSize(h, len(plain)), s.ident.size); err != nil {
		keysvc.Zero(plain)
		return err
	}
	sealed, err := sealKeystore(h, s.rootKey, plain)
	keysvc.Zero(plain)
	if err != nil {
		return fmt.Errorf("seal keystore: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, KeystoreFileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("save keystore: %w", err)
	}
	tmpName := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmpName)
		return fmt.Errorf("save keystore: %w", err)
	}
	if _, err := tmp.Write(sealed); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmpName, s.keystorePath()); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("save keystore: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		// The file may hold d or not: reload before the next use.
		s.mu.Lock()
		s.stale = true
		s.mu.Unlock()
		return fmt.Errorf("save keystore: %w", err)
	}
	// Rename keeps the inode, size and mtime of the temp file.
	id := identOf(fi)
	if now, err := s.currentIdent(); err == nil {
		id = now // ctime changes on rename on some filesystems
	}
	s.mu.Lock()
	old := s.data
	s.data = d
	s.ident = id
	s.stale = false
	s.nextDue = nextDue(d)
	s.mu.Unlock()
	old.zero() // no reader holds it any more: they held mu shared
	return nil
}

// clone returns a deep copy of d, material included, made by a JSON round
// trip so that it copies every field the keystore holds (and stays right
// when fields are added).
func (d *keystoreData) clone() (*keystoreData, error) {
	plain, err := encodeKeystoreData(d)
	if err != nil {
		return nil, err
	}
	c, err := decodeKeystoreData(plain)
	keysvc.Zero(plain)
	return c, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkKeystoreDir refuses a keystore directory that group or others may
// enter or that belongs to another user: whoever can write it can swap
// keystore.kms or root.key, and whoever can read it can read keystore.kms
// and its lock (and root.key, should its own mode slip).
func checkKeystoreDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("keystore directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("keystore path %s is not a directory: %w", dir, ErrInsecureKeystoreDir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("keystore directory %s has mode %04o, group or others can reach it; run chmod 700 %s: %w", dir, perm, dir, ErrInsecureKeystoreDir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("keystore directory %s belongs to uid %d, not to uid %d who runs kmsfs; use a keystore of your own (--keystore DIR) or chown it: %w", dir, st.Uid, os.Geteuid(), ErrInsecureKeystoreDir)
	}
	return nil
}

// readRootKeyFile reads root.key, refusing one that others may read or
// write, that is not a regular file, or that belongs to another user.
func readRootKeyFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s is missing but the keystore needs it: %w", path, ErrWrongRootKey)
	}
	if err != nil {
		return nil, fmt.Errorf("open root key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat root key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", path, ErrInsecureRootKey)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o, group or others can access it; run chmod 600 %s: %w", path, perm, path, ErrInsecureRootKey)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("%s belongs to uid %d, not to uid %d: %w", path, st.Uid, os.Geteuid(), ErrInsecureRootKey)
	}
	k := make([]byte, rootKeySize+1)
	n, err := io.ReadFull(f, k)
	if n != rootKeySize || !errors.Is(err, io.ErrUnexpectedEOF) {
		keysvc.Zero(k)
		return nil, fmt.Errorf("%s is not %d bytes long: %w", path, rootKeySize, ErrWrongRootKey)
	}
	return k[:rootKeySize], nil
}

// loadOrCreateRootKey reads root.key, creating it (0600, random) when it
// does not exist. The caller holds the exclusive keystore lock, so two
// processes never both create it.
func loadOrCreateRootKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, RootKeyFileName)
	if !isMissing(path) {
		return readRootKeyFile(path)
	}
	k, err := randomBytes(rootKeySize)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		keysvc.Zero(k)
		return nil, fmt.Errorf("create root key: %w", err)
	}
	if _, err := f.Write(k); err != nil {
		f.Close()
		keysvc.Zero(k)
		return nil, fmt.Errorf("write root key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		keysvc.Zero(k)
		return nil, fmt.Errorf("sync root key: %w", err)
	}
	if err := f.Close(); err != nil {
		keysvc.Zero(k)
		return nil, fmt.Errorf("close root key: %w", err)
	}
	if err := syncDir(dir); err != nil {
		keysvc.Zero(k)
		return nil, fmt.Errorf("sync keystore directory: %w", err)
	}
	return k, nil
}

func isMissing(path string) bool {
	_, err := os.Lstat(path)
	return errors.Is(err, fs.ErrNotExist)
}

// randomBytes returns n bytes from crypto/rand.
func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("read random bytes: %w", err)
	}
	return b, nil
}

// nextDue is the earliest time a scheduled rotation or deletion of d
// comes due; zero when nothing is scheduled.
func nextDue(d *keystoreData) time.Time {
	var due time.Time
	consider := func(t *time.Time) {
		if t != nil && (due.IsZero() || t.Before(due)) {
			due = *t
		}
	}
	for _, k := range d.Keys {
		if k.State == KeyStatePendingDeletion {
			consider(k.DeletionDate)
		}
		if k.State == KeyStateEnabled && k.RotationEnabled {
			consider(k.NextRotation)
		}
	}
	return due
}

// applyDue deletes keys whose deletion date has passed (with their
// aliases) and rotates enabled keys whose automatic rotation is due. It
// reports whether it changed d.
func (s *Store) applyDue(d *keystoreData, now time.Time) bool {
	changed := false
	for id, k := range d.Keys {
		switch {
		case k.State == KeyStatePendingDeletion && !now.Before(*k.DeletionDate):
			for name, a := range d.Aliases {
				if a.KeyID == id {
					delete(d.Aliases, name)
				}
			}
			for _, v := range k.Versions {
				keysvc.Zero(v.Material)
			}
			delete(d.Keys, id)
			s.log.Info("keystore: key deleted", "key_id", id)
			changed = true
		case k.State == KeyStateEnabled && k.RotationEnabled && !now.Before(*k.NextRotation):
			v, err := newKeyVersion(now, MaterialAutomatic)
			if err != nil {
				s.log.Warn("keystore: automatic rotation failed", "key_id", id, "err", err)
				continue
			}
			k.Versions = append(k.Versions, v)
			next := now.AddDate(0, 0, k.RotationPeriodDays)
			k.NextRotation = &next
			s.log.Info("keystore: key rotated automatically", "key_id", id, "key_material_id", v.ID)
			changed = true
		}
	}
	return changed
}

// KeystoreInfo is what Inspect learns from a keystore directory without
// any secret.
type KeystoreInfo struct {
	Exists     bool // keystore.kms is there
	Passphrase bool // it is protected by a passphrase (else by root.key)
	ScryptLogN int  // log2 of the scrypt cost, for passphrase keystores
}

// Inspect reads the header of dir's keystore.kms, so a command can tell
// whether to ask for a passphrase before calling Open. A missing file is
// not an error (Exists is false).
func Inspect(dir string) (KeystoreInfo, error) {
	f, err := os.Open(filepath.Join(dir, KeystoreFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return KeystoreInfo{}, nil
	}
	if err != nil {
		return KeystoreInfo{}, fmt.Errorf("open keystore: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxKeystoreSize+1))
	if err != nil {
		return KeystoreInfo{}, fmt.Errorf("read keystore: %w", err)
	}
	h, _, _, err := parseKeystoreFile(raw)
	if err != nil {
		return KeystoreInfo{}, fmt.Errorf("%s: %w", filepath.Join(dir, KeystoreFileName), err)
	}
	return KeystoreInfo{Exists: true, Passphrase: h.mode == modePassphrase, ScryptLogN: int(h.logN)}, nil
}
