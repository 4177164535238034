package chunk

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"math/rand/v2"
	"testing"
)

var benchChunkSizes = []int{512, 4096, 16384, 65536}

// BenchmarkSeal and BenchmarkOpen measure one chunk against the raw AEAD
// (BenchmarkRawGCMSeal): the difference is this package's overhead.
func BenchmarkSeal(b *testing.B) {
	for _, n := range []int{4 << 10, 16 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			c := newTestCipher(b, max(n, MinChunkSize))
			plain := make([]byte, n)
			dst := make([]byte, 0, n+Overhead)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				c.Seal(dst, plain, uint64(i))
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, n := range []int{4 << 10, 16 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			c := newTestCipher(b, n)
			sealed := c.Seal(nil, make([]byte, n), 3)
			dst := make([]byte, 0, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Open(dst, sealed, 3); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRawGCMSeal(b *testing.B) {
	for _, n := range []int{4 << 10, 16 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			block, _ := aes.NewCipher(seqKey())
			gcm, _ := cipher.NewGCM(block)
			plain := make([]byte, n)
			dst := make([]byte, 0, n+TagSize)
			nonce := make([]byte, NonceSize)
			aad := make([]byte, chunkAADSize)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				gcm.Seal(dst, nonce, plain, aad)
			}
		})
	}
}

// benchFileSize is the size of the file the File benchmarks cycle through,
// so that memory stays bounded however long they run.
const benchFileSize = 16 << 20

// BenchmarkFileWriteAt overwrites 1 MiB sequentially per call, over an
// in-memory backing file: the cost of the format layer, without the disk.
func BenchmarkFileWriteAt(b *testing.B) {
	for _, cs := range benchChunkSizes {
		b.Run(fmt.Sprint(cs), func(b *testing.B) {
			f := NewFile(&memBacking{}, newTestCipher(b, cs))
			p := make([]byte, 1<<20)
			// Overwrite a file of full size, so that the in-memory backing
			// does not grow while measuring.
			if _, err := f.WriteAt(make([]byte, benchFileSize), 0); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				off := int64(i*len(p)) % benchFileSize
				if _, err := f.WriteAt(p, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFileReadAt reads 1 MiB sequentially per call.
func BenchmarkFileReadAt(b *testing.B) {
	for _, cs := range benchChunkSizes {
		b.Run(fmt.Sprint(cs), func(b *testing.B) {
			f := NewFile(&memBacking{}, newTestCipher(b, cs))
			p := make([]byte, 1<<20)
			for off := 0; off < benchFileSize; off += len(p) {
				if _, err := f.WriteAt(p, int64(off)); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				off := int64(i*len(p)) % benchFileSize
				if _, err := f.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFileRandomWrite4K writes 4 KiB at random 4 KiB-aligned offsets:
// chunks larger than 4 KiB pay a read-modify-write.
func BenchmarkFileRandomWrite4K(b *testing.B) {
	benchRandom4K(b, func(f *File, p []byte, off int64) error {
		_, err := f.WriteAt(p, off)
		return err
	})
}

// BenchmarkFileRandomRead4K reads 4 KiB at random 4 KiB-aligned offsets:
// chunks larger than 4 KiB decrypt more than is read.
func BenchmarkFileRandomRead4K(b *testing.B) {
	benchRandom4K(b, func(f *File, p []byte, off int64) error {
		_, err := f.ReadAt(p, off)
		return err
	})
}

func benchRandom4K(b *testing.B, op func(f *File, p []byte, off int64) error) {
	for _, cs := range benchChunkSizes {
		b.Run(fmt.Sprint(cs), func(b *testing.B) {
			f := NewFile(&memBacking{}, newTestCipher(b, cs))
			if _, err := f.WriteAt(make([]byte, benchFileSize), 0); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			p := make([]byte, 4096)
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				if err := op(f, p, rng.Int64N(benchFileSize/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
