package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	osexec "os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// snapshot describes every entry of a tree as users see it: type, mode,
// owner, size, link count, mtime, content digest, link target and user
// xattrs.
func snapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d nlink=%d", st.Mode, st.Uid, st.Gid, st.Nlink)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			sum, n := sha256File(t, path)
			desc += fmt.Sprintf(" size=%d sha256=%s mtime=%d.%09d", n, sum, st.Mtim.Sec, st.Mtim.Nsec)
		case unix.S_IFLNK:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG || st.Mode&unix.S_IFMT == unix.S_IFDIR {
			names := listXattrNoFollow(t, path)
			sort.Strings(names)
			for _, name := range names {
				v, err := lgetXattr(path, name)
				if err != nil {
					return err
				}
				desc += fmt.Sprintf(" %s=%q", name, v)
			}
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return out
}

// diffSnapshots reports differences between two snapshots.
func diffSnapshots(t testing.TB, when string, want, got map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: %s is missing", when, k)
		} else if g != w {
			t.Errorf("%s: %s changed:\n  was %s\n  now %s", when, k, w, g)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %s", when, k)
		}
	}
}

// populate builds a varied tree in dir.
func populate(t testing.TB, dir string, seed uint64) {
	t.Helper()
	r := newRand(seed)
	for _, d := range []string{"docs", "docs/deep/er", "empty-dir"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range []int{0, 1, 100, 4095, 4096, 4097, 70000, 1 << 20} {
		mustWrite(t, filepath.Join(dir, "docs", fmt.Sprintf("file%d", i)), randomBytes(r, n))
	}
	mustWrite(t, filepath.Join(dir, "docs/deep/er/leaf.txt"), []byte("leaf\n"))
	if err := os.Symlink("docs/deep/er/leaf.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "docs/file3"), filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "docs/file2"), "user.tag", []byte("blue"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "docs/file1"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "sparse"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("end"), 5<<20)
	f.Close()
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPersistence builds a tree, snapshots it, and requires the identical
// snapshot after unmount and mount (a new daemon process), after a second
// mount of a fresh harness over the same CIPHERDIR and keystore, and through
// a separate process reading the files.
func TestPersistence(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	populate(t, fs.Mnt, 5)
	want := snapshot(t, fs.Mnt)
	fs.Unmount()
	fs.Mount()
	diffSnapshots(t, "after remount", want, snapshot(t, fs.Mnt))
	// Another process (sha256sum) reads the same bytes.
	sum, _ := sha256File(t, fs.Path("docs", "file7"))
	out, err := commandOutput("sha256sum", fs.Path("docs", "file7"))
	if err != nil {
		t.Errorf("sha256sum: %v", err)
	} else if !strings.HasPrefix(out, sum) {
		t.Errorf("sha256sum in another process: %s, want %s", out, sum)
	}
	fs.Remount()
	diffSnapshots(t, "after a second remount", want, snapshot(t, fs.Mnt))
}

// TestReadOnly remounts with --ro: reads work and every kind of change fails
// with EROFS, leaving the tree as it was.
func TestReadOnly(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	populate(t, fs.Mnt, 6)
	want := snapshot(t, fs.Mnt)
	fs.Remount("--ro")
	if e, _ := findMount(fs.Mnt); !strings.Contains(","+e.Options+",", ",ro,") {
		t.Errorf("mount options %q: want ro", e.Options)
	}
	diffSnapshots(t, "read-only mount", want, snapshot(t, fs.Mnt))
	p := fs.Path("docs", "file5")
	changes := map[string]func() error{
		"open O_WRONLY": func() error {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		"open O_RDWR": func() error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		"create":      func() error { return os.WriteFile(fs.Path("new"), []byte("x"), 0o644) },
		"mkdir":       func() error { return os.Mkdir(fs.Path("newdir"), 0o755) },
		"unlink":      func() error { return os.Remove(p) },
		"rmdir":       func() error { return os.Remove(fs.Path("empty-dir")) },
		"rename":      func() error { return os.Rename(p, fs.Path("moved")) },
		"truncate":    func() error { return os.Truncate(p, 1) },
		"chmod":       func() error { return os.Chmod(p, 0o600) },
		"chown":       func() error { return os.Chown(p, 1, 1) },
		"utimes":      func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Sec: 1}, {Sec: 1}}, 0) },
		"symlink":     func() error { return os.Symlink("x", fs.Path("newlink")) },
		"link":        func() error { return os.Link(p, fs.Path("newhard")) },
		"setxattr":    func() error { return unix.Setxattr(p, "user.new", []byte("v"), 0) },
		"removexattr": func() error { return unix.Removexattr(fs.Path("docs", "file2"), "user.tag") },
		"mkfifo":      func() error { return unix.Mkfifo(fs.Path("newfifo"), 0o600) },
	}
	for name, change := range changes {
		if err := change(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", name, err)
		}
	}
	diffSnapshots(t, "after attempted changes", want, snapshot(t, fs.Mnt))
	// Back to read-write.
	fs.Remount()
	mustWrite(t, fs.Path("new"), []byte("writable again"))
}

