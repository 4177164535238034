package chunk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// This file holds one test per row of FORMAT.md's "What is detected" table
// that the content format can see (the key record is fs's), and the crash
// ordering tests of FORMAT.md's "Writing" section.

// authCheck fails unless err wraps an *AuthError for chunk with reason.
func authCheck(t *testing.T, what string, err error, chunk uint64, reason AuthReason) {
	t.Helper()
	var ae *AuthError
	if !errors.As(err, &ae) || !errors.Is(err, ErrAuthentication) {
		t.Fatalf("%s: err = %v, want *AuthError", what, err)
	}
	if ae.Chunk != chunk || ae.Reason != reason {
		t.Fatalf("%s: AuthError{chunk %d, %s}, want {chunk %d, %s}", what, ae.Chunk, ae.Reason, chunk, reason)
	}
	if ae.FileID != newTestCipher(t, MinChunkSize).Header().FileID {
		t.Fatalf("%s: AuthError names file %s", what, ae.FileID)
	}
}

// reopen returns a fresh File (no cached state) over a copy of b, as a
// later mount would see it.
func reopen(t *testing.T, b []byte) *File {
	t.Helper()
	return NewFile(&memBacking{data: append([]byte{}, b...)}, newTestCipher(t, MinChunkSize))
}

// readAll returns the whole plaintext of f, or the first error.
func readAll(f *File) ([]byte, error) {
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	p := make([]byte, size)
	n, err := f.ReadAt(p, 0)
	if err == io.EOF && int64(n) == size {
		err = nil
	}
	return p[:n], err
}

// sampleFile returns the backing bytes and plaintext of a 4-chunk file
// (the last short), written as fs would: header first, then data.
func sampleFile(t *testing.T, sparse bool) (backing, plain []byte) {
	const cs = MinChunkSize
	tf := newTestFile(t, cs)
	rng := rand.New(rand.NewPCG(11, 12))
	if sparse {
		// Chunk 1 is a hole: chunk 0, then chunks 2 and 3.
		tf.write(fill(rng, cs), 0)
		tf.write(fill(rng, 2*cs-10), 2*cs)
	} else {
		tf.write(fill(rng, 4*cs-10), 0)
	}
	tf.check()
	return tf.mem.bytes(), tf.ref
}

