package chunk

import (
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// memBacking is an in-memory Backing that zero-fills on extension, like a
// file system, and records the calls made on it.
type memBacking struct {
	mu     sync.RWMutex
	data   []byte
	writes []span // every WriteAt, in order

	reads atomic.Int64 // ReadAt calls
	// failWrite, when set, makes WriteAt and Truncate fail.
	failWrite error
}

type span struct{ off, n int64 }

func (m *memBacking) ReadAt(p []byte, off int64) (int, error) {
	m.reads.Add(1)
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memBacking) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWrite != nil {
		return 0, m.failWrite
	}
	m.writes = append(m.writes, span{off, int64(len(p))})
	if end := off + int64(len(p)); end > int64(len(m.data)) {
		m.data = append(m.data, make([]byte, end-int64(len(m.data)))...)
	}
	return copy(m.data[off:], p), nil
}

func (m *memBacking) Truncate(size int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWrite != nil {
		return m.failWrite
	}
	if size <= int64(len(m.data)) {
		m.data = m.data[:size]
	} else {
		m.data = append(m.data, make([]byte, size-int64(len(m.data)))...)
	}
	return nil
}

func (m *memBacking) Stat() (os.FileInfo, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return memInfo(len(m.data)), nil
}

// bytes returns a copy of the backing contents.
func (m *memBacking) bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte{}, m.data...)
}

func (m *memBacking) set(b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = append([]byte{}, b...)
}

func (m *memBacking) resetWrites() []span {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.writes
	m.writes = nil
	return w
}

type memInfo int64

func (i memInfo) Name() string       { return "mem" }
func (i memInfo) Size() int64        { return int64(i) }
func (i memInfo) Mode() fs.FileMode  { return 0o600 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

var _ Backing = (*memBacking)(nil)
var _ Backing = (*os.File)(nil)
