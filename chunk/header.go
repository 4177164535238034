// Package chunk implements the kmsfs content format: a 56-byte authenticated
// header followed by chunks of AES-256-GCM ciphertext, each with its own
// random nonce and tag. FORMAT.md in this directory is the byte-exact
// specification; this package is its only implementation.
//
// The package is pure: it imports only the standard library and knows nothing
// of FUSE or key services. A caller obtains the file's DEK elsewhere, builds a
// [Cipher] from it and the file's [Header], and reads and writes plaintext
// through a [File] over the backing file.
package chunk

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// Sizes and limits of format version 1. See FORMAT.md.
const (
	// FormatVersion is the only header version this package reads and writes.
	FormatVersion = 1
	// HeaderSize is the size of the header at the start of every non-empty
	// backing file.
	HeaderSize = 56
	// SlotSize is the size of the key-record slot right after the header: a
	// recoverable copy of the file's wrapped data key (see MarshalSlot).
	SlotSize = 456
	// DataOffset is where chunk 0 starts: after the header and the slot. A
	// backing file of an empty file (header written) is DataOffset bytes.
	DataOffset = HeaderSize + SlotSize
	// NonceSize is the size of the random GCM nonce of the header and of each chunk.
	NonceSize = 12
	// TagSize is the size of the GCM tag of the header and of each chunk.
	TagSize = 16
	// Overhead is the number of bytes a stored chunk has beyond its plaintext.
	Overhead = NonceSize + TagSize
	// DefaultChunkSize is the chunk size new trees get unless told otherwise.
	DefaultChunkSize = 4096
	// MinChunkSize and MaxChunkSize bound the chunk size; it must also be a
	// power of two.
	MinChunkSize = 512
	MaxChunkSize = 1 << 20
	// FileIDSize is the size of the random file ID in the header.
	FileIDSize = 16
	// DEKSize is the size of a data encryption key (AES-256).
	DEKSize = 32
)

// Header layout (see FORMAT.md): the immutable fields (magic, version,
// algorithm, chunk size, file ID) come first, then the flags byte, the header
// nonce and the header tag.
const (
	// immutableSize is the size of the immutable fields, bytes 0-26: they
	// never change over a file's life and are bound into every chunk's AAD.
	immutableSize = 27
	// flagsOffset is the offset of the mutable flags byte.
	flagsOffset = immutableSize
	// headerFieldsSize is the size of the header fields: the immutable fields
	// and the flags, everything the header tag authenticates.
	headerFieldsSize = immutableSize + 1
)

// Header flags (FORMAT.md, "Flags"). Writers change them only on the
// transitions described there; the header tag covers them, chunk AADs do not.
const (
	// FlagHasData says the file has had at least one chunk since it was
	// created or last truncated to 0: a backing file holding only a header
	// with this flag set has been truncated by someone else.
	FlagHasData uint8 = 1 << 0
	// FlagSparse says the file may contain holes (all-zero chunks that read
	// as zeros). It is set before the first write or truncate that leaves a
	// gap and never cleared. Without it, an all-zero chunk is tampering.
	FlagSparse uint8 = 1 << 1
	// knownFlags are the flags of format version 1. Bits 2-3 are reserved;
	// bits 4-7 hold the compression algorithm (see Header.Compression). A
	// reader rejects a header with any other bit set.
	knownFlags = FlagHasData | FlagSparse
)

// magic starts every header.
const magic = "KMSF"

// Algorithm identifies the AEAD of a file's chunks.
type Algorithm uint8

// AES256GCM is AES-256 in Galois/Counter Mode with 96-bit random nonces and
// 128-bit tags, the only algorithm of format version 1.
const AES256GCM Algorithm = 1

// String returns the algorithm's name, or "unknown(N)".
func (a Algorithm) String() string {
	if a == AES256GCM {
		return "AES-256-GCM"
	}
	return fmt.Sprintf("unknown(%d)", uint8(a))
}

