package chunk

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
)

// This file holds every AEAD call of the package, so that the cryptography
// can be reviewed in one sitting. See FORMAT.md for the byte layout.

// ErrAuthentication is returned, wrapped in an *AuthError, when a header or
// chunk fails authentication. It deliberately says nothing about why.
var ErrAuthentication = errors.New("chunk: authentication failed")

// AuthError reports which part of which file failed authentication, and
// how. It matches ErrAuthentication with errors.Is.
type AuthError struct {
	FileID FileID
	// Chunk is the index of the chunk that failed, or HeaderChunk for the header.
	Chunk uint64
	// Reason says what was wrong; the zero value is ReasonTag.
	Reason AuthReason
}

// HeaderChunk is the AuthError.Chunk value that designates the header.
const HeaderChunk = math.MaxUint64

// AuthReason classifies an authentication failure. It never carries key
// material or plaintext.
type AuthReason uint8

const (
	// ReasonTag: the tag did not verify (bit flip, chunks swapped, a chunk
	// or header from another file or key, a cut or torn chunk).
	ReasonTag AuthReason = iota
	// ReasonTruncated: chunks are missing at the end. Either the last chunk
	// (AuthError.Chunk) verifies only as a middle chunk, so the file was cut
	// at a chunk boundary, or the backing file holds only a header that says
	// the file has data (AuthError.Chunk is 0: the file was truncated to
	// empty).
	ReasonTruncated
	// ReasonHole: an all-zero chunk where no hole may be: in a file whose
	// header lacks FlagSparse, or as the last chunk of any file.
	ReasonHole
)

