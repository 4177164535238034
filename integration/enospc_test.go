package integration

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// cipherDirOnTmpfs moves the (unmounted) CIPHERDIR of fs onto a fresh tmpfs
// of the given size ("8m"), keeping its config. tmpfs supports fallocate and
// user xattrs, and runs out of space deterministically. The tmpfs is
// detached lazily at cleanup, before the harness unmounts the FUSE mount
// (cleanups run last-registered first), so the daemon keeps it until it
// exits.
func cipherDirOnTmpfs(t *testing.T, fs *testFS, size string) {
	t.Helper()
	requireRoot(t)
	// The files init wrote in the root (kmsfs.conf, and with encrypted
	// names its copy and the root's ID file) move onto the tmpfs.
	ents, err := os.ReadDir(fs.CipherDir)
	if err != nil {
		t.Fatal(err)
	}
	saved := map[string][]byte{}
	modes := map[string]os.FileMode{}
	for _, e := range ents {
		if e.Type().IsRegular() {
			saved[e.Name()] = mustRead(t, fs.BackingRaw(e.Name()))
			if fi, err := e.Info(); err == nil {
				modes[e.Name()] = fi.Mode().Perm()
			}
		}
	}
	if err := unix.Mount("kmsfs-test-tmpfs", fs.CipherDir, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", fs.CipherDir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(fs.CipherDir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount tmpfs %s: %v", fs.CipherDir, err)
		}
	})
	for name, b := range saved {
		if err := os.WriteFile(fs.BackingRaw(name), b, modes[name]); err != nil {
			t.Fatal(err)
		}
	}
}

// enospcFile is one file of TestENOSPC: its descriptor in the mount and
// the content every acknowledged write gives it.
type enospcFile struct {
	name string
	fd   int
	want []byte
}

// TestENOSPC fills a CIPHERDIR on an 8 MiB tmpfs through the mount with
// appends, overwrites across chunk edges and writes past the end of file
// (which pad the old last chunk), until writes fail. Every failure must be
// ENOSPC, a short write must be acknowledged exactly as far as it got, and
// afterwards every file must read back without EIO and hold exactly what
// was acknowledged: the space reservation before each write leaves every
// chunk old or new, never torn. Overwrites inside existing chunks keep
// working on the full disk (they need no new space; logged). The same holds after
// a remount, and deleting a file makes writes work again.
func TestENOSPC(t *testing.T) {
	t.Parallel()
	testENOSPC(t, randomBytes)
}

// TestCompressedENOSPC is TestENOSPC on a zstd tree (64 KiB chunks) with
// text and random writes mixed: compressed chunks have their zero tails
// punched, so rewriting one (raw or compressed) needs new space even
// inside the file, which the reservation must claim first.
func TestCompressedENOSPC(t *testing.T) {
	t.Parallel()
	testENOSPC(t, func(r *rand.Rand, n int) []byte {
		if r.IntN(2) == 0 {
			return randomBytes(r, n)
		}
		return textBytes(r, n)
	}, compressOpt("zstd"))
}

// testENOSPC is TestENOSPC with the data of each write from data and the
// tree made with opts.
func testENOSPC(t *testing.T, data func(r *rand.Rand, n int) []byte, opts ...Option) {
	fs := newFS(t, append([]Option{WithoutMount()}, opts...)...)
	cipherDirOnTmpfs(t, fs, "8m")
	fs.Mount()
	seed := testSeed(t)
	r := newRand(seed)
	cs := int64(fs.ChunkSize)

	var files []*enospcFile
	defer func() {
		for _, f := range files {
			unix.Close(f.fd)
		}
	}()
	open := func(name string) {
		fd, err := unix.Open(fs.Path(name), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		files = append(files, &enospcFile{name: name, fd: fd})
	}
	for i := range 6 {
		open(fmt.Sprintf("f%d", i))
	}

	var failures, fullOverwrites, shortWrites int
	for step := 0; failures < 60 && step < 20000; step++ {
		f := files[r.IntN(len(files))]
		size := int64(len(f.want))
		var off int64
		var n int
		kind := r.IntN(10)
		switch {
		case kind < 5 || size == 0: // append, often unaligned
			off, n = size, 1+r.IntN(200<<10)
		case kind < 8: // overwrite across chunk edges, partly past the end
			off, n = r.Int64N(size), 1+r.IntN(int(3*cs))
		default: // past the end: pads the old last chunk, leaves holes
			off, n = size+r.Int64N(4*cs), 1+r.IntN(int(2*cs))
		}
		data := data(r, n)
		got, err := unix.Pwrite(f.fd, data, off)
		if got > 0 {
			if got < n {
				shortWrites++
			}
			end := off + int64(got)
			if end > int64(len(f.want)) {
				f.want = append(f.want, make([]byte, end-int64(len(f.want)))...)
			}
			copy(f.want[off:], data[:got])
		}
		switch {
		case err == nil:
			if failures > 0 && off+int64(n) <= size {
				fullOverwrites++
			}
		case errors.Is(err, syscall.ENOSPC):
			failures++
		default:
			t.Fatalf("pwrite %s off %d len %d: %v, want success or ENOSPC", f.name, off, n, err)
		}
	}
	if failures == 0 {
		t.Fatal("the 8 MiB tmpfs never filled up")
	}
	t.Logf("%d ENOSPC failures, %d short writes, %d overwrites succeeded on the full disk (seed %d)",
		failures, shortWrites, fullOverwrites, seed)

	// A new file on the full disk: created whole or not at all.
	err := os.WriteFile(fs.Path("new"), bytes.Repeat([]byte("n"), 10000), 0o644)
	if err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("create on the full disk: %v, want success or ENOSPC", err)
	}
	if _, serr := os.Stat(fs.Path("new")); serr == nil {
		got, rerr := os.ReadFile(fs.Path("new"))
		if rerr != nil {
			t.Errorf("reading the file created on the full disk: %v", rerr)
		}
		t.Logf("create on the full disk: %v; the file holds %d bytes", err, len(got))
		os.Remove(fs.Path("new"))
	}

	check := func(when string) {
		t.Helper()
		for _, f := range files {
			checkContent(t, fs.Path(f.name), f.want)
		}
		if log := fs.Log(); bytes.Contains([]byte(log), []byte("authentication failed")) ||
			bytes.Contains([]byte(log), []byte("damaged backing file")) {
			t.Errorf("%s: the daemon log reports damage:\n%s", when, log)
		}
	}
	check("on the full disk")
	for _, f := range files {
		unix.Close(f.fd)
	}
	fs.Remount()
	check("after remount")
	if t.Failed() {
		return
	}

	// Space comes back: the writes work again.
	if err := os.Remove(fs.Path(files[0].name)); err != nil {
		t.Fatal(err)
	}
	want := randomBytes(r, 512<<10)
	mustWrite(t, fs.Path("after"), want)
	checkContent(t, fs.Path("after"), want)
	files = nil
}
