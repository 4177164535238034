package fs

import (
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/kmsfs/kmsfs/names"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		root     bool
		name     string
		reserved bool
	}{
		{true, "kmsfs.conf", true},
		{true, "kmsfs.conf.tmp-123", true},
		{true, "kmsfs.conf.", true},
		{false, "kmsfs.conf", false},
		{false, "kmsfs.conf.tmp-1", false},
		{true, "kmsfs.con", false},
		{true, "kmsfs.confx", false},
		{true, "a", false},
		{true, ".kmsfs.conf", false},
	} {
		b, err := backingName(tc.root, tc.name)
		if tc.reserved {
			if !errors.Is(err, errReservedName) {
				t.Errorf("backingName(%v, %q) = %q, %v; want errReservedName", tc.root, tc.name, b, err)
			}
		} else if err != nil || b != tc.name {
			t.Errorf("backingName(%v, %q) = %q, %v; want identity", tc.root, tc.name, b, err)
		}
		p, ok := plainName(tc.root, tc.name)
		if ok == tc.reserved || (ok && p != tc.name) {
			t.Errorf("plainName(%v, %q) = %q, %v", tc.root, tc.name, p, ok)
		}
		if !tc.reserved {
			// Round trip: plain -> backing -> plain.
			if back, ok := plainName(tc.root, b); !ok || back != tc.name {
				t.Errorf("round trip of %q gave %q, %v", tc.name, back, ok)
			}
		}
	}
}

// TestNameCacheBound fills the name cache with three times its bound and
// checks that it never holds more, and that a recently used entry
// survives the rotations while an unused one does not.
func TestNameCacheBound(t *testing.T) {
	var c nameCache[string]
	var dir names.DirID
	c.put(dir, "kept", "plain-kept")
	c.put(dir, "dropped", "plain-dropped")
	for i := 0; i < 3*nameCacheMax; i++ {
		c.put(dir, fmt.Sprint("b", i), "p")
		if i%1000 == 0 {
			if _, ok := c.get(dir, "kept"); !ok {
				t.Fatalf("a name used every 1,000 inserts was evicted at %d", i)
			}
		}
		if n := c.len(); n > nameCacheMax {
			t.Fatalf("cache holds %d entries, bound %d", n, nameCacheMax)
		}
	}
	if _, ok := c.get(dir, "dropped"); ok {
		t.Fatal("an unused name survived three times the bound")
	}
}

// BenchmarkNameCacheMemory reports the heap bytes per cached name at the
// bound (names of 20 bytes, backing names of 43: the common case).
func BenchmarkNameCacheMemory(b *testing.B) {
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := &nameCache[string]{}
		var dir names.DirID
		for i := 0; i < nameCacheMax; i++ {
			c.put(dir, fmt.Sprintf("%043d", i), fmt.Sprintf("%020d", i))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(c.len()), "B/name")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB@bound")
		runtime.KeepAlive(c)
	}
}
