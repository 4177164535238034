package kmsserver

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keysvc/local"
)

// testClock is a settable clock shared by a test's Store and Server.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *testClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// privateDir returns a new empty directory of mode 0700, as local.Open
// wants a keystore directory: t.TempDir makes its directories 0777 &^
// umask.
func privateDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "keystore")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// openStore opens a Store in dir with a cheap scrypt cost and clk, closed
// when the test ends.
func openStore(t testing.TB, dir string, clk *testClock) *local.Store {
	t.Helper()
	s, err := local.Open(dir, local.Options{ScryptLogN: 4, Now: clk.Now})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
