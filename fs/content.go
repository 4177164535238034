package fs

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
)

// Short names for the backing-file facts package cipherdir defines.
const (
	KeyXattr            = cipherdir.KeyXattr
	internalXattrPrefix = cipherdir.InternalXattrPrefix
	maxRecordSize       = keysvc.MaxRecordSize
)

var (
	errNoKey     = cipherdir.ErrNoKey
	errBadHeader = cipherdir.ErrBadHeader
)

// content is the state of one open regular file (one backing inode, so
// hard links share it): its cipher and its content lock. It lives while a
// handle (or a truncate by path) holds it.
type content struct {
	ino  uint64 // key in root.contents
	refs int    // guarded by root.mu

	// mu is the content lock: reads hold the read side, and every content
	// change (write, truncate by handle or path, fallocate, O_TRUNC) holds
	// the write side in content.change.
	mu     sync.RWMutex
	loaded bool          // the backing file has been examined
	cipher *chunk.Cipher // nil while the backing file is empty (no header yet)

	check keyCheck // when the key was last confirmed with the key service (revalidate.go)

	// alloc is what reserve.go knows of the backing file's allocation;
	// guarded by mu's write side.
	alloc allocation
}

// kmsContext returns the context of one key service call: the FUSE
// request's values without its cancellation (a signal to the calling
// process cancels the request), bounded by the KMS timeout.
func (r *root) kmsContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), r.kmsTimeout)
}

// encryptionContext binds a data key to this filesystem and one file
// (keysvc.FileContext).
func (r *root) encryptionContext(id chunk.FileID) keysvc.EncryptionContext {
	return keysvc.FileContext(r.cfg.FilesystemID, id.String())
}

// newKey generates a data key for a new file with a fresh header and
// returns its cipher and wrapped key record. The plaintext key is zeroed
// before newKey returns.
func (r *root) newKey(ctx context.Context) (*chunk.Cipher, []byte, error) {
	c, rec, _, err := r.newKeyAt(ctx)
	return c, rec, err
}

// newKeyAt is newKey that also returns when the key service made the key.
// The key comes from the data key pool (keypool.go) when it has one, else
// from one GenerateDataKey call.
func (r *root) newKeyAt(ctx context.Context) (*chunk.Cipher, []byte, time.Time, error) {
	if k, ok := r.pool.take(); ok {
		r.metrics.poolHits.Add(1)
		c, rec, err := cipherdir.FileCipher(k.dk, k.h, r.codecs)
		r.mem.Free(k.dk.Plaintext)
		return c, rec, k.at, err
	}
	if r.pool != nil {
		r.metrics.poolMisses.Add(1)
	}
	h, err := r.newHeader()
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	at := time.Now()
	kctx, cancel := r.kmsContext(ctx)
	defer cancel()
	dk, err := cipherdir.GenerateFileKey(kctx, r.keys, r.cfg, h)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	c, rec, err := cipherdir.FileCipher(dk, h, r.codecs)
	keysvc.Zero(dk.Plaintext)
	return c, rec, at, err
}

// loadKey reads the key record and header of the open backing file f,
// unwraps the data key and verifies the header. It returns a nil cipher
// for an empty backing file (header not yet written).
func (r *root) loadKey(ctx context.Context, f *os.File) (*chunk.Cipher, error) {
	c, _, err := r.loadKeyConfirmed(ctx, f)
	return c, err
}

// loadKeyConfirmed is loadKey that also returns when the key service last
// vouched for the key (a DEK cache answer is as old as its entry).
func (r *root) loadKeyConfirmed(ctx context.Context, f *os.File) (_ *chunk.Cipher, confirmed time.Time, _ error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	if fi.Size() == 0 {
		return nil, time.Time{}, nil
	}
	kctx, cancel := r.kmsContext(ctx)
	defer cancel()
	k, err := cipherdir.LoadKey(kctx, r.keys, r.trust, r.cfg, r.codecs, int(f.Fd()))
	if err != nil {
		return nil, time.Time{}, err
	}
	if k.Place == cipherdir.PlaceSlot && r.cfg.KeyRecordMode() == cipherdir.KeyRecordXattrSlot {
		r.restoreKeyXattr(f, k.Header.FileID, k.Record)
	}
	return k.Cipher, k.Fetched, nil
}

