// Package testlog is for tests only: Buffer captures log output that a
// server or mount writes from its own goroutines while the test reads it.
// It imports only the standard library, so that any package's tests may
// use it (integration excepted: it imports nothing of the project).
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer guarded by a mutex: Write and String are safe
// for concurrent use. The zero value is an empty buffer ready for use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
