package fs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
)

// TestCreateWriteReadReopen writes files of sizes around the chunk size,
// reads each back with a fresh open and checks stat and the backing file,
// then overwrites one at random offsets across chunk edges.
func TestCreateWriteReadReopen(t *testing.T) {
	tf := mountFS(t)
	for _, size := range []int{0, 1, 4095, 4096, 4097, 100000, 1 << 20} {
		t.Run(fmt.Sprintf("size %d", size), func(t *testing.T) {
			name := "f" + string(rune('a'+size%26))
			name = filepath.Base(name) + "-" + strings.Repeat("x", size%7)
			data := randBytes(t, size)
			if err := os.WriteFile(tf.path(name), data, 0o640); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, tf.path(name)); !bytes.Equal(got, data) {
				t.Fatalf("size %d: read back %d bytes, differ", size, len(got))
			}
			fi, err := os.Stat(tf.path(name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != int64(size) || fi.Mode().Perm() != 0o640&^currentUmask() {
				t.Errorf("size %d: stat size %d mode %v", size, fi.Size(), fi.Mode())
			}
			tf.checkBacking(t, name, data)
		})
	}
	t.Run("overwrites across chunk edges", func(t *testing.T) {
		data := randBytes(t, 50000)
		if err := os.WriteFile(tf.path("rw"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(tf.path("rw"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int{0, 4090, 8192, 12000, 49990} {
			patch := randBytes(t, 100)
			if _, err := f.WriteAt(patch, int64(off)); err != nil {
				t.Fatal(err)
			}
			n := copy(data[off:], patch)
			data = append(data, patch[n:]...)
		}
		f.Close()
		if got := readFile(t, tf.path("rw")); !bytes.Equal(got, data) {
			t.Fatal("overwrites not read back")
		}
		tf.checkBacking(t, "rw", data)
	})
}

// TestSparse checks sparse files: holes far past EOF read as zeros and are
// not written out, fallocate reserves or extends, lseek finds data and holes.
func TestSparse(t *testing.T) {
	tf := mountFS(t)
	t.Run("holes far past EOF read as zeros and stay unallocated", func(t *testing.T) {
		f, err := os.Create(tf.path("sparse"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		head, tail := []byte("head"), []byte("tail")
		f.Write(head)
		const far = 64 << 20
		if _, err := f.WriteAt(tail, far); err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		if fi.Size() != far+4 {
			t.Fatalf("size %d, want %d", fi.Size(), far+4)
		}
		buf := make([]byte, 10000)
		if _, err := f.ReadAt(buf, 32<<20); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Fatal("hole does not read as zeros")
		}
		got := make([]byte, 8)
		f.ReadAt(got[:4], 0)
		f.ReadAt(got[4:], far)
		if string(got) != "headtail" {
			t.Fatalf("got %q", got)
		}
		var st syscall.Stat_t
		syscall.Stat(tf.backing("sparse"), &st)
		if st.Blocks*512 > 1<<20 {
			t.Errorf("backing file uses %d bytes: holes were written out", st.Blocks*512)
		}
	})
	t.Run("fallocate reserves, extends and refuses to punch holes", func(t *testing.T) {
		f, err := os.Create(tf.path("fa"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteString("abc")
		fd := int(f.Fd())
		if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20); err != nil {
			t.Fatal(err)
		}
		if fi, _ := f.Stat(); fi.Size() != 3 {
			t.Fatalf("KEEP_SIZE changed size to %d", fi.Size())
		}
		var st syscall.Stat_t
		syscall.Stat(tf.backing("fa"), &st)
		if st.Blocks*512 < 1<<20 {
			t.Errorf("KEEP_SIZE reserved only %d bytes", st.Blocks*512)
		}
		if err := unix.Fallocate(fd, 0, 0, 10000); err != nil {
			t.Fatal(err)
		}
		if fi, _ := f.Stat(); fi.Size() != 10000 {
			t.Fatalf("mode 0 size %d, want 10000", fi.Size())
		}
		want := append([]byte("abc"), make([]byte, 9997)...)
		if got := readFile(t, tf.path("fa")); !bytes.Equal(got, want) {
			t.Fatal("content after fallocate")
		}
		if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096); err != unix.EOPNOTSUPP {
			t.Fatalf("punch hole: %v, want EOPNOTSUPP", err)
		}
		tf.checkBacking(t, "fa", want)
	})
	t.Run("lseek finds data and holes", func(t *testing.T) {
		f, _ := os.Create(tf.path("s"))
		defer f.Close()
		f.WriteAt([]byte("x"), 100000)
		fd := int(f.Fd())
		if off, err := unix.Seek(fd, 10, unix.SEEK_DATA); err != nil || off != 10 {
			t.Fatalf("SEEK_DATA %d %v", off, err)
		}
		if off, err := unix.Seek(fd, 10, unix.SEEK_HOLE); err != nil || off != 100001 {
			t.Fatalf("SEEK_HOLE %d %v", off, err)
		}
		if _, err := unix.Seek(fd, 100001, unix.SEEK_DATA); err != unix.ENXIO {
			t.Fatalf("SEEK_DATA at EOF: %v", err)
		}
	})
}

// TestTruncate shrinks and grows a file by path, by handle and by O_TRUNC,
// and checks the content and the backing file after each.
func TestTruncate(t *testing.T) {
	tf := mountFS(t)
	t.Run("by path", func(t *testing.T) {
		data := randBytes(t, 10000)
		os.WriteFile(tf.path("t"), data, 0o600)
		// Shrink to mid-chunk, then grow.
		if err := os.Truncate(tf.path("t"), 5000); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, tf.path("t")); !bytes.Equal(got, data[:5000]) {
			t.Fatal("shrink by path")
		}
		if err := os.Truncate(tf.path("t"), 9000); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte{}, data[:5000]...), make([]byte, 4000)...)
		if got := readFile(t, tf.path("t")); !bytes.Equal(got, want) {
			t.Fatal("grow by path")
		}
		tf.checkBacking(t, "t", want)
	})
	t.Run("by handle", func(t *testing.T) {
		data := randBytes(t, 10000)
		os.WriteFile(tf.path("h"), data, 0o600)
		f, err := os.OpenFile(tf.path("h"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(4096); err != nil {
			t.Fatal(err)
		}
		if fi, _ := f.Stat(); fi.Size() != 4096 {
			t.Fatalf("ftruncate size %d", fi.Size())
		}
		if err := f.Truncate(20000); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte{}, data[:4096]...), make([]byte, 20000-4096)...)
		got := make([]byte, 20000)
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("grow by handle")
		}
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(tf.backing("h")); fi.Size() != chunk.DataOffset {
			t.Fatalf("truncate to 0 left backing size %d, want the header only", fi.Size())
		}
	})
	t.Run("O_TRUNC", func(t *testing.T) {
		os.WriteFile(tf.path("f"), randBytes(t, 9000), 0o600)
		f, err := os.OpenFile(tf.path("f"), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fi, _ := f.Stat(); fi.Size() != 0 {
			t.Fatalf("size after O_TRUNC %d", fi.Size())
		}
		if fi, _ := os.Stat(tf.backing("f")); fi.Size() != chunk.DataOffset {
			t.Fatalf("backing size after O_TRUNC %d, want header only", fi.Size())
		}
		f.WriteString("again")
		f.Close()
		if got := readFile(t, tf.path("f")); string(got) != "again" {
			t.Fatalf("got %q", got)
		}
		tf.checkBacking(t, "f", []byte("again"))
	})
}

func TestAppend(t *testing.T) {
	tf := mountFS(t)
	os.WriteFile(tf.path("log"), []byte("one\n"), 0o600)
	var want []byte
	want = append(want, "one\n"...)
	for _, line := range []string{"two\n", strings.Repeat("3", 5000) + "\n", "four\n"} {
		f, err := os.OpenFile(tf.path("log"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(line); err != nil {
			t.Fatal(err)
		}
		f.Close()
		want = append(want, line...)
	}
	// pwrite on an O_APPEND descriptor still appends (Linux semantics).
	f, _ := os.OpenFile(tf.path("log"), os.O_RDWR|os.O_APPEND, 0)
	if _, err := syscall.Pwrite(int(f.Fd()), []byte("five\n"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want = append(want, "five\n"...)
	// O_APPEND switched on after open with fcntl counts too.
	f, _ = os.OpenFile(tf.path("log"), os.O_WRONLY, 0)
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFL, unix.O_APPEND); err != nil {
		t.Fatal(err)
	}
	f.WriteString("six\n")
	f.Close()
	want = append(want, "six\n"...)
	if got := readFile(t, tf.path("log")); !bytes.Equal(got, want) {
		t.Fatalf("append: got %q...", got[:min(len(got), 40)])
	}
	tf.checkBacking(t, "log", want)
}

// TestMmapWithAppendDescriptor reads and writes a file through a shared
// mapping in a child process (see runMmapChild) while an O_APPEND
// descriptor is open, and checks the backing file. Integration's TestMmap
// covers mmap end to end (chunk sizes, growth by ftruncate, remount); this
// one holds the in-process checks: the append descriptor and the backing
// format.
func TestMmapWithAppendDescriptor(t *testing.T) {
	tf := mountFS(t)
	data := randBytes(t, 3*4096+100)
	os.WriteFile(tf.path("m"), data, 0o600)
	runMmapChild(t, tf.path("m"))
	copy(data[4000:], "written through mmap")
	if got := readFile(t, tf.path("m")); !bytes.Equal(got, data) {
		t.Fatal("mmap write not read back")
	}
	tf.checkBacking(t, "m", data)
}

// TestParallelWritersOneFile has writers on separate descriptors fill
// adjacent, chunk-unaligned regions of one file while readers read it:
// without the per-inode content lock, read-modify-writes of shared edge
// chunks would lose data. (Integration's TestParallelWriters writes
// separate files at once through the real binary.)
func TestParallelWritersOneFile(t *testing.T) {
	tf := mountFS(t)
	const writers, region, piece = 4, 30001, 997
	want := randBytes(t, writers*region)
	if err := os.WriteFile(tf.path("p"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for w := 0; w < writers; w++ {
		wg.Add(2)
		go func(w int) {
			defer wg.Done()
			f, err := os.OpenFile(tf.path("p"), os.O_WRONLY, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for off := w * region; off < (w+1)*region; off += piece {
				end := min(off+piece, (w+1)*region)
				if _, err := f.WriteAt(want[off:end], int64(off)); err != nil {
					errs <- err
					return
				}
			}
		}(w)
		go func() {
			defer wg.Done()
			f, err := os.Open(tf.path("p"))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := make([]byte, 8192)
			for i := 0; i < 20; i++ {
				if _, err := f.ReadAt(buf, int64(i*3000)); err != nil && err != io.EOF {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := readFile(t, tf.path("p")); !bytes.Equal(got, want) {
		t.Fatal("parallel writes lost data")
	}
	tf.checkBacking(t, "p", want)
}
