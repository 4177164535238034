package chunk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
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

const (
	// batchBytes bounds the plaintext handled by one backing ReadAt or
	// WriteAt (and so the buffer a call allocates): 4 MiB, well above the
	// 128 KiB to 1 MiB of a FUSE request, which therefore costs one backing
	// call.
	batchBytes = 4 << 20
	// parallelSealChunks is the number of chunks from which a write seals on
	// two goroutines instead of one.
	parallelSealChunks = 32
)

// File reads and writes the plaintext of one file through its backing file.
//
// ReadAt and Size may be called concurrently with each other. WriteAt and
// Truncate are not serialised: the caller must hold a per-file lock that
// excludes them from each other and from ReadAt.
//
// File trusts the backing file's header: the caller verifies it with
// [Cipher.VerifyHeader] before creating the File (or the backing file is
// empty, and the first WriteAt or Truncate writes it). Everything after the
// header is untrusted: a damaged backing file gives errors, never a panic or
// an allocation larger than a few chunks beyond the request.
type File struct {
	backing    Backing
	cipher     *Cipher
	chunkSize  int64
	sealedSize int64
	batch      int64 // chunks per backing call

	// scratch holds *[]byte of capacity sealedSize, for edge chunks.
	scratch sync.Pool
	// runs holds *[]byte of up to batch sealed chunks.
	runs sync.Pool
}

// NewFile returns a File over b whose chunks are sealed and opened by c.
func NewFile(b Backing, c *Cipher) *File {
	cs := int64(c.ChunkSize())
	return &File{
		backing:    b,
		cipher:     c,
		chunkSize:  cs,
		sealedSize: cs + Overhead,
		batch:      max(1, batchBytes/cs),
	}
}

// Size returns the plaintext size, computed from the backing file's size.
func (f *File) Size() (int64, error) {
	_, size, err := f.sizes()
	return size, err
}

// ReadAt reads len(p) plaintext bytes at offset off, with io.ReaderAt
// semantics: fewer bytes only at the end of the file, with io.EOF. Every
// chunk touched is authenticated, and all of them are read with one backing
// ReadAt (per 4 MiB); a chunk that fails gives an error wrapping an
// *AuthError. All-zero stored chunks (holes) read as zeros.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("chunk: file %s: negative read offset %d", f.id(), off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	_, size, err := f.sizes()
	if err != nil {
		return 0, err
	}
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
	var plain []byte // scratch for chunks read in part
	for i := first; i <= last; i++ {
		cStart := i * f.chunkSize
		l := int64(f.chunkLen(i, size))
		s := (i - first) * f.sealedSize
		sealed := buf[s : s+l+Overhead]
		from, to := max(pos, cStart), min(pos+int64(len(dst)), cStart+l)
		out := dst[from-pos : to-pos]
		switch {
		case isZero(sealed):
			clear(out)
		case from == cStart && to == cStart+l:
			// The whole chunk is wanted: decrypt straight into dst.
			if _, err := f.cipher.Open(out[:0:len(out)], sealed, uint64(i)); err != nil {
				return err
			}
		default:
			if plain == nil {
				sp := f.getScratch()
				defer f.scratch.Put(sp)
				plain = *sp
			}
			pt, err := f.cipher.Open(plain[:0], sealed, uint64(i))
			if err != nil {
				return err
			}
			copy(out, pt[from-cStart:])
		}
	}
	return nil
}

// WriteAt writes p at plaintext offset off, which may lie anywhere,
// including far past the end. It writes the header if the backing file is
// empty, reads, modifies and re-seals partial chunks at the edges, and
// seals every chunk it writes with a fresh nonce. When the write starts
// beyond the chunk holding the end of the file, that chunk, if short, is
// first padded with zeros to a full chunk; whole chunks between the old end
// and off are not written and stay holes. Consecutive chunks go to the
// backing file in one WriteAt (per 4 MiB).
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
	bsize, oldSize, err := f.sizes()
	if err != nil {
		return 0, err
	}
	if bsize == 0 {
		if err := f.writeHeader(); err != nil {
			return 0, err
		}
	}
	end := off + int64(len(p))
	first, last := off/f.chunkSize, (end-1)/f.chunkSize
	runFirst := first
	if oldLast := oldSize / f.chunkSize; oldSize%f.chunkSize != 0 && oldLast < first {
		if oldLast == first-1 {
			runFirst = oldLast // the padded chunk joins the run
		} else if err := f.padLastChunk(oldSize); err != nil {
			return 0, err
		}
	}
	for a := runFirst; a <= last; a += f.batch {
		b := min(last, a+f.batch-1)
		if err := f.writeRun(p, off, a, b, oldSize); err != nil {
			return int(max(0, min(end, a*f.chunkSize)-off)), err
		}
	}
	return len(p), nil
}

