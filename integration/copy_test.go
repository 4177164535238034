package integration

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCopyFileRange copies between files of the mount with
// copy_file_range(2) at unaligned offsets: the destination must hold the
// source's plaintext (each file has its own key, so backing bytes cannot
// simply be copied), before and after remount.
func TestCopyFileRange(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	r := newRand(21)
	src := randomBytes(r, 5*4096+77)
	dst := randomBytes(r, 2*4096+5)
	mustWrite(t, fs.Path("src"), src)
	mustWrite(t, fs.Path("dst"), dst)
	in, err := os.Open(fs.Path("src"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(fs.Path("dst"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	copies := []struct {
		srcOff, dstOff int64
		n              int
	}{
		{0, 0, 4096},           // aligned, whole chunk
		{4100, 1000, 5000},     // unaligned, across chunks
		{3, 3*4096 + 10, 9000}, // extends the destination past EOF
	}
	for _, c := range copies {
		so, do := c.srcOff, c.dstOff
		done := 0
		for done < c.n {
			n, err := unix.CopyFileRange(int(in.Fd()), &so, int(out.Fd()), &do, c.n-done, 0)
			if err != nil {
				t.Fatalf("copy_file_range(src %d, dst %d, %d): %v", c.srcOff, c.dstOff, c.n, err)
			}
			if n == 0 {
				break
			}
			done += n
		}
		if done != c.n {
			t.Fatalf("copy_file_range copied %d of %d bytes", done, c.n)
		}
		end := int(c.dstOff) + c.n
		if end > len(dst) {
			dst = append(dst, make([]byte, end-len(dst))...)
		}
		copy(dst[c.dstOff:], src[c.srcOff:int(c.srcOff)+c.n])
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	in.Close()
	checkContent(t, fs.Path("dst"), dst)
	fs.Remount()
	checkContent(t, fs.Path("dst"), dst)
	checkContent(t, fs.Path("src"), src)
}
