package integration

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
)

// TestParallelWriters has goroutines write different files at once, each in
// random-sized sequential writes plus random overwrites, and checks every
// file before and after remount.
func TestParallelWriters(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	seed := testSeed(t)
	const writers, size = 8, 2 << 20
	want := make([][]byte, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newRand(seed + uint64(w))
			data := randomBytes(r, size)
			f, err := os.Create(fs.Path(fmt.Sprintf("w%d", w)))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for off := 0; off < size; {
				n := min(size-off, 1+r.IntN(64<<10))
				if _, err := f.Write(data[off : off+n]); err != nil {
					errs <- fmt.Errorf("writer %d at %d: %w", w, off, err)
					return
				}
				off += n
			}
			for i := 0; i < 200; i++ {
				off := r.IntN(size)
				n := min(size-off, 1+r.IntN(10000))
				fillRandom(r, data[off:off+n])
				if _, err := f.WriteAt(data[off:off+n], int64(off)); err != nil {
					errs <- fmt.Errorf("writer %d overwrite at %d: %w", w, off, err)
					return
				}
			}
			want[w] = data
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for w := range want {
		checkContent(t, fs.Path(fmt.Sprintf("w%d", w)), want[w])
	}
	fs.Remount()
	for w := range want {
		checkContent(t, fs.Path(fmt.Sprintf("w%d", w)), want[w])
	}
}

// TestParallelReaders has goroutines read one file at random offsets through
// their own descriptors and through one shared descriptor, after a remount
// so that reads go to the daemon.
func TestParallelReaders(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	seed := testSeed(t)
	const readers, size = 8, 8 << 20
	data := randomBytes(newRand(seed), size)
	mustWrite(t, fs.Path("shared"), data)
	fs.Remount()
	shared, err := os.Open(fs.Path("shared"))
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 2*readers)
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newRand(seed + 1000 + uint64(i))
			own, err := os.Open(fs.Path("shared"))
			if err != nil {
				errs <- err
				return
			}
			defer own.Close()
			buf := make([]byte, 256<<10)
			for j := 0; j < 300; j++ {
				f := own
				if j%2 == 1 {
					f = shared
				}
				off := r.IntN(size)
				n := min(size-off, 1+r.IntN(len(buf)))
				got, err := f.ReadAt(buf[:n], int64(off))
				if err != nil || got != n {
					errs <- fmt.Errorf("reader %d: ReadAt(%d, %d) = %d, %v", i, off, n, got, err)
					return
				}
				if !bytes.Equal(buf[:n], data[off:off+n]) {
					errs <- fmt.Errorf("reader %d: ReadAt(%d, %d): data differs at %d", i, off, n, off+firstDiff(buf[:n], data[off:off+n]))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
