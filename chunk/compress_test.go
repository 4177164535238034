package chunk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// The package is pure, so its tests cannot use the real codecs (package
// codec has klauspost/compress's s2 and zstd and tests them there). Stand-in
// codecs from the standard library exercise the format under both
// identifiers: what this package specifies is the framing, the AAD and the
// slot rules, not the codec.

// rleCodec is a Compressor that run-length encodes bytes: pairs of a
// count (1-255) and a byte. Cheap enough for the step-by-step round trips,
// and it expands random data (which is then stored raw).
type rleCodec struct{ id Compression }

func (c rleCodec) Compression() Compression { return c.id }

func (rleCodec) Compress(dst, src []byte) []byte {
	for len(src) > 0 {
		n := 1
		for n < len(src) && n < 255 && src[n] == src[0] {
			n++
		}
		dst = append(dst, byte(n), src[0])
		src = src[n:]
	}
	return dst
}

func (rleCodec) Decompress(dst, src []byte, size int) ([]byte, error) {
	out := dst
	for ; len(src) >= 2; src = src[2:] {
		n := int(src[0])
		if n == 0 || len(out)-len(dst)+n > size {
			return dst, errors.New("rle: bad run")
		}
		for range n {
			out = append(out, src[1])
		}
	}
	if len(src) != 0 || len(out)-len(dst) != size {
		return dst, errors.New("rle: wrong length")
	}
	return out, nil
}

// testCodecs are the codecs of every test Cipher: rleCodec under both
// identifiers.
var testCodecs = Codecs{rleCodec{id: CompressionS2}, rleCodec{id: CompressionZstd}}

// runs returns n bytes of runs of one letter each, 40 to 100 long: the
// "text" that rleCodec compresses.
func runs(n int) []byte {
	b := make([]byte, 0, n)
	for k := 0; len(b) < n; k++ {
		run := min(n-len(b), 40+k*7%61)
		b = append(b, bytes.Repeat([]byte{byte('a' + k%26)}, run)...)
	}
	return b
}

// testCompression is the compression of the files newTestCipher makes:
// none, except while TestCompressedSuite reruns the file and tamper tests.
var testCompression = CompressionNone

// fillMixed returns n non-zero bytes in which runs of random bytes
// alternate with runs of a repeated phrase, so chunks of any size compress
// somewhat and some stretches do not compress at all.
func fillMixed(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n)
	for len(b) < n {
		run := min(n-len(b), 16+rng.IntN(200))
		if rng.IntN(4) == 0 {
			for range run {
				b = append(b, byte(rng.Uint32())|1)
			}
			continue
		}
		b = append(b, bytes.Repeat([]byte{byte(rng.Uint32()) | 1}, run)...)
	}
	return b
}

// withCompression runs fn with testCompression set to c.
func withCompression(t *testing.T, c Compression, fn func(t *testing.T)) {
	t.Helper()
	old := testCompression
	testCompression = c
	defer func() { testCompression = old }()
	fn(t)
}

// TestCompressedSuite reruns the file, integrity and tamper tests on files
// with compression, for each algorithm identifier. Their data (fill) is
// then partly compressible, so files hold both compressed and raw chunks.
func TestCompressedSuite(t *testing.T) {
	tests := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"RoundTrip", TestRoundTrip},
		{"RandomOps", TestRandomOps},
		{"EmptyFile", TestEmptyFile},
		{"Sparse", TestSparse},
		{"Batches", TestBatches},
		{"Truncate", TestTruncate},
		{"Tamper", TestTamper},
		{"HostileBacking", TestHostileBacking},
		{"Detected", TestDetected},
		{"NotDetected", TestNotDetected},
		{"FinalInMiddle", TestFinalInMiddle},
		{"FlagTransitions", TestFlagTransitions},
		{"CrashOrdering", TestCrashOrdering},
		{"ConcurrentReadAt", TestConcurrentReadAt},
	}
	for _, comp := range []Compression{CompressionS2, CompressionZstd} {
		t.Run(comp.String(), func(t *testing.T) {
			withCompression(t, comp, func(t *testing.T) {
				for _, tc := range tests {
					t.Run(tc.name, tc.fn)
				}
			})
		})
	}
}

// slotKinds counts the compressed and raw chunks of a backing file.
func slotKinds(b []byte, cs, size int) (compressed, raw int) {
	s := cs + Overhead
	for off := DataOffset; off < len(b); off += s {
		slot := b[off:min(off+s, len(b))]
		switch {
		case isZero(slot):
		case isCompressedSlot(slot):
			compressed++
		default:
			raw++
		}
	}
	return compressed, raw
}

