package fs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
)

// TestHandleNoPassthrough proves at the package level that the kernel
// never reads the backing file directly: the handle type has no
// PassthroughFd, and a read through an in-process mount (as root, where
// go-fuse would register passthrough) returns plaintext. Integration's
// TestNoPassthrough checks the same end to end through the binary, with
// cold reads by read(2), O_DIRECT and mmap; the type check is only here.
func TestHandleNoPassthrough(t *testing.T) {
	var h gofs.FileHandle = &handle{}
	if _, ok := h.(gofs.FilePassthroughFder); ok {
		t.Fatal("handle implements FilePassthroughFder")
	}
	tf := mountFS(t)
	data := []byte(strings.Repeat("plaintext that must come back as written. ", 200))
	os.WriteFile(tf.path("p"), data, 0o600)
	f, err := os.Open(tf.path("p"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes that are not the plaintext (ciphertext passthrough?)", len(got))
	}
	tf.checkBacking(t, "p", data)
}

// TestDamagedBacking checks what a read gives for each kind of damaged or
// foreign backing file: EIO (and a log line naming the chunk) for content
// or key records that do not authenticate, an empty file for an empty
// backing file made outside kmsfs.
func TestDamagedBacking(t *testing.T) {
	// A flipped bit in chunk 1: chunk 0 still reads, chunk 1 gives EIO.
	t.Run("tampered chunk gives EIO and is logged", func(t *testing.T) {
		tf := mountFS(t)
		data := randBytes(t, 3*4096)
		os.WriteFile(tf.path("f"), data, 0o600)
		b, _ := os.ReadFile(tf.backing("f"))
		off := chunk.DataOffset + 4096 + chunk.Overhead + 100 // inside chunk 1
		b[off] ^= 1
		os.WriteFile(tf.backing("f"), b, 0o600)
		f, err := os.Open(tf.path("f"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Fatalf("chunk 0: %v", err)
		}
		// Bypass the page cache's readahead: the failing chunk is read on its own.
		if _, err := f.ReadAt(buf, 4096); !errors.Is(err, syscall.EIO) {
			t.Fatalf("tampered chunk: %v, want EIO", err)
		}
		if log := tf.log.String(); !strings.Contains(log, "content authentication failed") || !strings.Contains(log, "chunk=1") {
			t.Errorf("log: %q", log)
		}
	})
	// A key record copied from another file of the same tree is refused:
	// the encryption context names the file ID in the header, so the
	// unwrap fails and the read gives EIO.
	t.Run("key record of another file gives EIO", func(t *testing.T) {
		tf := mountFS(t)
		os.WriteFile(tf.path("a"), []byte("file a"), 0o600)
		os.WriteFile(tf.path("b"), []byte("file b"), 0o600)
		tf.waitReleased(t)
		rec := make([]byte, maxRecordSize)
		n, err := unix.Lgetxattr(tf.backing("a"), KeyXattr, rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Lsetxattr(tf.backing("b"), KeyXattr, rec[:n], 0); err != nil {
			t.Fatal(err)
		}
		if _, err := os.ReadFile(tf.path("b")); !errors.Is(err, syscall.EIO) {
			t.Fatalf("file with another file's key record: %v, want EIO", err)
		}
		if string(readFile(t, tf.path("a"))) != "file a" {
			t.Fatal("the record's own file")
		}
	})
	// A file created outside kmsfs (or a crash before the header): empty,
	// readable, and encrypted once written through the mount.
	t.Run("empty backing file reads empty and becomes encrypted", func(t *testing.T) {
		tf := mountFS(t)
		os.WriteFile(tf.backing("outside"), nil, 0o644)
		if got := readFile(t, tf.path("outside")); len(got) != 0 {
			t.Fatalf("read %q", got)
		}
		f, err := os.OpenFile(tf.path("outside"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("now encrypted")
		f.Close()
		if string(readFile(t, tf.path("outside"))) != "now encrypted" {
			t.Fatal("content")
		}
		tf.checkBacking(t, "outside", []byte("now encrypted"))
	})
	// A non-empty backing file without a key record is damaged: EIO.
	t.Run("backing file without key record gives EIO", func(t *testing.T) {
		tf := mountFS(t)
		os.WriteFile(tf.backing("plain"), []byte("not kmsfs content at all, longer than a header......."), 0o644)
		if _, err := os.ReadFile(tf.path("plain")); !errors.Is(err, syscall.EIO) {
			t.Fatalf("file without key record: %v, want EIO", err)
		}
	})
}