// restoreKeyXattr puts back the key xattr of a file whose record was found
// only in its key-record slot (a copy that dropped extended attributes),
// now that the key service has unwrapped it and the header verified under
// it. Read-only mounts leave the backing file alone. XATTR_CREATE never
// replaces a record another writer (a rewrap) has put there meanwhile. One
// log line either way; a failure is not an error of the open.
func (r *root) restoreKeyXattr(f *os.File, id chunk.FileID, wk keysvc.WrappedKey) {
	if r.readOnly {
		return
	}
	err := unix.Fsetxattr(int(f.Fd()), KeyXattr, wk.MarshalRecord(), unix.XATTR_CREATE)
	switch {
	case err == nil:
		r.log.Info("restored the missing key xattr from the key-record slot", "file_id", id.String())
	case errors.Is(err, unix.EEXIST):
	default:
		r.log.Warn("cannot restore the missing key xattr from the key-record slot; the slot keeps the file readable",
			"file_id", id.String(), "err", err.Error())
	}
}

// acquire returns the content of the open backing file f (inode ino),
// loading its key on first use, with one more reference. Concurrent
// openers of one file wait for a single load and share the cipher.
func (r *root) acquire(ctx context.Context, ino uint64, f *os.File) (*content, error) {
	r.mu.Lock()
	c := r.contents[ino]
	if c == nil {
		c = &content{ino: ino}
		r.contents[ino] = c
	}
	c.refs++
	r.mu.Unlock()

	c.mu.RLock()
	// In shared mode a file that was empty when this mount loaded it may
	// have got its key and data from another host since: an open looks
	// again (close-to-open).
	loaded := c.loaded && (c.cipher != nil || !r.shared)
	var err error
	if loaded {
		// Another handle holds the key: a revoked key must still refuse
		// this open.
		err = r.revalidate(ctx, c, f)
	}
	c.mu.RUnlock()
	if loaded {
		if err != nil {
			r.release(c)
			return nil, err
		}
		return c, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded || (r.shared && c.cipher == nil) {
		ci, confirmed, err := r.loadKeyConfirmed(ctx, f)
		if err != nil && r.shared {
			// Another host may have been writing the file's first
			// header: look again while none can.
			ci, confirmed, err = r.loadKeyLocked(ctx, f)
		}
		if err == nil && ci != nil {
			err = r.trimTornTail(f, ci.Header().FileID)
		}
		if err != nil {
			r.releaseLocked(c)
			return nil, err
		}
		c.cipher, c.loaded = ci, true
		c.check.confirmedAt(confirmed, r.keyRecheck)
	} else if err := r.revalidate(ctx, c, f); err != nil {
		r.releaseLocked(c)
		return nil, err
	}
	return c, nil
}

// adopt registers the cipher of a file this mount has just created, whose
// key the key service made at confirmed.
func (r *root) adopt(ino uint64, ci *chunk.Cipher, confirmed time.Time) *content {
	r.mu.Lock()
	c := r.contents[ino]
	if c == nil {
		c = &content{ino: ino}
		r.contents[ino] = c
	}
	c.refs++
	r.mu.Unlock()
	// Lock order is c.mu before r.mu (acquire releases under c.mu), so
	// c.mu is taken only after r.mu is let go.
	c.mu.Lock()
	c.cipher, c.loaded = ci, true
	c.check.confirmedAt(confirmed, r.keyRecheck)
	c.mu.Unlock()
	return c
}

// release drops one reference; the last one forgets the cipher.
func (r *root) release(c *content) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropRef(c)
}

