package codec

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
)

// codecs returns a fresh All: each test its own zstd codec.
func codecs() chunk.Codecs { return All() }

// goText returns up to n bytes of Go source from GOROOT, a stand-in for a
// text corpus.
func goText(t testing.TB, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("go env GOROOT: %v", err)
	}
	root := filepath.Join(strings.TrimSpace(string(goroot)), "src")
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if buf.Len() >= n {
			return filepath.SkipAll
		}
		if err != nil || d.IsDir() || filepath.Ext(p) != ".go" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil {
			buf.Write(b)
		}
		return nil
	})
	if buf.Len() < n {
		t.Skipf("only %d bytes of Go source under %s", buf.Len(), root)
	}
	return buf.Bytes()[:n]
}

func TestCodecsRoundTrip(t *testing.T) {
	text := goText(t, 1<<20)
	random := make([]byte, 1<<20)
	_, _ = rand.Read(random)
	for _, c := range codecs() {
		for _, src := range [][]byte{text[:1], text[:4096], text, random[:4096], random, make([]byte, 65536)} {
			z := c.Compress([]byte("prefix"), src)
			if !bytes.HasPrefix(z, []byte("prefix")) {
				t.Fatalf("%s: Compress lost dst", c.Compression())
			}
			if len(z) == len("prefix") {
				// Declined (TestZstdDeclines): only random data may be.
				if len(src) != len(random) || &src[0] != &random[0] {
					t.Fatalf("%s: declined %d bytes", c.Compression(), len(src))
				}
				continue
			}
			out, err := c.Decompress([]byte("pre"), z[6:], len(src))
			if err != nil || !bytes.Equal(out[3:], src) || string(out[:3]) != "pre" {
				t.Fatalf("%s: round trip of %d bytes: %v", c.Compression(), len(src), err)
			}
			// A wrong expected size fails, both ways.
			for _, size := range []int{len(src) - 1, len(src) + 1} {
				if size < 0 {
					continue
				}
				if _, err := c.Decompress(nil, z[6:], size); err == nil {
					t.Fatalf("%s: %d bytes decoded as %d", c.Compression(), len(src), size)
				}
			}
			// Into a buffer with room to spare, the output stays in place.
			buf := make([]byte, 0, len(src)+100)
			out, err = c.Decompress(buf, z[6:], len(src))
			if err != nil || &out[0] != &buf[:1][0] {
				t.Fatalf("%s: decoded elsewhere (%v)", c.Compression(), err)
			}
		}
		if z := c.Compress(nil, text[:65536]); len(z) > 65536/2 {
			t.Errorf("%s: 64 KiB of Go source compresses to %d bytes", c.Compression(), len(z))
		}
	}
}

// stamped returns n random bytes in which every 512-byte sector ends in
// the same k bytes. With k = 16 it is like fio's buffers (which carry a
// time stamp in every sector): data that compresses by a few per cent,
// zstd's slowest case.
func stamped(n, k int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	stamp := bytes.Repeat([]byte("stamp"), k)[:k]
	for s := 0; s+512 <= n; s += 512 {
		copy(b[s+512-k:s+512], stamp)
	}
	return b
}

// TestZstdDeclines checks which chunks the zstd codec declines to
// compress (worthCompressing): almost incompressible ones of 16 KiB or
// more, and only those.
func TestZstdDeclines(t *testing.T) {
	if n := s2.MaxEncodedLen(probeSamples * probeStretch); n > probeOutLen {
		t.Fatalf("probe output buffer of %d bytes, S2 may need %d", probeOutLen, n)
	}
	const n = 64 << 10
	text := goText(t, n)
	random := make([]byte, n)
	_, _ = rand.Read(random)
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	_, _ = w.Write(goText(t, 1<<20))
	_ = w.Close()
	// A random 4 KiB block written over and over (fio's random writes):
	// no stretch compresses on its own, but they repeat one another.
	repeated := bytes.Repeat(random[:4096], n/4096)
	// Text everywhere but in the sampled stretches.
	hidden := append([]byte{}, text...)
	for i := range probeSamples {
		copy(hidden[i*n/probeSamples:], random[i*probeStretch:(i+1)*probeStretch])
	}
	half := append(append([]byte{}, text[:n/2]...), random[n/2:]...)
	codec := newZstdCodec()
	for _, tc := range []struct {
		name    string
		src     []byte
		decline bool
	}{
		{"random", random, true},
		{"stamped", stamped(n, 16), true},
		{"8 % compressible", stamped(n, 40), true},
		{"30 % compressible", stamped(n, 160), false},
		{"gzip", gz.Bytes()[:n], true},
		{"random 16 KiB", random[:probeMinLen], true},
		{"random 16 KiB - 1", random[:probeMinLen-1], false},
		{"text", text, false},
		{"zeros", make([]byte, n), false},
		{"repeated random block", repeated, false},
		{"half text, half random", half, false},
		// The price of sampling: compressible data the sample misses.
		{"text around random samples", hidden, true},
	} {
		if got := !worthCompressing(tc.src); got != tc.decline {
			t.Errorf("%s: declined %v, want %v", tc.name, got, tc.decline)
		}
		z := codec.Compress([]byte("x"), tc.src)
		if declined := len(z) == 1; declined != tc.decline {
			t.Errorf("%s: Compress declined %v, want %v", tc.name, declined, tc.decline)
		}
	}
}

