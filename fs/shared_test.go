package fs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/names"
)

func withShared(o *Options) { o.Shared = true }

// TestSharedRmdirRaceKeepsDirID plays another host's rmdir that fails: it
// removes a directory's ID file (as rmdir does before the directory) and
// writes the same ID back a few milliseconds later (as rmdir does when
// the directory turned out not to be empty). A create on a second mount
// meanwhile must wait for the ID rather than give the directory a fresh
// one: the first mount keeps the old ID on its node and could no longer
// read the new entry. (Before awaitDirID the create repaired the ID at
// once, and the first mount's listing lost the entry.)
func TestSharedRmdirRaceKeepsDirID(t *testing.T) {
	tf := mountFS(t, withNames(t), withShared)
	if err := os.Mkdir(tf.path("e"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, tf.path("e")); len(got) != 0 { // the first mount keeps e's ID
		t.Fatalf("lists %q", got)
	}
	be := backingOf(t, tf, "e")
	id := readID(t, tf.root.names, be)
	idFile := filepath.Join(be, names.DirIDFileName)
	b, err := os.ReadFile(idFile)
	if err != nil {
		t.Fatal(err)
	}
	tf2 := remount(t, tf)
	if err := os.Remove(idFile); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(15 * time.Millisecond) // later than a create repairs, inside awaitDirID's wait
		f, err := os.OpenFile(idFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if errors.Is(err, os.ErrExist) {
			return // the create gave it another ID: checked below
		}
		if err != nil {
			t.Error(err)
			return
		}
		f.Write(b)
		f.Close()
	})
	err = os.WriteFile(tf2.path("e/new"), []byte("n"), 0o600)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := readID(t, tf.root.names, be); got != id {
		t.Fatalf("the directory's ID changed from %x to %x", id, got)
	}
	if got := listDir(t, tf.path("e")); !slices.Equal(got, []string{"new"}) {
		t.Fatalf("the first mount lists %q, want [new]", got)
	}
}

// TestSharedLockLayout checks the internal locks in the agreed layout: a
// content change of one mount in shared mode leaves no lock behind, and
// while a test holds the write lock of a chunk, a write to that chunk
// waits and a write to another chunk does not.
func TestSharedLockLayout(t *testing.T) {
	tf := mountFS(t, withShared)
	p := tf.path("f")
	if err := os.WriteFile(p, make([]byte, 3*4096), 0o600); err != nil {
		t.Fatal(err)
	}
	// A lock of the size byte, exclusive: free again after the write.
	fd, err := unix.Open(tf.backing("f"), unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: sizeLockByte, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatalf("size lock left held after a write: %v", err)
	}
	lk.Type = unix.F_UNLCK
	unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)

	// Hold chunk 1's lock: a write to chunk 0 goes through, one to chunk
	// 1 waits until it is released.
	lk = unix.Flock_t{Type: unix.F_WRLCK, Start: chunkLockBase + 1, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("zero"), 10); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.WriteAt([]byte("one"), 4096+10)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a write to a chunk whose lock another holder has went through: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	lk.Type = unix.F_UNLCK
	unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSharedRepairedDirIDReread plays another host that gave an empty
// directory a fresh ID (after a crash in rmdir left it without one) while
// this mount kept the old ID on its node: a create here must use the ID
// on disk, or no other mount could read the new entry. (With the ID kept
// on the node for good, the first mount's listing lost the entry.)
func TestSharedRepairedDirIDReread(t *testing.T) {
	tf := mountFS(t, withNames(t), withShared)
	if err := os.Mkdir(tf.path("e"), 0o755); err != nil {
		t.Fatal(err)
	}
	tf2 := remount(t, tf)
	if got := listDir(t, tf2.path("e")); len(got) != 0 { // the second mount keeps e's ID
		t.Fatalf("lists %q", got)
	}
	be := backingOf(t, tf, "e")
	if err := os.Remove(filepath.Join(be, names.DirIDFileName)); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(be, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cipherdir.RepairDirID(fd, tf.root.names) // the other host's repair: a new ID
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tf2.path("e/new"), []byte("n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A fresh mount reads the ID on disk.
	tf3 := remount(t, tf)
	if got := listDir(t, tf3.path("e")); !slices.Equal(got, []string{"new"}) {
		t.Fatalf("a fresh mount lists %q, want [new]: the second mount named the entry under the old ID", got)
	}
}

// TestSharedCreateRacesFirstWrite plays another host that opens a file the
// moment this mount has created it, still empty, and writes to it first,
// giving it a header and key of its own: the creating mount must keep
// that header (under the size lock) instead of writing its own over it,
// which left the other host's open file with a key that no longer
// matched (EIO on its next write).
func TestSharedCreateRacesFirstWrite(t *testing.T) {
	var otherMount atomic.Pointer[testFS] // set and read across the daemon's goroutines
	var raced atomic.Bool
	tf := mountFS(t, withNames(t), withShared, func(o *Options) {
		o.afterCreate = func(dirfd int, name string) {
			other := otherMount.Load()
			if other == nil || !raced.CompareAndSwap(false, true) {
				return
			}
			f, err := os.OpenFile(other.path("f"), os.O_WRONLY, 0)
			if err != nil {
				t.Errorf("the other host's open: %v", err)
				return
			}
			defer f.Close()
			if _, err := f.Write([]byte("theirs")); err != nil {
				t.Errorf("the other host's write: %v", err)
			}
		}
	})
	other := remount(t, tf)
	otherMount.Store(other)
	f, err := os.OpenFile(tf.path("f"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if !raced.Load() {
		t.Fatal("the hook did not run")
	}
	if _, err := f.WriteAt([]byte("mine"), 6); err != nil {
		t.Fatalf("the creator's write: %v", err)
	}
	f.Close()
	for _, m := range []*testFS{tf, other} {
		b, err := os.ReadFile(m.path("f"))
		if err != nil || string(b) != "theirsmine" {
			t.Fatalf("%s reads %q, %v; want theirsmine", m.mnt, b, err)
		}
	}
	// The other host's handle is still good too.
	g, err := os.OpenFile(other.path("f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.Write([]byte("!")); err != nil {
		t.Fatalf("the other host's next write: %v", err)
	}
}

// TestSharedWriteToReplacedFileIsStale plays `kmsfs rekey` on another host
// replacing a file open here for writing: a new inode renamed over its
// name, the old one marked (cipherdir.Retire) while rekey holds the lock.
// A write through the descriptor opened before must fail with ESTALE, not
// land in the old inode, which no name leads to (a lost write). A write to
// a file unlinked through the mount while open still succeeds: a link
// count of 0 alone is not a replacement.
func TestSharedWriteToReplacedFileIsStale(t *testing.T) {
	tf := mountFS(t, withShared)
	f, err := os.OpenFile(tf.path("f"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("before"), 0); err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(tf.backing("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := os.WriteFile(tf.backing("g"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tf.backing("g"), tf.backing("f")); err != nil {
		t.Fatal(err)
	}
	if err := cipherdir.Retire(int(old.Fd())); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("after"), 0); !errors.Is(err, unix.ESTALE) {
		t.Fatalf("write to a replaced file: %v, want ESTALE", err)
	}

	u, err := os.OpenFile(tf.path("u"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := os.Remove(tf.path("u")); err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteAt([]byte("still mine"), 0); err != nil {
		t.Fatalf("write to an unlinked open file: %v", err)
	}
	b := make([]byte, 10)
	if n, err := u.ReadAt(b, 0); n != 10 || string(b) != "still mine" {
		t.Fatalf("read back %q, %v", b[:n], err)
	}
}
