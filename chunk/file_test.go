package chunk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// testFile couples a File over a memBacking with the plaintext it must hold.
type testFile struct {
	t   testing.TB
	f   *File
	mem *memBacking
	ref []byte
	cs  int
}

func newTestFile(t testing.TB, chunkSize int) *testFile {
	t.Helper()
	mem := &memBacking{}
	return &testFile{t: t, f: NewFile(mem, newTestCipher(t, chunkSize)), mem: mem, cs: chunkSize}
}

func (tf *testFile) write(p []byte, off int64) {
	tf.t.Helper()
	n, err := tf.f.WriteAt(p, off)
	if err != nil || n != len(p) {
		tf.t.Fatalf("WriteAt(%d bytes, %d) = %d, %v", len(p), off, n, err)
	}
	if end := off + int64(len(p)); end > int64(len(tf.ref)) {
		tf.ref = append(tf.ref, make([]byte, end-int64(len(tf.ref)))...)
	}
	copy(tf.ref[off:], p)
}

func (tf *testFile) truncate(size int64) {
	tf.t.Helper()
	if err := tf.f.Truncate(size); err != nil {
		tf.t.Fatalf("Truncate(%d): %v", size, err)
	}
	if size <= int64(len(tf.ref)) {
		tf.ref = tf.ref[:size]
	} else {
		tf.ref = append(tf.ref, make([]byte, size-int64(len(tf.ref)))...)
	}
}

// check verifies the size, the backing size and the whole content.
func (tf *testFile) check() {
	tf.t.Helper()
	size, err := tf.f.Size()
	if err != nil || size != int64(len(tf.ref)) {
		tf.t.Fatalf("Size() = %d, %v; want %d", size, err, len(tf.ref))
	}
	if b := int64(len(tf.mem.bytes())); b != 0 && b != CiphertextSize(size, tf.cs) {
		tf.t.Fatalf("backing size %d, want %d", b, CiphertextSize(size, tf.cs))
	}
	tf.checkRead(0, len(tf.ref)+10)
}

// checkRead reads n bytes at off and compares with the reference,
// including the io.EOF rule.
func (tf *testFile) checkRead(off int64, n int) {
	tf.t.Helper()
	p := make([]byte, n)
	got, err := tf.f.ReadAt(p, off)
	want := 0
	if off < int64(len(tf.ref)) {
		want = min(n, len(tf.ref)-int(off))
	}
	if got != want {
		tf.t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d bytes", n, off, got, err, want)
	}
	if want < n && err != io.EOF {
		tf.t.Fatalf("ReadAt(%d, %d) short read err = %v, want io.EOF", n, off, err)
	}
	if want == n && err != nil && n > 0 {
		tf.t.Fatalf("ReadAt(%d, %d) err = %v", n, off, err)
	}
	if want > 0 && !bytes.Equal(p[:got], tf.ref[off:off+int64(got)]) {
		tf.t.Fatalf("ReadAt(%d, %d) returned wrong data", n, off)
	}
}

func fill(rng *rand.Rand, n int) []byte {
	if testCompression != CompressionNone {
		return fillMixed(rng, n)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32()) | 1 // never zero, so holes are visible
	}
	return b
}

// TestRoundTrip writes files of every length around chunk boundaries in
// pieces of several step sizes, in random order, and reads them back in
// pieces of every step size and at random offsets.
func TestRoundTrip(t *testing.T) {
	for _, cs := range []int{MinChunkSize, DefaultChunkSize} {
		lengths := []int{0, 1, cs - 1, cs, cs + 1, 2*cs - 1, 3*cs + 7, 5 * cs}
		steps := []int{1, 7, 512, cs - 1, cs, cs + 1, 3*cs + 1}
		for _, length := range lengths {
			for _, step := range steps {
				if step == 1 && length > 2*cs {
					continue // covered by smaller lengths; keeps -race fast
				}
				t.Run(fmt.Sprintf("cs%d/len%d/step%d", cs, length, step), func(t *testing.T) {
					rng := rand.New(rand.NewPCG(uint64(length), uint64(step)))
					tf := newTestFile(t, cs)
					data := fill(rng, length)
					var offs []int
					for o := 0; o < length; o += step {
						offs = append(offs, o)
					}
					rng.Shuffle(len(offs), func(i, j int) { offs[i], offs[j] = offs[j], offs[i] })
					for _, o := range offs {
						tf.write(data[o:min(o+step, length)], int64(o))
					}
					tf.check()
					for o := 0; o < length; o += step {
						tf.checkRead(int64(o), step)
					}
					for range 20 {
						tf.checkRead(rng.Int64N(int64(length)+2), rng.IntN(3*cs))
					}
					// Overwrite random ranges, some past the end.
					for range 10 {
						off := rng.Int64N(int64(length) + int64(2*cs))
						tf.write(fill(rng, 1+rng.IntN(step+cs)), off)
					}
					tf.check()
				})
			}
		}
	}
}

