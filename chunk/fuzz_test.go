package chunk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The seed corpora live in testdata/fuzz/<target>; `go test -update`
// rewrites them from fuzzSeeds, and TestFuzzCorpus fails if one is empty.

// fuzzSeeds returns the seed inputs of each fuzz target.
func fuzzSeeds(t testing.TB) map[string][][]any {
	c := newTestCipher(t, MinChunkSize)
	hb, err := c.marshalHeader(FlagHasData, bytes.NewReader(pattern(NonceSize, 1)))
	if err != nil {
		t.Fatal(err)
	}
	// A valid file of three chunks with a hole in the middle and a short end.
	mem := &memBacking{}
	f := NewFile(mem, c)
	if _, err := f.WriteAt(pattern(10, 3), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(pattern(100, 4), 2*MinChunkSize+1); err != nil {
		t.Fatal(err)
	}
	file := mem.bytes() // sparse: chunk 1 is a hole
	// An ordinary file of three chunks, and the same with chunk 1 zeroed.
	plainMem := &memBacking{}
	if _, err := NewFile(plainMem, c).WriteAt(pattern(3*MinChunkSize-7, 5), 0); err != nil {
		t.Fatal(err)
	}
	ordinary := plainMem.bytes()
	zeroed := append([]byte{}, ordinary...)
	clear(zeroed[DataOffset+MinChunkSize+Overhead : DataOffset+2*(MinChunkSize+Overhead)])
	flipped := append([]byte{}, file...)
	flipped[DataOffset+5] ^= 1
	s := int64(MinChunkSize + Overhead)
	slot, err := MarshalSlot(pattern(300, 7))
	if err != nil {
		t.Fatal(err)
	}
	return map[string][][]any{
		"FuzzParseSlot": {
			{slot},
			{append(slot, 1, 2, 3)},
			{make([]byte, SlotSize)},
			{slot[:SlotSize-1]},
			{append([]byte{0x01, 0xc6}, make([]byte, SlotSize-2)...)},
			{append([]byte{0x01, 0xc7}, make([]byte, SlotSize-2)...)},
			{func() []byte { b := append([]byte{}, slot...); b[SlotSize-1] = 1; return b }()},
		},
		"FuzzParseHeader": {
			{hb},
			{hb[:HeaderSize-1]},
			{[]byte("KMSF")},
			{append([]byte("KMSF\x00\x01\x01\x00\x00\x10\x00"), make([]byte, 45)...)},
			{make([]byte, HeaderSize)},
		},
		"FuzzPlaintextSize": {
			{int64(0), DefaultChunkSize},
			{int64(DataOffset), DefaultChunkSize},
			{int64(5568), DefaultChunkSize},
			{int64(DataOffset + Overhead), MinChunkSize},
			{int64(DataOffset + 3*s + 29), MinChunkSize},
			{int64(math.MaxInt64), MaxChunkSize},
			{int64(-1), DefaultChunkSize},
			{int64(100), 1000},
		},
		"FuzzFileReadAt": {
			{file, int64(0), uint16(3 * MinChunkSize)},
			{file, int64(MinChunkSize - 1), uint16(MinChunkSize + 2)},
			{file[:len(file)-1], int64(2 * MinChunkSize), uint16(50)},
			{flipped, int64(0), uint16(20)},
			{hb, int64(0), uint16(1)},
			{append(hb, make([]byte, SlotSize+3*s)...), int64(600), uint16(1000)},
			{append(hb, make([]byte, SlotSize)...), int64(0), uint16(1)},
			{[]byte{}, int64(5), uint16(5)},
			{ordinary, int64(0), uint16(3 * MinChunkSize)},
			{ordinary[:DataOffset+2*s], int64(MinChunkSize), uint16(10)},
			{zeroed, int64(MinChunkSize + 3), uint16(600)},
		},
	}
}

func TestFuzzCorpus(t *testing.T) {
	seeds := fuzzSeeds(t)
	for name, inputs := range seeds {
		dir := filepath.Join("testdata", "fuzz", name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for i, in := range inputs {
				var b bytes.Buffer
				b.WriteString("go test fuzz v1\n")
				for _, v := range in {
					switch v := v.(type) {
					case []byte:
						fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
					default:
						fmt.Fprintf(&b, "%T(%v)\n", v, v)
					}
				}
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) == 0 {
			t.Errorf("seed corpus %s is missing or empty (%v); run go test -update", dir, err)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	c := newTestCipher(f, DefaultChunkSize)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if fields := h.fields(); !bytes.Equal(fields[:], b[:headerFieldsSize]) {
			t.Fatalf("fields do not round trip: %x vs %x", fields, b[:headerFieldsSize])
		}
		if err := h.validate(); err != nil {
			t.Fatalf("parsed header does not validate: %v", err)
		}
		want := c.Header()
		want.Flags = h.Flags // the only field that may change
		if err := c.VerifyHeader(b); err == nil && h != want {
			t.Fatal("VerifyHeader accepted another file's header")
		}
	})
}

func FuzzPlaintextSize(f *testing.F) {
	f.Fuzz(func(t *testing.T, backing int64, chunkSize int) {
		p, err := PlaintextSize(backing, chunkSize)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if p < 0 || p > MaxPlaintextSize(chunkSize) {
			t.Fatalf("PlaintextSize(%d, %d) = %d out of range", backing, chunkSize, p)
		}
		if backing != 0 {
			if b := CiphertextSize(p, chunkSize); b != backing {
				t.Fatalf("CiphertextSize(PlaintextSize(%d)) = %d", backing, b)
			}
		}
	})
}

// FuzzFileReadAt feeds arbitrary backing files to a File: no operation may
// panic, and reads must keep io.ReaderAt's contract.
func FuzzFileReadAt(f *testing.F) {
	c := newTestCipher(f, MinChunkSize)
	f.Fuzz(func(t *testing.T, backing []byte, off int64, n uint16) {
		mem := &memBacking{data: append([]byte{}, backing...)}
		file := NewFile(mem, c)
		p := make([]byte, n)
		got, err := file.ReadAt(p, off)
		if got < 0 || got > len(p) {
			t.Fatalf("ReadAt returned %d for %d bytes", got, len(p))
		}
		if got < len(p) && err == nil {
			t.Fatalf("short ReadAt (%d of %d) without error", got, len(p))
		}
		if err != nil && err != io.EOF && !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrCorrupt) && off >= 0 {
			t.Fatalf("unexpected error class: %v", err)
		}
		// Writes and truncates over the same damage must fail cleanly too;
		// keep offsets small so the in-memory backing stays small.
		small := int64(uint64(off) % (8 * MinChunkSize))
		_, _ = file.WriteAt(p[:min(len(p), 2*MinChunkSize)], small)
		_ = file.Truncate(int64(n) % (6 * MinChunkSize))
		_, _ = file.ReadAt(p, small)
	})
}
