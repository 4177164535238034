package fs

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
)

// DefaultCompressedChunkSize is the chunk size `kmsfs init --compress`
// picks unless told otherwise: a compressed chunk saves disk space only in
// whole blocks of its slot's tail (doc/OPERATIONS.md, "Compression").
const DefaultCompressedChunkSize = 64 << 10

// newHeader returns the header of a new file of this tree: the configured
// chunk size and compression, a fresh file ID.
func (r *root) newHeader() (chunk.Header, error) {
	return cipherdir.NewHeader(r.cfg, r.cfg.Compression())
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