// TestRandomOps runs random writes, truncates and reads against a
// reference, for each chunk size.
func TestRandomOps(t *testing.T) {
	for _, cs := range []int{MinChunkSize, DefaultChunkSize, 16384} {
		t.Run(fmt.Sprint(cs), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(42, uint64(cs)))
			tf := newTestFile(t, cs)
			limit := int64(20 * cs)
			for i := range 400 {
				switch op := rng.IntN(10); {
				case op < 5:
					tf.write(fill(rng, 1+rng.IntN(3*cs)), rng.Int64N(limit))
				case op < 7:
					tf.truncate(rng.Int64N(limit))
				default:
					tf.checkRead(rng.Int64N(limit), rng.IntN(4*cs))
				}
				if i%50 == 0 {
					tf.check()
				}
			}
			tf.check()
		})
	}
}

func TestEmptyFile(t *testing.T) {
	tf := newTestFile(t, MinChunkSize)
	tf.check()
	if n, err := tf.f.ReadAt(make([]byte, 1), 0); n != 0 || err != io.EOF {
		t.Errorf("ReadAt on empty = %d, %v", n, err)
	}
	if n, err := tf.f.ReadAt(nil, 0); n != 0 || err != nil {
		t.Errorf("ReadAt(nil) = %d, %v", n, err)
	}
	if n, err := tf.f.WriteAt(nil, 100); n != 0 || err != nil || len(tf.mem.bytes()) != 0 {
		t.Errorf("WriteAt(nil) = %d, %v and wrote something", n, err)
	}
	if err := tf.f.Truncate(0); err != nil || len(tf.mem.bytes()) != 0 {
		t.Errorf("Truncate(0) on empty: %v", err)
	}
	tf.write([]byte("hello"), 0)
	tf.check()
	if err := tf.f.cipher.VerifyHeader(tf.mem.bytes()); err != nil {
		t.Errorf("header written by WriteAt: %v", err)
	}
	tf.truncate(0)
	if b := tf.mem.bytes(); len(b) != DataOffset || tf.f.cipher.VerifyHeader(b) != nil {
		t.Errorf("truncate to 0 left %d bytes", len(b))
	}
	tf.check()

	// Truncate up on an empty backing writes the header too.
	tf2 := newTestFile(t, MinChunkSize)
	tf2.truncate(1000)
	tf2.check()
	if err := tf2.f.cipher.VerifyHeader(tf2.mem.bytes()); err != nil {
		t.Errorf("header written by Truncate: %v", err)
	}
}

// TestSparse writes far past the end: the chunks in between must never be
// written (they stay holes) and read as zeros, and the header gets
// FlagSparse before the first gap.
func TestSparse(t *testing.T) {
	cs := MinChunkSize
	tf := newTestFile(t, cs)
	tf.write([]byte("abc"), 0)
	tf.mem.resetWrites()
	far := int64(1000*cs + 5)
	tf.write([]byte("xyz"), far)
	tf.check()
	writes := tf.mem.resetWrites()
	// FlagSparse is set, the old short chunk 0 padded (still final), chunk
	// 1000 written, and chunk 0 re-sealed as a middle chunk.
	want := []span{{0, HeaderSize}, {DataOffset, int64(cs + Overhead)}, {tf.f.chunkOffset(1000), 8 + Overhead}, {DataOffset, int64(cs + Overhead)}}
	if fmt.Sprint(writes) != fmt.Sprint(want) {
		t.Fatalf("writes = %v, want %v", writes, want)
	}
	if h, err := ParseHeader(tf.mem.bytes()); err != nil || h.Flags&knownFlags != FlagHasData|FlagSparse {
		t.Fatalf("header flags = %#x, %v", h.Flags, err)
	}
	b := tf.mem.bytes()
	if !allZero(b[tf.f.chunkOffset(1):tf.f.chunkOffset(1000)]) {
		t.Error("gap is not zero in the backing file")
	}
	tf.checkRead(int64(cs)-3, 10*cs)
	tf.checkRead(far-2, 10)

	// Writing into a hole seals only that chunk.
	tf.write([]byte("mid"), int64(500*cs+1))
	if writes := tf.mem.resetWrites(); len(writes) != 1 || writes[0].off != tf.f.chunkOffset(500) {
		t.Fatalf("writes into hole = %v", writes)
	}
	tf.check()

	// Growing by truncate leaves holes, but the new last chunk is sealed.
	tf.truncate(far + int64(3*cs) + 100)
	tf.check()
	if writes := tf.mem.resetWrites(); len(writes) != 3 || writes[1].off != tf.f.chunkOffset(1003) {
		t.Fatalf("writes of a truncate across a gap = %v", writes)
	}
	b = tf.mem.bytes()
	if allZero(b[tf.f.chunkOffset(1003):]) {
		t.Fatal("truncate left the last chunk a hole")
	}
	tf.write([]byte("end"), far+int64(10*cs))
	tf.check()
	// The header is written only on the transition: no more header writes.
	for _, w := range tf.mem.resetWrites() {
		if w.off == 0 {
			t.Fatalf("header rewritten although FlagSparse was set")
		}
	}
}

