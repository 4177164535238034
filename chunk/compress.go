package chunk

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Compression of chunk contents (FORMAT.md, "Compressed chunks"). The
// package stays pure: it defines the wire format and the identifiers, and
// the caller hands the codecs to NewCipher (package codec has s2 and zstd
// from github.com/klauspost/compress).

// Compression identifies the compression algorithm of a file, stored in the
// high nibble of the header flags. It is chosen when the file is created
// and never changes.
type Compression uint8

// Compression algorithms of format version 1.
const (
	// CompressionNone: every chunk is stored raw (the only kind before
	// compression existed).
	CompressionNone Compression = 0
	// CompressionS2: chunks may be stored compressed with S2 (block format).
	CompressionS2 Compression = 1
	// CompressionZstd: chunks may be stored compressed with Zstandard (one
	// frame per chunk).
	CompressionZstd Compression = 2
	// maxCompression is the largest identifier this package knows.
	maxCompression = CompressionZstd
)

// compressionShift and compressionMask place the algorithm in the flags byte.
const (
	compressionShift       = 4
	compressionMask  uint8 = 0xf0
)

// String returns the algorithm's name as `kmsfs init --compress` spells it.
func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionS2:
		return "s2"
	case CompressionZstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// ParseCompression returns the algorithm named s ("none", "s2" or "zstd").
