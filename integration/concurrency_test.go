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

// TestParallelWritersOneFile has goroutines write interleaved, non-
// overlapping stripes of one file (through two hard-linked names), smaller
// than a chunk, so that every chunk is read-modified-written by several
// writers at once. The per-inode lock
// must keep every stripe; a lost update shows up as a stripe of old bytes.
func TestParallelWritersOneFile(t *testing.T) {
	t.Parallel()
	for _, cs := range []int{4096, 512} {
		t.Run(chunkName(cs), func(t *testing.T) {
			t.Parallel()
			fs := newFS(t, WithChunkSize(cs))
			const writers, stripe, rounds = 8, 100, 3
			size := 64*cs + 123
			want := make([]byte, size)
			mustWrite(t, fs.Path("f"), want)
			// Half of the writers go through a hard link: the content lock
			// belongs to the inode, not to a name.
			if err := os.Link(fs.Path("f"), fs.Path("link")); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					name := "f"
					if w%2 == 1 {
						name = "link"
					}
					f, err := os.OpenFile(fs.Path(name), os.O_RDWR, 0)
					if err != nil {
						errs <- err
						return
					}
					defer f.Close()
					for round := 1; round <= rounds; round++ {
						b := bytes.Repeat([]byte{byte(w*16 + round)}, stripe)
						for off := w * stripe; off < size; off += writers * stripe {
							n := min(stripe, size-off)
							if _, err := f.WriteAt(b[:n], int64(off)); err != nil {
								errs <- fmt.Errorf("writer %d at %d: %w", w, off, err)
								return
							}
						}
					}
				}()
				b := bytes.Repeat([]byte{byte(w*16 + rounds)}, stripe)
				for off := w * stripe; off < size; off += writers * stripe {
					copy(want[off:], b[:min(stripe, size-off)])
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			checkContent(t, fs.Path("f"), want)
			fs.Remount()
			checkContent(t, fs.Path("f"), want)
		})
	}
}

// TestConcurrentWriteTruncate writes stripes below size N from several
// goroutines while another grows the file past N and shrinks it back to N,
// by path and by descriptor, over and over. Truncation never cuts below N, so
// every byte written below N must survive: a truncate that reseals the last
// partial chunk without the content lock loses concurrent writes (the
// gocryptfs #1024 scar).
func TestConcurrentWriteTruncate(t *testing.T) {
	t.Parallel()
	const cs = 4096
	fs := newFS(t, WithChunkSize(cs))
	const writers, stripe, rounds = 4, 300, 20
	size := 8*cs + 1234 // the last chunk is partial
	want := make([]byte, size)
	mustWrite(t, fs.Path("f"), want)
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	stop := make(chan struct{})
	truncDone := make(chan struct{})
	go func() {
		defer close(truncDone)
		f, err := os.OpenFile(fs.Path("f"), os.O_RDWR, 0)
		if err != nil {
			errs <- err
			return
		}
		defer f.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			grow := int64(size + 1 + i%(3*cs))
			var err1, err2 error
			if i%2 == 0 {
				err1, err2 = os.Truncate(fs.Path("f"), grow), os.Truncate(fs.Path("f"), int64(size))
			} else {
				err1, err2 = f.Truncate(grow), f.Truncate(int64(size))
			}
			if err1 != nil || err2 != nil {
				errs <- fmt.Errorf("truncate: %v, %v", err1, err2)
				return
			}
		}
	}()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.OpenFile(fs.Path("f"), os.O_RDWR, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for round := 1; round <= rounds; round++ {
				b := bytes.Repeat([]byte{byte(w*32 + round)}, stripe)
				for off := w * stripe; off < size; off += writers * stripe {
					n := min(stripe, size-off)
					if _, err := f.WriteAt(b[:n], int64(off)); err != nil {
						errs <- fmt.Errorf("writer %d at %d: %w", w, off, err)
						return
					}
				}
			}
		}()
		b := bytes.Repeat([]byte{byte(w*32 + rounds)}, stripe)
		for off := w * stripe; off < size; off += writers * stripe {
			copy(want[off:], b[:min(stripe, size-off)])
		}
	}
	wg.Wait()
	close(stop)
	<-truncDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := os.Truncate(fs.Path("f"), int64(size)); err != nil {
		t.Fatal(err)
	}
	checkContent(t, fs.Path("f"), want)
	fs.Remount()
	checkContent(t, fs.Path("f"), want)
}

// TestWriteWhileRenaming writes a file through an open descriptor while
// another goroutine renames it back and forth between directories: every
// write must land in the one file.
func TestWriteWhileRenaming(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	for _, d := range []string{"x", "y"} {
		if err := os.Mkdir(fs.Path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := randomBytes(newRand(77), 3<<20)
	f, err := os.Create(fs.Path("x", "f"))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	renamed := make(chan error, 1)
	go func() {
		names := []string{fs.Path("x", "f"), fs.Path("y", "g")}
		i := 0
		for {
			select {
			case <-stop:
				renamed <- nil
				return
			default:
			}
			if err := os.Rename(names[i%2], names[(i+1)%2]); err != nil {
				renamed <- err
				return
			}
			i++
		}
	}()
	for off := 0; off < len(data); off += 10000 {
		end := min(off+10000, len(data))
		if _, err := f.WriteAt(data[off:end], int64(off)); err != nil {
			t.Errorf("write at %d: %v", off, err)
			break
		}
	}
	close(stop)
	if err := <-renamed; err != nil {
		t.Errorf("rename: %v", err)
	}
	f.Close()
	name := fs.Path("x", "f")
	if _, err := os.Stat(name); err != nil {
		name = fs.Path("y", "g")
	}
	checkContent(t, name, data)
	fs.Remount()
	checkContent(t, name, data)
}
