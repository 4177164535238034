// Package secmem keeps key material out of core dumps and swap, as far as
// a Go program can.
//
// DisableDumps makes the whole process non-dumpable (PR_SET_DUMPABLE 0):
// no core file is written on a crash and other processes of the same user
// cannot ptrace it or read its memory through /proc/PID/mem. An Arena
// hands out fixed-size slots (SlotSize bytes, a 256-bit key) from pages
// mapped outside the Go heap, locked into RAM (mlock) and marked
// MADV_DONTDUMP, so the keys held there for long (a DEK cache, the data
// key pool, the keystore's root key) are neither swapped out nor dumped,
// even if dumping is turned back on. Freed slots are zeroed.
//
// Both are best effort: when the kernel refuses a mapping or a lock (the
// usual cause is RLIMIT_MEMLOCK, 8 MiB by default for a user since Linux
// 5.16, 64 KiB before), the arena keeps working from the Go heap or from
// unlocked pages and logs one warning.
//
// Limits: a key is protected only while it sits in a slot. Copies made
// elsewhere are not: the bytes a KMS response was decoded from, the copy
// a caller gets from a DEK cache, and above all the AES key schedule that
// crypto/aes expands from the key into its own heap object for as long as
// a file is open. Those live on the Go heap; only DisableDumps covers
// them (no core file), not swap.
package secmem

import (
	"fmt"
	"log/slog"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SlotSize is the size of one slot: a 256-bit key.
const SlotSize = 32

// maxRegion bounds one mapping; an arena grows by mappings of one page,
// two, four… up to this size.
const maxRegion = 64 << 10

// DisableDumps marks the process non-dumpable (prctl PR_SET_DUMPABLE 0):
// no core dump, and no ptrace attach or /proc/PID/mem access by other
// processes of the same user. Commands that hold keys call it first.
func DisableDumps() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("secmem: prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}

// Options configure an Arena.
type Options struct {
	// Logger receives the one warning an arena logs when the kernel
	// refuses to map or lock its memory (nil: discard).
	Logger *slog.Logger

	// failMap and failLock make mmap and mlock fail, to exercise the
	// fallbacks (tests only).
	failMap, failLock bool
}

// Arena hands out SlotSize-byte slots of locked, non-dumpable memory. It is
// safe for concurrent use. The zero value is not usable: call New.
type Arena struct {
	log               *slog.Logger
	failMap, failLock bool

	mu      sync.Mutex
	regions []region
	free    [][]byte // free slots, each SlotSize long, oldest first
	heap    bool     // mapping failed: slots come from the Go heap
	warned  bool
	closed  bool
}

// region is one mapping of an arena.
type region struct {
	mem    []byte
	locked bool
}

func (r region) base() uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(r.mem))) }

func (r region) contains(p uintptr) bool {
	return p >= r.base() && p < r.base()+uintptr(len(r.mem))
}

// New returns an empty arena; it maps memory on first use.
func New(opts Options) *Arena {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Arena{log: log, failMap: opts.failMap, failLock: opts.failLock}
}

// Copy returns a copy of key in a slot of the arena, or on the Go heap if
// key is longer than SlotSize or the arena has no memory of its own. The
// caller gives it back with Free; the arena never reads it.
func (a *Arena) Copy(key []byte) []byte {
	b := a.alloc(len(key))
	copy(b, key)
	return b
}

// alloc returns n zero bytes: a slot (n <= SlotSize) or heap memory.
func (a *Arena) alloc(n int) []byte {
	if n == 0 || n > SlotSize {
		return make([]byte, n)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.free) == 0 && !a.heap && !a.closed {
		a.grow()
	}
	if len(a.free) == 0 {
		return make([]byte, n)
	}
	// The slot freed longest ago: a slot is reused as late as possible.
	s := a.free[0]
	a.free = a.free[1:]
	return s[:n:n]
}

// grow maps one more region and adds its slots to the free list. On
// failure the arena falls back to the heap. a.mu is held.
func (a *Arena) grow() {
	size := min(unix.Getpagesize()<<len(a.regions), maxRegion)
	var mem []byte
	var err error = unix.ENOMEM
	if !a.failMap {
		mem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	}
	if err != nil {
		a.heap = true
		a.warn("cannot map memory for keys; they stay on the Go heap, where swap may take them",
			fmt.Errorf("mmap %d bytes: %w", size, err))
		return
	}
	if err := unix.Madvise(mem, unix.MADV_DONTDUMP); err != nil {
		a.warn("cannot exclude key memory from core dumps", fmt.Errorf("madvise(MADV_DONTDUMP): %w", err))
	}
	// Not in a child made by fork (exec replaces it anyway). Kernels
	// before 4.14 do not know it; nothing depends on it.
	_ = unix.Madvise(mem, unix.MADV_WIPEONFORK)
	err = unix.ENOMEM
	if !a.failLock {
		err = unix.Mlock(mem)
	}
	if err != nil {
		var lim unix.Rlimit
		limit := "unknown"
		if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil {
			limit = fmt.Sprint(lim.Cur)
		}
		a.warn("cannot lock key memory into RAM; keys may be swapped to disk (raise RLIMIT_MEMLOCK, ulimit -l)",
			fmt.Errorf("mlock %d bytes (RLIMIT_MEMLOCK %s bytes): %w", size, limit, err))
	}
	a.regions = append(a.regions, region{mem: mem, locked: err == nil})
	for off := 0; off+SlotSize <= len(mem); off += SlotSize {
		a.free = append(a.free, mem[off:off+SlotSize:off+SlotSize])
	}
}

// warn logs the first refusal of the arena only. a.mu is held.
func (a *Arena) warn(msg string, err error) {
	if a.warned {
		return
	}
	a.warned = true
	a.log.Warn("secmem: "+msg, "err", err.Error())
}

// Free zeroes b, which Copy returned, and gives its slot back. It accepts
// nil and heap slices (which it only zeroes).
func (a *Arena) Free(b []byte) {
	if cap(b) == 0 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.regions {
		if r.contains(p) {
			off := int(p - r.base())
			off -= off % SlotSize
			slot := r.mem[off : off+SlotSize : off+SlotSize]
			clear(slot)
			if !a.closed {
				a.free = append(a.free, slot)
			}
			return
		}
	}
	clear(b[:cap(b)])
}

// Locked reports whether b lies in locked (mlock'ed) memory of the arena.
func (a *Arena) Locked(b []byte) bool {
	if cap(b) == 0 {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.regions {
		if r.contains(p) {
			return r.locked
		}
	}
	return false
}

// Close zeroes every slot and unlocks the memory; the owner calls it once
// it holds no key any more. The pages stay mapped (zero), so a slice still
// held reads zeros rather than faulting, and Free of one stays harmless.
// Later Copy calls return heap copies.
func (a *Arena) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, r := range a.regions {
		clear(r.mem)
		if r.locked {
			_ = unix.Munlock(r.mem)
			a.regions[i].locked = false
		}
	}
	a.free, a.closed = nil, true
}
