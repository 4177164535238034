package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCrashNamespace kills the daemon with SIGKILL while writers create,
// rename, link and remove entries with short and NAME_MAX names (sidecars),
// directories (made under a temporary name with their ID file) and long
// symlink targets (their own files), three times. After each kill, fsck
// may find only what the orders of names/FORMAT.md allow a crash to leave:
// temporaries, orphans and an empty directory without ID file, as
// warnings, never an entry that cannot be read; `fsck --repair` removes them, and the remounted tree lists and
// stats every entry without error.
func TestCrashNamespace(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	seed := testSeed(t)
	long := func(s string) string { return s + strings.Repeat("l", 255-len(s)) }
	pool := []string{"a", "b", long("c"), long("d"), "e/a", "e/" + long("b"), long("f") + "/a", long("f") + "/" + long("g")}
	for round := range 3 {
		var ops atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range 3 {
			r := rand.New(rand.NewPCG(seed, uint64(round*10+w)))
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					p, q := fs.Path(pool[r.IntN(len(pool))]), fs.Path(pool[r.IntN(len(pool))])
					var err error
					switch r.IntN(8) {
					case 0:
						err = os.Mkdir(p, 0o755)
					case 1:
						err = os.Remove(p)
					case 2:
						err = os.WriteFile(p, []byte("x"), 0o644)
					case 3:
						err = os.Rename(p, q)
					case 4:
						err = os.Link(p, q)
					case 5:
						err = os.Symlink(strings.Repeat("t/", 1000+r.IntN(1000)), p)
					case 6:
						err = unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, q, unix.RENAME_EXCHANGE)
					default:
						err = os.MkdirAll(filepath.Join(fs.Mnt, "e"), 0o755)
					}
					if errno := errnoOf(err); errno == syscall.ENOTCONN || errno == syscall.ECONNABORTED {
						return
					}
					ops.Add(1)
				}
			})
		}
		time.Sleep(time.Duration(200+rand.New(rand.NewPCG(seed, uint64(round))).IntN(600)) * time.Millisecond)
		pid := fs.DaemonPID()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
		if err := waitExit(pid, exitTimeout); err != nil {
			t.Fatalf("daemon %d after SIGKILL: %v", pid, err)
		}
		fs.Unmount()

		// Only crash leftovers, as warnings: exit 0.
		code, _, rep := fsck(t, fs, fs.CipherDir)
		var left []string
		for _, f := range rep.Files {
			for _, p := range f.Problems {
				switch {
				case p.Kind == "temp-leftover", p.Kind == "sidecar-orphan", p.Kind == "target-orphan",
					p.Kind == "dirid-missing" && p.Warning: // an empty directory: a kill in rmdir
					left = append(left, p.Kind)
				default:
					t.Errorf("round %d: fsck after the kill: %s: %+v", round, f.Name(), p)
				}
			}
		}
		if code != 0 {
			t.Errorf("round %d: fsck after the kill: exit %d, want 0 (warnings only)", round, code)
		}
		if code, _, _ := fsck(t, fs, fs.CipherDir, "--repair"); code != 0 {
			t.Errorf("round %d: fsck --repair: exit %d", round, code)
		}
		if _, lines, rep := fsck(t, fs, fs.CipherDir); len(rep.Files) != 0 {
			t.Errorf("round %d: fsck after --repair still finds:\n%s", round, strings.Join(lines, "\n"))
		}
		fs.Mount()
		entries := 0
		err := filepath.WalkDir(fs.Mnt, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			entries++
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return fmt.Errorf("lstat %s: %w", p, err)
			}
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				if _, err := os.Readlink(p); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: walking the remounted tree: %v", round, err)
		}
		t.Logf("round %d: killed after %d operations; crash leftovers %v; %d entries after the repair", round, ops.Load(), left, entries)
		if t.Failed() {
			return
		}
	}
}
