package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
)

// Re-validation of open files' data keys.
//
// An open file keeps its chunk.Cipher (the unwrapped data key) for as long
// as a handle holds it, so a key disabled in the KMS would otherwise keep
// working for open files until they are closed. Every content operation
// (read, every content change, and the open of a file another handle
// already holds) first calls revalidate, which at most once per recheck
// interval asks the key service (Options.KeyCheck: the KMS itself, not the
// DEK cache) to unwrap the key record the backing file carries now: a
// disabled key, one pending deletion, or a caller no longer allowed to
// decrypt, stops the file's reads and writes within one interval. Outages (keysvc.ErrUnavailable, timeouts) do not revoke
// anything: the cipher keeps serving and the check is retried one interval
// later.

// DefaultKeyRecheck is how long an open file's data key is used before the
// key service is asked again, when Options.KeyRecheck is zero. It matches
// keysvc.DefaultCacheMaxAge.
const DefaultKeyRecheck = keysvc.DefaultCacheMaxAge

// revokedRetry is how soon a revoked file's key is asked about again: an
// enabled-again key works within this long, and a program retrying a
// failing read costs at most one key service call per revokedRetry.
const revokedRetry = time.Second

// keyCheck is the re-validation state of one open file's data key. Its
// fields are guarded by mu, which is taken after content.mu (either side).
// The zero value means "never confirmed": the next operation asks.
type keyCheck struct {
	mu      sync.Mutex
	blob    []byte    // the wrapped key last confirmed; nil before the first check
	next    time.Time // when to ask the key service again
	revoked error     // the refusal in force, nil while the key is usable
}

// confirmedAt records that the key service vouched for the key at t (when
// it unwrapped it, possibly through the DEK cache, or generated it): the
// next check is due one interval after t, not after now, so a key served
// from an old cache entry is not trusted for longer than the interval.
func (k *keyCheck) confirmedAt(t time.Time, interval time.Duration) {
	k.mu.Lock()
	k.next = t.Add(interval)
	k.mu.Unlock()
}

// revokedError marks a content operation refused because the file's key is
// revoked; errno does not log it again (revalidate logged the refusal once).
type revokedError struct{ err error }

func (e *revokedError) Error() string { return e.err.Error() }
func (e *revokedError) Unwrap() error { return e.err }

// isRevocation reports whether err means the key may no longer be used (as
// opposed to the key service being unreachable).
func isRevocation(err error) bool { return cipherdir.IsRevocation(err) }

// revalidate is the one place where an open file's data key is checked
// again with the key service (see the top of this file). fd is an open
// descriptor of the backing file. The caller holds c.mu (either side). It
// returns a *revokedError while the key is refused, else nil; outages and
// other failures keep the cipher in service.
func (r *root) revalidate(ctx context.Context, c *content, fd interface{ Fd() uintptr }) error {
	if c.cipher == nil {
		return nil // empty file: no key yet
	}
	k := &c.check
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	if now.Before(k.next) {
		if k.revoked != nil {
			return &revokedError{k.revoked}
		}
		return nil
	}
	keyID, err := r.confirmKey(ctx, c, fd)
	id := c.cipher.Header().FileID.String()
	switch {
	case err == nil:
		if k.revoked != nil {
			r.log.Info("data key usable again", "key", keyID, "file_id", id)
		}
		k.revoked = nil
		k.next = now.Add(r.keyRecheck)
		return nil
	case isRevocation(err):
		if k.revoked == nil {
			r.log.Error("data key revoked: reads and writes of the open file fail with EACCES",
				"key", keyID, "state", r.keyState(ctx, keyID, err), "file_id", id, "err", err.Error())
		}
		k.revoked = err
		k.next = now.Add(revokedRetry)
		return &revokedError{err}
	default:
		if k.revoked != nil {
			k.next = now.Add(revokedRetry)
			return &revokedError{k.revoked}
		}
		r.log.Warn("cannot re-validate the data key of an open file; still serving it",
			"key", keyID, "file_id", id, "err", err.Error())
		k.next = now.Add(r.keyRecheck)
		return nil
	}
}

// confirmKey unwraps the key record the backing file carries now (a rewrap
// may have replaced it since the open) and, when that record differs from
// the last one confirmed, checks that it holds the same data key: the
// header must verify under it. It returns the record's key ID.
func (r *root) confirmKey(ctx context.Context, c *content, fd interface{ Fd() uintptr }) (string, error) {
	wk, _, err := cipherdir.ReadKeyRecord(int(fd.Fd()), r.cfg.KeyRecordMode())
	if err != nil {
		return "", err
	}
	h := c.cipher.Header()
	kctx, cancel := r.kmsContext(ctx)
	defer cancel()
	if err := r.trust.Allow(kctx, wk.KeyID); err != nil {
		return wk.KeyID, fmt.Errorf("%w: file %s: %w", errNoKey, h.FileID, err)
	}
	uw, err := r.keyCheck.Decrypt(kctx, wk.Blob, wk.KeyID, r.encryptionContext(h.FileID))
	if err != nil {
		return wk.KeyID, fmt.Errorf("re-validate data key of file %s: %w", h.FileID, err)
	}
	defer keysvc.Zero(uw.Plaintext)
	if bytes.Equal(wk.Blob, c.check.blob) {
		return wk.KeyID, nil
	}
	var hb [chunk.HeaderSize]byte
	if _, err := unix.Pread(int(fd.Fd()), hb[:], 0); err != nil {
		return wk.KeyID, fmt.Errorf("file %s: read header: %w", h.FileID, err)
	}
	nc, err := chunk.NewCipher(uw.Plaintext, h, r.codecs)
	if err != nil {
		return wk.KeyID, err
	}
	if err := nc.VerifyHeader(hb[:]); err != nil {
		return wk.KeyID, fmt.Errorf("%w: file %s: the key record no longer holds its data key: %w", errNoKey, h.FileID, err)
	}
	c.check.blob = wk.Blob
	return wk.KeyID, nil
}

// keyState names the state of a refused key for the log: the key service's
// own answer when DescribeKey works, else the kind of refusal.
func (r *root) keyState(ctx context.Context, keyID string, refusal error) string {
	if keyID != "" {
		kctx, cancel := r.kmsContext(ctx)
		defer cancel()
		if info, err := r.keyCheck.DescribeKey(kctx, keyID); err == nil && info.State != "" {
			return info.State
		}
	}
	switch {
	case errors.Is(refusal, keysvc.ErrDisabled):
		return "Disabled"
	case errors.Is(refusal, keysvc.ErrInvalidState):
		return "invalid state (pending deletion?)"
	case errors.Is(refusal, keysvc.ErrNotFound):
		return "not found"
	}
	return "access denied"
}
