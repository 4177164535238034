package fs

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
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
// then gets the error and every chunk stays as it was. KEEP_SIZE never
// changes the file size, so a failed change leaves no trace but possibly
// some preallocated blocks past the end of the file.
//
// Rewriting chunks in place needs no new space when their blocks are
// allocated, and a fallocate on an ext4 range that is allocated still costs
// a journal handle under the inode lock (measured: about 1 µs alone, more
// under load; 4 KiB random overwrites lost up to 20% IOPS). So each open
// file remembers how much of its backing file is known to be allocated
// from offset 0 on (allocation.end): the first change asks the backing
// filesystem once (lseek SEEK_HOLE, which counts unwritten extents as
// holes), every successful reservation that starts inside the known prefix
// extends it, and a truncation forgets it. Changes inside the prefix skip
// fallocate; extending writes and writes into holes reserve. Another mount
// or program punching holes into a file this mount has open is not seen;
// then a write into such a hole on a full disk may tear its chunk. In
// shared mode a write that finds the file at another size than this
// mount's last write left it forgets the prefix (another host truncated
// or extended it); only a truncate and regrow to the very same size
// between two writes of this mount goes unseen.
//
// Files with compression get no such prefix: chunk.File punches the zero
// tail of every compressed chunk right after writing it (its Puncher), so
// what a reservation allocated does not stay allocated, and rewriting the
// chunk writes its whole slot (record and zeros) into those holes again.
// Every change of a compressed file therefore reserves all its spans (the
// fallocate re-allocates the punched tails; chunk.File punches them once
// more after the write). On a full disk that makes every write to a
// compressed file fail with ENOSPC, even one whose records would have fit
// the blocks still allocated: the pwrite of the zeros needs the blocks
// anyway, and failing before it is what keeps the chunk whole.
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
// shrinking re-seals the new last chunk in place and cuts, which needs new
// space only where that chunk has holes (a punched compressed tail, a
// sparse file's hole) — reserve skips it when the chunk is known to be
// allocated. Emptying the file and growing an empty one rewrite nothing.
func truncateSpans(cs, oldSize, newSize int64) []chunkSpan {
	if newSize == oldSize || oldSize == 0 || newSize == 0 {
		return nil
	}
	k := (min(oldSize, newSize) - 1) / cs
	return []chunkSpan{{k, k}}
}

// allocation is what a mount knows of an open backing file's allocated
// blocks. The zero value knows nothing.
type allocation struct {
	known bool
	end   int64 // backing bytes [0, end) are allocated
	// size is the plaintext size this mount's last write left (shared
	// mode: a different size under the locks means another host changed
	// the file, and the prefix is forgotten).
	size int64
}

// reserve allocates the backing bytes of spans in a file whose plaintext
// size after the change is newSize, skipping what c's backing file is
// known to have allocated already. The caller holds c.mu's write side. It
// returns the backing filesystem's error (ENOSPC, EDQUOT, EFBIG, …)
// wrapped for errno mapping.
func (r *root) reserve(c *content, fd *os.File, spans []chunkSpan, newSize int64) error {
	if len(spans) == 0 || r.noReserve.Load() {
		return nil
	}
	a := &c.alloc
	// Compressed files punch what they reserve: nothing is known to stay
	// allocated (see above).
	punched := c.cipher != nil && c.cipher.Header().Compression() != chunk.CompressionNone
	if punched {
		*a = allocation{known: true}
	}
	if !a.known {
		// Data up to the first hole is allocated; an empty file or an
		// error knows nothing (every change then reserves).
		hole, err := unix.Seek(int(fd.Fd()), 0, unix.SEEK_HOLE)
		a.known, a.end = true, max(0, hole)
		if err != nil {
			a.end = 0
		}
	}
	cs := r.cfg.ChunkSize
	for _, s := range spans {
		if s.last*int64(cs) >= newSize {
			panic(fmt.Sprintf("fs: internal error: reserving chunk %d beyond size %d", s.last, newSize))
		}
		start, end := cipherdir.ChunkSpanBytes(cs, s.first, s.last, newSize)
		if end <= a.end {
			continue
		}
		err := cipherdir.Reserve(int(fd.Fd()), start, end)
		if cipherdir.ReserveUnsupported(err) {
			if r.noReserve.CompareAndSwap(false, true) {
				r.log.Warn("the backing filesystem does not support fallocate: writes are not reserved, so a full disk may leave a damaged chunk",
					"err", err.Error())
			}
			return nil
		}
		if err != nil {
			return err
		}
		if start <= a.end && !punched {
			a.end = end
		}
	}
	return nil
}

// reserveWrite reserves the space of a write of n bytes at plaintext
// offset off into a file of plaintext size size. Writes chunk.File will
// refuse (negative offsets, beyond the largest file) are left to it.
func (r *root) reserveWrite(c *content, fd *os.File, size, off int64, n int) error {
	if n <= 0 || off < 0 || off > chunk.MaxPlaintextSize(r.cfg.ChunkSize)-int64(n) {
		return nil
	}
	end := off + int64(n)
	return r.reserve(c, fd, writeSpans(int64(r.cfg.ChunkSize), size, off, end), max(size, end))
}

// reserveTruncate reserves the space of a truncation from plaintext size
// size to newSize.
// A truncation frees or adds holes, so the known allocation is forgotten.
func (r *root) reserveTruncate(c *content, fd *os.File, size, newSize int64) error {
	if newSize < 0 || newSize > chunk.MaxPlaintextSize(r.cfg.ChunkSize) {
		return nil
	}
	err := r.reserve(c, fd, truncateSpans(int64(r.cfg.ChunkSize), size, newSize), newSize)
	c.alloc = allocation{}
	return err
}
