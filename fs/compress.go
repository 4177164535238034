package fs

import (
	"errors"
	"fmt"
	"os"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
)

// Compression codecs for package chunk, which defines the compressed-chunk
// format but stays free of third-party code: this file supplies s2 and
// zstd from github.com/klauspost/compress and registers them when the
// package is loaded, so every chunk.Cipher built in this program (mount,
// fsck, info, rewrap, rekey) can open compressed files.

func init() {
	chunk.RegisterCompressor(s2Codec{})
	chunk.RegisterCompressor(newZstdCodec())
}

// s2Codec is S2 in its block format (no framing, no checksum: GCM
// authenticates every chunk).
type s2Codec struct{}

func (s2Codec) Compression() chunk.Compression { return chunk.CompressionS2 }

func (s2Codec) Compress(dst, src []byte) []byte {
	n := s2.MaxEncodedLen(len(src))
	out, tail := grow(dst, n)
	z := s2.Encode(tail[:n], src)
	return out[:len(dst)+len(z)]
}

func (s2Codec) Decompress(dst, src []byte, size int) ([]byte, error) {
	n, err := s2.DecodedLen(src)
	if err != nil {
		return dst, err
	}
	if n != size {
		return dst, fmt.Errorf("s2: block decodes to %d bytes, want %d", n, size)
	}
	out, tail := grow(dst, size)
	got, err := s2.Decode(tail[:size], src)
	if err != nil {
		return dst, err
	}
	if len(got) != size || (size > 0 && &got[0] != &tail[0]) {
		return dst, errors.New("s2: block decoded elsewhere")
	}
	return out, nil
}

// zstdCodec is Zstandard, one frame per chunk, without the frame checksum.
type zstdCodec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// newZstdCodec builds the shared encoder and decoder; both are safe for
// concurrent EncodeAll and DecodeAll calls.
func newZstdCodec() zstdCodec {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderCRC(false),
		zstd.WithLowerEncoderMem(true),
		zstd.WithWindowSize(chunk.MaxChunkSize),
	)
	if err != nil {
		panic("fs: zstd encoder: " + err.Error())
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(chunk.MaxChunkSize),
		zstd.WithDecoderMaxWindow(chunk.MaxChunkSize),
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		panic("fs: zstd decoder: " + err.Error())
	}
	return zstdCodec{enc: enc, dec: dec}
}

func (zstdCodec) Compression() chunk.Compression { return chunk.CompressionZstd }

func (c zstdCodec) Compress(dst, src []byte) []byte { return c.enc.EncodeAll(src, dst) }

func (c zstdCodec) Decompress(dst, src []byte, size int) ([]byte, error) {
	// With the cap limit, DecodeAll never writes past cap(d): give it room
	// for exactly size bytes, so a frame that says otherwise fails.
	out, _ := grow(dst, size)
	d := out[: len(dst) : len(dst)+size]
	got, err := c.dec.DecodeAll(src, d)
	if err != nil {
		return dst, err
	}
	if len(got) != len(dst)+size {
		return dst, fmt.Errorf("zstd: frame decodes to %d bytes, want %d", len(got)-len(dst), size)
	}
	return out, nil
}

// grow extends b by n bytes, reallocating if needed, and returns the whole
// slice and the n new bytes.
func grow(b []byte, n int) (whole, tail []byte) {
	if total := len(b) + n; cap(b) >= total {
		whole = b[:total]
	} else {
		whole = make([]byte, total)
		copy(whole, b)
	}
	return whole, whole[len(b):]
}

// DefaultCompressedChunkSize is the chunk size `kmsfs init --compress`
// picks unless told otherwise: a compressed chunk saves disk space only in
// whole blocks of its slot's tail (see the README, "Compression").
const DefaultCompressedChunkSize = 64 << 10

// Compression returns the configured compression of new files; an empty
// or missing field is none.
func (c Config) Compression() chunk.Compression {
	comp, err := chunk.ParseCompression(c.Compress)
	if err != nil || c.Compress == "" {
		return chunk.CompressionNone
	}
	return comp
}

// validCompress checks Config.Compress.
func validCompress(s string) error {
	if s == "" {
		return nil
	}
	if _, err := chunk.ParseCompression(s); err != nil {
		return fmt.Errorf("config: compress must be none, s2 or zstd, got %q", s)
	}
	return nil
}

// newHeader returns the header of a new file of this tree: the configured
// chunk size and compression, a fresh file ID.
func (r *root) newHeader() (chunk.Header, error) {
	h, err := chunk.NewHeader(r.cfg.ChunkSize)
	if err != nil {
		return chunk.Header{}, err
	}
	return h.WithCompression(r.cfg.Compression()), nil
}

// punchingFile is a backing *os.File that can punch holes, so that the
// unused tails of compressed chunks take no disk space (chunk.Puncher).
type punchingFile struct{ *os.File }

// PunchHole deallocates length bytes at off, keeping the file size. File
// systems without hole punching answer EOPNOTSUPP, which matches
// errors.ErrUnsupported and makes chunk.File stop trying.
func (p punchingFile) PunchHole(off, length int64) error {
	return unix.Fallocate(int(p.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// PunchBacking returns f as a chunk.Backing that punches the unused tails
// of compressed chunks.
func PunchBacking(f *os.File) chunk.Backing { return punchingFile{f} }
