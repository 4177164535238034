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

// AuthError reports which part of which file failed authentication. It
// matches ErrAuthentication with errors.Is.
type AuthError struct {
	FileID FileID
	// Chunk is the index of the chunk that failed, or HeaderChunk for the header.
	Chunk uint64
}

// HeaderChunk is the AuthError.Chunk value that designates the header.
const HeaderChunk = math.MaxUint64

func (e *AuthError) Error() string {
	if e.Chunk == HeaderChunk {
		return fmt.Sprintf("chunk: authentication failed: file %s header", e.FileID)
	}
	return fmt.Sprintf("chunk: authentication failed: file %s chunk %d", e.FileID, e.Chunk)
}

// Is makes errors.Is(err, ErrAuthentication) true for an *AuthError.
func (e *AuthError) Is(target error) bool { return target == ErrAuthentication }

// Domain separators at the start of the AAD; see FORMAT.md.
const (
	headerDomain = 'H'
	chunkDomain  = 'C'
)

// chunkAADSize is the size of a chunk's AAD: "C" ‖ header fields ‖ uint64 index.
const chunkAADSize = 1 + headerFieldsSize + 8

// Cipher seals and opens the header and the chunks of one file under the
// file's DEK. It is safe for concurrent use.
//
// Every seal draws a random 96-bit nonce, so one DEK must not seal more than
// 2^32 chunks and headers over its life (NIST SP 800-38D; the chance of a
// repeated nonce then stays below 2^-33). Each file has its own DEK, which
// puts the limit at 2^32 chunk writes per file: 16 TiB written into one file
// with 4096-byte chunks. The Cipher does not count seals.
type Cipher struct {
	aead      cipher.AEAD
	header    Header
	headerAAD [1 + headerFieldsSize]byte
	// chunkAAD is the chunk AAD with a zero index; Seal and Open copy it and
	// fill in the index.
	chunkAAD [chunkAADSize]byte
	// aads recycles *[chunkAADSize]byte: an AAD passed to the AEAD interface
	// escapes to the heap, and one allocation per chunk adds up.
	aads sync.Pool
}

// NewCipher returns a Cipher for the file with header h under the 32-byte
// dek. The key is expanded into the Cipher, so the caller may zero dek
// afterwards. The error never contains key bytes.
func NewCipher(dek []byte, h Header) (*Cipher, error) {
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
	c := &Cipher{aead: aead, header: h}
	f := h.fields()
	c.headerAAD[0] = headerDomain
	copy(c.headerAAD[1:], f[:])
	c.chunkAAD[0] = chunkDomain
	copy(c.chunkAAD[1:], f[:])
	return c, nil
}

// Header returns the header the Cipher was built for.
func (c *Cipher) Header() Header { return c.header }

// ChunkSize returns the plaintext size of a full chunk.
func (c *Cipher) ChunkSize() int { return int(c.header.ChunkSize) }

// MarshalHeader returns the HeaderSize-byte header: the header fields, a
// fresh random nonce and the tag over them.
func (c *Cipher) MarshalHeader() ([]byte, error) {
	return c.marshalHeader(rand.Reader)
}

// marshalHeader is MarshalHeader with the nonce source as a parameter, for
// known-answer tests; production code always passes crypto/rand.Reader.
func (c *Cipher) marshalHeader(random io.Reader) ([]byte, error) {
	b := make([]byte, headerFieldsSize, HeaderSize)
	copy(b, c.headerAAD[1:])
	nonce := b[headerFieldsSize : headerFieldsSize+NonceSize]
	b = b[:headerFieldsSize+NonceSize]
	if _, err := io.ReadFull(random, nonce); err != nil {
		return nil, fmt.Errorf("chunk: generating header nonce: %w", err)
	}
	return c.aead.Seal(b, nonce, nil, c.headerAAD[:]), nil
}

// VerifyHeader checks that b starts with a header whose fields equal
// c.Header() and whose tag verifies under the DEK. A malformed header gives
// an error wrapping ErrCorrupt; any other mismatch an *AuthError for the
// header.
func (c *Cipher) VerifyHeader(b []byte) error {
	h, err := ParseHeader(b)
	if err != nil {
		return err
	}
	authErr := &AuthError{FileID: h.FileID, Chunk: HeaderChunk}
	if subtle.ConstantTimeCompare(b[:headerFieldsSize], c.headerAAD[1:]) != 1 {
		return authErr
	}
	nonce := b[headerFieldsSize : headerFieldsSize+NonceSize]
	tag := b[headerFieldsSize+NonceSize : HeaderSize]
	if _, err := c.aead.Open(nil, nonce, tag, c.headerAAD[:]); err != nil {
		return authErr
	}
	return nil
}

// SealedSize returns the stored size of a chunk with plain bytes of plaintext.
func SealedSize(plain int) int { return plain + Overhead }

// Seal encrypts plain as chunk index of the file and appends nonce ‖
// ciphertext ‖ tag (len(plain)+Overhead bytes) to dst, returning the updated
// slice. The nonce is fresh from crypto/rand. plain must hold 1 to
// ChunkSize() bytes; anything else is a caller bug and panics. To reuse
// plain's storage for the output, plain must be exactly NonceSize bytes
// past the end of dst; otherwise dst and plain must not overlap.
func (c *Cipher) Seal(dst, plain []byte, index uint64) []byte {
	return c.seal(dst, plain, index, rand.Reader)
}

// seal is Seal with the nonce source as a parameter, for known-answer tests;
// production code always passes crypto/rand.Reader.
func (c *Cipher) seal(dst, plain []byte, index uint64, random io.Reader) []byte {
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
	aad := c.aad(index)
	c.aead.Seal(out[NonceSize:NonceSize], nonce, plain, aad[:])
	c.aads.Put(aad)
	return ret
}

// Open authenticates and decrypts sealed, which must be chunk index of the
// file, and appends the plaintext (len(sealed)-Overhead bytes) to dst,
// returning the updated slice. On failure, including a sealed length outside
// Overhead+1 to ChunkSize()+Overhead, it returns an *AuthError and dst
// unchanged. Open does not treat all-zero input as a hole; File does. dst
// and sealed must not overlap.
func (c *Cipher) Open(dst, sealed []byte, index uint64) ([]byte, error) {
	if len(sealed) <= Overhead || len(sealed) > c.ChunkSize()+Overhead {
		return dst, &AuthError{FileID: c.header.FileID, Chunk: index}
	}
	aad := c.aad(index)
	out, err := c.aead.Open(dst, sealed[:NonceSize], sealed[NonceSize:], aad[:])
	c.aads.Put(aad)
	if err != nil {
		return dst, &AuthError{FileID: c.header.FileID, Chunk: index}
	}
	return out, nil
}

// aad returns the AAD of chunk index in a pooled buffer; the caller puts it
// back into c.aads.
func (c *Cipher) aad(index uint64) *[chunkAADSize]byte {
	aad, ok := c.aads.Get().(*[chunkAADSize]byte)
	if !ok {
		aad = new([chunkAADSize]byte)
	}
	*aad = c.chunkAAD
	binary.BigEndian.PutUint64(aad[1+headerFieldsSize:], index)
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
