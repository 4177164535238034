package fs

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kmsfs/kmsfs/chunk"
)

func TestWriteSpans(t *testing.T) {
	const cs = 4096
	for _, tc := range []struct {
		name              string
		oldSize, off, end int64
		want              []chunkSpan
	}{
		{"inside one chunk", 10000, 100, 200, []chunkSpan{{0, 0}}},
		{"across chunks", 20000, 4000, 9000, []chunkSpan{{0, 2}}},
		{"into an empty file", 0, 0, 1, []chunkSpan{{0, 0}}},
		{"far into an empty file", 0, 10 * cs, 10*cs + 1, []chunkSpan{{10, 10}}},
		{"append in the last chunk", 100, 100, 200, []chunkSpan{{0, 0}}},
		{"append after a full last chunk", cs, cs, cs + 1, []chunkSpan{{0, 1}}},
		{"append right after the last chunk", 100, cs, cs + 5, []chunkSpan{{0, 1}}},
		{"past a gap: old last chunk and the new ones", 100, 5 * cs, 6*cs + 1, []chunkSpan{{0, 0}, {5, 6}}},
		{"overwrite ending before the old end", 5 * cs, 0, 1, []chunkSpan{{0, 0}}},
	} {
		if got := writeSpans(cs, tc.oldSize, tc.off, tc.end); !slices.Equal(got, tc.want) {
			t.Errorf("%s: writeSpans(%d, %d, %d) = %v, want %v", tc.name, tc.oldSize, tc.off, tc.end, got, tc.want)
		}
	}
}

func TestTruncateSpans(t *testing.T) {
	const cs = 512
	for _, tc := range []struct {
		oldSize, newSize int64
		want             []chunkSpan
	}{
		{0, 1 << 30, nil}, // an empty file grows by holes only
		{100, 50, nil},    // shrinking rewrites in place
		{100, 1 << 30, []chunkSpan{{0, 0}}},
		{3 * cs, 4 * cs, []chunkSpan{{2, 2}}},
		{3*cs + 1, 3*cs + 2, []chunkSpan{{3, 3}}},
	} {
		if got := truncateSpans(cs, tc.oldSize, tc.newSize); !slices.Equal(got, tc.want) {
			t.Errorf("truncateSpans(%d, %d) = %v, want %v", tc.oldSize, tc.newSize, got, tc.want)
		}
	}
}

// TestReserveKnownAllocation checks what reserve learns and remembers of
// the backing file's allocation: the data before the first hole, then
// every reservation that continues it; a reservation past a hole does not
// count, and a truncation forgets everything.
func TestReserveKnownAllocation(t *testing.T) {
	const cs = 4096
	r := &root{cfg: Config{ChunkSize: cs}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f, err := os.Create(filepath.Join(t.TempDir(), "backing"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size2 := chunk.CiphertextSize(2*cs, cs)
	if _, err := f.WriteAt(make([]byte, size2), 0); err != nil {
		t.Fatal(err)
	}
	c := &content{}
	if err := r.reserve(c, f, []chunkSpan{{0, 1}}, 2*cs); err != nil {
		t.Fatal(err)
	}
	if !c.alloc.known || c.alloc.end != size2 {
		t.Fatalf("after the first reservation: %+v, want the written %d bytes known", c.alloc, size2)
	}
	// Past a gap: reserved, but the known prefix stays.
	if err := r.reserve(c, f, []chunkSpan{{5, 5}}, 6*cs); err != nil {
		t.Fatal(err)
	}
	if c.alloc.end != size2 {
		t.Fatalf("a reservation past a hole moved the prefix to %d", c.alloc.end)
	}
	// Continuing the prefix extends it.
	if err := r.reserve(c, f, []chunkSpan{{2, 2}}, 2*cs+10); err != nil {
		t.Fatal(err)
	}
	if want := chunk.CiphertextSize(2*cs+10, cs); c.alloc.end != want {
		t.Fatalf("prefix %d after an appending reservation, want %d", c.alloc.end, want)
	}
	if err := r.reserveTruncate(c, f, 2*cs+10, cs); err != nil {
		t.Fatal(err)
	}
	if c.alloc.known {
		t.Fatal("a truncation kept the known allocation")
	}
}
