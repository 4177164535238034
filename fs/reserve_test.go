package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/codec"
)

func TestWriteSpans(t *testing.T) {
	const cs = 4096
	for _, tc := range []struct {
		name              string
		oldSize, off, end int64
		want              []chunkSpan
	}{
		{"inside one chunk", 10000, 100, 200, []chunkSpan{{0, 0}}},
		{"across chunks", 20000, 4000, 9000, []chunkSpan{{0, 2}}},
		{"into an empty file", 0, 0, 1, []chunkSpan{{0, 0}}},
		{"far into an empty file", 0, 10 * cs, 10*cs + 1, []chunkSpan{{10, 10}}},
		{"append in the last chunk", 100, 100, 200, []chunkSpan{{0, 0}}},
		{"append after a full last chunk", cs, cs, cs + 1, []chunkSpan{{0, 1}}},
		{"append right after the last chunk", 100, cs, cs + 5, []chunkSpan{{0, 1}}},
		{"past a gap: old last chunk and the new ones", 100, 5 * cs, 6*cs + 1, []chunkSpan{{0, 0}, {5, 6}}},
		{"overwrite ending before the old end", 5 * cs, 0, 1, []chunkSpan{{0, 0}}},
	} {
		if got := writeSpans(cs, tc.oldSize, tc.off, tc.end); !slices.Equal(got, tc.want) {
			t.Errorf("%s: writeSpans(%d, %d, %d) = %v, want %v", tc.name, tc.oldSize, tc.off, tc.end, got, tc.want)
		}
	}
}

func TestTruncateSpans(t *testing.T) {
	const cs = 512
	for _, tc := range []struct {
		oldSize, newSize int64
		want             []chunkSpan
	}{
		{0, 1 << 30, nil}, // an empty file grows by holes only
		{100, 0, nil},     // emptying rewrites nothing
		{100, 100, nil},
		{100, 50, []chunkSpan{{0, 0}}}, // shrinking re-seals the new last chunk
		{3 * cs, cs, []chunkSpan{{0, 0}}},
		{3 * cs, cs + 1, []chunkSpan{{1, 1}}},
		{100, 1 << 30, []chunkSpan{{0, 0}}},
		{3 * cs, 4 * cs, []chunkSpan{{2, 2}}},
		{3*cs + 1, 3*cs + 2, []chunkSpan{{3, 3}}},
	} {
		if got := truncateSpans(cs, tc.oldSize, tc.newSize); !slices.Equal(got, tc.want) {
			t.Errorf("truncateSpans(%d, %d) = %v, want %v", tc.oldSize, tc.newSize, got, tc.want)
		}
	}
}

// TestReserveKnownAllocation checks what reserve learns and remembers of
// the backing file's allocation: the data before the first hole, then
// every reservation that continues it; a reservation past a hole does not
// count, and a truncation forgets everything.
func TestReserveKnownAllocation(t *testing.T) {
	const cs = 4096
	r := &root{cfg: cipherdir.Config{ChunkSize: cs}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f, err := os.Create(filepath.Join(t.TempDir(), "backing"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size2 := chunk.CiphertextSize(2*cs, cs)
	if _, err := f.WriteAt(make([]byte, size2), 0); err != nil {
		t.Fatal(err)
	}
	c := &content{}
	if err := r.reserve(c, f, []chunkSpan{{0, 1}}, 2*cs); err != nil {
		t.Fatal(err)
	}
	if !c.alloc.known || c.alloc.end != size2 {
		t.Fatalf("after the first reservation: %+v, want the written %d bytes known", c.alloc, size2)
	}
	// Past a gap: reserved, but the known prefix stays.
	if err := r.reserve(c, f, []chunkSpan{{5, 5}}, 6*cs); err != nil {
		t.Fatal(err)
	}
	if c.alloc.end != size2 {
		t.Fatalf("a reservation past a hole moved the prefix to %d", c.alloc.end)
	}
	// Continuing the prefix extends it.
	if err := r.reserve(c, f, []chunkSpan{{2, 2}}, 2*cs+10); err != nil {
		t.Fatal(err)
	}
	if want := chunk.CiphertextSize(2*cs+10, cs); c.alloc.end != want {
		t.Fatalf("prefix %d after an appending reservation, want %d", c.alloc.end, want)
	}
	if err := r.reserveTruncate(c, f, 2*cs+10, cs); err != nil {
		t.Fatal(err)
	}
	if c.alloc.known {
		t.Fatal("a truncation kept the known allocation")
	}
}

// tmpfsDir mounts a fresh tmpfs of size bytes on a temporary directory
// and returns it: a backing file system that punches holes and runs out
// of space deterministically. It needs root.
func tmpfsDir(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("kmsfs-fs-test", dir, "tmpfs", 0, "size="+strconv.Itoa(size)+",mode=0700"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount tmpfs %s: %v", dir, err)
		}
	})
	return dir
}

// fillUp writes a file in dir until the file system is full.
func fillUp(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{64 << 10, 4 << 10, 1} {
		buf := make([]byte, n)
		for {
			if _, err := f.Write(buf); errors.Is(err, syscall.ENOSPC) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestReserveCompressedOnFullDisk: chunk.File punches the zero tails of
// compressed chunks after writing them, so the backing bytes of a
// compressed file are never all allocated, whatever the open file has
// reserved before. A rewrite of such a chunk, or a shrinking truncation
// that re-seals one, writes the whole slot and needs those blocks again:
// on a full disk it must fail with ENOSPC before it writes anything, and
// leave every chunk as it was, not torn (EIO).
func TestReserveCompressedOnFullDisk(t *testing.T) {
	const cs = 64 << 10
	text := compressibleText(4 * cs)
	random := make([]byte, cs)
	_, _ = rand.Read(random)
	for _, tc := range []struct {
		name   string
		change change
	}{
		{"overwrite with random data", change{kind: changeWrite, data: random, off: cs}},
		{"overwrite with text", change{kind: changeWrite, data: text[:cs], off: 2 * cs}},
		{"shrink into a compressed chunk", change{kind: changeTruncate, size: 3*cs - 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tmpfsDir(t, 2<<20)
			keys := newFakeKeys()
			cfg, err := cipherdir.NewConfig(cipherdir.KMSLocal, keys.keyID, cs)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Compress = "zstd"
			rn, err := newRoot(Options{CipherDir: dir, Config: cfg, Keys: keys, Codecs: codec.All()})
			if err != nil {
				t.Fatal(err)
			}
			defer rn.r.close()
			r, ctx := rn.r, context.Background()
			h, _, err := r.createFile(ctx, r.fd, "f", newMode{perm: 0o600}, syscall.O_RDWR, true)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Release(ctx)
			if _, err := r.change(ctx, h.c, &h.backingFile, change{kind: changeWrite, data: text}); err != nil {
				t.Fatal(err)
			}
			if allocated(t, filepath.Join(dir, "f")) >= chunk.CiphertextSize(int64(len(text)), cs) {
				t.Skip("the backing file system did not punch the compressed chunks' tails")
			}
			fillUp(t, dir)

			_, err = r.change(ctx, h.c, &h.backingFile, tc.change)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("%s on a full disk: %v, want ENOSPC", tc.name, err)
			}
			got := make([]byte, len(text)+1)
			res, errno := h.Read(ctx, got, 0)
			if errno != 0 {
				t.Fatalf("read after the failed change: %v (a torn chunk)", errno)
			}
			if b, _ := res.Bytes(nil); !bytes.Equal(b, text) {
				t.Fatalf("read %d bytes after the failed change, not the old content", len(b))
			}
		})
	}
}
