package chunk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// Backing is what a File needs of the backing (ciphertext) file. *os.File
// satisfies it. WriteAt beyond the end must extend the file with zeros, as
// pwrite does; Truncate must do the same when growing.
type Backing interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
}

// Puncher is an optional interface of a Backing: PunchHole deallocates
// length bytes at offset off, which then read as zeros, without changing
// the file's size (fallocate with FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE).
// A File of a compressed file uses it to free the unused tails of
// compressed chunks. An error matching errors.ErrUnsupported turns punching
// off for the File.
type Puncher interface {
	PunchHole(off, length int64) error
}

// punchBlock is the granularity of punched tails: the block size of the
// usual backing file systems. Partial blocks are left alone (punching them
// would only write zeros over zeros).
const punchBlock = 4096

const (
	// batchBytes bounds the plaintext handled by one backing ReadAt or
	// WriteAt (and so the buffer a call allocates): 4 MiB, well above the
	// 128 KiB to 1 MiB of a FUSE request, which therefore costs one backing
	// call. It is at least 4 chunks of the largest chunk size, which the
	// write path relies on (see WriteAt).
	batchBytes = 4 << 20
	// parallelSealChunks is the number of chunks from which a write seals on
	// two goroutines instead of one.
	parallelSealChunks = 32
)

// File reads and writes the plaintext of one file through its backing file.
//
// ReadAt and Size may be called concurrently with each other. WriteAt and
// Truncate are not serialised: the caller must hold a per-file lock that
// excludes them from each other and from ReadAt. Several File values may
// share one backing file (one per open handle) under that lock: a File keeps
// no state about the backing file across calls except that FlagSparse was
// seen, which is never cleared.
//
// File trusts the immutable header fields: the caller verifies the header
// with [Cipher.VerifyHeader] before creating the File (or the backing file
// is empty, and the first WriteAt or Truncate writes it). When a decision
// needs the header flags (an empty file, a hole, a flag transition), File
// reads the header again and verifies its tag. Everything after the header
// is untrusted: a damaged backing file gives errors, never a panic or an
// allocation larger than a few chunks beyond the request.
type File struct {
	backing    Backing
	cipher     *Cipher
	chunkSize  int64
	sealedSize int64
	batch      int64 // chunks per backing call

	// sparse records that a verified header had FlagSparse. Writers never
	// clear the flag, so this cannot go stale; an unset flag is never
	// cached.
	sparse atomic.Bool

	// puncher is backing as a Puncher, if it is one; noPunch is set once
	// the backing file system said it cannot punch holes.
	puncher Puncher
	noPunch atomic.Bool

	// scratch holds *[]byte of capacity sealedSize, for edge chunks.
	scratch sync.Pool
	// runs holds *[]byte of up to batch sealed chunks.
	runs sync.Pool
}

// NewFile returns a File over b whose chunks are sealed and opened by c.
func NewFile(b Backing, c *Cipher) *File {
	cs := int64(c.ChunkSize())
	f := &File{
		backing:    b,
		cipher:     c,
		chunkSize:  cs,
		sealedSize: cs + Overhead,
		batch:      max(4, batchBytes/cs),
	}
	if c.header.Flags&FlagSparse != 0 {
		f.sparse.Store(true)
	}
	f.puncher, _ = b.(Puncher)
	return f
}

// Size returns the plaintext size, computed from the backing file's size.
// A backing file holding only a header with FlagHasData gives an
// *AuthError (ReasonTruncated, chunk 0): it was truncated to empty.
func (f *File) Size() (int64, error) {
	st, err := f.stat()
	return st.size, err
}

