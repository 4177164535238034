package secmem

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestDisableDumps: after the call the process is not dumpable; the test
// makes it dumpable again afterwards.
func TestDisableDumps(t *testing.T) {
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0) })
	if err := DisableDumps(); err != nil {
		t.Fatal(err)
	}
	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d != 0 {
		t.Fatalf("PR_GET_DUMPABLE = %d after DisableDumps, want 0", d)
	}
}

// mapping is the /proc/self/smaps entry of one address.
type mapping struct {
	flags    []string
	lockedKB int
}

func (m mapping) hasFlag(f string) bool {
	for _, x := range m.flags {
		if x == f {
			return true
		}
	}
	return false
}

// smapsOf returns the smaps entry of the mapping holding b[0].
func smapsOf(t *testing.T, b []byte) mapping {
	t.Helper()
	addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var m mapping
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			if in {
				return m
			}
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			in = err1 == nil && err2 == nil && addr >= l && addr < h
			continue
		}
		if !in {
			continue
		}
		switch fields[0] {
		case "Locked:":
			m.lockedKB, _ = strconv.Atoi(fields[1])
		case "VmFlags:":
			m.flags = fields[1:]
		}
	}
	if !in {
		t.Fatalf("no mapping in /proc/self/smaps holds %#x", addr)
	}
	return m
}

// canLock reports whether mlock of a page can succeed: as root
// (CAP_IPC_LOCK) or within RLIMIT_MEMLOCK.
func canLock() bool {
	var lim unix.Rlimit
	return os.Geteuid() == 0 || (unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil && lim.Cur >= 64<<10)
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, SlotSize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestArenaMemoryIsLockedAndNotDumped: a key copied into an arena sits in
// a mapping that /proc/self/smaps shows as excluded from core dumps ("dd")
// and locked ("lo", Locked > 0); Free zeroes it.
func TestArenaMemoryIsLockedAndNotDumped(t *testing.T) {
	var logs bytes.Buffer
	a := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer a.Close()
	key := randomKey(t)
	k := a.Copy(key)
	if !bytes.Equal(k, key) {
		t.Fatal("copy differs from the key")
	}
	m := smapsOf(t, k)
	if !m.hasFlag("dd") {
		t.Errorf("VmFlags %v: no dd (excluded from core dumps)", m.flags)
	}
	if !canLock() {
		t.Logf("RLIMIT_MEMLOCK too small to check locking: %s", logs.String())
	} else {
		if !m.hasFlag("lo") || m.lockedKB <= 0 {
			t.Errorf("VmFlags %v, Locked %d kB: not locked", m.flags, m.lockedKB)
		}
		if !a.Locked(k) {
			t.Error("Locked reports false")
		}
		if logs.Len() != 0 {
			t.Errorf("warnings logged: %s", logs.String())
		}
	}
	a.Free(k)
	if !bytes.Equal(k, make([]byte, SlotSize)) {
		t.Errorf("slot not zeroed by Free: %x", k)
	}
}

// TestArenaGrowsAndReuses hands out more slots than one page holds: every
// slot is distinct, protected, and comes back after Free.
func TestArenaGrowsAndReuses(t *testing.T) {
	a := New(Options{})
	defer a.Close()
	n := 3*unix.Getpagesize()/SlotSize + 1
	seen := map[*byte]bool{}
	var keys [][]byte
	for i := range n {
		k := a.Copy([]byte(fmt.Sprintf("key %d", i)))
		if seen[&k[0]] {
			t.Fatalf("slot %p handed out twice", &k[0])
		}
		seen[&k[0]] = true
		keys = append(keys, k)
	}
	for i, k := range keys {
		if string(k) != fmt.Sprintf("key %d", i) {
			t.Fatalf("key %d overwritten: %q", i, k)
		}
		if (i == 0 || i == n-1) && !smapsOf(t, k).hasFlag("dd") {
			t.Fatalf("key %d not in dd memory", i)
		}
		a.Free(k)
	}
	regions := len(a.regions)
	for range n {
		a.Copy([]byte("again"))
	}
	if len(a.regions) != regions {
		t.Fatalf("%d regions after reallocating freed slots, want %d", len(a.regions), regions)
	}
	// Longer than a slot: a heap copy, which Free zeroes.
	long := a.Copy(bytes.Repeat([]byte{7}, SlotSize+1))
	a.Free(long)
	if !bytes.Equal(long, make([]byte, SlotSize+1)) {
		t.Error("heap copy not zeroed by Free")
	}
}

// TestArenaFallbacks forces the kernel's refusals: without a mapping keys
// live on the heap, without a lock in unlocked non-dumpable pages; either
// way the arena works and logs exactly one warning.
func TestArenaFallbacks(t *testing.T) {
	for _, tc := range []struct {
		name           string
		opts           Options
		wantDD, wantLo bool
		wantLog        string
	}{
		{"no mapping", Options{failMap: true}, false, false, "cannot map memory"},
		{"no lock", Options{failLock: true}, true, false, "cannot lock key memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			tc.opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			a := New(tc.opts)
			defer a.Close()
			key := randomKey(t)
			var got [][]byte
			for range 2 * unix.Getpagesize() / SlotSize { // two regions' worth
				k := a.Copy(key)
				if !bytes.Equal(k, key) {
					t.Fatal("copy differs from the key")
				}
				got = append(got, k)
			}
			m := smapsOf(t, got[0])
			if m.hasFlag("dd") != tc.wantDD || m.hasFlag("lo") != tc.wantLo || a.Locked(got[0]) {
				t.Errorf("VmFlags %v, Locked() %v; want dd %v, lo %v", m.flags, a.Locked(got[0]), tc.wantDD, tc.wantLo)
			}
			if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("%d warnings, want 1 saying %q:\n%s", n, tc.wantLog, logs.String())
			}
			a.Free(got[0])
			if !bytes.Equal(got[0], make([]byte, SlotSize)) {
				t.Error("Free did not zero the key")
			}
		})
	}
}

// TestArenaClose: Close zeroes every slot and unlocks; Free of an old slot
// afterwards is harmless and does not hand the slot out again.
func TestArenaClose(t *testing.T) {
	a := New(Options{})
	k := a.Copy(randomKey(t))
	a.Close()
	if !bytes.Equal(k, make([]byte, SlotSize)) || a.Locked(k) {
		t.Fatalf("after Close: %x, locked %v", k, a.Locked(k))
	}
	a.Free(k)
	k2 := a.Copy([]byte("after close"))
	if string(k2) != "after close" || &k2[0] == &k[0] {
		t.Fatalf("copy after Close: %q", k2)
	}
	a.Close()
}