// FileID is the random 128-bit identity of a file, chosen when the file is
// created. It is bound into every chunk's AAD and, by the caller, into the
// encryption context of the file's DEK.
type FileID [FileIDSize]byte

// String returns the file ID as 32 lower-case hex digits.
func (id FileID) String() string { return hex.EncodeToString(id[:]) }

// Header is the decoded part of a backing file's header: everything except
// the header nonce and tag. Flags is the only field that changes over a
// file's life (see FlagHasData and FlagSparse).
type Header struct {
	Version   uint16
	Algorithm Algorithm
	Flags     uint8
	ChunkSize uint32
	FileID    FileID
}

// ErrCorrupt reports a malformed header or a backing file size that no
// plaintext size maps to. Errors wrapping it carry the detail.
var ErrCorrupt = errors.New("chunk: corrupt file")

// ErrFileTooLarge reports a write or truncate beyond the largest plaintext
// size whose backing size fits in an int64 (see MaxPlaintextSize).
var ErrFileTooLarge = errors.New("chunk: file too large")

// NewHeader returns a version 1 AES-256-GCM header with the given chunk size
// and a random file ID from crypto/rand.
func NewHeader(chunkSize int) (Header, error) {
	return newHeader(chunkSize, rand.Reader)
}

// newHeader is NewHeader with the source of the file ID as a parameter, so that
// tests can build reproducible headers.
func newHeader(chunkSize int, random io.Reader) (Header, error) {
	if err := checkChunkSize(int64(chunkSize)); err != nil {
		return Header{}, err
	}
	h := Header{Version: FormatVersion, Algorithm: AES256GCM, ChunkSize: uint32(chunkSize)}
	if _, err := io.ReadFull(random, h.FileID[:]); err != nil {
		return Header{}, fmt.Errorf("chunk: generating file ID: %w", err)
	}
	return h, nil
}

// ParseHeader decodes the header at the start of b, which must hold at least
// HeaderSize bytes; bytes after the header are ignored. It checks the
// structure only (magic, version, algorithm, chunk size, flags): the header
// tag needs the DEK and is checked by [Cipher.VerifyHeader]. Errors wrap
// ErrCorrupt.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("chunk: header is %d bytes, want %d: %w", len(b), HeaderSize, ErrCorrupt)
	}
	if string(b[0:4]) != magic {
		return Header{}, fmt.Errorf("chunk: bad header magic %q: %w", b[0:4], ErrCorrupt)
	}
	h := Header{
		Version:   binary.BigEndian.Uint16(b[4:6]),
		Algorithm: Algorithm(b[6]),
		ChunkSize: binary.BigEndian.Uint32(b[7:11]),
		Flags:     b[flagsOffset],
	}
	copy(h.FileID[:], b[11:immutableSize])
	if err := h.validate(); err != nil {
		return Header{}, err
	}
	return h, nil
}

// validate reports whether h is a header this package can read and write.
func (h Header) validate() error {
	if h.Version != FormatVersion {
		return fmt.Errorf("chunk: unsupported format version %d: %w", h.Version, ErrCorrupt)
	}
	if h.Algorithm != AES256GCM {
		return fmt.Errorf("chunk: unsupported algorithm %s: %w", h.Algorithm, ErrCorrupt)
	}
	if h.Flags&^(knownFlags|compressionMask) != 0 || h.Compression() > maxCompression {
		return fmt.Errorf("chunk: unsupported header flags %#x: %w", h.Flags, ErrCorrupt)
	}
	return checkChunkSize(int64(h.ChunkSize))
}

// fields returns the 28 header fields, the part of the header covered by
// the header tag; the first immutableSize of them are bound into every
// chunk's AAD.
func (h Header) fields() [headerFieldsSize]byte {
	var f [headerFieldsSize]byte
	copy(f[0:4], magic)
	binary.BigEndian.PutUint16(f[4:6], h.Version)
	f[6] = byte(h.Algorithm)
	binary.BigEndian.PutUint32(f[7:11], h.ChunkSize)
	copy(f[11:immutableSize], h.FileID[:])
	f[flagsOffset] = h.Flags
	return f
}