func ParseCompression(s string) (Compression, error) {
	for c := CompressionNone; c <= maxCompression; c++ {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("chunk: unknown compression %q (want none, s2 or zstd)", s)
}

// Compression returns the file's compression algorithm, from the high
// nibble of the flags.
func (h Header) Compression() Compression { return Compression(h.Flags >> compressionShift) }

// WithCompression returns h with its compression algorithm set to c; used
// on a new header before the file's first write.
func (h Header) WithCompression(c Compression) Header {
	h.Flags = h.Flags&^compressionMask | uint8(c)<<compressionShift
	return h
}

// Compressor is a codec for one Compression. Implementations must be safe
// for concurrent use.
type Compressor interface {
	// Compression is the identifier the codec implements.
	Compression() Compression
	// Compress appends the compressed form of src to dst and returns the
	// extended slice. The output may be longer than src (the caller then
	// stores the chunk raw). A codec may also append nothing, declining
	// src as not worth compressing (a cheap estimate saying it would save
	// little): the caller then stores the chunk raw as well.
	Compress(dst, src []byte) []byte
	// Decompress appends the decoded src, which must be exactly size bytes,
	// to dst and returns the extended slice. It must not allocate much more
	// than size bytes whatever src holds, and it fails if src does not
	// decode to exactly size bytes.
	Decompress(dst, src []byte, size int) ([]byte, error)
}

// Codecs are the compression codecs a Cipher may use, at most one per
// Compression. The caller builds them and passes them to NewCipher, which
// picks the one the file's header names; nil holds none, which opens only
// files without compression.
type Codecs []Compressor

// ErrNoCodec: a file's header names a compression for which the caller
// provided no codec (Codecs.Lookup, NewCipher).
var ErrNoCodec = errors.New("chunk: no codec provided for the file's compression")

// Lookup returns the codec of id in cs: nil for CompressionNone, the first
// codec whose Compression is id, or an error wrapping ErrNoCodec.
func (cs Codecs) Lookup(id Compression) (Compressor, error) {
	if id == CompressionNone {
		return nil, nil
	}
	for _, c := range cs {
		if c != nil && c.Compression() == id {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNoCodec, id)
}

// Compressed chunk layout, at the start of the chunk's slot of
// len(plain)+Overhead bytes (FORMAT.md, "Compressed chunks"):
//
//	'Z' ‖ uint24 N ‖ nonce (12) ‖ GCM(compressed, N bytes) ‖ tag (16) ‖ zeros
//
// The record must leave at least TagSize zero bytes at the end of the slot,
// which is what tells it from a raw chunk (whose slot ends in a tag).
const (
	compressedMarker = 'Z'
	// compressedPrefix is the marker and the length.
	compressedPrefix = 4
	// compressedOverhead is what a compressed record adds to the compressed
	// bytes.
	compressedOverhead = compressedPrefix + NonceSize + TagSize
	// compressedDomain starts the AAD of a compressed chunk.
	compressedDomain = 'Z'
	// compressedAADSize is the chunk AAD with the compression identifier.
	compressedAADSize = chunkAADSize + 1
)

// maxCompressedLen returns the largest compressed length N that fits the
// slot of a chunk of plain bytes with TagSize zero bytes to spare; < 1 when
// no compressed record fits.
func maxCompressedLen(plain int) int {
	return plain + Overhead - TagSize - compressedOverhead
}

// isCompressedSlot reports whether the stored bytes of a chunk have the
// shape of a compressed record: the marker first and a zero tail. It does
// not authenticate anything.
func isCompressedSlot(sealed []byte) bool {
	return len(sealed) > compressedOverhead+TagSize && sealed[0] == compressedMarker &&
		allZero(sealed[len(sealed)-TagSize:])
}

// sealCompressed tries to store plain as a compressed record in out, the
// chunk's slot (len(plain)+Overhead bytes, which may overlap plain). It
// returns the record length, or 0 (out untouched) when the codec declines
// plain or the compressed form does not fit, and the chunk must be stored
// raw.
func (c *Cipher) sealCompressed(out, plain []byte, index uint64, final bool, random io.Reader) int {
	limit := maxCompressedLen(len(plain))
	if limit < 1 {
		return 0
	}
	bp := c.getCompBuf()
	defer c.comps.Put(bp)
	z := c.comp.Compress((*bp)[:0], plain)
	if len(z) == 0 || len(z) > limit {
		if cap(z) > cap(*bp) {
			*bp = z[:0]
		}
		return 0
	}
	n := len(z)
	out[0] = compressedMarker
	out[1], out[2], out[3] = byte(n>>16), byte(n>>8), byte(n)
	nonce := out[compressedPrefix : compressedPrefix+NonceSize]
	if _, err := io.ReadFull(random, nonce); err != nil {
		panic("chunk: internal error: reading nonce: " + err.Error())
	}
	aad := c.compressedAAD(index, final)
	used := len(c.aead.Seal(out[compressedPrefix+NonceSize:compressedPrefix+NonceSize], nonce, z, aad[:]))
	used += compressedPrefix + NonceSize
	clear(out[used:])
	return used
}

// openCompressed authenticates and decodes the compressed record in sealed
// (a slot of plain length len(sealed)-Overhead) and appends the plaintext
// to dst. Any malformation, a failed tag, or a payload that does not decode
// to exactly the slot's plain length is an *AuthError (ReasonTag).
func (c *Cipher) openCompressed(dst, sealed []byte, index uint64, final bool) ([]byte, error) {
	authErr := &AuthError{FileID: c.header.FileID, Chunk: index}
	plainLen := len(sealed) - Overhead
	n := int(sealed[1])<<16 | int(sealed[2])<<8 | int(sealed[3])
	used := compressedOverhead + n
	if n < 1 || n > maxCompressedLen(plainLen) || !allZero(sealed[used:]) {
		return dst, authErr
	}
	bp := c.getCompBuf()
	defer c.comps.Put(bp)
	aad := c.compressedAAD(index, final)
	z, err := c.aead.Open((*bp)[:0], sealed[compressedPrefix:compressedPrefix+NonceSize],
		sealed[compressedPrefix+NonceSize:used], aad[:])
	if err != nil {
		return dst, authErr
	}
	out, err := c.comp.Decompress(dst, z, plainLen)
	if err != nil || len(out)-len(dst) != plainLen {
		// Only a holder of the DEK can produce this: a writer bug or a
		// codec that disagrees with the one that wrote the chunk.
		return dst, authErr
	}
	return out, nil
}

// compressedAAD returns the AAD of compressed chunk index: "Z" ‖ immutable
// fields ‖ uint64 index ‖ final ‖ compression identifier.
func (c *Cipher) compressedAAD(index uint64, final bool) [compressedAADSize]byte {
	var aad [compressedAADSize]byte
	copy(aad[:], c.chunkAAD[:])
	aad[0] = compressedDomain
	binary.BigEndian.PutUint64(aad[1+immutableSize:], index)
	if final {
		aad[chunkAADSize-1] = 1
	}
	aad[chunkAADSize] = byte(c.comp.Compression())
	return aad
}

// getCompBuf returns a pooled buffer for compressed bytes of one chunk.
func (c *Cipher) getCompBuf() *[]byte {
	if bp, ok := c.comps.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, c.ChunkSize()+Overhead)
	return &b
}

// SealSlot is SealChunk that also reports how many bytes at the start of
// the returned len(plain)+Overhead bytes hold data: len(plain)+Overhead
// for a raw chunk, fewer for a compressed one, whose remaining bytes are
// zeros the caller may leave as a hole (see [Puncher]).
func (c *Cipher) SealSlot(dst, plain []byte, index uint64, final bool) (out []byte, used int) {
	return c.sealSlot(dst, plain, index, final, rand.Reader)
}

func (c *Cipher) sealSlot(dst, plain []byte, index uint64, final bool, random io.Reader) ([]byte, int) {
	if c.comp != nil && len(plain) > 0 && len(plain) <= c.ChunkSize() {
		ret, slot := sliceForAppend(dst, len(plain)+Overhead)
		if used := c.sealCompressed(slot, plain, index, final, random); used > 0 {
			return ret, used
		}
	}
	out := c.seal(dst, plain, index, final, random)
	return out, len(plain) + Overhead
}