// TestWriteCalls checks that each run of chunks costs one backing call.
func TestWriteCalls(t *testing.T) {
	cs := MinChunkSize
	tf := newTestFile(t, cs)
	rng := rand.New(rand.NewPCG(1, 2))
	tf.write(fill(rng, 10*cs+100), 0)
	if w := tf.mem.resetWrites(); len(w) != 3 || w[0].off != 0 || w[1].off != DataOffset || w[2].off != 0 {
		t.Fatalf("first write: %v, want header, one run, header with FlagHasData", w)
	}
	// Unaligned overwrite spanning 5 chunks: one write.
	tf.write(fill(rng, 4*cs), int64(cs/2))
	if w := tf.mem.resetWrites(); len(w) != 1 || w[0].n != 5*int64(cs+Overhead) {
		t.Fatalf("overwrite: %v", w)
	}
	// Extending from a short last chunk into the next one: the padded chunk
	// joins the run.
	tf.write(fill(rng, 10), int64(11*cs+7))
	if w := tf.mem.resetWrites(); len(w) != 1 || w[0].off != tf.f.chunkOffset(10) {
		t.Fatalf("adjacent extension: %v", w)
	}
	tf.check()
	// Appending after a full last chunk: it joins the run too, re-sealed
	// as a middle chunk in the same backing call.
	tf.truncate(int64(12 * cs))
	tf.mem.resetWrites()
	tf.write(fill(rng, cs), int64(12*cs))
	if w := tf.mem.resetWrites(); len(w) != 1 || w[0].off != tf.f.chunkOffset(11) || w[0].n != 2*int64(cs+Overhead) {
		t.Fatalf("aligned append: %v", w)
	}
	tf.check()
	tf.mem.reads.Store(0)
	tf.checkRead(int64(cs/3), 8*cs)
	if r := tf.mem.reads.Load(); r != 1 {
		t.Errorf("reading 9 chunks took %d backing reads", r)
	}
	// A large write seals on two goroutines and is still one call.
	tf.write(fill(rng, 100*cs+3), int64(cs-1))
	if w := tf.mem.resetWrites(); len(w) != 1 {
		t.Fatalf("large write: %v", w)
	}
	tf.check()
}

// TestBatches writes and reads more than one batch in a call.
func TestBatches(t *testing.T) {
	tf := newTestFile(t, MinChunkSize)
	rng := rand.New(rand.NewPCG(3, 4))
	tf.write(fill(rng, batchBytes*2+12345), 77)
	tf.check()
	tf.checkRead(5, batchBytes+MinChunkSize*3)
}

func TestTruncate(t *testing.T) {
	for _, cs := range []int{MinChunkSize, DefaultChunkSize} {
		c := int64(cs)
		sizes := []int64{0, 1, c - 1, c, c + 1, 2*c - 1, 3*c + 7, 5 * c}
		for _, from := range sizes {
			for _, to := range sizes {
				tf := newTestFile(t, cs)
				rng := rand.New(rand.NewPCG(uint64(from), uint64(to)))
				tf.write(fill(rng, int(from)), 0)
				tf.truncate(to)
				tf.check()
				// Writing after the truncate must see zeros, not old data.
				tf.write([]byte{9}, to+c/2)
				tf.check()
			}
		}
	}
	tf := newTestFile(t, MinChunkSize)
	if err := tf.f.Truncate(-1); err == nil {
		t.Error("Truncate(-1) succeeded")
	}
	if err := tf.f.Truncate(MaxPlaintextSize(MinChunkSize) + 1); !errors.Is(err, ErrFileTooLarge) {
		t.Errorf("Truncate(max+1) = %v", err)
	}
}

