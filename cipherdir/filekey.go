package cipherdir

import (
	"context"
	"fmt"
	"time"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/keysvc"
)

// Data keys of files: the one place where a new file gets its header, data
// key and key record, and where an existing file's key is unwrapped and
// its header verified. The mount (create, first write, data key pool) and
// Rekey make new files through NewHeader, GenerateFileKey, FileCipher and
// StartFile; the mount, Check, Rewrap and Rekey open files through
// LoadKey.

// NewHeader returns the header of a new file of the tree: the configured
// chunk size, compression comp and a fresh random file ID.
func NewHeader(cfg Config, comp chunk.Compression) (chunk.Header, error) {
	h, err := chunk.NewHeader(cfg.ChunkSize)
	if err != nil {
		return chunk.Header{}, err
	}
	return h.WithCompression(comp), nil
}

// GenerateFileKey asks keys for a new data key for the file with header h,
// wrapped under the tree's key with the file's encryption context
// (keysvc.FileContext). The caller disposes of the plaintext once
// FileCipher has used it.
func GenerateFileKey(ctx context.Context, keys keysvc.Service, cfg Config, h chunk.Header) (keysvc.DataKey, error) {
	dk, err := keys.GenerateDataKey(ctx, cfg.KeyID, keysvc.FileContext(cfg.FilesystemID, h.FileID.String()))
	if err != nil {
		return keysvc.DataKey{}, fmt.Errorf("generate data key for file %s: %w", h.FileID, err)
	}
	return dk, nil
}

// FileCipher returns the cipher of a new file with header h and data key
// dk, (de)compressing with codecs, and the key record to store with it.
// dk's plaintext is left to the caller, who zeroes it (keysvc.Zero) or
// frees it (secmem.Arena.Free) whatever FileCipher returns.
func FileCipher(dk keysvc.DataKey, h chunk.Header, codecs chunk.Codecs) (*chunk.Cipher, []byte, error) {
	c, err := chunk.NewCipher(dk.Plaintext, h, codecs)
	if err != nil {
		return nil, nil, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	return c, dk.Wrapped.MarshalRecord(), nil
}

// StartFile starts the empty backing file fd with cipher c and key record
// rec: the sealed header and the key-record slot in one pwrite, then the
// key xattr (WriteKeyRecord, with the tree's mode). It returns where the
// record went; without PlaceSlot the record did not fit the slot, which
// the caller warns about.
func StartFile(fd int, c *chunk.Cipher, rec []byte, mode string) (RecordPlace, error) {
	hb, err := c.MarshalHeader()
	if err != nil {
		return 0, err
	}
	place, err := WriteKeyRecord(fd, hb, rec, mode)
	if err != nil {
		return 0, fmt.Errorf("file %s: %w", c.Header().FileID, err)
	}
	return place, nil
}

// FileKey is the unwrapped key of one backing file.
type FileKey struct {
	Header chunk.Header
	Record keysvc.WrappedKey // the key record that opened it
	Place  RecordPlace       // where Record was found
	Cipher *chunk.Cipher
	// Fetched is when the key service vouched for the key (a DEK cache
	// answer is as old as its entry).
	Fetched time.Time
}

// LoadKey reads the header and key record of the open, non-empty backing
// file fd, checks that the record names a key trust allows, has keys
// unwrap the data key with the file's encryption context and that key as
// the expected one (so the KMS refuses a blob of another key), and
// verifies the header under it. A header that does not fit the tree fails
// with ErrBadHeader, a missing or malformed record with ErrNoKey, a record
// naming another key with ErrUntrustedKey; key service errors are wrapped
// as they come. The cipher (de)compresses with codecs; a file compressed
// with a codec codecs lacks fails with chunk.ErrNoCodec.
func LoadKey(ctx context.Context, keys keysvc.Service, trust *Trust, cfg Config, codecs chunk.Codecs, fd int) (FileKey, error) {
	var hb [chunk.HeaderSize]byte
	h, err := ReadHeader(fd, hb[:])
	if err != nil {
		return FileKey{}, err
	}
	if int(h.ChunkSize) != cfg.ChunkSize {
		return FileKey{}, fmt.Errorf("%w: file %s has chunk size %d, the filesystem %d", ErrBadHeader, h.FileID, h.ChunkSize, cfg.ChunkSize)
	}
	wk, place, err := ReadKeyRecord(fd, cfg.KeyRecordMode())
	if err != nil {
		return FileKey{}, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	if err := trust.Allow(ctx, wk.KeyID); err != nil {
		return FileKey{}, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	uw, err := keys.Decrypt(ctx, wk.Blob, wk.KeyID, keysvc.FileContext(cfg.FilesystemID, h.FileID.String()))
	if err != nil {
		return FileKey{}, fmt.Errorf("unwrap data key of file %s: %w", h.FileID, err)
	}
	fetched := uw.Fetched
	if fetched.IsZero() {
		fetched = time.Now()
	}
	c, err := chunk.NewCipher(uw.Plaintext, h, codecs)
	keysvc.Zero(uw.Plaintext)
	if err != nil {
		return FileKey{}, fmt.Errorf("file %s: %w", h.FileID, err)
	}
	if err := c.VerifyHeader(hb[:]); err != nil {
		return FileKey{}, err
	}
	return FileKey{Header: h, Record: wk, Place: place, Cipher: c, Fetched: fetched}, nil
}
