package chunk

import (
	"fmt"
	"testing"
)

// BenchmarkFileAppend appends n bytes per call at the end of the file (the
// path that reseals the old last chunk), starting over at benchFileSize.
func BenchmarkFileAppend(b *testing.B) {
	for _, n := range []int{128 << 10, 4096, 1000} {
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			f := NewFile(&memBacking{}, newTestCipher(b, DefaultChunkSize))
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(i) | 1
			}
			var size int64
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if size+int64(n) > benchFileSize {
					if err := f.Truncate(0); err != nil {
						b.Fatal(err)
					}
					size = 0
				}
				if _, err := f.WriteAt(p, size); err != nil {
					b.Fatal(err)
				}
				size += int64(n)
			}
		})
	}
}