// writeRun seals chunks first to last after writing p at offset off into
// a file of plaintext size oldSize, and writes them with one backing WriteAt.
func (f *File) writeRun(p []byte, off, first, last, oldSize int64) error {
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
	sealRange := func(a, b int64) {
		for i := a; i <= b; i++ {
			plain := plainOf(i)
			s := (i - first) * f.sealedSize
			f.cipher.Seal(buf[s:s:s+int64(len(plain))+Overhead], plain, uint64(i))
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
	return f.writeBacking(buf, f.chunkOffset(first))
}

// padLastChunk pads the short last chunk of a file of plaintext size
// oldSize with zeros to a full chunk, unless it is a hole (the backing
// file's zero fill then makes it a full hole).
func (f *File) padLastChunk(oldSize int64) error {
	return f.resizeChunk(oldSize/f.chunkSize, oldSize, f.chunkSize)
}

// resizeChunk re-seals chunk i of a file of plaintext size size with
// plaintext length newLen, cutting it or extending it with zeros. A hole
// stays a hole and is left alone.
func (f *File) resizeChunk(i, size, newLen int64) error {
	sp := f.getScratch()
	defer f.scratch.Put(sp)
	plain, hole, err := f.readChunk((*sp)[:0], i, size)
	if err != nil || hole {
		return err
	}
	old := int64(len(plain))
	plain = plain[:newLen]
	if newLen > old {
		clear(plain[old:])
	}
	bp := f.getRun(int(newLen + Overhead))
	defer f.runs.Put(bp)
	sealed := f.cipher.Seal((*bp)[:0], plain, uint64(i))
	return f.writeBacking(sealed, f.chunkOffset(i))
}

// Truncate changes the plaintext size to size. Shrinking re-seals the new
// last chunk if it is short and cuts the backing file; growing pads the old
// last chunk if it is short and extends the backing file, so the new chunks
// are holes. Truncating to 0 keeps the header.
func (f *File) Truncate(size int64) error {
	if size < 0 {
		return fmt.Errorf("chunk: file %s: negative size %d", f.id(), size)
	}
	if size > MaxPlaintextSize(int(f.chunkSize)) {
		return fmt.Errorf("chunk: file %s: truncate to %d: %w", f.id(), size, ErrFileTooLarge)
	}
	bsize, oldSize, err := f.sizes()
	if err != nil {
		return err
	}
	if size == oldSize {
		return nil
	}
	if bsize == 0 {
		if err := f.writeHeader(); err != nil {
			return err
		}
	}
	cs := f.chunkSize
	switch {
	case size < oldSize && size%cs != 0:
		// The new last chunk is short: re-seal it at its new length.
		if err := f.resizeChunk(size/cs, oldSize, size%cs); err != nil {
			return err
		}
	case size > oldSize && oldSize%cs != 0:
		// The old last chunk is short: pad it, up to where the new size ends.
		k := oldSize / cs
		if err := f.resizeChunk(k, oldSize, min(cs, size-k*cs)); err != nil {
			return err
		}
	}
	if err := f.backing.Truncate(CiphertextSize(size, int(cs))); err != nil {
		return fmt.Errorf("chunk: file %s: truncating backing file: %w", f.id(), err)
	}
	return nil
}

// readChunk reads and authenticates chunk i of a file of plaintext size
// size and appends its plaintext to dst. A hole appends zeros and reports
// hole.
func (f *File) readChunk(dst []byte, i, size int64) (plain []byte, hole bool, err error) {
	l := f.chunkLen(i, size)
	sp := f.getScratch()
	defer f.scratch.Put(sp)
	sealed := (*sp)[:l+Overhead]
	if err := f.readFull(sealed, f.chunkOffset(i)); err != nil {
		return dst, false, err
	}
	if isZero(sealed) {
		plain, _ = sliceForAppend(dst, l)
		clear(plain[len(dst):])
		return plain, true, nil
	}
	plain, err = f.cipher.Open(dst, sealed, uint64(i))
	return plain, false, err
}

// sizes returns the backing and the plaintext size.
func (f *File) sizes() (backing, plain int64, err error) {
	fi, err := f.backing.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("chunk: file %s: %w", f.id(), err)
	}
	backing = fi.Size()
	plain, err = PlaintextSize(backing, int(f.chunkSize))
	if err != nil {
		return 0, 0, fmt.Errorf("chunk: file %s: impossible backing size %d: %w", f.id(), backing, ErrCorrupt)
	}
	return backing, plain, nil
}

func (f *File) writeHeader() error {
	h, err := f.cipher.MarshalHeader()
	if err != nil {
		return err
	}
	return f.writeBacking(h, 0)
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
func (f *File) chunkOffset(i int64) int64 { return HeaderSize + i*f.sealedSize }

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
