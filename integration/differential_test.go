package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDifferential runs a long random sequence of file operations (pwrite,
// pread, write at the file position, lseek, ftruncate, truncate by path,
// fallocate, reads and writes through shared mappings, fsync, close and reopen with O_APPEND, O_TRUNC, read-only and
// write-only) on several files both in the mount and in a plain reference
// directory (one file also through a hard link) and requires
// identical results (byte counts, errnos, sizes, contents) at every step, with
// a remount half way and a full comparison after a final remount.
//
// Replay a failure with KMSFS_SEED=<seed printed in the log>; KMSFS_DIFF_OPS
// overrides the number of operations.
func TestDifferential(t *testing.T) {
	t.Parallel()
	ops := 20000
	if s := os.Getenv("KMSFS_DIFF_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("KMSFS_DIFF_OPS=%q: %v", s, err)
		}
		ops = n
	}
	seed := testSeed(t)
	for _, tc := range []struct {
		chunkSize, ops int
	}{
		{4096, ops},
		{512, ops / 4},
	} {
		t.Run(fmt.Sprintf("chunk%d", tc.chunkSize), func(t *testing.T) {
			t.Parallel()
			fs := newFS(t, WithChunkSize(tc.chunkSize))
			d := &differ{
				t:    t,
				fs:   fs,
				ref:  t.TempDir(),
				r:    newRand(seed + uint64(tc.chunkSize)),
				cs:   tc.chunkSize,
				seed: seed,
			}
			// Runs before the harness unmounts: a failed run leaves
			// descriptors open, which would keep the mount busy.
			t.Cleanup(d.closeQuietly)
			d.run(tc.ops)
		})
	}
}

// diffFile is one file under test: a descriptor in the mount and one on the
// reference, opened with the same flags.
type diffFile struct {
	name     string
	mnt, ref int // -1 when closed
	flags    int
}

type differ struct {
	t     *testing.T
	fs    *testFS
	ref   string
	r     *rand.Rand
	cs    int
	seed  uint64
	files []*diffFile
	step  int
	hist  []string // recent operations, for failure reports
	buf   []byte
	// text, when set, makes written data compressible (see textBytes).
	text bool
}

const (
	diffFiles   = 4
	diffMaxSize = 4 << 20 // files are shrunk once they grow past this
	histLen     = 25
)

func (d *differ) run(ops int) {
	for i := 0; i < diffFiles; i++ {
		f := &diffFile{name: fmt.Sprintf("f%d", i), mnt: -1, ref: -1}
		d.files = append(d.files, f)
		d.open(f, unix.O_RDWR|unix.O_CREAT)
	}
	// A second name for f0: operations through either name must agree.
	link := &diffFile{name: "f0-link", mnt: -1, ref: -1}
	mp, rp := d.paths(d.files[0])
	lm, lr := d.paths(link)
	if err := os.Link(mp, lm); err != nil {
		d.t.Fatalf("link in the mount: %v", err)
	}
	if err := os.Link(rp, lr); err != nil {
		d.t.Fatal(err)
	}
	d.files = append(d.files, link)
	d.open(link, unix.O_RDWR)
	for d.step = 0; d.step < ops; d.step++ {
		if d.step == ops/2 {
			d.closeAll()
			d.compareAll("before mid-run remount")
			d.fs.Remount()
			d.compareAll("after mid-run remount")
			for _, f := range d.files {
				d.open(f, unix.O_RDWR)
			}
		}
		d.randomOp(d.files[d.r.IntN(len(d.files))])
		if d.t.Failed() {
			return
		}
	}
	d.closeAll()
	d.compareAll("at the end")
	d.fs.Remount()
	d.compareAll("after the final remount")
	d.t.Logf("%d operations on %d files (one with a second name), zero mismatches (seed %d)", ops, diffFiles, d.seed)
}

// record remembers an operation for the failure report.
func (d *differ) record(format string, args ...any) {
	d.hist = append(d.hist, fmt.Sprintf("#%d ", d.step)+fmt.Sprintf(format, args...))
	if len(d.hist) > histLen {
		d.hist = d.hist[1:]
	}
}

// mismatch fails the test with the seed and the recent history.
func (d *differ) mismatch(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf("MISMATCH at operation %d (seed %d, replay with KMSFS_SEED=%d): %s\nrecent operations:\n  %s",
		d.step, d.seed, d.seed, fmt.Sprintf(format, args...), strings.Join(d.hist, "\n  "))
}

