package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// runUnmount implements `kmsfs unmount MOUNTPOINT`: unmount, then wait
// (bounded) until the daemon that served the mount has exited, so that a
// script can reuse CIPHERDIR and the keystore the moment this returns.
//
// The daemon is found through its state file (see mountState). Before
// unmounting we open a pidfd on it and check its start time, so the wait
// follows exactly that process even if its PID is reused afterwards.
func runUnmount(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("unmount")
	timeout := fset.Duration("timeout", 10*time.Second, "how long to wait for the daemon to exit")
	pos, err := parseArgs(fset, "unmount", args, env, 1, 1)
	if err != nil {
		return err
	}
	if *timeout <= 0 {
		return usageErrorf("unmount: --timeout must be positive")
	}
	mp, err := cleanMountpoint(pos[0])
	if err != nil {
		return withKind(errUsage, err)
	}
	entries, err := readMountinfo()
	if err != nil {
		return err
	}
	state, statePath, stateErr := readState(stateDirs(env), mp)
	if m, ok := fuseMountAt(entries, mp); !ok || m.FSType != kmsfsFSType {
		if stateErr == nil && !daemonRunning(state) {
			removeState(statePath, state.PID) // left behind by a killed daemon
		}
		return withKind(errUnmountFailed, fmt.Errorf("%s is not a kmsfs mount", mp))
	}

	var daemon *os.File // pidfd of the daemon, nil when unknown or gone
	if stateErr == nil {
		daemon = openDaemon(state)
	} else if !errors.Is(stateErr, fs.ErrNotExist) {
		return stateErr
	}
	if daemon != nil {
		defer daemon.Close()
	}

	if err := unmountFUSE(ctx, mp); err != nil {
		return err
	}
	if daemon != nil {
		if err := waitExit(ctx, daemon, *timeout); err != nil {
			return withKind(errUnmountFailed, fmt.Errorf("%s unmounted, but daemon pid %d: %w", mp, state.PID, err))
		}
	}
	if stateErr == nil {
		removeState(statePath, state.PID)
	}
	return nil
}

// cleanMountpoint makes p absolute and resolves symlinks in its parent
// directories (not in p itself: stat on a dead FUSE mountpoint fails).
func cleanMountpoint(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("mountpoint %q: %w", p, err)
	}
	if abs == "/" {
		return abs, nil
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("mountpoint %q: %w", p, err)
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}

// unmountFUSE unmounts mp: umount(2) as root, else fusermount3 -u (the
// setuid helper that lets users unmount their own FUSE mounts).
func unmountFUSE(ctx context.Context, mp string) error {
	if os.Geteuid() == 0 {
		err := unix.Unmount(mp, 0)
		if errors.Is(err, unix.EBUSY) {
			return withHint(withKind(errUnmountFailed, fmt.Errorf("unmount %s: %w", mp, err)),
				"a process still uses the mount: see 'fuser -vm "+mp+"'")
		}
		if err != nil {
			return withKind(errUnmountFailed, fmt.Errorf("unmount %s: %w", mp, err))
		}
		return nil
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "fusermount3", "-u", "--", mp)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		e := withKind(errUnmountFailed, fmt.Errorf("unmount %s: fusermount3: %s", mp, msg))
		if strings.Contains(msg, "busy") {
			e = withHint(e, "a process still uses the mount: see 'fuser -vm "+mp+"'")
		}
		return e
	}
	return nil
}

// openDaemon returns a pidfd for the daemon recorded in s, or nil when it
// is no longer running (or pidfds are unavailable).
func openDaemon(s mountState) *os.File {
	fd, err := unix.PidfdOpen(s.PID, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	// Checked after opening: from here on the pidfd pins this process.
	if !daemonRunning(s) {
		f.Close()
		return nil
	}
	return f
}

// waitExit waits until the process behind pidfd has exited, at most
// timeout. A pidfd becomes readable when its process exits.
func waitExit(ctx context.Context, pidfd *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("still running after %s", timeout)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// Wake up at least every 100ms to notice ctx.
		ms := min(left.Milliseconds()+1, 100)
		fds := []unix.PollFd{{Fd: int32(pidfd.Fd()), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(ms))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for exit: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}