// TestDetected covers the rows of FORMAT.md's table that format v1
// detects, each with the error kind and the chunk it names.
func TestDetected(t *testing.T) {
	const cs = MinChunkSize
	const s = cs + Overhead
	orig, _ := sampleFile(t, false)
	sparse, _ := sampleFile(t, true)
	at := func(i int) int { return DataOffset + i*s }
	edit := func(b []byte, fn func(b []byte) []byte) []byte { return fn(append([]byte{}, b...)) }

	t.Run("bit flip", func(t *testing.T) {
		for _, pos := range []int{at(0), at(1) + NonceSize + 3, at(2) + s - 1, len(orig) - 1} {
			f := reopen(t, edit(orig, func(b []byte) []byte { b[pos] ^= 1; return b }))
			i := uint64((pos - DataOffset) / s)
			_, err := readAll(f)
			authCheck(t, fmt.Sprint("flip at ", pos), err, i, ReasonTag)
			// The rest of the file stays readable.
			for j := range 4 {
				if uint64(j) != i {
					if err := readErr(f, int64(j*cs), 1); err != nil {
						t.Fatalf("flip in chunk %d: chunk %d: %v", i, j, err)
					}
				}
			}
		}
	})
	t.Run("swap", func(t *testing.T) {
		b := edit(orig, func(b []byte) []byte {
			c1 := append([]byte{}, b[at(1):at(2)]...)
			copy(b[at(1):], b[at(2):at(3)])
			copy(b[at(2):], c1)
			return b
		})
		f := reopen(t, b)
		authCheck(t, "swapped chunk 1", readErr(f, cs, 1), 1, ReasonTag)
		authCheck(t, "swapped chunk 2", readErr(f, 2*cs, 1), 2, ReasonTag)
	})
	t.Run("last chunk moved into the middle", func(t *testing.T) {
		// A final chunk at another index fails: the index is bound too.
		b := edit(orig, func(b []byte) []byte {
			copy(b[at(1):at(2)], b[at(3):]) // chunk 3 is short: only a prefix
			return b
		})
		authCheck(t, "moved", readErr(reopen(t, b), cs, 1), 1, ReasonTag)
	})
	t.Run("copy from another file", func(t *testing.T) {
		h := newTestCipher(t, cs).Header()
		h.FileID[0] ^= 1
		other, _ := NewCipher(seqKey(), h, testCodecs) // same key: only the file ID differs
		b := edit(orig, func(b []byte) []byte {
			copy(b[at(1):], other.SealChunk(nil, make([]byte, cs), 1, false))
			copy(b[at(3):], other.SealChunk(nil, make([]byte, cs-10), 3, true))
			return b
		})
		f := reopen(t, b)
		authCheck(t, "middle chunk from another file", readErr(f, cs, 1), 1, ReasonTag)
		authCheck(t, "last chunk from another file", readErr(f, 3*cs, 1), 3, ReasonTag)
	})
	t.Run("header edit", func(t *testing.T) {
		c := newTestCipher(t, cs)
		for pos := range HeaderSize {
			b := edit(orig, func(b []byte) []byte { b[pos] ^= 0x10; return b })
			err := c.VerifyHeader(b)
			var ae *AuthError
			if errors.As(err, &ae) {
				authCheck(t, fmt.Sprint("header byte ", pos), err, HeaderChunk, ReasonTag)
			} else if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("header byte %d: VerifyHeader = %v", pos, err)
			}
		}
		// File reads the header when it needs the flags: an edited header
		// of an empty file fails there.
		empty := reopen(t, nil)
		if err := empty.Truncate(1); err != nil {
			t.Fatal(err)
		}
		if err := empty.Truncate(0); err != nil {
			t.Fatal(err)
		}
		b := empty.backing.(*memBacking).bytes()
		b[flagsOffset] ^= FlagSparse
		_, err := reopen(t, b).Size()
		authCheck(t, "flags edited", err, HeaderChunk, ReasonTag)
	})
	t.Run("cut mid-chunk", func(t *testing.T) {
		for _, cut := range []int{1, Overhead, Overhead + 1, s - 1} {
			_, err := readAll(reopen(t, orig[:at(2)+cut]))
			if cut <= Overhead {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("cut %d: err = %v, want ErrCorrupt", cut, err)
				}
				continue
			}
			authCheck(t, fmt.Sprint("cut ", cut), err, 2, ReasonTag)
		}
	})
	t.Run("truncation at a chunk boundary", func(t *testing.T) {
		for _, b := range [][]byte{orig, sparse} {
			for n := 1; n <= 3; n++ {
				f := reopen(t, b[:at(n)])
				_, err := readAll(f)
				if n == 2 && bytes.Equal(b, sparse) {
					// Chunk 1 of the sparse file is a hole: now last, it
					// cannot be one.
					authCheck(t, "sparse cut after the hole", err, 1, ReasonHole)
					continue
				}
				authCheck(t, fmt.Sprint("cut after chunk ", n-1), err, uint64(n-1), ReasonTruncated)
				// Writers refuse to build on it too.
				_, err = f.WriteAt([]byte{1}, int64(n*cs))
				authCheck(t, "append to cut file", err, uint64(n-1), ReasonTruncated)
			}
		}
	})
	t.Run("truncation to empty", func(t *testing.T) {
		f := reopen(t, orig[:DataOffset])
		_, err := f.Size()
		authCheck(t, "Size", err, 0, ReasonTruncated)
		authCheck(t, "ReadAt", readErr(f, 0, 1), 0, ReasonTruncated)
		_, err = f.WriteAt([]byte{1}, 0)
		authCheck(t, "WriteAt", err, 0, ReasonTruncated)
		// Truncating to 0 on purpose is allowed and clears the evidence.
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if size, err := f.Size(); size != 0 || err != nil {
			t.Fatalf("after Truncate(0): Size = %d, %v", size, err)
		}
	})
	t.Run("zeroed chunk in a normal file", func(t *testing.T) {
		for i := range 4 {
			b := edit(orig, func(b []byte) []byte { clear(b[at(i):min(at(i+1), len(b))]); return b })
			_, err := readAll(reopen(t, b))
			authCheck(t, fmt.Sprint("zeroed chunk ", i), err, uint64(i), ReasonHole)
		}
	})
	t.Run("zeroed last chunk in a sparse file", func(t *testing.T) {
		b := edit(sparse, func(b []byte) []byte { clear(b[at(3):]); return b })
		_, err := readAll(reopen(t, b))
		authCheck(t, "zeroed last chunk", err, 3, ReasonHole)
	})
	t.Run("zeros appended", func(t *testing.T) {
		for _, b := range [][]byte{orig, sparse} {
			// Pad the short last chunk's slot and add a whole hole: the
			// old last chunk is now read at full length and fails; the
			// new last chunk is a hole.
			long := append(append([]byte{}, b...), make([]byte, at(5)-len(b))...)
			_, err := readAll(reopen(t, long))
			var ae *AuthError
			if !errors.As(err, &ae) {
				t.Fatalf("zeros appended: err = %v", err)
			}
		}
		// On a file ending in a full chunk, appending a whole hole.
		tf := newTestFile(t, cs)
		tf.write(fill(rand.New(rand.NewPCG(1, 1)), 2*cs), 0)
		long := append(tf.mem.bytes(), make([]byte, s)...)
		_, err := readAll(reopen(t, long))
		authCheck(t, "hole appended", err, 2, ReasonHole)
	})
}

