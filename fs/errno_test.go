package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/names"
)

func TestErrnoOf(t *testing.T) {
	authErr := &chunk.AuthError{Chunk: 7}
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{syscall.ENOENT, syscall.ENOENT},
		{fmt.Errorf("x: %w", syscall.EEXIST), syscall.EEXIST},
		{&os.PathError{Op: "open", Path: "/x", Err: syscall.ENOTEMPTY}, syscall.ENOTEMPTY},
		{&os.LinkError{Op: "link", Old: "a", New: "b", Err: syscall.EXDEV}, syscall.EXDEV},
		{fmt.Errorf("wrapped: %w", &os.PathError{Op: "x", Path: "y", Err: syscall.ENAMETOOLONG}), syscall.ENAMETOOLONG},
		{os.ErrNotExist, syscall.ENOENT},
		{fmt.Errorf("a: %w", os.ErrExist), syscall.EEXIST},
		{os.ErrPermission, syscall.EACCES},
		{syscall.ENOSYS, syscall.EOPNOTSUPP},
		{chunk.ErrAuthentication, syscall.EIO},
		{fmt.Errorf("read: %w", authErr), syscall.EIO},
		{fmt.Errorf("size: %w", chunk.ErrCorrupt), syscall.EIO},
		{fmt.Errorf("file 00: %w: zstd", chunk.ErrNoCodec), syscall.EIO},
		{chunk.ErrFileTooLarge, syscall.EFBIG},
		{fmt.Errorf("k: %w", keysvc.ErrDisabled), syscall.EACCES},
		{keysvc.ErrInvalidState, syscall.EACCES},
		{keysvc.ErrAccessDenied, syscall.EACCES},
		{keysvc.ErrNotFound, syscall.EACCES},
		{keysvc.ErrInvalidCiphertext, syscall.EIO},
		{keysvc.ErrIncorrectKey, syscall.EIO},
		{fmt.Errorf("kms: %w: %w", keysvc.ErrUnavailable, syscall.ETIMEDOUT), syscall.EIO},
		{errReservedName, syscall.EPERM},
		{errEmptyNoID, syscall.ENOENT},
		{fmt.Errorf("lookup: %w", names.ErrAuthentication), syscall.EIO},
		{names.ErrNameTooLong, syscall.ENAMETOOLONG},
		{names.ErrValueTooLarge, syscall.E2BIG},
		{fmt.Errorf("x: %w", errNoKey), syscall.EIO},
		{errBadHeader, syscall.EIO},
		{context.Canceled, syscall.EINTR},
		{context.DeadlineExceeded, syscall.EIO},
		{io.ErrUnexpectedEOF, syscall.EIO},
		{errors.New("something new"), syscall.EIO},
	} {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestErrnoLogging(t *testing.T) {
	var buf bytes.Buffer
	r := &root{log: slog.New(slog.NewTextHandler(&buf, nil))}
	var id chunk.FileID
	id[0] = 0xab
	for _, tc := range []struct {
		err  error
		want string // "" means no log line
	}{
		{fmt.Errorf("read: %w", &chunk.AuthError{FileID: id, Chunk: 3}), "file_id=ab000000000000000000000000000000 chunk=3"},
		{&chunk.AuthError{FileID: id, Chunk: chunk.HeaderChunk}, "chunk=header"},
		{fmt.Errorf("unwrap data key of file x: %w", keysvc.ErrDisabled), "key service failure"},
		{fmt.Errorf("%w: file x", errNoKey), "damaged backing file"},
		{syscall.ENOENT, ""},
		{nil, ""},
	} {
		buf.Reset()
		r.errno("read", tc.err)
		lines := strings.Count(buf.String(), "\n")
		if tc.want == "" {
			if lines != 0 {
				t.Errorf("%v logged %q", tc.err, buf.String())
			}
			continue
		}
		if lines != 1 || !strings.Contains(buf.String(), tc.want) {
			t.Errorf("%v logged %q, want one line with %q", tc.err, buf.String(), tc.want)
		}
	}
}
