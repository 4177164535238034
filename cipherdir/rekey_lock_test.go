package cipherdir

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRekeyBusy: while a shared-mode mount's writer holds the file's
// internal locks (a write inside the file: the size lock shared and a
// chunk's lock exclusive; a size change: the size lock exclusive), Rekey
// leaves the file alone with ErrBusy. Once the writer is done it rekeys,
// and the writer's descriptor of the old inode then shows Retired, which
// makes the mount fail its next write with ESTALE.
func TestRekeyBusy(t *testing.T) {
	tt := newTestTree(t)
	data := bytes.Repeat([]byte("busy"), 3000)
	tt.write(t, "f", data)
	rk, err := NewRekeyer(context.Background(), tt.dir, tt.cfg, tt.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rk.Close()
	before := fileObjectID(t, tt.path("f"))

	w, err := os.OpenFile(tt.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, held := range []struct {
		name  string
		locks [][3]int64 // type, start, length
	}{
		{"write inside the file", [][3]int64{{unix.F_RDLCK, SizeLockOffset, 1}, {unix.F_WRLCK, ChunkLockOffset + 1, 1}}},
		{"size change", [][3]int64{{unix.F_WRLCK, SizeLockOffset, 1}}},
	} {
		for _, l := range held.locks {
			lk := unix.Flock_t{Type: int16(l[0]), Start: l[1], Len: l[2]}
			if err := unix.FcntlFlock(w.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := rk.Rekey(context.Background(), "f"); !errors.Is(err, ErrBusy) {
			t.Fatalf("%s: Rekey: %v, want ErrBusy", held.name, err)
		}
		if got := fileObjectID(t, tt.path("f")); got != before {
			t.Fatalf("%s: the file was replaced while busy", held.name)
		}
		lk := unix.Flock_t{Type: unix.F_UNLCK, Start: SizeLockOffset, Len: InternalLockEnd - SizeLockOffset}
		if err := unix.FcntlFlock(w.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
	}

	if _, _, err := rk.Rekey(context.Background(), "f"); err != nil {
		t.Fatalf("Rekey once the writer is done: %v", err)
	}
	if got := fileObjectID(t, tt.path("f")); got == before {
		t.Fatal("not rekeyed")
	}
	if got := tt.read(t, "f"); !bytes.Equal(got, data) {
		t.Fatal("content changed")
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if !Retired(&st) {
		t.Fatalf("the old inode is not marked replaced: mode %o, mtime %v", st.Mode, st.Mtim)
	}
}
