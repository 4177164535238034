package fs

import (
	"slices"
	"testing"
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
