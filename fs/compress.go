package fs

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
)

// DefaultCompressedChunkSize is the chunk size `kmsfs init --compress`
// picks unless told otherwise: a compressed chunk saves disk space only in
// whole blocks of its slot's tail (see the README, "Compression").
const DefaultCompressedChunkSize = 64 << 10

// Compression returns the configured compression of new files; an empty
// or missing field is none.
func (c Config) Compression() chunk.Compression {
	comp, err := chunk.ParseCompression(c.Compress)
	if err != nil || c.Compress == "" {
		return chunk.CompressionNone
	}
	return comp
}

// validCompress checks Config.Compress.
func validCompress(s string) error {
	if s == "" {
		return nil
	}
	if _, err := chunk.ParseCompression(s); err != nil {
		return fmt.Errorf("config: compress must be none, s2 or zstd, got %q", s)
	}
	return nil
}

// newHeader returns the header of a new file of this tree: the configured
// chunk size and compression, a fresh file ID.
func (r *root) newHeader() (chunk.Header, error) {
	h, err := chunk.NewHeader(r.cfg.ChunkSize)
	if err != nil {
		return chunk.Header{}, err
	}
	return h.WithCompression(r.cfg.Compression()), nil
}

// punchingFile is a backing *os.File that can punch holes, so that the
// unused tails of compressed chunks take no disk space (chunk.Puncher).
type punchingFile struct{ *os.File }

// PunchHole deallocates length bytes at off, keeping the file size. File
// systems without hole punching answer EOPNOTSUPP, which matches
// errors.ErrUnsupported and makes chunk.File stop trying.
func (p punchingFile) PunchHole(off, length int64) error {
	return unix.Fallocate(int(p.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// PunchBacking returns f as a chunk.Backing that punches the unused tails
// of compressed chunks.
func PunchBacking(f *os.File) chunk.Backing { return punchingFile{f} }
