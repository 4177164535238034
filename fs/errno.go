package fs

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/names"
)

// errnoOf is the one place that decides which errno an error becomes. It
// unwraps %w chains (go-fuse's fs.ToErrno does not, and would answer ENOSYS
// for anything it does not recognise). Unknown errors become EIO, never
// ENOSYS: the kernel takes ENOSYS as "operation not implemented" and stops
// sending it for the rest of the mount.
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	// Integrity and key failures first: they may wrap a syscall.Errno
	// (a timeout wrapping ETIMEDOUT, say) that must not leak through.
	switch {
	case errors.Is(err, chunk.ErrAuthentication), errors.Is(err, chunk.ErrCorrupt), errors.Is(err, chunk.ErrNoCodec):
		return syscall.EIO
	case errors.Is(err, chunk.ErrFileTooLarge):
		return syscall.EFBIG
	case errors.Is(err, keysvc.ErrDisabled), errors.Is(err, keysvc.ErrInvalidState),
		errors.Is(err, keysvc.ErrAccessDenied), errors.Is(err, keysvc.ErrNotFound):
		return syscall.EACCES
	case errors.Is(err, keysvc.ErrInvalidCiphertext), errors.Is(err, keysvc.ErrIncorrectKey),
		errors.Is(err, keysvc.ErrUnavailable), errors.Is(err, keysvc.ErrInvalidArgument):
		return syscall.EIO
	case errors.Is(err, errReservedName):
		return syscall.EPERM
	case errors.Is(err, errEmptyNoID):
		return syscall.ENOENT // an empty directory (that lost its ID file) holds no such entry
	case errors.Is(err, names.ErrNameTooLong), errors.Is(err, names.ErrTargetTooLong):
		return syscall.ENAMETOOLONG
	case errors.Is(err, names.ErrValueTooLarge):
		return syscall.E2BIG
	case errors.Is(err, names.ErrInvalidName), errors.Is(err, names.ErrDotName),
		errors.Is(err, names.ErrEmptyName), errors.Is(err, names.ErrEmptyTarget),
		errors.Is(err, names.ErrInvalidTarget), errors.Is(err, names.ErrNotUserXattr):
		return syscall.EINVAL
	case errors.Is(err, names.ErrEncoding), errors.Is(err, names.ErrAuthentication),
		errors.Is(err, names.ErrPadding), errors.Is(err, names.ErrCorrupt),
		errors.Is(err, names.ErrHashMismatch), errors.Is(err, cipherdir.ErrNoDirID):
		return syscall.EIO
	case errors.Is(err, errNoKey), errors.Is(err, errBadHeader), errors.Is(err, cipherdir.ErrUntrustedKey):
		return syscall.EIO
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == syscall.ENOSYS {
			return syscall.EOPNOTSUPP
		}
		return errno
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, fs.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, fs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.ErrUnexpectedEOF):
		return syscall.EIO
	}
	return syscall.EIO
}

// authLogWindow is how long one authentication failure (file, chunk,
// reason) is logged once: a damaged chunk is read again and again (the
// kernel's readahead, then its page-sized retry, then the program's own
// retries), and the log should say so once, not once per read.
const authLogWindow = time.Minute

// authLogMax bounds the failures remembered; beyond it the oldest window
// is forgotten at once.
const authLogMax = 4096

// logOnce remembers recently logged authentication failures. The zero
// value is ready to use.
type logOnce struct {
	mu   sync.Mutex
	seen map[chunk.AuthError]time.Time
}

// first reports whether e was not logged within authLogWindow before now,
// and records it.
func (l *logOnce) first(e chunk.AuthError, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.seen[e]; ok && now.Sub(t) < authLogWindow {
		return false
	}
	if l.seen == nil || len(l.seen) >= authLogMax {
		l.seen = map[chunk.AuthError]time.Time{}
	}
	l.seen[e] = now
	return true
}

// isKeyServiceError reports whether err came from the key service.
func isKeyServiceError(err error) bool {
	for _, k := range []error{keysvc.ErrNotFound, keysvc.ErrDisabled, keysvc.ErrInvalidState,
		keysvc.ErrInvalidCiphertext, keysvc.ErrIncorrectKey, keysvc.ErrAccessDenied,
		keysvc.ErrUnavailable, keysvc.ErrInvalidArgument} {
		if errors.Is(err, k) {
			return true
		}
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// errno maps err with errnoOf and logs, once per failed operation, the
// failures an operator must see: authentication failures of the content
// (with file ID and chunk index), damaged headers or key records, and key
// service failures. op names the operation. Error strings never carry key
// material (keysvc and chunk promise that), so logging them is safe.
func (r *root) errno(op string, err error) syscall.Errno {
	e := errnoOf(err)
	if err != nil && errors.Is(err, chunk.ErrAuthentication) {
		r.metrics.authFailure()
	}
	if err == nil || r.log == nil {
		return e
	}
	var ae *chunk.AuthError
	var revoked *revokedError
	switch {
	case errors.As(err, &revoked):
		// revalidate logged the refusal when it began.
	case errors.As(err, &ae):
		if !r.authLogged.first(*ae, time.Now()) {
			break // the same failure was logged within authLogWindow
		}
		attrs := []slog.Attr{slog.String("op", op), slog.String("file_id", ae.FileID.String())}
		if ae.Chunk == chunk.HeaderChunk {
			attrs = append(attrs, slog.String("chunk", "header"))
		} else {
			attrs = append(attrs, slog.Uint64("chunk", ae.Chunk))
		}
		attrs = append(attrs, slog.String("reason", ae.Reason.String()))
		r.log.LogAttrs(context.Background(), slog.LevelError, "content authentication failed", attrs...)
	case errors.Is(err, chunk.ErrAuthentication):
		r.log.Error("content authentication failed", "op", op, "err", err.Error())
	case errors.Is(err, cipherdir.ErrUntrustedKey):
		r.log.Error("refused a key record that names a key this filesystem does not trust (a planted file?)", "op", op, "err", err.Error())
	case errors.Is(err, chunk.ErrCorrupt), errors.Is(err, errNoKey), errors.Is(err, errBadHeader):
		r.log.Error("damaged backing file", "op", op, "err", err.Error())
	case isKeyServiceError(err):
		r.log.Error("key service failure", "op", op, "err", err.Error())
	}
	return e
}