// TestNotDetected pins what format v1 does not detect (FORMAT.md's table).
// When a later format closes a gap, this test changes with FORMAT.md.
func TestNotDetected(t *testing.T) {
	const cs = MinChunkSize
	const s = cs + Overhead
	at := func(i int) int { return DataOffset + i*s }

	t.Run("zeroed middle chunk in a sparse file", func(t *testing.T) {
		b, want := sampleFile(t, true)
		clear(b[at(2):at(3)])
		got, err := readAll(reopen(t, b))
		clear(want[2*cs : 3*cs])
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("reads as zeros: err = %v", err)
		}
	})
	t.Run("chunk rolled back", func(t *testing.T) {
		tf := newTestFile(t, cs)
		tf.write(bytes.Repeat([]byte{'o'}, 3*cs), 0)
		old := tf.mem.bytes()
		tf.write(bytes.Repeat([]byte{'n'}, cs), cs)
		b := tf.mem.bytes()
		copy(b[at(1):at(2)], old[at(1):at(2)])
		got, err := readAll(reopen(t, b))
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{'o'}, 3*cs)) {
			t.Fatalf("old chunk 1 reads back: err = %v", err)
		}
	})
	t.Run("whole file rolled back", func(t *testing.T) {
		tf := newTestFile(t, cs)
		tf.write([]byte("version 1"), 0)
		v1 := tf.mem.bytes()
		tf.write(bytes.Repeat([]byte("version 2"), 200), 0)
		got, err := readAll(reopen(t, v1))
		if err != nil || string(got) != "version 1" {
			t.Fatalf("older file reads: %q, %v", got, err)
		}
		// Including back to its empty state (an old header without
		// FlagHasData).
		tf.truncate(0)
		emptyHeader := tf.mem.bytes()
		tf.write([]byte("data"), 0)
		if got, err := readAll(reopen(t, emptyHeader)); err != nil || len(got) != 0 {
			t.Fatalf("empty version reads: %q, %v", got, err)
		}
	})
	t.Run("truncation onto an older final chunk", func(t *testing.T) {
		// The file once ended after chunk 1; cutting it there and putting
		// that old final chunk 1 back is a rollback to that length.
		tf := newTestFile(t, cs)
		tf.write(bytes.Repeat([]byte{'a'}, 2*cs), 0)
		old := tf.mem.bytes()
		tf.write(bytes.Repeat([]byte{'b'}, cs), 2*cs)
		b := append(tf.mem.bytes()[:at(1)], old[at(1):at(2)]...)
		got, err := readAll(reopen(t, b))
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{'a'}, 2*cs)) {
			t.Fatalf("rollback to the shorter version: %v", err)
		}
	})
}

// TestFinalInMiddle checks that a middle chunk sealed as final (the remnant
// of an extending write that crashed before re-sealing it) reads, and that
// the next write over it re-seals it.
func TestFinalInMiddle(t *testing.T) {
	const cs = MinChunkSize
	tf := newTestFile(t, cs)
	data := fill(rand.New(rand.NewPCG(3, 3)), 3*cs)
	tf.write(data, 0)
	b := tf.mem.bytes()
	copy(b[tf.f.chunkOffset(1):], tf.f.cipher.SealChunk(nil, data[cs:2*cs], 1, true))
	tf.mem.set(b)
	tf.check()
	tf.write([]byte{1}, cs+1)
	sealed := tf.mem.bytes()[tf.f.chunkOffset(1):tf.f.chunkOffset(2)]
	if _, err := tf.f.cipher.OpenChunk(nil, sealed, 1, false); err != nil {
		t.Fatalf("rewritten chunk 1 is not a middle chunk: %v", err)
	}
	tf.check()
}

