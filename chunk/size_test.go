package chunk

import (
	"errors"
	"math"
	"testing"
)

func TestSizeMapWorked(t *testing.T) {
	// The worked sizes of FORMAT.md.
	tests := []struct {
		plain, backing int64
	}{
		{0, 512},
		{1, 541},
		{4095, 4635},
		{4096, 4636},
		{4097, 4665},
		{5000, 5568},
		{2 * 4096, 512 + 2*4124},
		{2*4096 + 1, 512 + 2*4124 + 29},
	}
	for _, tt := range tests {
		if got := CiphertextSize(tt.plain, DefaultChunkSize); got != tt.backing {
			t.Errorf("CiphertextSize(%d) = %d, want %d", tt.plain, got, tt.backing)
		}
		got, err := PlaintextSize(tt.backing, DefaultChunkSize)
		if err != nil || got != tt.plain {
			t.Errorf("PlaintextSize(%d) = %d, %v; want %d", tt.backing, got, err, tt.plain)
		}
	}
}

func TestSizeMapBoundaries(t *testing.T) {
	for _, cs := range []int{MinChunkSize, DefaultChunkSize, 16384, MaxChunkSize} {
		c := int64(cs)
		s := c + Overhead
		tests := []struct {
			backing, plain int64
			corrupt        bool
		}{
			{0, 0, false},
			{1, 0, true},
			{DataOffset - 1, 0, true},
			{DataOffset, 0, false},
			{DataOffset + 1, 0, true},
			{DataOffset + Overhead, 0, true},
			{DataOffset + Overhead + 1, 1, false},
			{DataOffset + s - 1, c - 1, false},
			{DataOffset + s, c, false},
			{DataOffset + s + 1, 0, true},
			{DataOffset + s + Overhead, 0, true},
			{DataOffset + s + Overhead + 1, c + 1, false},
			{DataOffset + 3*s + 7 + Overhead, 3*c + 7, false},
			{-1, 0, true},
			{math.MinInt64, 0, true},
		}
		for _, tt := range tests {
			got, err := PlaintextSize(tt.backing, cs)
			if tt.corrupt {
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("cs %d: PlaintextSize(%d) = %d, %v; want ErrCorrupt", cs, tt.backing, got, err)
				}
				continue
			}
			if err != nil || got != tt.plain {
				t.Errorf("cs %d: PlaintextSize(%d) = %d, %v; want %d", cs, tt.backing, got, err, tt.plain)
			}
			if tt.backing > 0 {
				if back := CiphertextSize(got, cs); back != tt.backing {
					t.Errorf("cs %d: CiphertextSize(%d) = %d, want %d", cs, got, back, tt.backing)
				}
			}
		}
	}
}

func TestSizeMapRoundTrip(t *testing.T) {
	cs := MinChunkSize
	prev := int64(0)
	for p := int64(0); p < 5*int64(cs)+3; p++ {
		b := CiphertextSize(p, cs)
		if p > 0 && b <= prev {
			t.Fatalf("CiphertextSize not increasing at %d", p)
		}
		prev = b
		if got, err := PlaintextSize(b, cs); err != nil || got != p {
			t.Fatalf("PlaintextSize(CiphertextSize(%d) = %d) = %d, %v", p, b, got, err)
		}
	}
}

func TestMaxPlaintextSize(t *testing.T) {
	for _, cs := range []int{MinChunkSize, DefaultChunkSize, MaxChunkSize} {
		m := MaxPlaintextSize(cs)
		b := CiphertextSize(m, cs)
		if b <= 0 {
			t.Errorf("cs %d: CiphertextSize(max %d) = %d overflows", cs, m, b)
		}
		if got, err := PlaintextSize(b, cs); err != nil || got != m {
			t.Errorf("cs %d: PlaintextSize(%d) = %d, %v; want %d", cs, b, got, err, m)
		}
		if math.MaxInt64-b >= int64(cs)+Overhead {
			t.Errorf("cs %d: max %d is not the largest: one more chunk still fits", cs, m)
		}
		mustPanic(t, "CiphertextSize(max+1)", func() { CiphertextSize(m+1, cs) })
		for _, beyond := range []int64{b + Overhead + 1, b + int64(cs), math.MaxInt64} {
			if beyond < b {
				continue // overflowed: not a backing size
			}
			if p, err := PlaintextSize(beyond, cs); !errors.Is(err, ErrCorrupt) {
				t.Errorf("cs %d: PlaintextSize(%d) beyond max = %d, %v", cs, beyond, p, err)
			}
		}
	}
}

func TestSizeInvalid(t *testing.T) {
	for _, cs := range []int{0, -4096, 256, 511, 513, 4095, 3 * 1024, 2 << 20} {
		if _, err := PlaintextSize(HeaderSize, cs); !errors.Is(err, ErrCorrupt) {
			t.Errorf("PlaintextSize with chunk size %d: %v, want ErrCorrupt", cs, err)
		}
		mustPanic(t, "CiphertextSize bad chunk size", func() { CiphertextSize(1, cs) })
	}
	mustPanic(t, "CiphertextSize(-1)", func() { CiphertextSize(-1, DefaultChunkSize) })
}

func mustPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	fn()
}