// TestZstdDecodesOtherLevels checks that frames of every encoder level
// decode: kmsfs before its switch to SpeedFastest wrote SpeedDefault
// frames, and the format allows any.
func TestZstdDecodesOtherLevels(t *testing.T) {
	text := goText(t, 100<<10)
	codec := newZstdCodec()
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false),
			zstd.WithWindowSize(chunk.MaxChunkSize))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 4096, 64 << 10, len(text)} {
			out, err := codec.Decompress(nil, enc.EncodeAll(text[:n], nil), n)
			if err != nil || !bytes.Equal(out, text[:n]) {
				t.Fatalf("%s, %d bytes: %v", level, n, err)
			}
		}
	}
}

// FuzzDecompress feeds arbitrary input to both codecs: no panic, and
// success only with exactly the expected size.
func FuzzDecompress(f *testing.F) {
	for _, c := range codecs() {
		f.Add(c.Compress(nil, []byte("hello hello hello hello")), 23)
		f.Add(c.Compress(nil, make([]byte, 4096)), 4096)
	}
	cs := codecs()
	f.Fuzz(func(t *testing.T, src []byte, size int) {
		size = int(uint(size) % (chunk.MaxChunkSize + 1))
		for _, c := range cs {
			out, err := c.Decompress(nil, src, size)
			if err == nil && len(out) != size {
				t.Fatalf("%s: %d bytes, want %d", c.Compression(), len(out), size)
			}
		}
	})
}

// allocated returns the bytes the file system allocated for path.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// punchingFile is a file that punches the unused tails of compressed
// chunks, as the mount's backing files do (fs.PunchBacking).
type punchingFile struct{ *os.File }

func (p punchingFile) PunchHole(off, length int64) error {
	return unix.Fallocate(int(p.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// TestCompressedDiskSpace writes Go source and random data through
// chunk.File over real files with punched tails and compares the blocks
// allocated with and without compression.
func TestCompressedDiskSpace(t *testing.T) {
	text := goText(t, 4<<20)
	random := make([]byte, 4<<20)
	_, _ = rand.Read(random)
	dir := t.TempDir()
	dek := make([]byte, chunk.DEKSize)
	codecs := All()
	write := func(name string, comp chunk.Compression, cs int, data []byte) int64 {
		h, err := chunk.NewHeader(cs)
		if err != nil {
			t.Fatal(err)
		}
		c, err := chunk.NewCipher(dek, h.WithCompression(comp), codecs)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		fd, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fd.Close()
		f := chunk.NewFile(punchingFile{fd}, c)
		// 128 KiB writes, as FUSE sends them.
		for off := 0; off < len(data); off += 128 << 10 {
			if _, err := f.WriteAt(data[off:min(off+128<<10, len(data))], int64(off)); err != nil {
				t.Fatal(err)
			}
		}
		got := make([]byte, len(data))
		if n, err := f.ReadAt(got, 0); (err != nil && err != io.EOF) || n != len(data) || !bytes.Equal(got, data) {
			t.Fatalf("%s: read back: %d, %v", name, n, err)
		}
		if err := fd.Sync(); err != nil {
			t.Fatal(err)
		}
		return allocated(t, p)
	}
	base := write("text-none", chunk.CompressionNone, 65536, text)
	if base < int64(len(text)) {
		t.Skipf("the temp file system allocates %d bytes for %d: no block accounting", base, len(text))
	}
	for _, comp := range []chunk.Compression{chunk.CompressionS2, chunk.CompressionZstd} {
		zt := write("text-"+comp.String(), comp, 65536, text)
		t.Logf("%s: 4 MiB of Go source takes %d KiB (uncompressed %d KiB)", comp, zt>>10, base>>10)
		if comp == chunk.CompressionZstd && zt > int64(len(text))/2 {
			t.Errorf("zstd: Go source takes %d bytes on disk for %d", zt, len(text))
		}
		rr := write("random-"+comp.String(), comp, 65536, random)
		rn := write("random-none-"+comp.String(), chunk.CompressionNone, 65536, random)
		if rr > rn {
			t.Errorf("%s: random data takes %d bytes, %d without compression", comp, rr, rn)
		}
	}
}
