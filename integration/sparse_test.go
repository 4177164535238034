package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSeekDataHole checks lseek SEEK_DATA and SEEK_HOLE on a sparse file.
// A filesystem may report a hole as data, never data as a hole, so the test
// requires only what every correct answer satisfies: SEEK_DATA never skips
// data, SEEK_HOLE never lands before EOF inside data, every range reported as
// a hole reads as zeros, and offsets at or past EOF give ENXIO. It then
// copies the file with cp (which uses these calls) and compares.
func TestSeekDataHole(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	const mib = 1 << 20
	r := newRand(8)
	// data [0,5000), hole, data [1MiB, 1MiB+4096), hole, data [3MiB+100, 3MiB+200)
	want := make([]byte, 3*mib+200)
	f, err := os.Create(fs.Path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ext := range [][2]int{{0, 5000}, {mib, mib + 4096}, {3*mib + 100, 3*mib + 200}} {
		b := randomBytes(r, ext[1]-ext[0])
		for i := range b {
			b[i] |= 1 // no zero bytes, so data cannot pass for a hole
		}
		copy(want[ext[0]:], b)
		if _, err := f.WriteAt(b, int64(ext[0])); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	fs.Remount()

	f, err = os.Open(fs.Path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	size := int64(len(want))
	dataAt := func(off int64) bool { return off < size && want[off] != 0 }
	// Walk the file: data segment [d, h), then hole [h, next d).
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			if !bytes.Equal(want[off:], make([]byte, size-off)) {
				t.Errorf("SEEK_DATA(%d) = ENXIO but there is data after it", off)
			}
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA(%d): %v", off, err)
		}
		if d < off || d > size {
			t.Fatalf("SEEK_DATA(%d) = %d, out of range", off, d)
		}
		for i := off; i < d; i++ {
			if dataAt(i) {
				t.Fatalf("SEEK_DATA(%d) = %d skips data at %d", off, d, i)
			}
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE(%d): %v", d, err)
		}
		if h <= d || h > size {
			t.Fatalf("SEEK_HOLE(%d) = %d, out of range", d, h)
		}
		off = h
	}
	for _, off := range []int64{size, size + 1, size + mib} {
		if _, err := unix.Seek(fd, off, unix.SEEK_DATA); !errors.Is(err, syscall.ENXIO) {
			t.Errorf("SEEK_DATA(%d) at/after EOF %d: %v, want ENXIO", off, size, err)
		}
	}
	if h, err := unix.Seek(fd, size-1, unix.SEEK_HOLE); err != nil || h != size {
		t.Errorf("SEEK_HOLE(EOF-1) = %d, %v; want %d", h, err, size)
	}
	checkContent(t, fs.Path("sparse"), want)

	// cp relies on SEEK_DATA/SEEK_HOLE for sparse files: into the mount
	// and out of it.
	requireTool(t, "cp")
	out := filepath.Join(t.TempDir(), "copy-out")
	for _, c := range [][2]string{
		{fs.Path("sparse"), fs.Path("copy-in")},
		{fs.Path("sparse"), out},
		{out, fs.Path("copy-back")},
	} {
		if o, err := commandOutput("cp", "--sparse=always", c[0], c[1]); err != nil {
			t.Fatalf("cp %s %s: %v\n%s", c[0], c[1], err, o)
		}
		checkContent(t, c[1], want)
	}
}