// checkChunkSize reports whether n is a valid chunk size: a power of two
// from MinChunkSize to MaxChunkSize. Errors wrap ErrCorrupt.
func checkChunkSize(n int64) error {
	if n < MinChunkSize || n > MaxChunkSize || bits.OnesCount64(uint64(n)) != 1 {
		return fmt.Errorf("chunk: invalid chunk size %d (want a power of two from %d to %d): %w",
			n, MinChunkSize, MaxChunkSize, ErrCorrupt)
	}
	return nil
}

// MaxPlaintextSize returns the largest plaintext size a file with the given
// chunk size may have: the largest multiple of chunkSize whose backing size
// fits in an int64 (about 8 EiB). It panics if chunkSize is invalid.
func MaxPlaintextSize(chunkSize int) int64 {
	mustChunkSize(chunkSize)
	sealed := int64(chunkSize) + Overhead
	return (math.MaxInt64 - DataOffset) / sealed * int64(chunkSize)
}

// CiphertextSize returns the size of the backing file, header and slot
// included, that holds plain bytes of plaintext: DataOffset for an empty
// file. It panics
// (a caller bug) if chunkSize is invalid or plain is negative or larger than
// MaxPlaintextSize(chunkSize).
func CiphertextSize(plain int64, chunkSize int) int64 {
	if plain < 0 || plain > MaxPlaintextSize(chunkSize) {
		panic(fmt.Sprintf("chunk: internal error: plaintext size %d out of range", plain))
	}
	c := int64(chunkSize)
	size := DataOffset + plain/c*(c+Overhead)
	if rem := plain % c; rem > 0 {
		size += rem + Overhead
	}
	return size
}

// PlaintextSize returns the plaintext size of a backing file of backing
// bytes. Both 0 (header not yet written) and DataOffset (header and slot,
// no chunk) mean an empty file. Sizes that no plaintext size maps to
// (shorter than the header and slot, ending in a
// chunk of Overhead bytes or fewer, or beyond MaxPlaintextSize) and invalid
// chunk sizes give an error wrapping ErrCorrupt.
func PlaintextSize(backing int64, chunkSize int) (int64, error) {
	if err := checkChunkSize(int64(chunkSize)); err != nil {
		return 0, err
	}
	if backing == 0 {
		return 0, nil
	}
	if backing < DataOffset {
		return 0, fmt.Errorf("chunk: backing size %d is shorter than the header and key-record slot: %w", backing, ErrCorrupt)
	}
	c := int64(chunkSize)
	sealed := c + Overhead
	n := backing - DataOffset
	full, rem := n/sealed, n%sealed
	if rem == 0 {
		return full * c, nil
	}
	if rem <= Overhead {
		return 0, fmt.Errorf("chunk: backing size %d ends in a %d-byte chunk: %w", backing, rem, ErrCorrupt)
	}
	p := full*c + rem - Overhead
	if p > MaxPlaintextSize(chunkSize) {
		return 0, fmt.Errorf("chunk: backing size %d exceeds the largest file: %w", backing, ErrCorrupt)
	}
	return p, nil
}

// mustChunkSize panics if n is not a valid chunk size; it guards pure
// functions whose callers have validated the chunk size already.
func mustChunkSize(n int) {
	if checkChunkSize(int64(n)) != nil {
		panic(fmt.Sprintf("chunk: internal error: invalid chunk size %d", n))
	}
}

// isZero reports whether b consists of zero bytes only.
func isZero(b []byte) bool {
	// Real chunks end in a random-looking tag, so look there first.
	if len(b) >= TagSize && !allZero(b[len(b)-TagSize:]) {
		return false
	}
	return allZero(b)
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	return len(bytes.TrimLeft(b, "\x00")) == 0
}