// releaseLocked is release for a caller holding c.mu (never r.mu).
func (r *root) releaseLocked(c *content) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropRef(c)
}

func (r *root) dropRef(c *content) {
	c.refs--
	if c.refs == 0 && r.contents[c.ino] == c {
		delete(r.contents, c.ino)
	}
}

// changeKind says what a content change does.
type changeKind int

const (
	changeWrite    changeKind = iota // write data at off (or at EOF with appendMode)
	changeTruncate                   // set the plaintext size to size
	changeAllocate                   // fallocate [off, off+size) with mode
)

// change describes one content change for content.change.
type change struct {
	kind       changeKind
	data       []byte
	off        int64
	size       int64
	appendMode bool
	mode       uint32
}

// change is the one function through which every change of a file's
// content goes: writes (including O_APPEND, placed at the plaintext size
// under the lock), truncation by handle or by path, O_TRUNC and
// fallocate. It holds the content lock's write side throughout, so no
// reader sees a half-rewritten chunk and no two read-modify-writes of one
// chunk interleave. An empty backing file gets its header (and, when it
// had none, a new data key) first. It returns the bytes written.
//
// In shared mode it also holds the internal byte-range locks of the
// backing file that the change needs (shared.go, lockChange), taken after
// the content lock and after any key service call but one: giving an
// empty file its first key happens under the size lock, so that two
// hosts never give one file two keys.
func (r *root) change(ctx context.Context, c *content, b *backingFile, ch change) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lk backingLock // held in shared mode only
	defer lk.release()
	if c.cipher == nil {
		if r.shared {
			var err error
			if lk, err = lockSize(int(b.fd.Fd()), true); err != nil {
				return 0, err
			}
		}
		// The file was empty at open. Another mount of the tree may have
		// given it a header since: use that key rather than replace it.
		ci, err := r.loadKey(ctx, b.fd)
		if err != nil {
			return 0, err
		}
		c.cipher = ci
	}
	if c.cipher == nil {
		if ch.kind == changeTruncate && ch.size == 0 {
			return 0, nil // empty stays empty
		}
		if err := r.initialize(ctx, c, b.fd); err != nil {
			return 0, err
		}
	}
	if err := r.revalidate(ctx, c, b.fd); err != nil {
		return 0, err
	}
	f := b.file(c)
	lockedSize := int64(-1) // the size read under the size lock, when known
	if r.shared && !lk.held {
		var err error
		if lk, lockedSize, err = r.lockChange(int(b.fd.Fd()), f, ch, c.alloc.size); err != nil {
			return 0, err
		}
	}
	if lk.held {
		if err := checkNotReplaced(int(b.fd.Fd())); err != nil {
			return 0, err
		}
	}
	switch ch.kind {
	case changeWrite:
		size := lockedSize
		if size < 0 {
			var err error
			if size, err = f.Size(); err != nil {
				return 0, err
			}
		}
		off := ch.off
		if ch.appendMode {
			off = size
		}
		if r.shared && c.alloc.size != size {
			// Another host changed the file since this mount's last
			// change, and may have freed blocks the prefix claims.
			c.alloc = allocation{}
		}
		// Space first, so a full disk cannot tear a chunk (reserve.go).
		if err := r.reserveWrite(c, b.fd, size, off, len(ch.data)); err != nil {
			return 0, err
		}
		n, err := f.WriteAt(ch.data, off)
		c.alloc.size = max(size, off+int64(n))
		if err != nil {
			c.alloc.size = -1
		}
		if err != nil && n == len(ch.data) {
			// Every byte is in place and reads back; what failed is a
			// follow-up (re-sealing a chunk that was final as a middle
			// chunk, or setting FlagHasData), which leaves a crash
			// remnant fsck re-seals. The writer still gets the error:
			// a backing store that fails a write must not look healthy,
			// and POSIX lets a failed write(2) have changed the file.
			r.log.Warn("write stored its data but a follow-up backing write failed",
				"file_id", c.cipher.Header().FileID.String(), "err", err.Error())
		}
		return n, err
	case changeTruncate:
		size, err := f.Size()
		if err != nil {
			return 0, err
		}
		if err := r.reserveTruncate(c, b.fd, size, ch.size); err != nil {
			return 0, err
		}
		return 0, f.Truncate(ch.size)
	case changeAllocate:
		return 0, r.allocate(b.fd, f, ch.off, ch.size, ch.mode)
	}
	panic("fs: internal error: unknown content change")
}

