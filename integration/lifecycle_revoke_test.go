package integration

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// readFresh reads n bytes at offset 0 of f past the kernel's page cache
// (dropped first), so the read reaches the daemon.
func readFresh(f *os.File, n int) ([]byte, error) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	buf := make([]byte, n)
	m, err := f.ReadAt(buf, 0)
	if m == n {
		err = nil
	}
	return buf[:m], err
}

// TestRevocationReachesOpenFiles disables the key of a mount with
// --cache-max-age 2s: within that bound (plus a margin for the re-check)
// reads and writes of an already open file fail with EACCES, as do new
// opens, and the daemon logs one line naming the key and its state. After
// the key is enabled again both work without a remount.
func TestRevocationReachesOpenFiles(t *testing.T) {
	t.Parallel()
	const bound = 2 * time.Second
	fs := newFS(t, WithMountArgs("--cache-max-age", bound.String()))
	cfg := fs.Config()
	data := []byte("readable while the key is enabled")
	mustWrite(t, fs.Path("open"), data)
	mustWrite(t, fs.Path("other"), data)
	f, err := os.OpenFile(fs.Path("open"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := readFresh(f, len(data)); err != nil || string(got) != string(data) {
		t.Fatalf("read before disabling: %q, %v", got, err)
	}

	fs.Run("key", "disable", cfg.KeyID)
	disabled := time.Now()
	var readErr error
	for time.Since(disabled) < bound+3*time.Second {
		if _, readErr = readFresh(f, len(data)); readErr != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(disabled)
	if !errors.Is(readErr, syscall.EACCES) {
		t.Fatalf("reads of an open file %v after its key was disabled: %v, want EACCES within %v", took, readErr, bound)
	}
	t.Logf("the open file's reads failed %v after the key was disabled", took.Round(time.Millisecond))
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EACCES) {
		t.Errorf("write to an open file with its key disabled: %v, want EACCES", err)
	}
	if _, err := os.ReadFile(fs.Path("open")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("new open of an open file with its key disabled: %v, want EACCES", err)
	}
	// "other" was read within the cache's age by nobody, but its DEK may
	// still be in the cache from the write: within the bound it must fail.
	time.Sleep(bound)
	if _, err := os.ReadFile(fs.Path("other")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("new open with the key disabled: %v, want EACCES", err)
	}
	log := fs.Log()
	if n := strings.Count(log, "data key revoked"); n != 1 {
		t.Errorf("the daemon log has %d 'data key revoked' lines, want 1:\n%s", n, log)
	}
	for _, want := range []string{cfg.KeyID, "state=Disabled"} {
		if !strings.Contains(log, want) {
			t.Errorf("the daemon log does not name %q:\n%s", want, log)
		}
	}

	fs.Run("key", "enable", cfg.KeyID)
	enabled := time.Now()
	for time.Since(enabled) < 5*time.Second {
		if _, readErr = readFresh(f, len(data)); readErr == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if readErr != nil {
		t.Fatalf("reads of the open file after the key was enabled again: %v", readErr)
	}
	if _, err := f.WriteAt([]byte("R"), 0); err != nil {
		t.Errorf("write after the key was enabled again: %v", err)
	}
	checkContent(t, fs.Path("other"), data)
	checkContent(t, fs.Path("open"), append([]byte("R"), data[1:]...))
}

// TestRevocationPendingDeletion: a key scheduled for deletion is refused
// like a disabled one (the mount reports the state), and cancelling the
// deletion and enabling the key brings the files back.
func TestRevocationPendingDeletion(t *testing.T) {
	t.Parallel()
	fs := newFS(t, WithMountArgs("--cache-max-age", "1s"))
	cfg := fs.Config()
	mustWrite(t, fs.Path("f"), []byte("x"))
	f, err := os.Open(fs.Path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fs.Run("key", "schedule-deletion", "--days", "7", cfg.KeyID)
	var readErr error
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(50 * time.Millisecond) {
		if _, readErr = readFresh(f, 1); readErr != nil {
			break
		}
	}
	if !errors.Is(readErr, syscall.EACCES) {
		t.Fatalf("reads with the key pending deletion: %v, want EACCES", readErr)
	}
	if log := fs.Log(); !strings.Contains(log, "state=PendingDeletion") {
		t.Errorf("the daemon log does not name the state PendingDeletion:\n%s", log)
	}
	fs.Run("key", "cancel-deletion", cfg.KeyID)
	fs.Run("key", "enable", cfg.KeyID)
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(50 * time.Millisecond) {
		if _, readErr = readFresh(f, 1); readErr == nil {
			break
		}
	}
	if readErr != nil {
		t.Errorf("reads after the deletion was cancelled and the key enabled: %v", readErr)
	}
}