// TestCompressedRoundTrip writes compressible, incompressible and mixed
// data at and around chunk boundaries and checks what each chunk became.
func TestCompressedRoundTrip(t *testing.T) {
	const cs = DefaultChunkSize
	text := runs(3*cs + 100)
	rng := rand.New(rand.NewPCG(7, 8))
	random := make([]byte, 3*cs+100)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	for _, comp := range []Compression{CompressionNone, CompressionS2, CompressionZstd} {
		withCompression(t, comp, func(t *testing.T) {
			for _, length := range []int{1, 20, 47, 48, 100, cs - 1, cs, cs + 1, 2*cs + 33, 3 * cs} {
				cases := []struct {
					name          string
					data          []byte
					wantCompr     bool // every chunk long enough is compressed
					wantRawChunks bool
				}{
					{"text", text[:length], true, false},
					{"random", random[:length], false, true},
				}
				// Mixed: text and random chunks alternate, split off the
				// chunk boundaries by a few bytes.
				mixed := make([]byte, length)
				for i := range mixed {
					if (i+7)/cs%2 == 0 {
						mixed[i] = text[i]
					} else {
						mixed[i] = random[i]
					}
				}
				cases = append(cases, struct {
					name          string
					data          []byte
					wantCompr     bool
					wantRawChunks bool
				}{"mixed", mixed, false, false})
				for _, tc := range cases {
					tf := newTestFile(t, cs)
					tf.write(tc.data, 0)
					tf.check()
					for _, off := range []int64{0, 1, cs - 1, cs, cs + 1, int64(length) - 1} {
						tf.checkRead(off, cs+2)
					}
					compr, raw := slotKinds(tf.mem.bytes(), cs, length)
					what := fmt.Sprintf("%s %s len %d", comp, tc.name, length)
					switch {
					case comp == CompressionNone && compr != 0:
						t.Fatalf("%s: %d compressed chunks without compression", what, compr)
					case comp != CompressionNone && tc.wantCompr && length >= cs-1 && raw > shortTail(length, cs):
						t.Fatalf("%s: %d raw chunks of text", what, raw)
					case tc.wantRawChunks && compr != 0:
						t.Fatalf("%s: %d compressed chunks of random data", what, compr)
					}
					// The backing size is that of an uncompressed file.
					if got, want := int64(len(tf.mem.bytes())), CiphertextSize(int64(len(tf.ref)), cs); got != want {
						t.Fatalf("%s: backing %d bytes, want %d", what, got, want)
					}
					// Overwrite across a boundary with the other kind.
					if length > cs {
						tf.write(random[:40], cs-20)
						tf.write(text[:40], cs-10)
						tf.check()
					}
				}
			}
		})
	}
}

// shortTail is 1 if a file of length bytes ends in a chunk too short to
// compress (under 100 bytes here), else 0.
func shortTail(length, cs int) int {
	if r := length % cs; r != 0 && r < 100 {
		return 1
	}
	return 0
}

// punchBacking is a memBacking that punches holes, and records them.
type punchBacking struct {
	memBacking
	punched int64
	fail    error
}