func TestWriteLimits(t *testing.T) {
	tf := newTestFile(t, MinChunkSize)
	if _, err := tf.f.WriteAt([]byte{1}, -1); err == nil {
		t.Error("WriteAt(-1) succeeded")
	}
	if _, err := tf.f.ReadAt([]byte{1}, -1); err == nil {
		t.Error("ReadAt(-1) succeeded")
	}
	m := MaxPlaintextSize(MinChunkSize)
	for _, off := range []int64{m, m - 1, 1<<63 - 1} {
		if _, err := tf.f.WriteAt([]byte{1, 2}, off); !errors.Is(err, ErrFileTooLarge) {
			t.Errorf("WriteAt at %d = %v", off, err)
		}
	}
	if len(tf.mem.bytes()) != 0 {
		t.Error("rejected writes touched the backing file")
	}
}

// buildFile returns a backing file of n chunks of size cs (the last one
// short by 10 bytes) and its plaintext.
func buildFile(t *testing.T, cs, n int) (*testFile, []byte) {
	tf := newTestFile(t, cs)
	data := fill(rand.New(rand.NewPCG(7, 7)), n*cs-10)
	tf.write(data, 0)
	return tf, tf.mem.bytes()
}

func readErr(f *File, off int64, n int) error {
	_, err := f.ReadAt(make([]byte, n), off)
	return err
}

func wantAuthErr(t *testing.T, what string, err error, chunk uint64) {
	t.Helper()
	var ae *AuthError
	if !errors.As(err, &ae) || !errors.Is(err, ErrAuthentication) {
		t.Fatalf("%s: err = %v, want *AuthError", what, err)
	}
	if ae.Chunk != chunk {
		t.Fatalf("%s: AuthError names chunk %d, want %d", what, ae.Chunk, chunk)
	}
}

// TestTamper edits the backing file the ways an attacker could and checks
// that each is detected.
func TestTamper(t *testing.T) {
	const cs = MinChunkSize
	const s = cs + Overhead
	tf, orig := buildFile(t, cs, 4)
	at := func(i int) int { return DataOffset + i*s }
	chunkBytes := func(b []byte, i int) []byte { return append([]byte{}, b[at(i):min(at(i)+s, len(b))]...) }

	t.Run("swap", func(t *testing.T) {
		b := append([]byte{}, orig...)
		c1, c2 := chunkBytes(orig, 1), chunkBytes(orig, 2)
		copy(b[at(1):], c2)
		copy(b[at(2):], c1)
		tf.mem.set(b)
		wantAuthErr(t, "swap", readErr(tf.f, 0, 4*cs), 1)
		wantAuthErr(t, "swap", readErr(tf.f, 2*cs, 10), 2)
		if err := readErr(tf.f, 0, cs); err != nil {
			t.Errorf("untouched chunk 0: %v", err)
		}
	})
	t.Run("reorder", func(t *testing.T) {
		b := append([]byte{}, orig[:DataOffset]...)
		b = append(b, chunkBytes(orig, 2)...)
		b = append(b, chunkBytes(orig, 0)...)
		b = append(b, chunkBytes(orig, 1)...)
		b = append(b, chunkBytes(orig, 3)...)
		tf.mem.set(b)
		for i := range 3 {
			wantAuthErr(t, "reorder", readErr(tf.f, int64(i*cs), 1), uint64(i))
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		b := append([]byte{}, orig...)
		copy(b[at(1):], chunkBytes(orig, 0))
		tf.mem.set(b)
		wantAuthErr(t, "duplicate", readErr(tf.f, int64(cs), 1), 1)
	})
	t.Run("other file", func(t *testing.T) {
		other, ob := buildFile(t, cs, 4) // same key, other file ID
		_ = other
		ob[12] ^= 1 // give it another file ID (header is not checked by File)
		h, _ := ParseHeader(ob)
		oc, _ := NewCipher(seqKey(), h, testCodecs)
		b := append([]byte{}, orig...)
		sealed := oc.Seal(nil, make([]byte, cs), 1)
		copy(b[at(1):], sealed)
		tf.mem.set(b)
		wantAuthErr(t, "chunk from other file", readErr(tf.f, int64(cs), 1), 1)
	})
	t.Run("truncate mid-chunk", func(t *testing.T) {
		for _, cut := range []int{1, 10, Overhead, Overhead + 1, s - 1} {
			tf.mem.set(orig[:at(2)+cut])
			err := readErr(tf.f, 0, 4*cs)
			if cut <= Overhead {
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("cut %d: err = %v, want ErrCorrupt", cut, err)
				}
				continue
			}
			wantAuthErr(t, fmt.Sprint("cut ", cut), err, 2)
		}
	})
	t.Run("extend", func(t *testing.T) {
		// Appending garbage after a short last chunk makes it read as a
		// longer chunk, which fails.
		tf.mem.set(append(append([]byte{}, orig...), 1, 2, 3))
		wantAuthErr(t, "extend", readErr(tf.f, 3*cs, 1), 3)
	})
	t.Run("flip", func(t *testing.T) {
		for _, pos := range []int{at(0), at(1) + 5, at(3) + 20, len(orig) - 1} {
			b := append([]byte{}, orig...)
			b[pos] ^= 0x80
			tf.mem.set(b)
			i := uint64((pos - DataOffset) / s)
			wantAuthErr(t, fmt.Sprint("flip at ", pos), readErr(tf.f, 0, 4*cs), i)
			// Writes that need the damaged chunk fail too.
			_, err := tf.f.WriteAt([]byte{1}, int64(i)*cs+1)
			wantAuthErr(t, "write over damage", err, i)
		}
	})
	tf.mem.set(orig)
	if err := readErr(tf.f, 0, 4*cs); err != io.EOF {
		t.Fatalf("original no longer reads: %v", err)
	}
}

