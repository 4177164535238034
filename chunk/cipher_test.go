package chunk

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the implementation")

// vectorFile is the layout of testdata/vectors.json.
type vectorFile struct {
	Comment string      `json:"comment"`
	Sets    []vectorSet `json:"sets"`
}

type vectorSet struct {
	Key       string         `json:"key"`
	ChunkSize int            `json:"chunk_size"`
	FileID    string         `json:"file_id"`
	Headers   []vectorHeader `json:"headers"`
	Chunks    []vectorChunk  `json:"chunks"`
}

type vectorHeader struct {
	Flags  uint8  `json:"flags"`
	Nonce  string `json:"nonce"`
	Header string `json:"header"`
}

type vectorChunk struct {
	Index     uint64 `json:"index"`
	Final     bool   `json:"final"`
	Plaintext string `json:"plaintext"`
	Nonce     string `json:"nonce"`
	Sealed    string `json:"sealed"`
}

// pattern returns n deterministic bytes.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// seqKey is the fixed DEK of tests and vectors: 0x00, 0x01, … 0x1f.
func seqKey() []byte {
	k := make([]byte, DEKSize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// newTestCipher returns a Cipher over the fixed key with a fixed file ID,
// compression testCompression and testCodecs (see compress_test.go).
func newTestCipher(t testing.TB, chunkSize int) *Cipher {
	t.Helper()
	return newTestCipherCodecs(t, chunkSize, testCompression, testCodecs)
}

// newTestCipherCodecs is newTestCipher for a file with compression comp,
// given codecs.
func newTestCipherCodecs(t testing.TB, chunkSize int, comp Compression, codecs Codecs) *Cipher {
	t.Helper()
	h, err := newHeader(chunkSize, bytes.NewReader(pattern(FileIDSize, 0xa0)))
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCipher(seqKey(), h.WithCompression(comp), codecs)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func generateVectors(t *testing.T) vectorFile {
	vf := vectorFile{Comment: "kmsfs chunk format v1 known-answer vectors; see FORMAT.md. " +
		"Regenerate only for a new format version: go test ./chunk -run TestVectors -update"}
	for _, cs := range []int{MinChunkSize, DefaultChunkSize} {
		c := newTestCipher(t, cs)
		set := vectorSet{
			Key:       hex.EncodeToString(seqKey()),
			ChunkSize: cs,
			FileID:    c.Header().FileID.String(),
		}
		for k, flags := range []uint8{0, FlagHasData, FlagHasData | FlagSparse} {
			hn := pattern(NonceSize, byte(0x10+k))
			hb, err := c.marshalHeader(flags, bytes.NewReader(hn))
			if err != nil {
				t.Fatal(err)
			}
			set.Headers = append(set.Headers, vectorHeader{
				Flags: flags, Nonce: hex.EncodeToString(hn), Header: hex.EncodeToString(hb),
			})
		}
		for k, ch := range []struct {
			index uint64
			n     int
			final bool
		}{{0, 1, true}, {1, cs - 1, true}, {2, cs, false}, {2, cs, true}, {1 << 40, 17, true}, {math.MaxUint64 - 1, cs, false}} {
			pt := pattern(ch.n, byte(k))
			nonce := pattern(NonceSize, byte(0x30+k))
			sealed := c.seal(nil, pt, ch.index, ch.final, bytes.NewReader(nonce))
			set.Chunks = append(set.Chunks, vectorChunk{
				Index: ch.index, Final: ch.final, Plaintext: hex.EncodeToString(pt),
				Nonce: hex.EncodeToString(nonce), Sealed: hex.EncodeToString(sealed),
			})
		}
		vf.Sets = append(vf.Sets, set)
	}
	return vf
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVectors pins the format: the implementation must reproduce the
// checked-in vectors, and an independent construction from FORMAT.md (raw
// AES-GCM with the documented AAD) must agree with them.
func TestVectors(t *testing.T) {
	path := filepath.Join("testdata", "vectors.json")
	if *update {
		b, err := json.MarshalIndent(generateVectors(t), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Sets) == 0 {
		t.Fatal("no vector sets")
	}
	for _, set := range vf.Sets {
		key := unhex(t, set.Key)
		var id FileID
		copy(id[:], unhex(t, set.FileID))
		h := Header{Version: 1, Algorithm: AES256GCM, ChunkSize: uint32(set.ChunkSize), FileID: id}
		c, err := NewCipher(key, h, testCodecs)
		if err != nil {
			t.Fatal(err)
		}

		// Independent construction straight from FORMAT.md.
		block, _ := aes.NewCipher(key)
		gcm, _ := cipher.NewGCM(block)
		immutable := make([]byte, 0, 27)
		immutable = append(immutable, "KMSF"...)
		immutable = binary.BigEndian.AppendUint16(immutable, 1)
		immutable = append(immutable, 1)
		immutable = binary.BigEndian.AppendUint32(immutable, uint32(set.ChunkSize))
		immutable = append(immutable, id[:]...)
		if len(set.Headers) == 0 || len(set.Chunks) == 0 {
			t.Fatal("empty vector set")
		}
		for _, vh := range set.Headers {
			want := unhex(t, vh.Header)
			hn := unhex(t, vh.Nonce)
			fields := append(append([]byte{}, immutable...), vh.Flags)
			spec := append(append(append([]byte{}, fields...), hn...), gcm.Seal(nil, hn, nil, append([]byte("H"), fields...))...)
			if !bytes.Equal(spec, want) {
				t.Errorf("cs %d flags %#x: header vector disagrees with FORMAT.md:\n got %x\nwant %x", set.ChunkSize, vh.Flags, want, spec)
			}
			got, err := c.marshalHeader(vh.Flags, bytes.NewReader(hn))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("cs %d flags %#x: marshalHeader = %x, %v\nwant %x", set.ChunkSize, vh.Flags, got, err, want)
			}
			wh := h
			wh.Flags = vh.Flags
			if oh, err := c.OpenHeader(want); err != nil || oh != wh {
				t.Errorf("cs %d flags %#x: OpenHeader(vector) = %+v, %v", set.ChunkSize, vh.Flags, oh, err)
			}
			if ph, err := ParseHeader(want); err != nil || ph != wh {
				t.Errorf("cs %d flags %#x: ParseHeader(vector) = %+v, %v", set.ChunkSize, vh.Flags, ph, err)
			}
		}

		for _, ch := range set.Chunks {
			pt, nonce, sealed := unhex(t, ch.Plaintext), unhex(t, ch.Nonce), unhex(t, ch.Sealed)
			aad := append([]byte("C"), immutable...)
			aad = binary.BigEndian.AppendUint64(aad, ch.Index)
			final := byte(0)
			if ch.Final {
				final = 1
			}
			aad = append(aad, final)
			spec := append(append([]byte{}, nonce...), gcm.Seal(nil, nonce, pt, aad)...)
			if !bytes.Equal(spec, sealed) {
				t.Errorf("cs %d chunk %d: vector disagrees with FORMAT.md", set.ChunkSize, ch.Index)
			}
			if got := c.seal(nil, pt, ch.Index, ch.Final, bytes.NewReader(nonce)); !bytes.Equal(got, sealed) {
				t.Errorf("cs %d chunk %d: seal = %x\nwant %x", set.ChunkSize, ch.Index, got, sealed)
			}
			if got, err := c.OpenChunk(nil, sealed, ch.Index, ch.Final); err != nil || !bytes.Equal(got, pt) {
				t.Errorf("cs %d chunk %d: OpenChunk(vector) = %x, %v", set.ChunkSize, ch.Index, got, err)
			}
			if _, err := c.OpenChunk(nil, sealed, ch.Index, !ch.Final); !errors.Is(err, ErrAuthentication) {
				t.Errorf("cs %d chunk %d: opened with the wrong final flag: %v", set.ChunkSize, ch.Index, err)
			}
		}
	}
}

func TestNewCipherErrors(t *testing.T) {
	h, err := NewHeader(DefaultChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 16, 24, 31, 33} {
		key := bytes.Repeat([]byte{0xee}, n)
		_, err := NewCipher(key, h, testCodecs)
		if err == nil {
			t.Errorf("NewCipher with %d-byte key succeeded", n)
		} else if n > 0 && strings.Contains(err.Error(), "ee") {
			t.Errorf("error leaks key bytes: %v", err)
		}
	}
	bad := h
	bad.Version = 2
	if _, err := NewCipher(seqKey(), bad, testCodecs); !errors.Is(err, ErrCorrupt) {
		t.Errorf("NewCipher(version 2) = %v, want ErrCorrupt", err)
	}
	// The key is copied: zeroing it afterwards must not matter.
	key := seqKey()
	c, err := NewCipher(key, h, testCodecs)
	if err != nil {
		t.Fatal(err)
	}
	sealed := c.Seal(nil, []byte("x"), 0)
	clear(key)
	c2, _ := NewCipher(seqKey(), h, testCodecs)
	if _, err := c2.Open(nil, sealed, 0); err != nil {
		t.Errorf("open after zeroing caller's key: %v", err)
	}
	if _, err := c.Open(nil, c2.Seal(nil, []byte("y"), 0), 0); err != nil {
		t.Errorf("cipher changed after zeroing caller's key: %v", err)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	c := newTestCipher(t, DefaultChunkSize)
	a, err := c.MarshalHeader()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.MarshalHeader()
	if len(a) != HeaderSize {
		t.Fatalf("header is %d bytes", len(a))
	}
	if bytes.Equal(a[28:40], b[28:40]) {
		t.Error("two headers share a nonce")
	}
	for _, hb := range [][]byte{a, b, append(append([]byte{}, a...), 1, 2, 3)} {
		if err := c.VerifyHeader(hb); err != nil {
			t.Errorf("VerifyHeader: %v", err)
		}
	}
	if err := c.VerifyHeader(a[:HeaderSize-1]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("VerifyHeader(short) = %v, want ErrCorrupt", err)
	}
}

func TestHeaderBitFlips(t *testing.T) {
	c := newTestCipher(t, DefaultChunkSize)
	hb, err := c.MarshalHeader()
	if err != nil {
		t.Fatal(err)
	}
	for bit := 0; bit < HeaderSize*8; bit++ {
		b := append([]byte{}, hb...)
		b[bit/8] ^= 1 << (bit % 8)
		err := c.VerifyHeader(b)
		if err == nil {
			t.Fatalf("VerifyHeader accepted a flip of bit %d", bit)
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrAuthentication) {
			t.Fatalf("flip of bit %d: unexpected error %v", bit, err)
		}
		var ae *AuthError
		if errors.As(err, &ae) && ae.Chunk != HeaderChunk {
			t.Fatalf("flip of bit %d: AuthError names chunk %d", bit, ae.Chunk)
		}
	}
	// Another key must not verify the header.
	other, _ := NewCipher(bytes.Repeat([]byte{1}, DEKSize), c.Header(), testCodecs)
	if err := other.VerifyHeader(hb); !errors.Is(err, ErrAuthentication) {
		t.Errorf("VerifyHeader under another key = %v", err)
	}
}

func TestSealOpen(t *testing.T) {
	c := newTestCipher(t, MinChunkSize)
	for _, n := range []int{1, 2, 100, MinChunkSize - 1, MinChunkSize} {
		pt := pattern(n, 3)
		prefix := []byte("prefix")
		sealed := c.Seal(append([]byte{}, prefix...), pt, 9)
		if !bytes.HasPrefix(sealed, prefix) || len(sealed) != len(prefix)+SealedSize(n) {
			t.Fatalf("Seal(%d) did not append %d bytes", n, SealedSize(n))
		}
		got, err := c.Open([]byte("p"), sealed[len(prefix):], 9)
		if err != nil || !bytes.Equal(got, append([]byte("p"), pt...)) {
			t.Fatalf("Open(%d) = %v", n, err)
		}
		again := c.Seal(nil, pt, 9)
		if bytes.Equal(again[:NonceSize], sealed[len(prefix):len(prefix)+NonceSize]) {
			t.Fatal("two seals share a nonce")
		}
	}
	mustPanic(t, "Seal(empty)", func() { c.Seal(nil, nil, 0) })
	mustPanic(t, "Seal(too long)", func() { c.Seal(nil, make([]byte, MinChunkSize+1), 0) })
	for _, n := range []int{0, 1, Overhead, MinChunkSize + Overhead + 1} {
		_, err := c.Open(nil, make([]byte, n), 0)
		var ae *AuthError
		if !errors.As(err, &ae) || ae.Chunk != 0 || ae.FileID != c.Header().FileID {
			t.Errorf("Open(%d bytes) = %v, want *AuthError for chunk 0", n, err)
		}
	}
}

// TestChunkBitFlips flips every bit of a sealed chunk (nonce, ciphertext,
// tag) and every AAD input (chunk index, file ID, chunk size): each must
// fail Open.
func TestChunkBitFlips(t *testing.T) {
	c := newTestCipher(t, MinChunkSize)
	const index = 5
	for _, n := range []int{1, 33, MinChunkSize} {
		sealed := c.Seal(nil, pattern(n, 1), index)
		for bit := 0; bit < len(sealed)*8; bit++ {
			b := append([]byte{}, sealed...)
			b[bit/8] ^= 1 << (bit % 8)
			if _, err := c.Open(nil, b, index); !errors.Is(err, ErrAuthentication) {
				t.Fatalf("len %d: flip of bit %d: Open = %v", n, bit, err)
			}
		}
		for bit := 0; bit < 64; bit++ {
			if _, err := c.Open(nil, sealed, index^1<<bit); !errors.Is(err, ErrAuthentication) {
				t.Fatalf("len %d: index with bit %d flipped: Open = %v", n, bit, err)
			}
		}
		for bit := 0; bit < FileIDSize*8; bit++ {
			h := c.Header()
			h.FileID[bit/8] ^= 1 << (bit % 8)
			other, err := NewCipher(seqKey(), h, testCodecs)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := other.Open(nil, sealed, index); !errors.Is(err, ErrAuthentication) {
				t.Fatalf("len %d: file ID bit %d flipped: Open = %v", n, bit, err)
			}
		}
		for cs := MinChunkSize * 2; cs <= MaxChunkSize; cs *= 2 {
			h := c.Header()
			h.ChunkSize = uint32(cs)
			other, _ := NewCipher(seqKey(), h, testCodecs)
			if _, err := other.Open(nil, sealed, index); !errors.Is(err, ErrAuthentication) {
				t.Fatalf("len %d: chunk size %d: Open = %v", n, cs, err)
			}
		}
		if _, err := c.Open(nil, sealed[:len(sealed)-1], index); !errors.Is(err, ErrAuthentication) {
			t.Fatalf("len %d: truncated chunk opened", n)
		}
	}
}

// TestAADFieldsBound checks, with the raw AEAD, that every byte of the
// chunk AAD (domain, immutable header fields, index, final byte) is bound,
// that the header flags are not (so rewriting them keeps chunks valid), and
// that header and chunk tags are separated by domain.
func TestAADFieldsBound(t *testing.T) {
	c := newTestCipher(t, MinChunkSize)
	pt := pattern(40, 2)
	for pos := 0; pos < len(c.chunkAAD); pos++ {
		for bit := 0; bit < 8; bit++ {
			aad := c.chunkAAD
			binary.BigEndian.PutUint64(aad[1+immutableSize:], 3)
			aad[pos] ^= 1 << bit
			nonce := pattern(NonceSize, 9)
			sealed := append(append([]byte{}, nonce...), c.aead.Seal(nil, nonce, pt, aad[:])...)
			// Sealed as a middle chunk (final byte 0) with one AAD bit
			// flipped; flipping the low bit of the final byte gives final 1.
			if _, err := c.OpenChunk(nil, sealed, 3, false); !errors.Is(err, ErrAuthentication) {
				t.Fatalf("chunk sealed with AAD byte %d bit %d flipped opened", pos, bit)
			}
			_, err := c.OpenChunk(nil, sealed, 3, true)
			if isFinalBit := pos == chunkAADSize-1 && bit == 0; isFinalBit != (err == nil) {
				t.Fatalf("AAD byte %d bit %d flipped: OpenChunk(final) = %v", pos, bit, err)
			}
		}
	}
	// A Cipher built from a header with other flags opens the same chunks.
	for _, flags := range []uint8{FlagHasData, FlagSparse, FlagHasData | FlagSparse} {
		h := c.Header()
		h.Flags = flags
		other, err := NewCipher(seqKey(), h, testCodecs)
		if err != nil {
			t.Fatal(err)
		}
		for _, final := range []bool{false, true} {
			sealed := c.SealChunk(nil, pt, 7, final)
			if _, err := other.OpenChunk(nil, sealed, 7, final); err != nil {
				t.Errorf("flags %#x: chunk no longer opens: %v", flags, err)
			}
		}
	}
	// A header tag computed with the chunk domain must not verify.
	hb, _ := c.MarshalHeader()
	aad := append([]byte("C"), hb[:headerFieldsSize]...)
	copy(hb[headerFieldsSize+NonceSize:], c.aead.Seal(nil, hb[headerFieldsSize:headerFieldsSize+NonceSize], nil, aad))
	if err := c.VerifyHeader(hb); !errors.Is(err, ErrAuthentication) {
		t.Errorf("header tag in the chunk domain verified: %v", err)
	}
}

// TestHeaderFlags checks that the flags are authenticated by the header tag
// but may differ from the Cipher's, and that unknown bits are rejected.
func TestHeaderFlags(t *testing.T) {
	c := newTestCipher(t, DefaultChunkSize)
	for _, flags := range []uint8{0, FlagHasData, FlagSparse, FlagHasData | FlagSparse} {
		hb, err := c.MarshalHeaderFlags(flags)
		if err != nil {
			t.Fatal(err)
		}
		h, err := c.OpenHeader(hb)
		if err != nil || h.Flags != flags || h.FileID != c.Header().FileID {
			t.Fatalf("OpenHeader(flags %#x) = %+v, %v", flags, h, err)
		}
		if err := c.VerifyHeader(hb); err != nil {
			t.Errorf("VerifyHeader(flags %#x): %v", flags, err)
		}
		// Editing the flags without the key is detected.
		for _, other := range []uint8{0, FlagHasData, FlagSparse, FlagHasData | FlagSparse} {
			if other == flags {
				continue
			}
			b := append([]byte{}, hb...)
			b[flagsOffset] = other
			var ae *AuthError
			if err := c.VerifyHeader(b); !errors.As(err, &ae) || ae.Chunk != HeaderChunk {
				t.Errorf("flags %#x edited to %#x: VerifyHeader = %v", flags, other, err)
			}
		}
	}
	for bit := 2; bit < 8; bit++ {
		if bit == 4 || bit == 5 {
			continue // compression s2 and zstd, see TestCompressionHeader
		}
		hb, _ := c.MarshalHeader()
		hb[flagsOffset] = 1 << bit
		if _, err := ParseHeader(hb); !errors.Is(err, ErrCorrupt) {
			t.Errorf("flag bit %d: ParseHeader = %v, want ErrCorrupt", bit, err)
		}
		h := c.Header()
		h.Flags = 1 << bit
		if _, err := NewCipher(seqKey(), h, testCodecs); !errors.Is(err, ErrCorrupt) {
			t.Errorf("flag bit %d: NewCipher = %v, want ErrCorrupt", bit, err)
		}
		mustPanic(t, "MarshalHeaderFlags(unknown)", func() { c.MarshalHeaderFlags(1 << bit) })
	}
}

func TestParseHeaderErrors(t *testing.T) {
	c := newTestCipher(t, DefaultChunkSize)
	good, _ := c.MarshalHeader()
	tests := []struct {
		name   string
		mutate func(b []byte)
	}{
		{"magic", func(b []byte) { b[0] = 'k' }},
		{"version 0", func(b []byte) { binary.BigEndian.PutUint16(b[4:], 0) }},
		{"version 2", func(b []byte) { binary.BigEndian.PutUint16(b[4:], 2) }},
		{"algorithm 0", func(b []byte) { b[6] = 0 }},
		{"algorithm 2", func(b []byte) { b[6] = 2 }},
		{"flags reserved bit", func(b []byte) { b[27] = 4 }},
		{"flags compression nibble 3", func(b []byte) { b[27] = 0x30 }},
		{"flags compression nibble 15", func(b []byte) { b[27] = 0xf0 }},
		{"chunk size 0", func(b []byte) { binary.BigEndian.PutUint32(b[7:], 0) }},
		{"chunk size 256", func(b []byte) { binary.BigEndian.PutUint32(b[7:], 256) }},
		{"chunk size 4097", func(b []byte) { binary.BigEndian.PutUint32(b[7:], 4097) }},
		{"chunk size 2 MiB", func(b []byte) { binary.BigEndian.PutUint32(b[7:], 2<<20) }},
		{"chunk size max", func(b []byte) { binary.BigEndian.PutUint32(b[7:], math.MaxUint32) }},
	}
	for _, tt := range tests {
		b := append([]byte{}, good...)
		tt.mutate(b)
		if _, err := ParseHeader(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: ParseHeader = %v, want ErrCorrupt", tt.name, err)
		}
	}
	for n := 0; n < HeaderSize; n++ {
		if _, err := ParseHeader(good[:n]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ParseHeader(%d bytes) = %v", n, err)
		}
	}
}

func TestNewHeader(t *testing.T) {
	a, err := NewHeader(DefaultChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewHeader(DefaultChunkSize)
	if a.FileID == b.FileID {
		t.Error("two headers share a file ID")
	}
	if a.Version != FormatVersion || a.Algorithm != AES256GCM || a.Flags != 0 || a.ChunkSize != DefaultChunkSize {
		t.Errorf("NewHeader = %+v", a)
	}
	if s := a.FileID.String(); len(s) != 32 || strings.ToLower(s) != s {
		t.Errorf("FileID.String() = %q", s)
	}
	for _, cs := range []int{0, 511, 1000, 2 << 20} {
		if _, err := NewHeader(cs); !errors.Is(err, ErrCorrupt) {
			t.Errorf("NewHeader(%d) = %v", cs, err)
		}
	}
	if AES256GCM.String() != "AES-256-GCM" || Algorithm(7).String() != "unknown(7)" {
		t.Error("Algorithm.String")
	}
}
