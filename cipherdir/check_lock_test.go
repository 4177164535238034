package cipherdir

import (
	"context"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCheckBusy: a file whose internal locks a shared-mode mount holds is
// neither repaired nor reported damaged: it is counted busy (a warning).
// A clean file is checked without locks, so a held lock does not make it
// busy. Once the lock goes, the repair is done.
func TestCheckBusy(t *testing.T) {
	tt := newTestTree(t)
	tt.write(t, "f", []byte("repair me"))
	tt.write(t, "g", []byte("clean"))
	if err := unix.Removexattr(tt.path("f"), KeyXattr); err != nil {
		t.Skipf("user xattrs unsupported here: %v", err)
	}
	g, err := os.OpenFile(tt.path("g"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	w, err := os.OpenFile(tt.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, fd := range []uintptr{w.Fd(), g.Fd()} { // a size change in progress on both
		lk := unix.Flock_t{Type: unix.F_WRLCK, Start: SizeLockOffset, Len: 1}
		if err := unix.FcntlFlock(fd, unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
	}
	check := func(repair bool) (CheckSummary, []FileReport) {
		var reps []FileReport
		sum, err := Check(context.Background(), CheckOptions{CipherDir: tt.dir, Config: tt.cfg, Keys: tt.store, Repair: repair,
			Report: func(r FileReport) { reps = append(reps, r) }})
		if err != nil {
			t.Fatal(err)
		}
		return sum, reps
	}

	for _, repair := range []bool{false, true} {
		sum, reps := check(repair)
		wantBusy := int64(1) // f only: g is clean and is checked without locks
		if repair {
			wantBusy = 2 // a repair locks every file
		}
		if sum.Busy != wantBusy || sum.Repaired != 0 || sum.Remaining != 0 || sum.Damaged != 0 {
			t.Errorf("repair %v while locked: %+v; want %d busy, nothing found or repaired", repair, sum, wantBusy)
		}
		for _, r := range reps {
			if r.Path != "f" {
				continue
			}
			if !r.Busy || len(r.Problems) != 1 || r.Problems[0].Kind != ProblemBusy || !r.Problems[0].Warning {
				t.Errorf("repair %v: report of f: %+v", repair, r)
			} else if !repair && !strings.Contains(r.Problems[0].Detail, ProblemXattrMissing) {
				t.Errorf("busy detail does not name the unlocked read's finding: %q", r.Problems[0].Detail)
			}
		}
	}
	if _, err := readKeyXattr(int(w.Fd())); err == nil {
		t.Fatal("repaired while busy")
	}

	lk := unix.Flock_t{Type: unix.F_UNLCK, Start: SizeLockOffset, Len: 1}
	for _, fd := range []uintptr{w.Fd(), g.Fd()} {
		if err := unix.FcntlFlock(fd, unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
	}
	if sum, _ := check(true); sum.Busy != 0 || sum.Repaired != 1 {
		t.Errorf("repair once unlocked: %+v; want the xattr repaired", sum)
	}
}