// TestFlagTransitions checks when the header is rewritten and what flags it
// then has.
func TestFlagTransitions(t *testing.T) {
	const cs = MinChunkSize
	flags := func(tf *testFile) uint8 {
		t.Helper()
		h, err := tf.f.cipher.OpenHeader(tf.mem.bytes())
		if err != nil {
			t.Fatal(err)
		}
		return h.Flags & knownFlags
	}
	headerWrites := func(tf *testFile) int {
		n := 0
		for _, w := range tf.mem.resetWrites() {
			if w.off == 0 {
				n++
			}
		}
		return n
	}
	tf := newTestFile(t, cs)
	tf.write([]byte("a"), 0)
	if flags(tf) != FlagHasData || headerWrites(tf) != 2 {
		t.Fatalf("first write: flags %#x", flags(tf))
	}
	tf.write([]byte("b"), 3)
	tf.write(make([]byte, 3*cs), 1)
	tf.truncate(2 * cs)
	if headerWrites(tf) != 0 {
		t.Fatal("header rewritten without a transition")
	}
	tf.truncate(0)
	if flags(tf) != 0 || headerWrites(tf) != 1 || len(tf.mem.bytes()) != DataOffset {
		t.Fatalf("truncate to 0: flags %#x", flags(tf))
	}
	tf.truncate(0)
	if headerWrites(tf) != 0 {
		t.Fatal("second truncate to 0 rewrote the header")
	}
	tf.truncate(5 * cs) // gap: chunks 0-3 are holes
	if flags(tf) != FlagHasData|FlagSparse {
		t.Fatalf("truncate across a gap: flags %#x", flags(tf))
	}
	tf.check()
	tf.truncate(0)
	if flags(tf) != FlagSparse {
		t.Fatalf("FlagSparse must survive truncate to 0: flags %#x", flags(tf))
	}
	tf.write([]byte("x"), 0)
	tf.check()

	// Another File over the same backing (another handle) sees the flags
	// this one wrote: nothing is cached but FlagSparse.
	tf2 := newTestFile(t, cs)
	other := NewFile(tf2.mem, newTestCipher(t, cs))
	tf2.write([]byte("abc"), 0)
	if err := other.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := tf2.f.Size(); err != nil {
		t.Fatalf("Size after another handle truncated to 0: %v", err)
	}
	tf2.ref = nil
	tf2.write([]byte("again"), 0)
	if _, err := other.ReadAt(make([]byte, 5), 0); err != nil {
		t.Fatalf("ReadAt through the other handle: %v", err)
	}
}

// crashBacking is a memBacking that stops changing after a budget of
// mutating calls (WriteAt and Truncate): later calls fail and have no
// effect, as if the machine had crashed there.
type crashBacking struct {
	*memBacking
	left int
}

var errCrash = errors.New("crashed")

func (c *crashBacking) WriteAt(p []byte, off int64) (int, error) {
	if c.left == 0 {
		return 0, errCrash
	}
	c.left--
	return c.memBacking.WriteAt(p, off)
}

func (c *crashBacking) Truncate(size int64) error {
	if c.left == 0 {
		return errCrash
	}
	c.left--
	return c.memBacking.Truncate(size)
}

// crashCase is one operation whose every crash point is checked.
type crashCase struct {
	name  string
	setup func(tf *testFile) // builds the old file
	op    func(tf *testFile) // the operation (through tf, so tf.ref is the new content)
	// between allows states whose size lies between the old and the new
	// one, each byte reading as its old or new value; otherwise the file
	// must read exactly as old or new.
	between bool
	// torn is the crash point (number of completed calls) that leaves the
	// last chunk torn, or -1; see FORMAT.md on shrinking inside a chunk.
	torn int
}

