// Package codec holds the compression codecs of kmsfs: S2 and Zstandard
// from github.com/klauspost/compress, as chunk.Compressor values. Package
// chunk defines the compressed-chunk format but stays free of third-party
// code, so it does not know these codecs: whoever builds a chunk.Cipher
// hands it the codecs (All, once per program, wired by cmd/kmsfs), and a
// file whose header names a codec it was not given does not open.
package codec

import (
	"errors"
	"fmt"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/kmsfs/kmsfs/chunk"
)

// All returns every codec of the format, for chunk.NewCipher: S2 and a new
// Zstandard codec (whose encoder and decoder hold some memory, so build it
// once per program and share it; it is safe for concurrent use).
func All() chunk.Codecs { return chunk.Codecs{S2(), Zstd()} }

// S2 returns the S2 codec (chunk.CompressionS2).
func S2() chunk.Compressor { return s2Codec{} }

// Zstd returns a new Zstandard codec (chunk.CompressionZstd).
func Zstd() chunk.Compressor { return newZstdCodec() }

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
//
// The encoder settings were chosen by measurement (codec/bench_test.go,
// BenchmarkZstdOptions; doc/OPERATIONS.md, "Compression"). SpeedFastest compresses a
// 64 KiB chunk of Go source in about 3/4 of SpeedDefault's time and
// almost-random data in half of it, for compressed chunks about 8 % longer,
// which costs 2.7 % more blocks on Go's source tree (whole blocks are
// what is saved). WithLowerEncoderMem changes nothing measurable in the
// speed of EncodeAll and saves about 250 KiB per encoder. The encoders
// number GOMAXPROCS (the default concurrency): more run no faster, fewer
// make parallel writers wait. The window is the largest chunk, which the
// decoder enforces.
func newZstdCodec() zstdCodec {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderCRC(false),
		zstd.WithLowerEncoderMem(true),
		zstd.WithWindowSize(chunk.MaxChunkSize),
	)
	if err != nil {
		panic("codec: internal error: zstd encoder: " + err.Error())
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(chunk.MaxChunkSize),
		zstd.WithDecoderMaxWindow(chunk.MaxChunkSize),
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		panic("codec: internal error: zstd decoder: " + err.Error())
	}
	return zstdCodec{enc: enc, dec: dec}
}

func (zstdCodec) Compression() chunk.Compression { return chunk.CompressionZstd }

// Compress declines (appends nothing) a chunk that worthCompressing
// judges incompressible; chunk then stores it raw.
func (c zstdCodec) Compress(dst, src []byte) []byte {
	if !worthCompressing(src) {
		return dst
	}
	return c.enc.EncodeAll(src, dst)
}

// Sampling of worthCompressing: probeSamples stretches of probeStretch
// bytes, for chunks of at least probeMinLen bytes.
const (
	probeSamples = 4
	probeStretch = 2 << 10
	probeMinLen  = 16 << 10
	// probeOutLen is room for S2's worst case on the sample
	// (s2.MaxEncodedLen, checked by a test).
	probeOutLen = probeSamples*probeStretch + probeSamples*probeStretch/4
)

// worthCompressing is a quick estimate of whether zstd would shrink src
// enough to matter. zstd is at its slowest on data that is almost but not
// quite incompressible (already compressed files, fio's buffers): it keeps
// finding odd short matches, takes about as long as on text (tens of
// times as long as on random data) and saves a few per cent, which frees
// one block of a slot's tail at most (whole blocks are the only saving).
// So for a chunk of probeMinLen bytes or more, S2 compresses a sample —
// probeSamples stretches spread evenly over src, concatenated so that
// data repeating across the chunk still shows — in 2–12 µs, and src is
// worth compressing if the sample shrinks by 1/8 (two 4 KiB blocks of a
// 64 KiB chunk). Smaller chunks always are: zstd is cheap on them and the
// probe would be a large share of the work. Measured (doc/OPERATIONS.md,
// "Compression"): the probe costs 0.3 % more blocks on Go's source tree,
// and data that compresses by less than 1/8 keeps its full size.
func worthCompressing(src []byte) bool {
	if len(src) < probeMinLen {
		return true
	}
	var sample [probeSamples * probeStretch]byte
	var out [probeOutLen]byte
	step := len(src) / probeSamples
	for i := range probeSamples {
		copy(sample[i*probeStretch:(i+1)*probeStretch], src[i*step:])
	}
	n := len(s2.Encode(out[:], sample[:]))
	return n <= len(sample)-len(sample)/8
}

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
