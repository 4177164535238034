package integration

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMmap reads a file through a shared mapping, writes through it across
// chunk boundaries and into a region grown by ftruncate, msyncs, and checks
// the result through read(2) and again after remount.
func TestMmap(t *testing.T) {
	t.Parallel()
	for _, cs := range []int{4096, 512} {
		t.Run(chunkName(cs), func(t *testing.T) {
			t.Parallel()
			fs := newFS(t, WithChunkSize(cs))
			r := newRand(uint64(cs) * 31)
			want := randomBytes(r, 3*4096+100)
			mustWrite(t, fs.Path("m"), want)

			f, err := os.OpenFile(fs.Path("m"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Grow by ftruncate: the new part reads as zeros and is writable
			// through the mapping.
			const size = 5 * 4096
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			want = append(want, make([]byte, size-len(want))...)
			m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				t.Fatalf("mmap: %v", err)
			}
			if !bytes.Equal(m, want) {
				t.Errorf("mapped content differs from the file at %d", firstDiff(m, want))
			}
			for _, off := range []int{0, cs - 3, 4096 - 5, 2*4096 + 1, 3*4096 + 90, size - 7} {
				patch := []byte("mmap-write")
				patch = patch[:min(len(patch), size-off)]
				copy(m[off:], patch)
				copy(want[off:], patch)
			}
			if err := unix.Msync(m, unix.MS_SYNC); err != nil {
				t.Errorf("msync: %v", err)
			}
			if err := unix.Munmap(m); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			checkContent(t, fs.Path("m"), want)
			fs.Remount()
			checkContent(t, fs.Path("m"), want)

			// A read-only mapping after remount sees the same bytes.
			g, err := os.Open(fs.Path("m"))
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			ro, err := unix.Mmap(int(g.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				t.Fatalf("mmap read-only: %v", err)
			}
			defer unix.Munmap(ro)
			if !bytes.Equal(ro, want) {
				t.Errorf("read-only mapping after remount differs at %d", firstDiff(ro, want))
			}
		})
	}
}

// TestMmapAppendDescriptor writes through a shared mapping of a descriptor
// opened with O_APPEND. O_APPEND only moves write(2) to the end of file; the
// kernel writes dirty mapped pages back at their own offsets, through any
// writable handle, so the daemon must write where the kernel says and never
// re-apply O_APPEND itself.
func TestMmapAppendDescriptor(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	want := bytes.Repeat([]byte("x"), 20000)
	mustWrite(t, fs.Path("f"), want)
	f, err := os.OpenFile(fs.Path("f"), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	m[5000] = 'A'
	want[5000] = 'A'
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Errorf("msync: %v", err)
	}
	unix.Munmap(m)
	// write(2) on the same descriptor still appends.
	if _, err := f.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "tail"...)
	f.Close()
	checkContent(t, fs.Path("f"), want)
	fs.Remount()
	checkContent(t, fs.Path("f"), want)
}
