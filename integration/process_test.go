// Finding and waiting for kmsfs daemon processes.

package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// findDaemon returns the pid of the kmsfs process serving fs.Mnt: our binary,
// with the mount point on its command line or, failing that, our keystore in
// its environment. 0 when there is none or more than one.
func (fs *testFS) findDaemon() int {
	pids := daemonPIDs(func(pid int, args []string) bool {
		for _, a := range args {
			if a == fs.Mnt {
				return true
			}
		}
		return false
	})
	if len(pids) == 0 {
		want := []byte("KMSFS_KEYSTORE=" + fs.Keystore + "\x00")
		pids = daemonPIDs(func(pid int, _ []string) bool {
			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			return err == nil && bytes.Contains(env, want)
		})
	}
	if len(pids) != 1 {
		fs.t.Logf("found %d kmsfs daemon candidates for %s: %v", len(pids), fs.Mnt, pids)
		return 0
	}
	return pids[0]
}

// daemonPIDs lists running processes whose executable is binPath and for
// which match(pid, argv) is true.
func daemonPIDs(match func(pid int, args []string) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != binPath {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if match(pid, strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitExit waits, without polling loops, until process pid has exited.
func waitExit(pid int, timeout time.Duration) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return fmt.Errorf("still running after %v", timeout)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}
