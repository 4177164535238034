package fs

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/kmsfs/kmsfs/chunk"
)

// BenchmarkCompressedSeal and BenchmarkCompressedOpen measure one chunk of
// Go source (text) or random bytes sealed and opened by a Cipher with each
// compression, against none: the cost of compressing per chunk.
//
//	go test ./fs -run '^$' -bench Compressed -benchtime 200ms
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
	for _, comp := range []chunk.Compression{chunk.CompressionNone, chunk.CompressionS2, chunk.CompressionZstd} {
		for _, n := range []int{4 << 10, 64 << 10} {
			for _, data := range []struct {
				name string
				b    []byte
			}{{"text", text[:n]}, {"random", random[:n]}} {
				b.Run(fmt.Sprintf("%s/%dKiB/%s", comp, n>>10, data.name), func(b *testing.B) {
					h, err := chunk.NewHeader(n)
					if err != nil {
						b.Fatal(err)
					}
					c, err := chunk.NewCipher(make([]byte, chunk.DEKSize), h.WithCompression(comp))
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
