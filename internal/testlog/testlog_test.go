package testlog

import (
	"strings"
	"sync"
	"testing"
)

// TestBufferConcurrent writes from several goroutines while reading (run
// with -race) and checks that every write arrives whole.
func TestBufferConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	const writers, lines = 4, 100
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < lines; i++ {
				b.Write([]byte("line\n"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("line\n", writers*lines) {
		t.Errorf("got %d bytes, want %d", len(got), writers*lines*5)
	}
}