func (p *punchBacking) PunchHole(off, length int64) error {
	if p.fail != nil {
		return p.fail
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Up to the end of the block holding the end of file.
	if off%punchBlock != 0 || length%punchBlock != 0 || off+length > int64(len(p.data)+punchBlock-1)/punchBlock*punchBlock {
		return fmt.Errorf("bad punch %d+%d of %d", off, length, len(p.data))
	}
	if !allZero(p.data[off:min(off+length, int64(len(p.data)))]) {
		return fmt.Errorf("punch %d+%d over data", off, length)
	}
	p.punched += length
	return nil
}

// TestPunch checks that compressed chunks punch their zero tails, only
// there, and that a backing file system without hole punching is fine.
func TestPunch(t *testing.T) {
	const cs = 65536
	text := runs(4*cs + 1000)
	withCompression(t, CompressionZstd, func(t *testing.T) {
		pb := &punchBacking{}
		f := NewFile(pb, newTestCipher(t, cs))
		if _, err := f.WriteAt(text, 0); err != nil {
			t.Fatal(err)
		}
		// Every full chunk compresses to far under a block: 15 of its 16
		// blocks are punched at least (the first may be shared with the
		// previous slot's tail).
		if min := int64(4 * 14 * punchBlock); pb.punched < min {
			t.Fatalf("punched %d bytes, want at least %d", pb.punched, min)
		}
		got := make([]byte, len(text))
		if _, err := f.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(got, text) {
			t.Fatal("read back differs")
		}
		// The shrink of a chunk from raw to compressed punches too.
		rng := rand.New(rand.NewPCG(1, 2))
		noise := make([]byte, cs)
		for i := range noise {
			noise[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(noise, cs); err != nil {
			t.Fatal(err)
		}
		before := pb.punched
		if _, err := f.WriteAt(text[:cs], cs); err != nil {
			t.Fatal(err)
		}
		if pb.punched <= before {
			t.Fatal("no punch when a raw chunk became compressed")
		}

		// ErrUnsupported turns punching off; data stays right.
		ub := &punchBacking{fail: fmt.Errorf("fallocate: %w", errors.ErrUnsupported)}
		f = NewFile(ub, newTestCipher(t, cs))
		if _, err := f.WriteAt(text, 0); err != nil {
			t.Fatal(err)
		}
		if !f.noPunch.Load() {
			t.Fatal("punching still on after ErrUnsupported")
		}
		// Other errors are reported.
		eb := &punchBacking{fail: errors.New("EIO")}
		f = NewFile(eb, newTestCipher(t, cs))
		if _, err := f.WriteAt(text, 0); err == nil {
			t.Fatal("punch error not reported")
		}
	})
}

// decliningCodec is rleCodec declining (appending nothing for) chunks
// that start with a letter from a to m.
type decliningCodec struct{ rleCodec }

func (c decliningCodec) Compress(dst, src []byte) []byte {
	if src[0] <= 'm' {
		return dst
	}
	return c.rleCodec.Compress(dst, src)
}

// TestCompressorDeclines checks that a chunk the codec declines is stored
// raw, next to compressed ones, and reads back.
func TestCompressorDeclines(t *testing.T) {
	const cs = DefaultChunkSize
	text := runs(5 * cs)
	mem := &memBacking{}
	declining := newTestCipherCodecs(t, cs, CompressionS2, Codecs{decliningCodec{rleCodec{id: CompressionS2}}})
	tf := &testFile{t: t, f: NewFile(mem, declining), mem: mem, cs: cs}
	tf.write(text, 0)
	tf.check()
	var declined int
	for i := 0; i < len(text); i += cs {
		if text[i] <= 'm' {
			declined++
		}
	}
	c, r := slotKinds(tf.mem.bytes(), cs, len(text))
	if r != declined || c != 5-declined || declined == 0 || declined == 5 {
		t.Fatalf("%d compressed and %d raw chunks, want %d raw of 5", c, r, declined)
	}
}

// TestCompressedTamper covers the attacks specific to compressed chunks.
func TestCompressedTamper(t *testing.T) {
	const cs = DefaultChunkSize
	const s = cs + Overhead
	text := runs(3*cs - 100)
	withCompression(t, CompressionZstd, func(t *testing.T) {
		tf := newTestFile(t, cs)
		tf.write(text, 0)
		orig := tf.mem.bytes()
		if c, r := slotKinds(orig, cs, len(text)); c != 3 || r != 0 {
			t.Fatalf("%d compressed and %d raw chunks, want 3 and 0", c, r)
		}
		at := func(i int) int { return DataOffset + i*s }
		edit := func(fn func(b []byte)) *File {
			b := append([]byte{}, orig...)
			fn(b)
			return NewFile(&memBacking{data: b}, newTestCipher(t, cs))
		}
		for _, tc := range []struct {
			name   string
			fn     func(b []byte)
			chunk  uint64
			reason AuthReason
		}{
			{"length field", func(b []byte) { b[at(1)+3]++ }, 1, ReasonTag},
			{"length field shorter", func(b []byte) { b[at(1)+3]-- }, 1, ReasonTag},
			{"marker", func(b []byte) { b[at(1)] = 'C' }, 1, ReasonTag},
			{"padding byte", func(b []byte) { b[at(1)+s-TagSize-1] = 1 }, 1, ReasonTag},
			{"last padding byte (now looks raw)", func(b []byte) { b[at(1)+s-1] = 1 }, 1, ReasonTag},
			{"ciphertext", func(b []byte) { b[at(0)+compressedPrefix+NonceSize+1] ^= 4 }, 0, ReasonTag},
			{"swap", func(b []byte) {
				c0 := append([]byte{}, b[at(0):at(1)]...)
				copy(b[at(0):], b[at(1):at(2)])
				copy(b[at(1):], c0)
			}, 0, ReasonTag},
		} {
			f := edit(tc.fn)
			authCheck(t, tc.name, readErr(f, int64(tc.chunk)*cs, 1), tc.chunk, tc.reason)
		}

		// The last chunk's slot lengthened by zeros (a zero tail is what a
		// compressed record has anyway) no longer decodes to its length.
		b := append(append([]byte{}, orig...), make([]byte, 10)...)
		f := NewFile(&memBacking{data: b}, newTestCipher(t, cs))
		authCheck(t, "zeros appended", readErr(f, 2*cs, 1), 2, ReasonTag)
		// And shortened by zeros, likewise.
		b = append([]byte{}, orig[:len(orig)-10]...)
		f = NewFile(&memBacking{data: b}, newTestCipher(t, cs))
		authCheck(t, "zero tail cut", readErr(f, 2*cs, 1), 2, ReasonTag)

		// A compressed chunk cannot pass for a raw one: the same file read
		// by a Cipher without compression (same key and file ID) fails.
		withCompression(t, CompressionNone, func(t *testing.T) {
			f := NewFile(&memBacking{data: append([]byte{}, orig...)}, newTestCipher(t, cs))
			// The header names zstd: the Cipher without it rejects it.
			if err := newTestCipher(t, cs).VerifyHeader(orig); err == nil {
				t.Fatal("header with zstd verified by a Cipher without compression")
			}
			authCheck(t, "compressed read as raw", readErr(f, 0, 1), 0, ReasonTag)
		})
		// Nor a raw chunk for a compressed one: a raw chunk (AAD "C") of
		// this file with its tail zeroed and a marker fails.
		raw := newTestCipher(t, cs).seal(nil, text[:cs], 0, false, zeroReader{})
		b = append([]byte{}, orig...)
		copy(b[at(0):at(1)], raw)
		b[at(0)] = compressedMarker
		clear(b[at(1)-TagSize : at(1)])
		f = NewFile(&memBacking{data: b}, newTestCipher(t, cs))
		authCheck(t, "raw dressed as compressed", readErr(f, 0, 1), 0, ReasonTag)
		// A raw chunk of a compressed file is fine (incompressible data).
		b = append([]byte{}, orig...)
		copy(b[at(0):at(1)], newTestCipher(t, cs).seal(nil, text[:cs], 0, false, zeroReader{}))
		f = NewFile(&memBacking{data: b}, newTestCipher(t, cs))
		if err := readErr(f, 0, cs); err != nil {
			t.Fatalf("raw chunk in a compressed file: %v", err)
		}
	})
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); p[0] = 1; return len(p), nil }

// TestCompressionHeader checks the flags nibble: parsed, kept on rewrites,
// unknown values rejected, and a Cipher needs the caller to provide the
// file's codec.
func TestCompressionHeader(t *testing.T) {
	h, err := NewHeader(DefaultChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	h = h.WithCompression(CompressionZstd)
	c, err := NewCipher(seqKey(), h, testCodecs)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := c.MarshalHeaderFlags(FlagHasData | FlagSparse)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.OpenHeader(hb)
	if err != nil || got.Compression() != CompressionZstd || got.Flags&FlagSparse == 0 {
		t.Fatalf("OpenHeader = %+v, %v", got, err)
	}
	bad := append([]byte{}, hb...)
	bad[flagsOffset] = bad[flagsOffset]&^compressionMask | 0x70
	if _, err := ParseHeader(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("compression 7: %v", err)
	}
	for _, s := range []string{"none", "s2", "zstd"} {
		if c, err := ParseCompression(s); err != nil || c.String() != s {
			t.Fatalf("ParseCompression(%q) = %v, %v", s, c, err)
		}
	}
	if _, err := ParseCompression("gzip"); err == nil {
		t.Fatal("ParseCompression(gzip) succeeded")
	}
	// The caller's codecs decide: a file whose codec is missing does not
	// open, with an error that names the compression.
	for _, codecs := range []Codecs{nil, {rleCodec{id: CompressionZstd}}} {
		_, err := NewCipher(seqKey(), h.WithCompression(CompressionS2), codecs)
		if !errors.Is(err, ErrNoCodec) || !strings.Contains(err.Error(), "s2") {
			t.Fatalf("NewCipher(s2 file, codecs %v) = %v, want ErrNoCodec naming s2", codecs, err)
		}
	}
	if _, err := NewCipher(seqKey(), h.WithCompression(CompressionNone), nil); err != nil {
		t.Fatalf("NewCipher(uncompressed file, no codecs) = %v", err)
	}
}

// FuzzOpenCompressed feeds arbitrary slots to a compressed file's Cipher:
// no panic, no plaintext of the wrong length, and nothing opens that was
// not sealed (the seeds hold real records, see testdata/fuzz).
func FuzzOpenCompressed(f *testing.F) {
	old := testCompression
	testCompression = CompressionZstd
	c := newTestCipher(f, MinChunkSize)
	testCompression = old
	text := runs(MinChunkSize)
	for _, n := range []int{60, 100, MinChunkSize} {
		sealed, _ := c.sealSlot(nil, text[:n], 1, n < MinChunkSize, zeroReader{})
		f.Add(sealed, uint64(1), n < MinChunkSize)
	}
	f.Fuzz(func(t *testing.T, sealed []byte, index uint64, final bool) {
		out, err := c.OpenChunk(nil, sealed, index, final)
		if err != nil {
			if !errors.Is(err, ErrAuthentication) {
				t.Fatalf("error %v is not an authentication error", err)
			}
			return
		}
		if len(out) != len(sealed)-Overhead {
			t.Fatalf("opened %d bytes from a %d-byte slot", len(out), len(sealed))
		}
	})
}
