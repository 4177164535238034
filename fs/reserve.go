package fs

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
)

// Space reservation before content changes.
//
// A chunk is sealed as a whole and written with one pwrite. If the backing
// filesystem runs out of space in the middle of that pwrite, the chunk is
// left half new and half old: its tag fails and the whole chunk, including
// bytes the write never meant to touch, reads as EIO. To rule that out,
// every content change first reserves the backing bytes of the chunks it
// will (re)write with fallocate(FALLOC_FL_KEEP_SIZE), which allocates all
// or fails with ENOSPC (or EDQUOT) before a byte is written. The writer
// then gets the error and every chunk stays as it was. Ranges already
// allocated cost one cheap fallocate call; KEEP_SIZE never changes the
// file size, so a failed change leaves no trace but possibly some
// preallocated blocks past the end of the file.
//
// Holes are never reserved: a write far past the end of file reserves the
// chunks it writes and the old last chunk it pads, not the gap.
//
// A backing filesystem without fallocate (EOPNOTSUPP, as some network and
// FUSE filesystems answer) cannot give this guarantee: the first such
// answer is logged once and the mount writes without reserving from then
// on.

// chunkSpan is the inclusive range of chunk indices [first, last].
type chunkSpan struct{ first, last int64 }

// writeSpans returns the chunks a write of plaintext [off, end) into a
// file of plaintext size oldSize rewrites: those the range covers and,
// when the write ends past the old end of file, the old last chunk (padded
// or re-sealed). The gap between them, if any, stays a hole.
func writeSpans(cs, oldSize, off, end int64) []chunkSpan {
	s := chunkSpan{off / cs, (end - 1) / cs}
	if end <= oldSize || oldSize == 0 {
		return []chunkSpan{s}
	}
	k := (oldSize - 1) / cs // the old last chunk
	switch {
	case k >= s.first:
		return []chunkSpan{s}
	case k == s.first-1:
		return []chunkSpan{{k, s.last}}
	}
	return []chunkSpan{{k, k}, s}
}

// truncateSpans returns the chunks a truncation from oldSize to newSize
// rewrites: growing re-seals the old last chunk at its new length;
// shrinking re-seals the new last chunk in place (no new space) and cuts.
func truncateSpans(cs, oldSize, newSize int64) []chunkSpan {
	if newSize <= oldSize || oldSize == 0 {
		return nil
	}
	k := (oldSize - 1) / cs
	return []chunkSpan{{k, k}}
}

// reserve allocates the backing bytes of spans in a file whose plaintext
// size after the change is newSize. It returns the backing filesystem's
// error (ENOSPC, EDQUOT, EFBIG, …) unwrapped enough for errno mapping.
func (r *root) reserve(fd *os.File, spans []chunkSpan, newSize int64) error {
	if len(spans) == 0 || r.noReserve.Load() {
		return nil
	}
	cs := int64(r.cfg.ChunkSize)
	sealed := cs + chunk.Overhead
	for _, s := range spans {
		start := chunk.DataOffset + s.first*sealed
		lastLen := min(cs, newSize-s.last*cs)
		if lastLen <= 0 {
			panic(fmt.Sprintf("fs: internal error: reserving chunk %d beyond size %d", s.last, newSize))
		}
		end := chunk.DataOffset + s.last*sealed + lastLen + chunk.Overhead
		err := unix.Fallocate(int(fd.Fd()), unix.FALLOC_FL_KEEP_SIZE, start, end-start)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			if r.noReserve.CompareAndSwap(false, true) {
				r.log.Warn("the backing filesystem does not support fallocate: writes are not reserved, so a full disk may leave a damaged chunk",
					"err", err.Error())
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("reserve backing bytes %d-%d: %w", start, end, err)
		}
	}
	return nil
}

// reserveWrite reserves the space of a write of n bytes at plaintext
// offset off into a file of plaintext size size. Writes chunk.File will
// refuse (negative offsets, beyond the largest file) are left to it.
func (r *root) reserveWrite(fd *os.File, size, off int64, n int) error {
	if n <= 0 || off < 0 || off > chunk.MaxPlaintextSize(r.cfg.ChunkSize)-int64(n) {
		return nil
	}
	end := off + int64(n)
	return r.reserve(fd, writeSpans(int64(r.cfg.ChunkSize), size, off, end), max(size, end))
}

// reserveTruncate reserves the space of a truncation from plaintext size
// size to newSize.
func (r *root) reserveTruncate(fd *os.File, size, newSize int64) error {
	if newSize < 0 || newSize > chunk.MaxPlaintextSize(r.cfg.ChunkSize) {
		return nil
	}
	return r.reserve(fd, truncateSpans(int64(r.cfg.ChunkSize), size, newSize), newSize)
}
