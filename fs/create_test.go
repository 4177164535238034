package fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openAsScript opens argv[1] with the numeric flags argv[2] and prints
// "OPENED" or the errno's name.
const openAsScript = `import errno, os, sys
try:
    os.open(sys.argv[1], int(sys.argv[2]), 0o644)
except OSError as e:
    print(errno.errorcode[e.errno])
else:
    print("OPENED")`

// openAs runs open(2) on path with flags as uid:gid (a child process, so
// the kernel sees that caller) and returns "OPENED" or the errno name.
func openAs(t *testing.T, uid, gid uint32, path string, flags int) string {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", "-c", openAsScript, path, strconv.Itoa(flags))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("open as uid %d: %v\n%s", uid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestCreateRaceExistingFile drives the race of an O_CREAT open with a
// rename: the kernel's LOOKUP finds no entry, then another user's
// mode-0600 file is renamed to the name before the daemon creates the
// backing file. The kernel skips its permission check for a file it
// believes it has just created, so the daemon must not open the existing
// file in its place: the caller must get what open(2) on a local file
// system gives (EACCES for a stranger, the file itself for its owner,
// EEXIST with O_EXCL), and a stranger's O_TRUNC must not touch the data.
func TestCreateRaceExistingFile(t *testing.T) {
	const (
		ownerUID, strangerUID = 5555, 4321
		secret                = "the owner's secret, mode 0600"
	)
	var (
		mu      sync.Mutex
		renames = map[string]string{} // target name -> backing name moved there
	)
	tf := mountFS(t, func(o *Options) {
		o.AllowOther = true
		o.beforeCreate = func(dirfd int, name string) {
			mu.Lock()
			src, ok := renames[name]
			delete(renames, name)
			mu.Unlock()
			if ok {
				if err := unix.Renameat(dirfd, src, dirfd, name); err != nil {
					t.Errorf("rename %s over %s: %v", src, name, err)
				}
			}
		}
	})
	for _, d := range []string{filepath.Dir(tf.mnt), tf.cipher} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range []struct {
		name  string
		uid   uint32
		flags int
		want  string // OPENED or an errno name
		data  string // content afterwards
	}{
		{"stranger read-write", strangerUID, os.O_RDWR | os.O_CREATE, "EACCES", secret},
		{"stranger truncate", strangerUID, os.O_WRONLY | os.O_CREATE | os.O_TRUNC, "EACCES", secret},
		{"stranger read-only", strangerUID, os.O_RDONLY | os.O_CREATE, "EACCES", secret},
		{"stranger exclusive", strangerUID, os.O_RDWR | os.O_CREATE | os.O_EXCL, "EEXIST", secret},
		{"owner truncate", ownerUID, os.O_WRONLY | os.O_CREATE | os.O_TRUNC, "OPENED", ""},
		{"owner read-write", ownerUID, os.O_RDWR | os.O_CREATE, "OPENED", secret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, target := "victim"+strconv.Itoa(i), "target"+strconv.Itoa(i)
			p := tf.path(src)
			if err := os.WriteFile(p, []byte(secret), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, ownerUID, ownerUID); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			renames[target] = src
			mu.Unlock()
			got := openAs(t, tc.uid, tc.uid, tf.path(target), tc.flags)
			mu.Lock()
			_, notRun := renames[target]
			mu.Unlock()
			if notRun {
				t.Fatal("the create hook did not run: no race was driven")
			}
			if got != tc.want {
				t.Errorf("open(%#o) as uid %d: %s, want %s", tc.flags, tc.uid, got, tc.want)
			}
			if data := string(readFile(t, tf.path(target))); data != tc.data {
				t.Errorf("content afterwards %q, want %q", data, tc.data)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(tf.backing(target), &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != ownerUID || st.Mode&0o7777 != 0o600 {
				t.Errorf("backing owner %d mode %o, want %d 600", st.Uid, st.Mode&0o7777, ownerUID)
			}
		})
	}
}
