package cipherdir

import (
	"context"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRewrapBusy: while a shared-mode mount holds a file's size lock
// exclusively (its first header, a truncation), rewrap leaves the file's
// key record alone and counts it failed with ErrBusy; a write inside the
// file (size lock shared, chunk locks) does not hold it up.
func TestRewrapBusy(t *testing.T) {
	tt := newTestTree(t)
	tt.write(t, "f", []byte("rewrap me"))
	w, err := os.OpenFile(tt.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	record := func() []byte {
		wk, _, err := ReadKeyRecord(int(w.Fd()), tt.cfg.KeyRecordMode())
		if err != nil {
			t.Fatal(err)
		}
		return wk.MarshalRecord()
	}
	setLocks := func(locks ...[3]int64) {
		for _, l := range locks {
			lk := unix.Flock_t{Type: int16(l[0]), Start: l[1], Len: l[2]}
			if err := unix.FcntlFlock(w.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
				t.Fatal(err)
			}
		}
	}
	rewrap := func() (RewrapSummary, error) {
		var ferr error
		rw, err := NewRewrapper(context.Background(), RewrapOptions{CipherDir: tt.dir, Config: tt.cfg, Source: tt.store, Force: true,
			Done: func(_ string, err error) { ferr = err }})
		if err != nil {
			t.Fatal(err)
		}
		sum, err := rw.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return sum, ferr
	}
	unlockAll := [3]int64{unix.F_UNLCK, SizeLockOffset, InternalLockEnd - SizeLockOffset}

	before := record()
	setLocks([3]int64{unix.F_WRLCK, SizeLockOffset, 1})
	if sum, err := rewrap(); sum.Failed != 1 || !errors.Is(err, ErrBusy) {
		t.Fatalf("rewrap while the size lock is held: %+v, %v; want it failed busy", sum, err)
	}
	if string(record()) != string(before) {
		t.Fatal("the key record was replaced while busy")
	}
	setLocks(unlockAll, [3]int64{unix.F_RDLCK, SizeLockOffset, 1}, [3]int64{unix.F_WRLCK, ChunkLockOffset, 1})
	if sum, err := rewrap(); sum.Rewrapped != 1 || err != nil {
		t.Fatalf("rewrap during a write inside the file: %+v, %v; want it re-wrapped", sum, err)
	}
	if string(record()) == string(before) {
		t.Fatal("the key record was not replaced")
	}
	setLocks(unlockAll)
}