// TestSignalUnmount sends SIGTERM or SIGINT to the daemon: it must unmount
// cleanly and exit, and the data written before must be intact on the next
// mount.
func TestSignalUnmount(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(strings.ToUpper(unix.SignalName(sig)), func(t *testing.T) {
			t.Parallel()
			fs := newFS(t)
			data := randomBytes(newRand(uint64(sig)), 100000)
			mustWrite(t, fs.Path("f"), data)
			pid := fs.DaemonPID()
			if err := syscall.Kill(pid, sig); err != nil {
				t.Fatal(err)
			}
			if err := waitExit(pid, exitTimeout); err != nil {
				t.Fatalf("daemon %d after %v: %v", pid, sig, err)
			}
			if e, live := findMount(fs.Mnt); live {
				t.Fatalf("daemon exited after %v but %s is still mounted (%s)", sig, fs.Mnt, e.FSType)
			}
			fs.MarkUnmounted()
			fs.Mount()
			checkContent(t, fs.Path("f"), data)
		})
	}
}

// TestMountFailures checks that a mount that cannot work exits non-zero
// with a one-line reason and leaves neither a mount nor a daemon behind.
func TestMountFailures(t *testing.T) {
	t.Parallel()
	fs := newFS(t, WithoutMount())
	notInit := filepath.Join(filepath.Dir(fs.CipherDir), "not-initialised")
	if err := os.Mkdir(notInit, 0o755); err != nil {
		t.Fatal(err)
	}
	otherKeystore := []string{"KMSFS_KEYSTORE=" + filepath.Join(filepath.Dir(fs.CipherDir), "other-keystore")}
	cases := []struct {
		name string
		env  []string
		args []string
	}{
		{"cipherdir not initialised", fs.Env(), []string{notInit, fs.Mnt}},
		{"mountpoint missing", fs.Env(), []string{fs.CipherDir, fs.Path("missing")}},
		{"cipherdir missing", fs.Env(), []string{fs.Backing("missing"), fs.Mnt}},
		{"key not in keystore", otherKeystore, []string{fs.CipherDir, fs.Mnt}},
	}
	for _, c := range cases {
		args := append([]string{"mount", "--log-file", fs.LogFile}, c.args...)
		res := execKmsfs(c.env, args...)
		if res.Code == 0 || res.Code == -1 {
			t.Errorf("%s: kmsfs mount exit %d (%v), want a non-zero exit", c.name, res.Code, res.Err)
		}
		if lines := strings.Split(strings.TrimSpace(res.Stderr), "\n"); res.Stderr == "" || len(lines) != 1 {
			t.Errorf("%s: stderr %q, want one line with the reason", c.name, res.Stderr)
		} else {
			t.Logf("%s: exit %d: %s", c.name, res.Code, lines[0])
		}
		if _, live := findMount(fs.Mnt); live {
			t.Fatalf("%s: %s got mounted", c.name, fs.Mnt)
		}
	}
	if pids := daemonPIDs(func(_ int, args []string) bool {
		for _, a := range args {
			if a == fs.Mnt {
				return true
			}
		}
		return false
	}); len(pids) > 0 {
		t.Errorf("daemons left behind by failed mounts: %v", pids)
	}
	// Mounting twice on the same mount point fails and leaves the first.
	fs.Mount()
	mustWrite(t, fs.Path("f"), []byte("first mount"))
	res := fs.Exec("mount", "--log-file", fs.LogFile, fs.CipherDir, fs.Mnt)
	if res.Code == 0 {
		t.Errorf("a second mount on %s succeeded", fs.Mnt)
		// Undo the stacked mount so cleanup's accounting stays right.
		fs.Exec("unmount", fs.Mnt)
	}
	checkContent(t, fs.Path("f"), []byte("first mount"))
	// init refuses an initialised CIPHERDIR.
	if res := fs.Exec("init", fs.CipherDir); res.Code == 0 {
		t.Errorf("kmsfs init on an initialised CIPHERDIR succeeded")
	}
}

// TestUnmountBusy checks that `kmsfs unmount` refuses a mount in use (exit
// 7), leaves it working, and succeeds once the file is closed.
func TestUnmountBusy(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	mustWrite(t, fs.Path("f"), []byte("still here"))
	f, err := os.Open(fs.Path("f"))
	if err != nil {
		t.Fatal(err)
	}
	res := fs.Exec("unmount", fs.Mnt)
	if res.Code != 7 {
		t.Errorf("unmount of a busy mount: exit %d (%v), want 7\n%s", res.Code, res.Err, res.Stderr)
	}
	if _, live := findMount(fs.Mnt); !live {
		f.Close()
		fs.MarkUnmounted()
		t.Fatalf("a busy mount was unmounted")
	}
	buf := make([]byte, 10)
	if n, err := f.ReadAt(buf, 0); err != nil || string(buf[:n]) != "still here" {
		t.Errorf("read after a refused unmount: %q, %v", buf[:n], err)
	}
	f.Close()
	fs.Unmount()
}