// backingFile is one open descriptor of a backing regular file and the
// chunk.File over it (kept, so its buffer pools are reused across calls).
type backingFile struct {
	fd *os.File

	mu     sync.Mutex // guards cf and cipher: readers share a handle
	cf     *chunk.File
	cipher *chunk.Cipher // the cipher cf was built with
}

// file returns the chunk.File over b for c's cipher, building it on first
// use and again when the cipher changed (an empty file got its key). The
// caller holds c.mu (either side) and c.cipher is not nil.
func (b *backingFile) file(c *content) *chunk.File {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cf == nil || b.cipher != c.cipher {
		b.cf, b.cipher = chunk.NewFile(punchingFile{b.fd}, c.cipher), c.cipher
	}
	return b.cf
}

// initialize gives an empty backing file (no header: a crash between
// creation and the header write, or a file created outside kmsfs) a new
// data key and header. The caller holds c.mu.
func (r *root) initialize(ctx context.Context, c *content, fd *os.File) error {
	ci, rec, err := r.newKey(ctx)
	if err != nil {
		return err
	}
	if err := r.writeNewKeyRecord(int(fd.Fd()), ci, rec); err != nil {
		return err
	}
	c.cipher = ci
	return nil
}

// writeNewKeyRecord starts a new backing file: header and key-record slot
// in one pwrite, then the key xattr (cipherdir.WriteKeyRecord). A record too large
// for the slot is warned about once per file.
func (r *root) writeNewKeyRecord(fd int, ci *chunk.Cipher, rec []byte) error {
	id := ci.Header().FileID
	place, err := cipherdir.StartFile(fd, ci, rec, r.cfg.KeyRecordMode())
	if err != nil {
		return err
	}
	if place&cipherdir.PlaceSlot == 0 {
		r.log.Warn("the key record does not fit the key-record slot: it is kept in the xattr only, and a copy that drops xattrs loses this file",
			"file_id", id.String(), "record_bytes", len(rec), "slot_bytes", chunk.MaxSlotRecord)
	}
	return nil
}

// allocate implements fallocate on plaintext offsets. Mode 0 reserves the
// backing space of the range and extends the file like a zero write past
// EOF; FALLOC_FL_KEEP_SIZE only reserves the backing space of the chunks
// the range maps to. Other modes (punch hole, zero range, collapse,
// insert) are not supported.
func (r *root) allocate(fd *os.File, f *chunk.File, off, length int64, mode uint32) error {
	if off < 0 || length <= 0 || off > chunk.MaxPlaintextSize(r.cfg.ChunkSize)-length {
		return syscall.EINVAL
	}
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EOPNOTSUPP
	}
	cs := int64(r.cfg.ChunkSize)
	sealed := cs + chunk.Overhead
	first := off / cs
	last := (off + length + cs - 1) / cs // exclusive
	boff := chunk.DataOffset + first*sealed
	blen := (last - first) * sealed
	if err := unix.Fallocate(int(fd.Fd()), unix.FALLOC_FL_KEEP_SIZE, boff, blen); err != nil {
		return err
	}
	if mode&unix.FALLOC_FL_KEEP_SIZE != 0 {
		return nil
	}
	size, err := f.Size()
	if err != nil {
		return err
	}
	if end := off + length; end > size {
		return f.Truncate(end)
	}
	return nil
}