// TestCrashOrdering stops the backing file after each mutating call of an
// operation and checks that the file then reads without error as the old or
// the new content (FORMAT.md, "Writing").
func TestCrashOrdering(t *testing.T) {
	const cs = MinChunkSize
	data := func(n int, seed uint64) []byte { return fill(rand.New(rand.NewPCG(seed, 99)), n) }
	write := func(n int, off int64) func(tf *testFile) {
		return func(tf *testFile) { tf.write(data(n, uint64(off)), off) }
	}
	sized := func(n int) func(tf *testFile) { return write(n, 0) }
	header := func(tf *testFile) { tf.truncate(1); tf.truncate(0) } // header only, as fs creates files
	nothing := func(tf *testFile) {}
	cases := []crashCase{
		{name: "first write into empty backing", setup: nothing, op: write(3*cs+10, 0), torn: -1},
		{name: "first write into header-only file", setup: header, op: write(3*cs+10, 0), torn: -1},
		{name: "first write with a gap", setup: header, op: write(10, 5*cs+3), torn: -1},
		{name: "first write with a gap into empty backing", setup: nothing, op: write(10, 5*cs+3), torn: -1},
		{name: "extend within the last chunk", setup: sized(2*cs + 10), op: write(100, 2*cs+10), torn: -1},
		{name: "extend from a short last chunk", setup: sized(2*cs + 10), op: write(cs, 2*cs+10), torn: -1},
		{name: "extend from a full last chunk", setup: sized(2 * cs), op: write(cs+7, 2*cs), torn: -1},
		{name: "extend overlapping", setup: sized(2*cs + 10), op: write(3*cs, cs/2), torn: -1},
		{name: "gap after a full last chunk", setup: sized(2 * cs), op: write(10, 6*cs), torn: -1},
		{name: "gap after a short last chunk", setup: sized(2*cs + 10), op: write(10, 6*cs), between: true, torn: -1},
		{name: "gap in a sparse file", setup: func(tf *testFile) { write(10, 3*cs)(tf) }, op: write(10, 9*cs), between: true, torn: -1},
		{name: "extend in several batches", setup: sized(2*cs + 10), op: write(17*cs, 2*cs+10), between: true, torn: -1},
		{name: "overwrite", setup: sized(3*cs + 10), op: write(2*cs, 10), torn: -1},
		{name: "grow within the last chunk", setup: sized(2*cs + 10), op: func(tf *testFile) { tf.truncate(2*cs + 100) }, torn: -1},
		{name: "grow by one chunk", setup: sized(2*cs + 10), op: func(tf *testFile) { tf.truncate(3*cs + 1) }, torn: -1},
		{name: "grow across a gap", setup: sized(2 * cs), op: func(tf *testFile) { tf.truncate(7*cs + 1) }, torn: -1},
		{name: "grow an empty file", setup: header, op: func(tf *testFile) { tf.truncate(4 * cs) }, torn: -1},
		{name: "shrink to a chunk boundary", setup: sized(4*cs - 10), op: func(tf *testFile) { tf.truncate(2 * cs) }, torn: -1},
		{name: "shrink to 0", setup: sized(4*cs - 10), op: func(tf *testFile) { tf.truncate(0) }, torn: -1},
		// Cutting inside a chunk changes the stored length of the new last
		// chunk in place: between its re-seal and the backing truncate
		// (crash point 1) that chunk is torn.
		{name: "shrink inside a middle chunk", setup: sized(4*cs - 10), op: func(tf *testFile) { tf.truncate(2*cs + 5) }, torn: 1},
		{name: "shrink inside the last chunk", setup: sized(4*cs - 10), op: func(tf *testFile) { tf.truncate(4*cs - 100) }, torn: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fresh := func() (*testFile, *crashBacking) {
				tf := newTestFile(t, cs)
				tf.f.batch = 4 // several batches without megabytes of data
				tc.setup(tf)
				crash := &crashBacking{memBacking: tf.mem, left: -1}
				tf.f.backing = crash
				return tf, crash
			}
			// Run the operation once, uncrashed, to learn the new content
			// and how many backing calls it makes.
			tf, crash := fresh()
			oldRef := append([]byte{}, tf.ref...)
			tc.op(tf)
			tf.check()
			newRef := tf.ref
			calls := -1 - crash.left
			if calls == 0 {
				t.Fatal("operation made no backing call")
			}
			for n := range calls {
				tf, crash := fresh()
				crash.left = n
				runCrashed(tf, tc)
				checkCrashState(t, tc, n, tf.mem.bytes(), oldRef, newRef)
			}
		})
	}
}

