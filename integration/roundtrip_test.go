package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"testing"
)

// boundarySizes lists file sizes at and around the first few chunk
// boundaries of chunk size cs.
func boundarySizes(cs int) []int {
	sizes := []int{0, 1, 2, 17}
	for k := 1; k <= 3; k++ {
		sizes = append(sizes, k*cs-1, k*cs, k*cs+1)
	}
	sizes = append(sizes, 10*cs+cs/2, 128<<10+1)
	return sizes
}

// TestRoundTripChunkBoundaries writes files of every size around chunk
// boundaries, for several chunk sizes, and checks content, size and backing
// size right away and after unmount and remount (a new daemon process).
func TestRoundTripChunkBoundaries(t *testing.T) {
	t.Parallel()
	for _, cs := range []int{4096, 512, 65536} {
		t.Run(fmt.Sprintf("chunk%d", cs), func(t *testing.T) {
			t.Parallel()
			fs := newFS(t, WithChunkSize(cs))
			r := newRand(uint64(cs))
			want := map[string][]byte{}
			for _, n := range boundarySizes(cs) {
				name := fmt.Sprintf("size-%d", n)
				data := randomBytes(r, n)
				want[name] = data
				mustWrite(t, fs.Path(name), data)
				checkContent(t, fs.Path(name), data)
			}
			// The same sizes written in odd-sized pieces, to cross every
			// boundary with partial-chunk read-modify-write.
			for _, n := range boundarySizes(cs) {
				name := fmt.Sprintf("pieces-%d", n)
				data := randomBytes(r, n)
				want[name] = data
				f, err := os.Create(fs.Path(name))
				if err != nil {
					t.Fatal(err)
				}
				for off := 0; off < n; {
					step := min(n-off, 1+r.IntN(cs+cs/2))
					if _, err := f.Write(data[off : off+step]); err != nil {
						t.Fatalf("%s: write at %d: %v", name, off, err)
					}
					off += step
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
			check := func(when string) {
				t.Helper()
				for name, data := range want {
					fi, err := os.Stat(fs.Path(name))
					if err != nil {
						t.Fatal(err)
					}
					if fi.Size() != int64(len(data)) {
						t.Errorf("%s %s: size %d, want %d", when, name, fi.Size(), len(data))
					}
					checkContent(t, fs.Path(name), data)
					bfi, err := os.Stat(fs.Backing(name))
					if err != nil {
						t.Fatal(err)
					}
					wantBacking := backingSize(int64(len(data)), cs)
					if len(data) == 0 && bfi.Size() == 0 {
						wantBacking = 0 // allowed: header not written yet
					}
					if bfi.Size() != wantBacking {
						t.Errorf("%s %s: backing size %d, want %d", when, name, bfi.Size(), wantBacking)
					}
				}
			}
			check("before remount")
			fs.Remount()
			check("after remount")
		})
	}
}

// TestRoundTripLargeRandomFile writes a 64 MiB random file in one stream and
// compares SHA-256 digests after unmount and remount.
func TestRoundTripLargeRandomFile(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	fs := newFS(t)
	seed := testSeed(t)
	r := newRand(seed)
	f, err := os.Create(fs.Path("big"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	buf := make([]byte, 1<<20+13) // not a multiple of the chunk size
	for written := 0; written < size; {
		n := min(len(buf), size-written)
		fillRandom(r, buf[:n])
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatalf("write at %d: %v", written, err)
		}
		written += n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))
	if got, n := sha256File(t, fs.Path("big")); got != want || n != size {
		t.Fatalf("before remount: sha256 %s size %d, want %s size %d", got, n, want, size)
	}
	fs.Remount()
	if got, n := sha256File(t, fs.Path("big")); got != want || n != size {
		t.Fatalf("after remount: sha256 %s size %d, want %s size %d", got, n, want, size)
	}
	fi, err := os.Stat(fs.Backing("big"))
	if err != nil {
		t.Fatal(err)
	}
	if want := backingSize(size, fs.ChunkSize); fi.Size() != want {
		t.Errorf("backing size %d, want %d (chunk size %d)", fi.Size(), want, fs.ChunkSize)
	}
	// Read again through a fresh descriptor in odd-sized pieces.
	g, err := os.Open(fs.Path("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	h.Reset()
	if _, err := io.CopyBuffer(h, struct{ io.Reader }{g}, make([]byte, 12345)); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Errorf("odd-sized reads: sha256 %s, want %s", got, want)
	}
}