func (d *differ) paths(f *diffFile) (string, string) {
	return d.fs.Path(f.name), filepath.Join(d.ref, f.name)
}

func (d *differ) open(f *diffFile, flags int) {
	mp, rp := d.paths(f)
	d.record("open %s flags %s", f.name, flagString(flags))
	mfd, merr := unix.Open(mp, flags|unix.O_CLOEXEC, 0o644)
	rfd, rerr := unix.Open(rp, flags|unix.O_CLOEXEC, 0o644)
	if errnoOf(merr) != errnoOf(rerr) {
		d.mismatch("open %s %s: mount error %v, reference error %v", f.name, flagString(flags), merr, rerr)
	}
	if rerr != nil {
		d.t.Fatalf("open %s on the reference: %v", rp, rerr)
	}
	f.mnt, f.ref, f.flags = mfd, rfd, flags
}

func (d *differ) close(f *diffFile) {
	if f.mnt < 0 {
		return
	}
	d.record("close %s", f.name)
	merr := unix.Close(f.mnt)
	rerr := unix.Close(f.ref)
	f.mnt, f.ref = -1, -1
	if errnoOf(merr) != errnoOf(rerr) {
		d.mismatch("close %s: mount error %v, reference error %v", f.name, merr, rerr)
	}
}

// closeQuietly closes whatever is still open, ignoring errors.
func (d *differ) closeQuietly() {
	for _, f := range d.files {
		if f.mnt >= 0 {
			unix.Close(f.mnt)
			unix.Close(f.ref)
			f.mnt, f.ref = -1, -1
		}
	}
}

func (d *differ) closeAll() {
	for _, f := range d.files {
		d.close(f)
	}
}

// refSize is the current size of the reference file.
func (d *differ) refSize(f *diffFile) int64 {
	var st unix.Stat_t
	_, rp := d.paths(f)
	if err := unix.Stat(rp, &st); err != nil {
		d.t.Fatal(err)
	}
	return st.Size
}

// randOffset picks an offset: inside the file, at a chunk boundary, just past
// EOF, or far past EOF.
func (d *differ) randOffset(size int64) int64 {
	cs := int64(d.cs)
	switch p := d.r.IntN(100); {
	case p < 45:
		return d.r.Int64N(size + 1)
	case p < 70:
		k := d.r.Int64N(size/cs + 2)
		return max(0, k*cs+d.r.Int64N(3)-1)
	case p < 85:
		return size + d.r.Int64N(3*cs)
	case p < 95:
		return size + d.r.Int64N(1<<20) // far past EOF: holes
	default:
		return 0
	}
}

// randLen picks a transfer length, mostly around the chunk size.
func (d *differ) randLen() int {
	switch p := d.r.IntN(100); {
	case p < 5:
		return 0
	case p < 50:
		return 1 + d.r.IntN(d.cs)
	case p < 85:
		return 1 + d.r.IntN(4*d.cs)
	default:
		return 1 + d.r.IntN(300<<10)
	}
}

func (d *differ) data(n int) []byte {
	if cap(d.buf) < n {
		d.buf = make([]byte, n)
	}
	b := d.buf[:n]
	if d.text {
		fillText(d.r, b)
		return b
	}
	fillRandom(d.r, b)
	return b
}

