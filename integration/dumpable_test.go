package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonNotDumpable runs `kmsfs keysvc serve` as an unprivileged user
// and checks that it made itself non-dumpable (PR_SET_DUMPABLE 0): the
// kernel then gives the process's private /proc files to root, so neither
// a core dump nor another process of that user (ptrace, /proc/PID/mem)
// reaches its keys. Every kmsfs command does this in main; the key server
// is the one that runs for long without needing FUSE.
func TestDaemonNotDumpable(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	const uid = 4321
	// The test's directories are private to root: give the user a copy
	// of the binary and a keystore of its own.
	dir, err := os.MkdirTemp("", "kmsfs-dumpable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin, keystore := filepath.Join(dir, "kmsfs"), filepath.Join(dir, "keystore")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(keystore, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(keystore, uid, uid); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "keysvc", "serve", "--listen", "127.0.0.1:0")
	cmd.Env = append(cleanAWSEnv(), "KMSFS_KEYSTORE="+keystore, "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if serveLineRE.MatchString(sc.Text()) {
				ready <- true
				break
			}
		}
		close(ready)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("kmsfs keysvc serve exited without its readiness line")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kmsfs keysvc serve printed no readiness line within 30s")
	}
	for _, f := range []string{"environ", "mem"} {
		var st syscall.Stat_t
		p := fmt.Sprintf("/proc/%d/%s", cmd.Process.Pid, f)
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 0 {
			t.Errorf("%s belongs to uid %d: the daemon running as uid %d is dumpable", p, st.Uid, uid)
		}
	}
}

// TestDaemonKeysInLockedMemory: once a mount has created and opened a file,
// its daemon holds data keys (DEK cache) in a mapping that is locked and
// left out of core dumps: /proc/PID/smaps shows VmFlags "dd" and "lo" with
// Locked > 0. The Go runtime makes no such mapping of its own.
func TestDaemonKeysInLockedMemory(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	fs := newFS(t)
	mustWrite(t, fs.Path("f"), []byte("a file, so a data key"))
	checkContent(t, fs.Path("f"), []byte("a file, so a data key"))
	pid := fs.DaemonPID()
	if pid == 0 {
		t.Fatal("no daemon found")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var locked string
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 0:
		case fields[0] == "Locked:":
			locked = fields[1]
		case fields[0] == "VmFlags:":
			flags := " " + strings.Join(fields[1:], " ") + " "
			if strings.Contains(flags, " dd ") && strings.Contains(flags, " lo ") && locked != "0" {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("daemon %d has no locked, non-dumpable mapping", pid)
	}
}
