package codec

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kmsfs/kmsfs/chunk"
)

// BenchmarkCompressedSeal and BenchmarkCompressedOpen measure one chunk of
// Go source (text), random bytes or almost random ones (stamped, like
// fio's buffers) sealed and opened by a Cipher with each compression,
// against none: the cost of compressing per chunk.
//
//	go test ./codec -run '^$' -bench Compressed -benchtime 200ms
func BenchmarkCompressedSeal(b *testing.B) {
	benchCompressed(b, func(b *testing.B, c *chunk.Cipher, plain []byte) {
		dst := make([]byte, 0, len(plain)+chunk.Overhead)
		for i := 0; b.Loop(); i++ {
			c.SealChunk(dst, plain, uint64(i), false)
		}
	})
}

func BenchmarkCompressedOpen(b *testing.B) {
	benchCompressed(b, func(b *testing.B, c *chunk.Cipher, plain []byte) {
		sealed := c.SealChunk(nil, plain, 3, false)
		dst := make([]byte, 0, len(plain))
		for b.Loop() {
			if _, err := c.OpenChunk(dst, sealed, 3, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchCompressed(b *testing.B, op func(b *testing.B, c *chunk.Cipher, plain []byte)) {
	text := goText(b, 64<<10)
	random := make([]byte, 64<<10)
	_, _ = rand.Read(random)
	stamp := stamped(64<<10, 16)
	codecs := All()
	for _, comp := range []chunk.Compression{chunk.CompressionNone, chunk.CompressionS2, chunk.CompressionZstd} {
		for _, n := range []int{4 << 10, 64 << 10} {
			for _, data := range []struct {
				name string
				b    []byte
			}{{"text", text[:n]}, {"random", random[:n]}, {"stamped", stamp[:n]}} {
				b.Run(fmt.Sprintf("%s/%dKiB/%s", comp, n>>10, data.name), func(b *testing.B) {
					h, err := chunk.NewHeader(n)
					if err != nil {
						b.Fatal(err)
					}
					c, err := chunk.NewCipher(make([]byte, chunk.DEKSize), h.WithCompression(comp), codecs)
					if err != nil {
						b.Fatal(err)
					}
					b.SetBytes(int64(n))
					b.ReportAllocs()
					op(b, c, data.b)
				})
			}
		}
	}
}

// BenchmarkZstdOptions compares zstd encoder settings on a 64 KiB chunk
// of text, random and stamped data, with and without the worthCompressing
// probe, reporting the compressed size as a ratio (1 when declined or
// incompressible). The settings of newZstdCodec come from here.
//
//	go test ./codec -run '^$' -bench ZstdOptions -benchtime 40x -count 3 -cpu 1
func BenchmarkZstdOptions(b *testing.B) {
	const n = 64 << 10
	random := make([]byte, n)
	_, _ = rand.Read(random)
	data := []struct {
		name string
		b    []byte
	}{{"text", goText(b, n)}, {"random", random}, {"stamped", stamped(n, 16)}}
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		for _, lowMem := range []bool{true, false} {
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false),
				zstd.WithLowerEncoderMem(lowMem), zstd.WithWindowSize(chunk.MaxChunkSize))
			if err != nil {
				b.Fatal(err)
			}
			for _, probe := range []bool{false, true} {
				for _, d := range data {
					b.Run(fmt.Sprintf("%s/lowmem=%v/probe=%v/%s", level, lowMem, probe, d.name), func(b *testing.B) {
						dst := make([]byte, 0, n+64)
						size := n
						b.SetBytes(n)
						b.ReportAllocs()
						for b.Loop() {
							if probe && !worthCompressing(d.b) {
								size = n
								continue
							}
							size = len(enc.EncodeAll(d.b, dst[:0]))
						}
						b.ReportMetric(float64(size)/n, "ratio")
					})
				}
			}
		}
	}
}

// BenchmarkZstdParallel measures EncodeAll of 64 KiB of text from
// parallel writers with 1, 2 and 4 encoders (newZstdCodec has
// GOMAXPROCS).
//
//	go test ./codec -run '^$' -bench ZstdParallel -benchtime 100x -cpu 2
func BenchmarkZstdParallel(b *testing.B) {
	text := goText(b, 64<<10)
	for _, encoders := range []int{1, 2, 4} {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false),
			zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(chunk.MaxChunkSize), zstd.WithEncoderConcurrency(encoders))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("encoders=%d", encoders), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			b.RunParallel(func(pb *testing.PB) {
				dst := make([]byte, 0, len(text)+64)
				for pb.Next() {
					enc.EncodeAll(text, dst[:0])
				}
			})
		})
	}
}