func (d *differ) randomOp(f *diffFile) {
	mp, rp := d.paths(f)
	size := d.refSize(f)
	switch p := d.r.IntN(100); {
	case p < 33: // pwrite
		off := d.randOffset(size)
		if size > diffMaxSize {
			off = d.r.Int64N(size)
		}
		b := d.data(d.randLen())
		d.record("pwrite %s off %d len %d (size %d)", f.name, off, len(b), size)
		mn, merr := unix.Pwrite(f.mnt, b, off)
		rn, rerr := unix.Pwrite(f.ref, b, off)
		if mn != rn || errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("pwrite %s off %d len %d: mount (%d, %v), reference (%d, %v)", f.name, off, len(b), mn, merr, rn, rerr)
		}
	case p < 60: // pread
		off := d.randOffset(size)
		n := d.randLen()
		d.record("pread %s off %d len %d (size %d)", f.name, off, n, size)
		mb, rb := make([]byte, n), make([]byte, n)
		mn, merr := unix.Pread(f.mnt, mb, off)
		rn, rerr := unix.Pread(f.ref, rb, off)
		if mn != rn || errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("pread %s off %d len %d: mount (%d, %v), reference (%d, %v)", f.name, off, n, mn, merr, rn, rerr)
		}
		if rn > 0 && !bytes.Equal(mb[:rn], rb[:rn]) {
			i := firstDiff(mb[:rn], rb[:rn])
			d.mismatch("pread %s off %d len %d: data differs at file offset %d (mount %#x, reference %#x)",
				f.name, off, n, off+int64(i), mb[i], rb[i])
		}
	case p < 66: // ftruncate
		n := d.truncSize(size)
		d.record("ftruncate %s %d (size %d)", f.name, n, size)
		merr := unix.Ftruncate(f.mnt, n)
		rerr := unix.Ftruncate(f.ref, n)
		if errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("ftruncate %s %d: mount %v, reference %v", f.name, n, merr, rerr)
		}
	case p < 71: // truncate by path
		n := d.truncSize(size)
		d.record("truncate %s %d (size %d)", f.name, n, size)
		merr := unix.Truncate(mp, n)
		rerr := unix.Truncate(rp, n)
		if errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("truncate %s %d: mount %v, reference %v", f.name, n, merr, rerr)
		}
	case p < 79: // close and reopen
		d.close(f)
		flags := []int{
			unix.O_RDWR, unix.O_RDWR, unix.O_RDWR | unix.O_APPEND, unix.O_RDWR | unix.O_TRUNC,
			unix.O_WRONLY, unix.O_WRONLY | unix.O_APPEND, unix.O_RDONLY, unix.O_WRONLY | unix.O_TRUNC,
		}[d.r.IntN(8)]
		d.open(f, flags)
	case p < 87: // write at the file position (appends under O_APPEND)
		b := d.data(d.randLen())
		d.record("write %s len %d (size %d, flags %s)", f.name, len(b), size, flagString(f.flags))
		mn, merr := unix.Write(f.mnt, b)
		rn, rerr := unix.Write(f.ref, b)
		if mn != rn || errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("write %s len %d: mount (%d, %v), reference (%d, %v)", f.name, len(b), mn, merr, rn, rerr)
		}
	case p < 90: // seek the file position
		off := d.randOffset(size)
		d.record("lseek %s %d", f.name, off)
		mo, merr := unix.Seek(f.mnt, off, 0)
		ro, rerr := unix.Seek(f.ref, off, 0)
		if mo != ro || errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("lseek %s %d: mount (%d, %v), reference (%d, %v)", f.name, off, mo, merr, ro, rerr)
		}
	case p < 92: // fstat and stat
		d.record("stat %s", f.name)
		var ms, rs unix.Stat_t
		if err := unix.Fstat(f.mnt, &ms); err != nil {
			d.mismatch("fstat %s: %v", f.name, err)
		}
		if err := unix.Stat(mp, &rs); err != nil {
			d.mismatch("stat %s: %v", f.name, err)
		}
		if ms.Size != size || rs.Size != size {
			d.mismatch("size of %s: fstat %d, stat %d, reference %d", f.name, ms.Size, rs.Size, size)
		}
	case p < 94: // through a shared mapping of the whole file
		if size == 0 {
			return
		}
		d.mmapOp(f, size)
	case p < 96: // fallocate, modes 0 and KEEP_SIZE
		mode := uint32(0)
		if d.r.IntN(2) == 0 {
			mode = unix.FALLOC_FL_KEEP_SIZE
		}
		off := d.randOffset(size)
		n := int64(1 + d.r.IntN(4*d.cs))
		if size > diffMaxSize {
			off, n = d.r.Int64N(size), 1
		}
		d.record("fallocate %s mode %#x off %d len %d (size %d)", f.name, mode, off, n, size)
		merr := unix.Fallocate(f.mnt, mode, off, n)
		rerr := unix.Fallocate(f.ref, mode, off, n)
		if errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("fallocate %s mode %#x off %d len %d: mount %v, reference %v", f.name, mode, off, n, merr, rerr)
		}
	default: // fsync
		d.record("fsync %s", f.name)
		merr := unix.Fsync(f.mnt)
		rerr := unix.Fsync(f.ref)
		if errnoOf(merr) != errnoOf(rerr) {
			d.mismatch("fsync %s: mount %v, reference %v", f.name, merr, rerr)
		}
	}
	if d.r.IntN(200) == 0 { // full comparison through a separate descriptor
		d.record("compare %s", f.name)
		d.compare(f, "during the run")
	}
}