// ReadAt reads len(p) plaintext bytes at offset off, with io.ReaderAt
// semantics: fewer bytes only at the end of the file, with io.EOF. Every
// chunk touched is authenticated, and all of them are read with one backing
// ReadAt (per 4 MiB); a chunk that fails gives an error wrapping an
// *AuthError. The last chunk of the file must be sealed as final, and an
// all-zero stored chunk (a hole) reads as zeros only in the middle of a file
// with FlagSparse (FORMAT.md, "Reading").
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("chunk: file %s: negative read offset %d", f.id(), off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	st, err := f.stat()
	if err != nil {
		return 0, err
	}
	size := st.size
	if off >= size {
		return 0, io.EOF
	}
	end := size
	if int64(len(p)) < size-off {
		end = off + int64(len(p))
	}
	n := 0
	for pos := off; pos < end; {
		first := pos / f.chunkSize
		last := min((end-1)/f.chunkSize, first+f.batch-1)
		stop := min(end, (last+1)*f.chunkSize)
		if err := f.readRun(p[pos-off:stop-off], pos, first, last, size); err != nil {
			return n, err
		}
		n += int(stop - pos)
		pos = stop
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readRun fills dst with the plaintext at offset pos, which lies in chunks
// first to last of a file of plaintext size size, reading them with one
// backing ReadAt.
func (f *File) readRun(dst []byte, pos, first, last, size int64) error {
	start := f.chunkOffset(first)
	stop := f.chunkOffset(last) + int64(f.chunkLen(last, size)) + Overhead
	bp := f.getRun(int(stop - start))
	defer f.runs.Put(bp)
	buf := *bp
	if err := f.readFull(buf, start); err != nil {
		return err
	}
	fileLast := (size - 1) / f.chunkSize
	var plain []byte // scratch for chunks read in part
	for i := first; i <= last; i++ {
		cStart := i * f.chunkSize
		l := int64(f.chunkLen(i, size))
		s := (i - first) * f.sealedSize
		sealed := buf[s : s+l+Overhead]
		from, to := max(pos, cStart), min(pos+int64(len(dst)), cStart+l)
		out := dst[from-pos : to-pos]
		if from == cStart && to == cStart+l {
			// The whole chunk is wanted: decrypt straight into dst.
			if _, _, err := f.openStored(out[:0:len(out)], sealed, i, fileLast); err != nil {
				clear(out)
				return err
			}
			continue
		}
		if plain == nil {
			sp := f.getScratch()
			defer f.scratch.Put(sp)
			plain = *sp
		}
		pt, _, err := f.openStored(plain[:0], sealed, i, fileLast)
		if err != nil {
			return err
		}
		copy(out, pt[from-cStart:])
	}
	return nil
}

// openStored applies the reader rules of FORMAT.md to the stored bytes of
// chunk i of a file whose last chunk is last, and appends the plaintext to
// dst. It reports whether the chunk is a hole. On error dst's spare capacity
// may hold garbage; the caller clears what it exposes.
//
//   - The last chunk must open as final. One that opens only as a middle
//     chunk means the file was cut after it (ReasonTruncated); an all-zero
//     last chunk is never a hole (ReasonHole).
//   - A middle chunk opens as non-final or, as the remnant of an extending
//     write that crashed before re-sealing it, as final.
//   - An all-zero middle chunk is a hole only if the header has FlagSparse.
func (f *File) openStored(dst, sealed []byte, i, last int64) (plain []byte, hole bool, err error) {
	c := f.cipher
	if isZero(sealed) {
		if i == last {
			return dst, false, f.authErr(i, ReasonHole)
		}
		ok, err := f.holesAllowed()
		if err != nil {
			return dst, false, err
		}
		if !ok {
			return dst, false, f.authErr(i, ReasonHole)
		}
		plain, _ = sliceForAppend(dst, len(sealed)-Overhead)
		clear(plain[len(dst):])
		return plain, true, nil
	}
	if i == last {
		out, err := c.OpenChunk(dst, sealed, uint64(i), true)
		if err == nil {
			return out, false, nil
		}
		if _, err2 := c.OpenChunk(dst, sealed, uint64(i), false); err2 == nil {
			return dst, false, f.authErr(i, ReasonTruncated)
		}
		return dst, false, err
	}
	out, err := c.OpenChunk(dst, sealed, uint64(i), false)
	if err != nil {
		out, err = c.OpenChunk(dst, sealed, uint64(i), true)
	}
	return out, false, err
}

// holesAllowed reports whether the header has FlagSparse, reading it unless
// the flag was seen before.
func (f *File) holesAllowed() (bool, error) {
	if f.sparse.Load() {
		return true, nil
	}
	flags, err := f.readFlags()
	return flags&FlagSparse != 0, err
}

// WriteAt writes p at plaintext offset off, which may lie anywhere,
// including far past the end. It writes the header if the backing file is
// empty, reads, modifies and re-seals partial chunks at the edges, and
// seals every chunk it writes with a fresh nonce, the new last chunk of the
// file as final. Consecutive chunks go to the backing file in one WriteAt
// (per 4 MiB).
//
// Extending the file re-seals the old last chunk as a middle chunk. When p
// starts in or right after it, it joins p's run and costs no extra backing
// call; when p leaves a gap, FlagSparse is set first, the old last chunk is
// padded (if short) before and re-sealed after the new chunks, and the
// chunks in the gap are not written (holes). The writes are ordered so that
// a crash between any two backing calls leaves a file that reads without
// error (FORMAT.md, "Writing").
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("chunk: file %s: negative write offset %d", f.id(), off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if limit := MaxPlaintextSize(int(f.chunkSize)); off > limit || int64(len(p)) > limit-off {
		return 0, fmt.Errorf("chunk: file %s: write of %d bytes at offset %d: %w", f.id(), len(p), off, ErrFileTooLarge)
	}
	st, err := f.stat()
	if err != nil {
		return 0, err
	}
	return f.write(p, off, st)
}

// write is WriteAt after the argument checks, on a file in state st.
func (f *File) write(p []byte, off int64, st state) (int, error) {
	cs := f.chunkSize
	end := off + int64(len(p))
	oldSize := st.size
	oldLast := (oldSize+cs-1)/cs - 1 // -1 for an empty file
	first, last := off/cs, (end-1)/cs
	newLast := (max(end, oldSize) - 1) / cs
	gap := first > oldLast+1 // chunks oldLast+1 .. first-1 stay holes

	// Header: write it if missing, and set FlagSparse before the first gap.
	flags, flagsKnown := st.flags, st.backing <= DataOffset
	switch {
	case st.backing == 0:
		if gap {
			flags |= FlagSparse
		}
		if err := f.writeHeaderAndSlot(flags); err != nil {
			return 0, err
		}
	case gap && !f.sparse.Load():
		if !flagsKnown {
			var err error
			if flags, err = f.readFlags(); err != nil {
				return 0, err
			}
		}
		if flags&FlagSparse == 0 {
			if err := f.writeFlags(flags | FlagSparse); err != nil {
				return 0, err
			}
			flags |= FlagSparse
		}
	}

	// The old last chunk joins the run when p starts in it or right after
	// it. Across a gap it is handled on its own: padded (still final) before
	// the run if short, re-sealed as a middle chunk after it.
	runFirst := first
	var oldTail []byte // plaintext of a separate old last chunk, padded
	if oldLast >= 0 && oldLast < first {
		if oldLast == first-1 {
			runFirst = oldLast
		} else {
			sp := f.getScratch()
			defer f.scratch.Put(sp)
			plain, _, err := f.readChunk((*sp)[:0], oldLast, oldSize)
			if err != nil {
				return 0, err
			}
			if int64(len(plain)) < cs {
				n := len(plain)
				plain = plain[:cs]
				clear(plain[n:])
				if err := f.sealAndWrite(plain, oldLast, true); err != nil {
					return 0, err
				}
			}
			oldTail = plain
		}
	}

	// Chunks go out batch by batch. A batch that ends at or past the old
	// last chunk, before the new last one, makes its own last chunk the end
	// of the backing file until the next batch lands, so that chunk is
	// sealed as final and re-sealed as a middle chunk afterwards.
	var reseal []int64
	for a := runFirst; a <= last; a += f.batch {
		b := min(last, a+f.batch-1)
		tempFinal := b != newLast && b >= oldLast
		if err := f.writeRun(p, off, a, b, oldSize, newLast, tempFinal); err != nil {
			return int(max(0, min(end, a*cs)-off)), err
		}
		if tempFinal {
			reseal = append(reseal, b)
		}
	}
	for _, i := range reseal {
		// A batch end lies strictly inside p (batches hold at least 4
		// chunks), so p covers its whole plaintext.
		if err := f.sealAndWrite(p[i*cs-off:(i+1)*cs-off], i, false); err != nil {
			return len(p), err
		}
	}
	if oldTail != nil {
		if err := f.sealAndWrite(oldTail, oldLast, false); err != nil {
			return len(p), err
		}
	}
	// First data since creation or the last truncate to 0: record it, after
	// the data, so that a crash in between leaves a readable file.
	if oldSize == 0 && flags&FlagHasData == 0 {
		if err := f.writeFlags(flags | FlagHasData); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// writeRun seals chunks first to last after writing p at offset off into
// a file of plaintext size oldSize, and writes them with one backing WriteAt.
// Chunk newLast, and chunk last when tempFinal, are sealed as final.
func (f *File) writeRun(p []byte, off, first, last, oldSize, newLast int64, tempFinal bool) error {
	end := off + int64(len(p))
	newEnd := max(end, oldSize)
	// covered reports whether p covers the whole new plaintext of chunk i.
	covered := func(i int64) bool {
		cStart := i * f.chunkSize
		return off <= cStart && cStart+min(f.chunkSize, newEnd-cStart) <= end
	}
	// Build the chunks p does not cover: at most the first and the last
	// chunk of p, and the padded old last chunk in front of them.
	var edges [3]struct {
		index int64
		plain []byte
	}
	k := 0
	for _, i := range [...]int64{first, first + 1, last} {
		if i > last || covered(i) || (k > 0 && edges[k-1].index == i) {
			continue
		}
		cStart := i * f.chunkSize
		l := min(f.chunkSize, newEnd-cStart)
		sp := f.getScratch()
		defer f.scratch.Put(sp)
		buf := (*sp)[:0]
		if cStart < oldSize {
			var err error
			if buf, _, err = f.readChunk(buf, i, oldSize); err != nil {
				return err
			}
		}
		old := len(buf)
		buf = buf[:l]
		clear(buf[old:])
		if from, to := max(off, cStart), min(end, cStart+l); from < to {
			copy(buf[from-cStart:], p[from-off:to-off])
		}
		edges[k].index, edges[k].plain = i, buf
		k++
	}
	// plainOf returns the new plaintext of chunk i: p itself where p covers
	// the chunk, else its edge buffer.
	plainOf := func(i int64) []byte {
		if covered(i) {
			cStart := i * f.chunkSize
			return p[cStart-off : cStart-off+min(f.chunkSize, newEnd-cStart)]
		}
		for _, e := range edges[:k] {
			if e.index == i {
				return e.plain
			}
		}
		panic(fmt.Sprintf("chunk: internal error: no plaintext for chunk %d", i))
	}

	n := last - first + 1
	lastLen := min(f.chunkSize, newEnd-last*f.chunkSize)
	bp := f.getRun(int((n-1)*f.sealedSize + lastLen + Overhead))
	defer f.runs.Put(bp)
	buf := *bp
	var used []int // compressed files: data bytes at the start of each slot
	if f.cipher.comp != nil {
		used = make([]int, n)
	}
	sealRange := func(a, b int64) {
		for i := a; i <= b; i++ {
			plain := plainOf(i)
			s := (i - first) * f.sealedSize
			final := i == newLast || (tempFinal && i == last)
			if used != nil {
				_, used[i-first] = f.cipher.SealSlot(buf[s:s:s+int64(len(plain))+Overhead], plain, uint64(i), final)
				continue
			}
			f.cipher.SealChunk(buf[s:s:s+int64(len(plain))+Overhead], plain, uint64(i), final)
		}
	}
	if n >= parallelSealChunks {
		mid := first + n/2
		var wg sync.WaitGroup
		wg.Go(func() { sealRange(mid, last) })
		sealRange(first, mid-1)
		wg.Wait()
	} else {
		sealRange(first, last)
	}
	if err := f.writeBacking(buf, f.chunkOffset(first)); err != nil {
		return err
	}
	for k, u := range used {
		i := first + int64(k)
		slot := len(plainOf(i)) + Overhead
		if err := f.punchTail(f.chunkOffset(i), u, slot, i == newLast); err != nil {
			return err
		}
	}
	return nil
}

// punchTail gives the zero tail of a compressed chunk's slot (the slot at
// backing offset off is slot bytes, of which the first used hold data) back
// to the backing file system, when the backing file is a [Puncher] and the
// tail covers at least one whole block. The bytes are zeros already, so
// this saves space and changes no content; a backing file system that
// cannot punch holes just keeps the zeros. atEOF says the slot ends the
// backing file: the punch then runs to the end of the block holding the
// end of file, which frees that partial block too (FALLOC_FL_KEEP_SIZE
// keeps the size) — most small files end in one.
func (f *File) punchTail(off int64, used, slot int, atEOF bool) error {
	if f.puncher == nil || used >= slot || f.noPunch.Load() {
		return nil
	}
	from := (off + int64(used) + punchBlock - 1) / punchBlock * punchBlock
	to := (off + int64(slot)) / punchBlock * punchBlock
	if atEOF {
		to = (off + int64(slot) + punchBlock - 1) / punchBlock * punchBlock
	}
	if to <= from {
		return nil
	}
	if err := f.puncher.PunchHole(from, to-from); err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			f.noPunch.Store(true)
			return nil
		}
		return fmt.Errorf("chunk: file %s: punching a hole of %d bytes at backing offset %d: %w", f.id(), to-from, from, err)
	}
	return nil
}

// sealAndWrite seals plain as chunk i, final or not, and writes it in place.
func (f *File) sealAndWrite(plain []byte, i int64, final bool) error {
	bp := f.getRun(len(plain) + Overhead)
	defer f.runs.Put(bp)
	if f.cipher.comp != nil {
		sealed, used := f.cipher.SealSlot((*bp)[:0], plain, uint64(i), final)
		if err := f.writeBacking(sealed, f.chunkOffset(i)); err != nil {
			return err
		}
		// Not at the end of file even when final: a shrinking truncate
		// re-seals its new last chunk before it cuts the backing file.
		return f.punchTail(f.chunkOffset(i), used, len(sealed), false)
	}
	sealed := f.cipher.SealChunk((*bp)[:0], plain, uint64(i), final)
	return f.writeBacking(sealed, f.chunkOffset(i))
}

// Truncate changes the plaintext size to size.
//
// Growing writes the zeros of the new last chunk like WriteAt (so the new
// last chunk is sealed as final, and chunks between the old and the new
// last one are holes, which sets FlagSparse). Shrinking re-seals the new
// last chunk, cut to its new length, as final and then cuts the backing
// file. Truncating to 0 clears FlagHasData first and keeps the header; it
// also succeeds on a file found truncated to empty, which it then is.
func (f *File) Truncate(size int64) error {
	if size < 0 {
		return fmt.Errorf("chunk: file %s: negative size %d", f.id(), size)
	}
	if size > MaxPlaintextSize(int(f.chunkSize)) {
		return fmt.Errorf("chunk: file %s: truncate to %d: %w", f.id(), size, ErrFileTooLarge)
	}
	if size == 0 {
		return f.truncateToZero()
	}
	st, err := f.stat()
	if err != nil {
		return err
	}
	cs := f.chunkSize
	switch {
	case size == st.size:
		return nil
	case size > st.size:
		// Only the new last chunk is written: from the old end if it lies in
		// the same chunk, else from the chunk's start.
		off := max(st.size, (size-1)/cs*cs)
		zp := f.getScratch()
		defer f.scratch.Put(zp)
		zeros := (*zp)[:size-off]
		clear(zeros)
		_, err := f.write(zeros, off, st)
		return err
	}
	// Shrink: re-seal the new last chunk j as final, then cut. When j keeps
	// its length (a cut at a chunk boundary), a crash in between leaves the
	// old file with j as a crash remnant; when it gets shorter, the cut
	// cannot be atomic (FORMAT.md, "Writing").
	j := (size - 1) / cs
	sp := f.getScratch()
	defer f.scratch.Put(sp)
	plain, _, err := f.readChunk((*sp)[:0], j, st.size)
	if err != nil {
		return err
	}
	if err := f.sealAndWrite(plain[:size-j*cs], j, true); err != nil {
		return err
	}
	if err := f.backing.Truncate(CiphertextSize(size, int(cs))); err != nil {
		return fmt.Errorf("chunk: file %s: truncating backing file: %w", f.id(), err)
	}
	return nil
}

// truncateToZero empties the file, keeping the header and the key-record
// slot: FlagHasData is cleared before the chunks go, so a crash in between
// leaves the old content, still readable.
func (f *File) truncateToZero() error {
	backing, err := f.backingSize()
	if err != nil || backing == 0 {
		return err // empty stays empty (no header yet)
	}
	if _, err := PlaintextSize(backing, int(f.chunkSize)); err != nil {
		return fmt.Errorf("chunk: file %s: impossible backing size %d: %w", f.id(), backing, ErrCorrupt)
	}
	flags, err := f.readFlags()
	if err != nil {
		return err
	}
	if flags&FlagHasData != 0 {
		if err := f.writeFlags(flags &^ FlagHasData); err != nil {
			return err
		}
	}
	if backing == DataOffset {
		return nil
	}
	if err := f.backing.Truncate(DataOffset); err != nil {
		return fmt.Errorf("chunk: file %s: truncating backing file: %w", f.id(), err)
	}
	return nil
}

// readChunk reads chunk i of a file of plaintext size size, applies the
// reader rules (see openStored) and appends its plaintext to dst. A hole
// appends zeros and reports hole.
func (f *File) readChunk(dst []byte, i, size int64) (plain []byte, hole bool, err error) {
	l := f.chunkLen(i, size)
	sp := f.getScratch()
	defer f.scratch.Put(sp)
	sealed := (*sp)[:l+Overhead]
	if err := f.readFull(sealed, f.chunkOffset(i)); err != nil {
		return dst, false, err
	}
	return f.openStored(dst, sealed, i, (size-1)/f.chunkSize)
}

// state is what a File knows of its backing file at the start of a call.
type state struct {
	backing int64 // backing size
	size    int64 // plaintext size
	// flags are the header flags, read (and verified) only when the backing
	// file holds no chunk; 0 otherwise.
	flags uint8
}

// stat returns the backing and plaintext sizes. A backing file holding only
// a header and slot has its header read: with FlagHasData it was truncated
// to empty.
func (f *File) stat() (state, error) {
	backing, err := f.backingSize()
	if err != nil {
		return state{}, err
	}
	plain, err := PlaintextSize(backing, int(f.chunkSize))
	if err != nil {
		return state{}, fmt.Errorf("chunk: file %s: impossible backing size %d: %w", f.id(), backing, ErrCorrupt)
	}
	st := state{backing: backing, size: plain}
	if backing == DataOffset {
		if st.flags, err = f.readFlags(); err != nil {
			return state{}, err
		}
		if st.flags&FlagHasData != 0 {
			return state{}, f.authErr(0, ReasonTruncated)
		}
	}
	return st, nil
}

func (f *File) backingSize() (int64, error) {
	fi, err := f.backing.Stat()
	if err != nil {
		return 0, fmt.Errorf("chunk: file %s: %w", f.id(), err)
	}
	return fi.Size(), nil
}

// readFlags reads and verifies the header and returns its flags.
func (f *File) readFlags() (uint8, error) {
	var hb [HeaderSize]byte
	if err := f.readFull(hb[:], 0); err != nil {
		return 0, err
	}
	h, err := f.cipher.OpenHeader(hb[:])
	if err != nil {
		return 0, fmt.Errorf("chunk: file %s: reading header: %w", f.id(), err)
	}
	if h.Flags&FlagSparse != 0 {
		f.sparse.Store(true)
	}
	return h.Flags, nil
}

// writeHeaderAndSlot starts an empty (0-byte) backing file: the header with
// the given flags and an empty key-record slot, in one write, so that the
// file is DataOffset bytes. Callers that have a key record write it
// themselves before handing the file over (see MarshalSlot).
func (f *File) writeHeaderAndSlot(flags uint8) error {
	hb, err := f.cipher.MarshalHeaderFlags(flags)
	if err != nil {
		return err
	}
	b := make([]byte, DataOffset)
	copy(b, hb)
	if err := f.writeBacking(b, 0); err != nil {
		return err
	}
	if flags&FlagSparse != 0 {
		f.sparse.Store(true)
	}
	return nil
}

// writeFlags writes the header with the given flags. It never touches the
// key-record slot after it.
func (f *File) writeFlags(flags uint8) error {
	hb, err := f.cipher.MarshalHeaderFlags(flags)
	if err != nil {
		return err
	}
	if err := f.writeBacking(hb, 0); err != nil {
		return err
	}
	if flags&FlagSparse != 0 {
		f.sparse.Store(true)
	}
	return nil
}

func (f *File) authErr(i int64, r AuthReason) *AuthError {
	return &AuthError{FileID: f.id(), Chunk: uint64(i), Reason: r}
}

// readFull reads len(buf) bytes at backing offset off; a short read means
// the backing file changed under us.
func (f *File) readFull(buf []byte, off int64) error {
	n, err := f.backing.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("chunk: file %s: reading %d bytes at backing offset %d: %w", f.id(), len(buf), off, err)
}

func (f *File) writeBacking(buf []byte, off int64) error {
	if _, err := f.backing.WriteAt(buf, off); err != nil {
		return fmt.Errorf("chunk: file %s: writing %d bytes at backing offset %d: %w", f.id(), len(buf), off, err)
	}
	return nil
}

// chunkOffset returns the backing offset of chunk i.
func (f *File) chunkOffset(i int64) int64 { return DataOffset + i*f.sealedSize }

// chunkLen returns the plaintext length of chunk i of a file of plaintext
// size size; the chunk must exist.
func (f *File) chunkLen(i, size int64) int {
	l := min(f.chunkSize, size-i*f.chunkSize)
	if l <= 0 {
		panic(fmt.Sprintf("chunk: internal error: chunk %d beyond size %d", i, size))
	}
	return int(l)
}

// getScratch returns a pooled buffer of sealedSize bytes.
func (f *File) getScratch() *[]byte {
	if bp, ok := f.scratch.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, f.sealedSize)
	return &b
}

// getRun returns a pooled buffer of n bytes, n at most batch sealed chunks.
func (f *File) getRun(n int) *[]byte {
	if bp, ok := f.runs.Get().(*[]byte); ok && cap(*bp) >= n {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n)
	return &b
}

func (f *File) id() FileID { return f.cipher.header.FileID }