// TestHostileBacking feeds damaged backing files to every operation: they
// must fail cleanly.
func TestHostileBacking(t *testing.T) {
	tf, orig := buildFile(t, MinChunkSize, 3)
	for _, size := range []int{1, HeaderSize, DataOffset - 1, DataOffset + 1, DataOffset + Overhead} {
		tf.mem.set(orig[:size])
		if _, err := tf.f.Size(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("size %d: Size = %v", size, err)
		}
		if err := readErr(tf.f, 0, 10); !errors.Is(err, ErrCorrupt) {
			t.Errorf("size %d: ReadAt = %v", size, err)
		}
		if _, err := tf.f.WriteAt([]byte{1}, 0); !errors.Is(err, ErrCorrupt) {
			t.Errorf("size %d: WriteAt = %v", size, err)
		}
		if err := tf.f.Truncate(5); !errors.Is(err, ErrCorrupt) {
			t.Errorf("size %d: Truncate = %v", size, err)
		}
	}
	// Random garbage after a valid header.
	rng := rand.New(rand.NewPCG(5, 5))
	garbage := append(append([]byte{}, orig[:DataOffset]...), fill(rng, 3*(MinChunkSize+Overhead))...)
	tf.mem.set(garbage)
	wantAuthErr(t, "garbage", readErr(tf.f, 0, 10), 0)
	wantAuthErr(t, "garbage truncate", tf.f.Truncate(MinChunkSize+5), 1)
}

func TestBackingErrors(t *testing.T) {
	tf, _ := buildFile(t, MinChunkSize, 2)
	boom := errors.New("disk on fire")
	tf.mem.failWrite = boom
	if _, err := tf.f.WriteAt([]byte{1}, 3); !errors.Is(err, boom) {
		t.Errorf("WriteAt = %v", err)
	}
	if err := tf.f.Truncate(1); !errors.Is(err, boom) {
		t.Errorf("Truncate = %v", err)
	}
	if err := tf.f.Truncate(0); !errors.Is(err, boom) {
		t.Errorf("Truncate(0) = %v", err)
	}
}

// TestConcurrentReadAt reads one file from several goroutines; run with -race.
func TestConcurrentReadAt(t *testing.T) {
	const cs = MinChunkSize
	tf, _ := buildFile(t, cs, 40)
	size := int64(len(tf.ref))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range 200 {
				off := rng.Int64N(size)
				p := make([]byte, 1+rng.IntN(5*cs))
				n, err := tf.f.ReadAt(p, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(p[:n], tf.ref[off:off+int64(n)]) {
					errs <- fmt.Errorf("wrong data at %d", off)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestOSFile runs a short round trip over a real file, to check that
// *os.File behaves as the File expects (zero fill, EOF on short reads).
func TestOSFile(t *testing.T) {
	of, err := os.Create(filepath.Join(t.TempDir(), "backing"))
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	f := NewFile(of, newTestCipher(t, MinChunkSize))
	data := fill(rand.New(rand.NewPCG(1, 1)), 3000)
	if _, err := f.WriteAt(data, 100000); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data[:10], 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 103000)
	copy(want[100000:], data)
	copy(want, data[:10])
	got := make([]byte, len(want)+1)
	n, err := f.ReadAt(got, 0)
	if n != len(want) || err != io.EOF || !bytes.Equal(got[:n], want) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if err := f.Truncate(50); err != nil {
		t.Fatal(err)
	}
	if fi, _ := of.Stat(); fi.Size() != CiphertextSize(50, MinChunkSize) {
		t.Fatalf("backing size %d", fi.Size())
	}
}