// String returns the reason in a few words.
func (r AuthReason) String() string {
	switch r {
	case ReasonTag:
		return "tag mismatch"
	case ReasonTruncated:
		return "truncated"
	case ReasonHole:
		return "unexpected hole"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

func (e *AuthError) Error() string {
	where := fmt.Sprintf("chunk %d", e.Chunk)
	if e.Chunk == HeaderChunk {
		where = "header"
	}
	if e.Reason == ReasonTag {
		return fmt.Sprintf("chunk: authentication failed: file %s %s", e.FileID, where)
	}
	return fmt.Sprintf("chunk: authentication failed: file %s %s: %s", e.FileID, where, e.Reason)
}

// Is makes errors.Is(err, ErrAuthentication) true for an *AuthError.
func (e *AuthError) Is(target error) bool { return target == ErrAuthentication }

// Domain separators at the start of the AAD; see FORMAT.md.
const (
	headerDomain = 'H'
	chunkDomain  = 'C'
)

// chunkAADSize is the size of a chunk's AAD: "C" ‖ immutable header fields ‖
// uint64 index ‖ final byte.
const chunkAADSize = 1 + immutableSize + 8 + 1

// Cipher seals and opens the header and the chunks of one file under the
// file's DEK. It is safe for concurrent use.
//
// Every seal draws a random 96-bit nonce, so one DEK must not seal more than
// 2^32 chunks and headers over its life (NIST SP 800-38D; the chance of a
// repeated nonce then stays below 2^-33). Each file has its own DEK, which
// puts the limit at 2^32 chunk writes per file: 16 TiB written into one file
// with 4096-byte chunks. The Cipher does not count seals.
type Cipher struct {
	aead   cipher.AEAD
	header Header
	// fields are the header fields of c.header; the immutable ones start
	// every header of the file and every chunk AAD.
	fields [headerFieldsSize]byte
	// chunkAAD is the chunk AAD with a zero index and final byte; Seal and
	// Open copy it and fill them in.
	chunkAAD [chunkAADSize]byte
	// aads recycles *[chunkAADSize]byte: an AAD passed to the AEAD interface
	// escapes to the heap, and one allocation per chunk adds up.
	aads sync.Pool
	// comp is the codec of the file's compression, nil for none; comps
	// recycles *[]byte buffers of compressed bytes.
	comp  Compressor
	comps sync.Pool
}

// NewCipher returns a Cipher for the file with header h under the 32-byte
// dek, compressing and decompressing chunks with the codec in codecs that
// h.Compression() names (none is needed for CompressionNone; without it
// the error wraps ErrNoCodec). The key is expanded into the Cipher, so the
// caller may zero dek afterwards. The error never contains key bytes.
func NewCipher(dek []byte, h Header, codecs Codecs) (*Cipher, error) {
	if len(dek) != DEKSize {
		return nil, fmt.Errorf("chunk: data key is %d bytes, want %d", len(dek), DEKSize)
	}
	if err := h.validate(); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, fmt.Errorf("chunk: %w", err)
	}
	aead, err := cipher.NewGCM(block) // 12-byte nonce, 16-byte tag
	if err != nil {
		return nil, fmt.Errorf("chunk: %w", err)
	}
	comp, err := codecs.Lookup(h.Compression())
	if err != nil {
		return nil, err
	}
	c := &Cipher{aead: aead, header: h, comp: comp}
	f := h.fields()
	c.fields = f
	c.chunkAAD[0] = chunkDomain
	copy(c.chunkAAD[1:], f[:immutableSize])
	return c, nil
}

// Header returns the header the Cipher was built for. Its Flags are those
// the header had then; the backing file's flags may have changed since
// (read them with [Cipher.OpenHeader]).
func (c *Cipher) Header() Header { return c.header }

// ChunkSize returns the plaintext size of a full chunk.
func (c *Cipher) ChunkSize() int { return int(c.header.ChunkSize) }

// MarshalHeader returns the HeaderSize-byte header with the flags of
// c.Header(): the header fields, a fresh random nonce and the tag over them.
// A new file's header (from NewHeader) has no flags set.
func (c *Cipher) MarshalHeader() ([]byte, error) {
	return c.marshalHeader(c.header.Flags, rand.Reader)
}

// MarshalHeaderFlags is MarshalHeader with the given flags instead of those
// of c.Header(). Unknown flag bits are a caller bug and panic.
func (c *Cipher) MarshalHeaderFlags(flags uint8) ([]byte, error) {
	return c.marshalHeader(flags, rand.Reader)
}

// marshalHeader is MarshalHeaderFlags with the nonce source as a parameter,
// for known-answer tests; production code always passes crypto/rand.Reader.
func (c *Cipher) marshalHeader(flags uint8, random io.Reader) ([]byte, error) {
	if nib := flags & compressionMask; flags&^(knownFlags|compressionMask) != 0 || (nib != 0 && nib != c.header.Flags&compressionMask) {
		panic(fmt.Sprintf("chunk: internal error: unknown header flags %#x", flags))
	}
	// The compression nibble is the file's for life, whatever the caller
	// passes (callers deal in HAS_DATA and SPARSE).
	flags = flags&knownFlags | c.header.Flags&compressionMask
	b := make([]byte, headerFieldsSize, HeaderSize)
	copy(b, c.fields[:])
	b[flagsOffset] = flags
	nonce := b[headerFieldsSize : headerFieldsSize+NonceSize]
	b = b[:headerFieldsSize+NonceSize]
	if _, err := io.ReadFull(random, nonce); err != nil {
		return nil, fmt.Errorf("chunk: generating header nonce: %w", err)
	}
	var aad [1 + headerFieldsSize]byte
	aad[0] = headerDomain
	copy(aad[1:], b[:headerFieldsSize])
	return c.aead.Seal(b, nonce, nil, aad[:]), nil
}

// VerifyHeader checks that b starts with a header of this file: its
// immutable fields (magic, version, algorithm, chunk size, file ID) equal
// those of c.Header(), its flags are valid, and its tag verifies under the
// DEK. The flags may differ from c.Header().Flags: they change over the
// file's life. A malformed header gives an error wrapping ErrCorrupt; any
// other mismatch an *AuthError for the header.
func (c *Cipher) VerifyHeader(b []byte) error {
	_, err := c.OpenHeader(b)
	return err
}

// OpenHeader is VerifyHeader that also returns the verified header, with
// the flags b carries.
func (c *Cipher) OpenHeader(b []byte) (Header, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return Header{}, err
	}
	authErr := &AuthError{FileID: c.header.FileID, Chunk: HeaderChunk}
	if subtle.ConstantTimeCompare(b[:immutableSize], c.fields[:immutableSize]) != 1 ||
		h.Compression() != c.header.Compression() {
		return Header{}, authErr
	}
	var aad [1 + headerFieldsSize]byte
	aad[0] = headerDomain
	copy(aad[1:], b[:headerFieldsSize])
	nonce := b[headerFieldsSize : headerFieldsSize+NonceSize]
	tag := b[headerFieldsSize+NonceSize : HeaderSize]
	if _, err := c.aead.Open(nil, nonce, tag, aad[:]); err != nil {
		return Header{}, authErr
	}
	return h, nil
}

// SealedSize returns the stored size of a chunk with plain bytes of plaintext.
func SealedSize(plain int) int { return plain + Overhead }

// Seal is SealChunk for a chunk that is not the last of its file.
func (c *Cipher) Seal(dst, plain []byte, index uint64) []byte {
	return c.SealChunk(dst, plain, index, false)
}

