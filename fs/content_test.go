package fs

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/cipherdir"
)

// newTestRoot returns the shared state of a mount over a fresh CIPHERDIR,
// without mounting (no FUSE needed).
func newTestRoot(t *testing.T) *root {
	t.Helper()
	keys := newFakeKeys()
	cfg, err := cipherdir.NewConfig(cipherdir.KMSLocal, keys.keyID, 512)
	if err != nil {
		t.Fatal(err)
	}
	rn, err := newRoot(Options{CipherDir: t.TempDir(), Config: cfg, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rn.r.close)
	return rn.r
}

// TestChangeSerialisesWriters drives content.change directly from many
// goroutines over two descriptors of one file, writing interleaved pieces
// that share chunks. Only the content lock keeps each chunk's
// read-modify-write whole; -race checks the rest.
func TestChangeSerialisesWriters(t *testing.T) {
	r := newTestRoot(t)
	ctx := context.Background()
	h1, _, err := r.createFile(ctx, r.fd, "f", newMode{perm: 0o600}, syscall.O_RDWR, true)
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Release(ctx)
	h2, err := r.openFile(ctx, r.fd, "f", syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Release(ctx)
	if h1.c != h2.c {
		t.Fatal("two handles of one inode have different content state")
	}
	const writers, region, piece = 8, 3001, 77
	want := bytes.Repeat([]byte{0}, writers*region)
	for i := range want {
		want[i] = byte(i*7 + i/region)
	}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		h := h1
		if w%2 == 1 {
			h = h2
		}
		wg.Add(1)
		go func(w int, h *handle) {
			defer wg.Done()
			// Writer w writes every writers-th piece, so neighbouring
			// pieces (sharing a chunk) come from different writers at
			// about the same time.
			for off := w * piece; off < len(want); off += writers * piece {
				end := min(off+piece, len(want))
				if _, err := r.change(ctx, h.c, &h.backingFile, change{kind: changeWrite, data: want[off:end], off: int64(off)}); err != nil {
					t.Error(err)
					return
				}
			}
		}(w, h)
	}
	// A truncate racing with the writers must not tear a chunk either:
	// growing past the end only adds holes the writers then fill.
	if _, err := r.change(ctx, h2.c, &h2.backingFile, change{kind: changeTruncate, size: int64(len(want))}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	got := make([]byte, len(want)+10)
	res, errno := h1.Read(ctx, got, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	b, _ := res.Bytes(nil)
	if !bytes.Equal(b, want) {
		t.Fatalf("read %d bytes, differ from what was written", len(b))
	}
	r.mu.Lock()
	n := len(r.contents)
	r.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d contents registered, want 1", n)
	}
}

// TestContentReleased checks that the cipher is forgotten with the last
// handle and unwrapped again on the next open.
func TestContentReleased(t *testing.T) {
	r := newTestRoot(t)
	ctx := context.Background()
	h, _, err := r.createFile(ctx, r.fd, "f", newMode{perm: 0o600}, syscall.O_RDWR, true)
	if err != nil {
		t.Fatal(err)
	}
	h.Release(ctx)
	if len(r.contents) != 0 {
		t.Fatal("content kept after the last release")
	}
	keys := r.keys.(*fakeKeys)
	_, d0 := keys.counts()
	h, err = r.openFile(ctx, r.fd, "f", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	h.Release(ctx)
	if _, d1 := keys.counts(); d1 != d0+1 {
		t.Fatalf("reopen made %d Decrypt calls, want 1", d1-d0)
	}
}

// TestEmptyFileKeyedElsewhere: a file empty when this mount opened it got
// its header and key through another mount of the tree; the first write
// here must use that key, not replace it (which would make the other
// mount's data unreadable).
func TestEmptyFileKeyedElsewhere(t *testing.T) {
	a := newTestRoot(t)
	b, err := newRoot(Options{CipherDir: "/proc/self/fd/" + itoa(a.fd), Config: a.cfg, Keys: a.keys})
	if err != nil {
		t.Fatal(err)
	}
	defer b.r.close()
	ctx := context.Background()
	fd, err := syscall.Open("/proc/self/fd/"+itoa(a.fd)+"/f", syscall.O_CREAT|syscall.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	ha, err := a.openFile(ctx, a.fd, "f", syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Release(ctx)
	hb, err := b.r.openFile(ctx, b.r.fd, "f", syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, errno := hb.Write(ctx, []byte("from b"), 0); errno != 0 {
		t.Fatal(errno)
	}
	hb.Release(ctx)
	if _, errno := ha.Write(ctx, []byte("A"), 0); errno != 0 {
		t.Fatal(errno)
	}
	hb, err = b.r.openFile(ctx, b.r.fd, "f", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Release(ctx)
	res, errno := hb.Read(ctx, make([]byte, 10), 0)
	if errno != 0 {
		t.Fatalf("read through the other mount: %v", errno)
	}
	if got, _ := res.Bytes(nil); string(got) != "Arom b" {
		t.Fatalf("got %q", got)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