// mmapOp maps the whole file on both sides and either compares a range
// read through the mapping or writes a range through it (msync'ed half of
// the time; otherwise the kernel writes the dirty pages back later).
func (d *differ) mmapOp(f *diffFile, size int64) {
	write := d.r.IntN(2) == 0
	prot := unix.PROT_READ
	if write {
		prot |= unix.PROT_WRITE
	}
	off := d.r.Int64N(size)
	n := 1 + d.r.Int64N(min(size-off, int64(4*d.cs)))
	d.record("mmap %s write=%v off %d len %d (size %d)", f.name, write, off, n, size)
	mm, merr := unix.Mmap(f.mnt, 0, int(size), prot, unix.MAP_SHARED)
	rm, rerr := unix.Mmap(f.ref, 0, int(size), prot, unix.MAP_SHARED)
	defer func() {
		if merr == nil {
			unix.Munmap(mm)
		}
		if rerr == nil {
			unix.Munmap(rm)
		}
	}()
	if errnoOf(merr) != errnoOf(rerr) {
		d.mismatch("mmap %s prot %d: mount %v, reference %v", f.name, prot, merr, rerr)
	}
	if merr != nil {
		return
	}
	if write {
		b := d.data(int(n))
		copy(mm[off:], b)
		copy(rm[off:], b)
		if d.r.IntN(2) == 0 {
			if err := unix.Msync(mm, unix.MS_SYNC); err != nil {
				d.mismatch("msync %s: %v", f.name, err)
			}
		}
		return
	}
	if !bytes.Equal(mm[off:off+n], rm[off:off+n]) {
		i := firstDiff(mm[off:off+n], rm[off:off+n])
		d.mismatch("mmap read %s off %d len %d: data differs at file offset %d", f.name, off, n, off+int64(i))
	}
}

// truncSize picks a new size: shrink, small growth, a chunk boundary, or far.
func (d *differ) truncSize(size int64) int64 {
	cs := int64(d.cs)
	switch p := d.r.IntN(100); {
	case p < 40:
		return d.r.Int64N(size + 1)
	case p < 60:
		k := d.r.Int64N(size/cs + 2)
		return max(0, k*cs+d.r.Int64N(3)-1)
	case p < 85 && size < diffMaxSize:
		return size + d.r.Int64N(4*cs)
	case size < diffMaxSize:
		return size + d.r.Int64N(1<<20)
	default:
		return d.r.Int64N(size / 2)
	}
}

// compare requires the mount file to equal the reference file in size and
// content, read through fresh descriptors.
func (d *differ) compare(f *diffFile, when string) {
	d.t.Helper()
	mp, rp := d.paths(f)
	want, err := os.ReadFile(rp)
	if err != nil {
		d.t.Fatal(err)
	}
	got, err := os.ReadFile(mp)
	if err != nil {
		d.mismatch("%s: reading %s: %v", when, f.name, err)
	}
	if !bytes.Equal(got, want) {
		i := firstDiff(got, want)
		d.mismatch("%s: %s differs: mount %d bytes, reference %d bytes, first difference at %d",
			when, f.name, len(got), len(want), i)
	}
	fi, err := os.Stat(mp)
	if err != nil {
		d.mismatch("%s: stat %s: %v", when, f.name, err)
	}
	if fi.Size() != int64(len(want)) {
		d.mismatch("%s: stat %s: size %d, want %d", when, f.name, fi.Size(), len(want))
	}
}

func (d *differ) compareAll(when string) {
	for _, f := range d.files {
		d.compare(f, when)
	}
}

// flagString renders open flags for the operation log.
func flagString(flags int) string {
	var parts []string
	switch flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		parts = append(parts, "O_RDONLY")
	case unix.O_WRONLY:
		parts = append(parts, "O_WRONLY")
	case unix.O_RDWR:
		parts = append(parts, "O_RDWR")
	}
	for _, fl := range []struct {
		v    int
		name string
	}{{unix.O_CREAT, "O_CREAT"}, {unix.O_APPEND, "O_APPEND"}, {unix.O_TRUNC, "O_TRUNC"}} {
		if flags&fl.v != 0 {
			parts = append(parts, fl.name)
		}
	}
	return strings.Join(parts, "|")
}