// SealChunk encrypts plain as chunk index of the file and appends nonce ‖
// ciphertext ‖ tag (len(plain)+Overhead bytes) to dst, returning the updated
// slice. final says whether the chunk is the last of the file; it is
// authenticated (FORMAT.md, "Final chunk"). The nonce is fresh from
// crypto/rand. plain must hold 1 to ChunkSize() bytes; anything else is a
// caller bug and panics. To reuse plain's storage for the output, plain must
// be exactly NonceSize bytes past the end of dst; otherwise dst and plain
// must not overlap.
//
// In a file with compression, the chunk is stored compressed when that
// fits (FORMAT.md, "Compressed chunks"): the output has the same length,
// a compressed record followed by zeros ([Cipher.SealSlot] says how many
// bytes are data).
func (c *Cipher) SealChunk(dst, plain []byte, index uint64, final bool) []byte {
	if c.comp != nil {
		out, _ := c.sealSlot(dst, plain, index, final, rand.Reader)
		return out
	}
	return c.seal(dst, plain, index, final, rand.Reader)
}

// seal is SealChunk with the nonce source as a parameter, for known-answer
// tests; production code always passes crypto/rand.Reader.
func (c *Cipher) seal(dst, plain []byte, index uint64, final bool, random io.Reader) []byte {
	if len(plain) == 0 || len(plain) > c.ChunkSize() {
		panic(fmt.Sprintf("chunk: internal error: sealing %d bytes with chunk size %d", len(plain), c.ChunkSize()))
	}
	ret, out := sliceForAppend(dst, NonceSize+len(plain)+TagSize)
	nonce := out[:NonceSize]
	if _, err := io.ReadFull(random, nonce); err != nil {
		// crypto/rand.Reader does not fail (Go 1.24+), so this is unreachable
		// in production.
		panic("chunk: internal error: reading nonce: " + err.Error())
	}
	aad := c.aad(index, final)
	c.aead.Seal(out[NonceSize:NonceSize], nonce, plain, aad[:])
	c.aads.Put(aad)
	return ret
}

// Open is OpenChunk for a chunk that is not the last of its file.
func (c *Cipher) Open(dst, sealed []byte, index uint64) ([]byte, error) {
	return c.OpenChunk(dst, sealed, index, false)
}

// OpenChunk authenticates and decrypts sealed, which must be chunk index of
// the file sealed with the same final flag, and appends the plaintext
// (len(sealed)-Overhead bytes) to dst, returning the updated slice. On
// failure, including a sealed length outside Overhead+1 to
// ChunkSize()+Overhead, it returns an *AuthError (ReasonTag) and dst
// unchanged. OpenChunk does not treat all-zero input as a hole and knows
// nothing of a file's size; File applies those rules. dst and sealed must
// not overlap. In a file with compression, a compressed record (see
// SealChunk) is authenticated under its own AAD and decoded; its slot
// length, like a raw chunk's, gives the plaintext length.
func (c *Cipher) OpenChunk(dst, sealed []byte, index uint64, final bool) ([]byte, error) {
	if len(sealed) <= Overhead || len(sealed) > c.ChunkSize()+Overhead {
		return dst, &AuthError{FileID: c.header.FileID, Chunk: index}
	}
	if c.comp != nil && isCompressedSlot(sealed) {
		return c.openCompressed(dst, sealed, index, final)
	}
	aad := c.aad(index, final)
	out, err := c.aead.Open(dst, sealed[:NonceSize], sealed[NonceSize:], aad[:])
	c.aads.Put(aad)
	if err != nil {
		return dst, &AuthError{FileID: c.header.FileID, Chunk: index}
	}
	return out, nil
}

// aad returns the AAD of chunk index in a pooled buffer; the caller puts it
// back into c.aads.
func (c *Cipher) aad(index uint64, final bool) *[chunkAADSize]byte {
	aad, ok := c.aads.Get().(*[chunkAADSize]byte)
	if !ok {
		aad = new([chunkAADSize]byte)
	}
	*aad = c.chunkAAD
	binary.BigEndian.PutUint64(aad[1+immutableSize:], index)
	if final {
		aad[chunkAADSize-1] = 1
	}
	return aad
}

// sliceForAppend extends in by n bytes, reallocating if needed, and returns
// the whole slice and the n new bytes.
func sliceForAppend(in []byte, n int) (whole, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		whole = in[:total]
	} else {
		whole = make([]byte, total)
		copy(whole, in)
	}
	return whole, whole[len(in):]
}