// TestForeground runs `kmsfs mount --foreground`, waits for the mount by
// watching /proc/self/mountinfo (poll wakes up on every change of the mount
// table, so nothing sleeps), uses it, and stops it with SIGINT: the process
// must unmount and exit 0.
func TestForeground(t *testing.T) {
	t.Parallel()
	fs := newFS(t, WithoutMount())
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer mi.Close()
	cmd := osexec.Command(binPath, "mount", "--foreground", "--log-file", fs.LogFile, fs.CipherDir, fs.Mnt)
	cmd.Env = append(os.Environ(), fs.Env()...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Wake up on a mount table change or on the process's exit.
	deadline := time.Now().Add(commandTimeout)
	for {
		if _, live := findMount(fs.Mnt); live {
			break
		}
		fds := []unix.PollFd{
			{Fd: int32(mi.Fd()), Events: unix.POLLPRI | unix.POLLERR},
			{Fd: int32(pidfd), Events: unix.POLLIN},
		}
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			cmd.Process.Kill()
			t.Fatalf("no mount after %v", commandTimeout)
		}
		if _, err := unix.Poll(fds, ms); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("poll: %v", err)
		}
		if fds[1].Revents != 0 {
			if _, live := findMount(fs.Mnt); live {
				break
			}
			t.Fatalf("kmsfs mount --foreground exited before mounting: %v\n%s", <-exited, stderr.String())
		}
	}
	fs.mounted, fs.pid = true, cmd.Process.Pid
	mustWrite(t, fs.Path("f"), []byte("foreground"))
	checkContent(t, fs.Path("f"), []byte("foreground"))
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("kmsfs mount --foreground after SIGINT: %v, want exit 0\n%s", err, stderr.String())
		}
	case <-time.After(exitTimeout):
		// Show where it is stuck: the kernel stacks of its threads (a
		// daemon killed while it has a file of its own mount open hangs
		// in fuse_flush on exit), then a Go goroutine dump (SIGQUIT prints
		// every stack to stderr and exits).
		t.Logf("kernel stacks of %d:\n%s", cmd.Process.Pid, kernelStacks(cmd.Process.Pid))
		cmd.Process.Signal(syscall.SIGQUIT)
		dump := "(no dump)"
		select {
		case <-exited:
			dump = stderr.String()
			if len(dump) > 32<<10 {
				dump = dump[:32<<10] + "…"
			}
		case <-time.After(10 * time.Second):
		}
		fs.pid = 0
		t.Fatalf("kmsfs mount --foreground still running %v after SIGINT; goroutines:\n%s", exitTimeout, dump)
	}
	fs.MarkUnmounted()
	fs.Mount()
	checkContent(t, fs.Path("f"), []byte("foreground"))
}

// TestDaemonKilled kills the daemon with SIGKILL after writes returned:
// the mount is dead, `kmsfs unmount` must still clear it, and every byte
// written before must be there on the next mount (the daemon buffers
// nothing that write(2) already acknowledged).
func TestDaemonKilled(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	populate(t, fs.Mnt, 12)
	want := snapshot(t, fs.Mnt)
	pid := fs.DaemonPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(pid, exitTimeout); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fs.Path("docs")); !errors.Is(err, syscall.ENOTCONN) {
		t.Logf("stat on the dead mount: %v (expected ENOTCONN)", err)
	}
	res := fs.Exec("unmount", fs.Mnt)
	if res.Err != nil {
		t.Errorf("kmsfs unmount of a mount whose daemon was killed: %v (exit %d)\n%s", res.Err, res.Code, res.Stderr)
		if _, live := findMount(fs.Mnt); live {
			if out, err := commandOutput("fusermount3", "-u", fs.Mnt); err != nil {
				t.Fatalf("fusermount3 -u: %v\n%s", err, out)
			}
		}
	}
	fs.MarkUnmounted()
	fs.Mount()
	diffSnapshots(t, "after SIGKILL and a new mount", want, snapshot(t, fs.Mnt))
}

// kernelStacks returns the kernel stack of every thread of pid (root only).
func kernelStacks(pid int) string {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	var b strings.Builder
	for _, task := range tasks {
		stack, err := os.ReadFile(task + "/stack")
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", task, err)
			continue
		}
		fmt.Fprintf(&b, "%s:\n%s", task, stack)
	}
	return b.String()
}
