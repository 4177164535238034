package fs

import (
	"bytes"
	"os"
	"syscall"
	"testing"
)

// TestWritebackCache runs the cases the kernel's writeback cache changes
// on a mount with Options.WritebackCache: a partial-page write through a
// write-only descriptor (the kernel reads the page first, through that
// handle), appends from two O_APPEND descriptors (the kernel places them;
// the daemon must not move them again), writes through mmap, truncation
// with dirty pages, the size seen before the data reached the daemon, and
// what the backing file holds after fsync.
func TestWritebackCache(t *testing.T) {
	tf := mountFS(t, func(o *Options) { o.WritebackCache = true })

	// Partial page through O_WRONLY.
	data := randBytes(t, 10000)
	if err := os.WriteFile(tf.path("part"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	tf.dropCaches(t)
	f, err := os.OpenFile(tf.path("part"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("0123456789"), 5000); err != nil {
		t.Fatal(err)
	}
	copy(data[5000:], "0123456789")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, tf.path("part")); !bytes.Equal(got, data) {
		t.Fatal("partial-page write through O_WRONLY reads back wrong")
	}
	tf.dropCaches(t)
	if got := readFile(t, tf.path("part")); !bytes.Equal(got, data) {
		t.Fatal("partial-page write through O_WRONLY is wrong on the backing file")
	}
	tf.checkBacking(t, "part", data)

	// Two O_APPEND descriptors, interleaved, with a size check before any
	// flush.
	a, err := os.OpenFile(tf.path("log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.OpenFile(tf.path("log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i := range 50 {
		line := bytes.Repeat([]byte{byte('a' + i%26)}, 100+i*37)
		w := a
		if i%2 == 1 {
			w = b
		}
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
		want = append(want, line...)
	}
	if fi, err := a.Stat(); err != nil || fi.Size() != int64(len(want)) {
		t.Errorf("size before close: %v, %v; want %d", fi.Size(), err, len(want))
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	tf.dropCaches(t)
	if got := readFile(t, tf.path("log")); !bytes.Equal(got, want) {
		t.Fatalf("appends: %d bytes read back, want %d", len(got), len(want))
	}
	tf.checkBacking(t, "log", want)

	// mmap writes, then truncation with dirty pages.
	data = randBytes(t, 3*4096+100)
	if err := os.WriteFile(tf.path("m"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	runMmapChild(t, tf.path("m")) // never mmap in this process: see runMmapChild
	copy(data[4000:], "written through mmap")
	f, err = os.OpenFile(tf.path("m"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("dirty"), 9000); err != nil {
		t.Fatal(err)
	}
	copy(data[9000:], "dirty")
	if err := f.Truncate(9003); err != nil {
		t.Fatal(err)
	}
	data = data[:9003]
	if err := f.Truncate(12000); err != nil {
		t.Fatal(err)
	}
	data = append(data, make([]byte, 12000-9003)...)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	tf.dropCaches(t)
	if got := readFile(t, tf.path("m")); !bytes.Equal(got, data) {
		t.Fatal("mmap writes and truncation read back wrong")
	}
	tf.checkBacking(t, "m", data)

	// The size the kernel shows once its caches are gone comes from the
	// backing file.
	var st syscall.Stat_t
	if err := syscall.Stat(tf.path("m"), &st); err != nil || st.Size != int64(len(data)) {
		t.Errorf("stat with cold caches: size %d, %v", st.Size, err)
	}
}