// runCrashed runs tc.op on tf, whose backing fails part way: the error the
// testFile helpers would fail the test with is expected, so they run with
// a testing.TB that stops the operation instead.
func runCrashed(tf *testFile, tc crashCase) {
	quiet := &testFile{t: &swallow{TB: tf.t}, f: tf.f, mem: tf.mem, cs: tf.cs, ref: append([]byte{}, tf.ref...)}
	func() {
		defer func() {
			if r := recover(); r != nil && r != errSwallowed {
				panic(r)
			}
		}()
		tc.op(quiet)
	}()
}

// swallow is a testing.TB whose Fatalf stops the operation without failing
// the test: crashed operations report errors on purpose.
type swallow struct{ testing.TB }

var errSwallowed = errors.New("swallowed")

func (s *swallow) Fatalf(string, ...any) { panic(errSwallowed) }
func (s *swallow) Helper()               {}

// checkCrashState checks the backing bytes left by a crash after `after`
// completed calls.
func checkCrashState(t *testing.T, tc crashCase, after int, b, oldRef, newRef []byte) {
	t.Helper()
	f := reopen(t, b)
	if len(b) > 0 {
		if err := f.cipher.VerifyHeader(b); err != nil {
			t.Fatalf("crash after %d calls: header: %v", after, err)
		}
	}
	got, err := readAll(f)
	if after == tc.torn {
		var ae *AuthError
		if !errors.As(err, &ae) || ae.Reason != ReasonTag {
			t.Fatalf("crash after %d calls: want the documented torn chunk, got %v", after, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("crash after %d calls: %v", after, err)
	}
	if bytes.Equal(got, oldRef) || bytes.Equal(got, newRef) {
		return
	}
	if !tc.between {
		t.Fatalf("crash after %d calls: %d bytes, neither old (%d) nor new (%d)", after, len(got), len(oldRef), len(newRef))
	}
	lo, hi := min(len(oldRef), len(newRef)), max(len(oldRef), len(newRef))
	if len(got) < lo || len(got) > hi {
		t.Fatalf("crash after %d calls: size %d outside [%d, %d]", after, len(got), lo, hi)
	}
	for i, c := range got {
		if !(i < len(oldRef) && c == oldRef[i]) && !(i < len(newRef) && c == newRef[i]) {
			t.Fatalf("crash after %d calls: byte %d is neither old nor new", after, i)
		}
	}
}

// TestConcurrentSparseRead reads holes of a sparse file from several
// goroutines through a fresh File, which reads the header for FlagSparse
// and caches it; run with -race.
func TestConcurrentSparseRead(t *testing.T) {
	const cs = MinChunkSize
	tf := newTestFile(t, cs)
	tf.write([]byte("start"), 0)
	tf.write([]byte("end"), 40*cs)
	f := reopen(t, tf.mem.bytes())
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			p := make([]byte, 3*cs)
			_, err := f.ReadAt(p, int64((g*5+2)*cs+1))
			if err == nil && !allZero(p) {
				err = fmt.Errorf("hole read as non-zero")
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestAuthErrorString(t *testing.T) {
	var id FileID
	id[0] = 0xab
	for _, tt := range []struct {
		e    *AuthError
		want string
	}{
		{&AuthError{FileID: id, Chunk: 3}, "chunk: authentication failed: file ab000000000000000000000000000000 chunk 3"},
		{&AuthError{FileID: id, Chunk: HeaderChunk}, "chunk: authentication failed: file ab000000000000000000000000000000 header"},
		{&AuthError{FileID: id, Chunk: 7, Reason: ReasonTruncated}, "chunk: authentication failed: file ab000000000000000000000000000000 chunk 7: truncated"},
		{&AuthError{FileID: id, Chunk: 2, Reason: ReasonHole}, "chunk: authentication failed: file ab000000000000000000000000000000 chunk 2: unexpected hole"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if !errors.Is(fmt.Errorf("x: %w", tt.e), ErrAuthentication) {
			t.Errorf("%v does not match ErrAuthentication", tt.e)
		}
	}
	if AuthReason(9).String() != "reason(9)" || ReasonTag.String() != "tag mismatch" {
		t.Error("AuthReason.String")
	}
}
