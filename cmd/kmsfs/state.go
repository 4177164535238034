package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kmsfs/kmsfs/internal/mountinfo"
)

// A running mount daemon records itself in a small JSON state file so that
// `kmsfs unmount` can wait for it to exit and `kmsfs info` can map a path
// inside the mount to its backing file. The file lives in the runtime state
// directory (stateDir), is named after a hash of the mountpoint, holds no
// secrets, and is removed by the daemon as the last thing before it exits.
type mountState struct {
	PID        int       `json:"pid"`
	StartTime  uint64    `json:"start_time"` // /proc/PID/stat field 22, guards against PID reuse
	CipherDir  string    `json:"cipherdir"`
	Mountpoint string    `json:"mountpoint"`
	KMS        string    `json:"kms"`
	Started    time.Time `json:"started"`
}

// runtimeRootDir is where root's daemons keep their state files.
const runtimeRootDir = "/run/kmsfs"

// stateDir returns the runtime state directory of the current user:
// /run/kmsfs for root, else $XDG_RUNTIME_DIR/kmsfs, else $TMPDIR/kmsfs-UID.
func stateDir(env *Env) string {
	uid := os.Getuid()
	switch {
	case uid == 0:
		return runtimeRootDir
	case env.Getenv("XDG_RUNTIME_DIR") != "":
		return filepath.Join(env.Getenv("XDG_RUNTIME_DIR"), "kmsfs")
	default:
		return filepath.Join(os.TempDir(), "kmsfs-"+strconv.Itoa(uid))
	}
}

// stateDirs lists where to look for a mount's state: the user's own
// directory, then root's (a root daemon may serve a user's mount).
func stateDirs(env *Env) []string {
	own := stateDir(env)
	if own == runtimeRootDir {
		return []string{own}
	}
	return []string{own, runtimeRootDir}
}

// stateFileName is the state file name for a mountpoint (absolute, clean).
func stateFileName(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	return "mount-" + hex.EncodeToString(sum[:12]) + ".json"
}

// ensureStateDir creates dir if needed and checks that it is a directory
// owned by us that nobody else can write, so another user cannot plant or
// remove our state files.
func ensureStateDir(dir string) error {
	mode := os.FileMode(0o700)
	if dir == runtimeRootDir {
		mode = 0o755
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("state directory %s is not a directory owned by uid %d and writable only by it", dir, os.Getuid())
	}
	return nil
}

// writeState records s in dir, atomically (temp file and rename).
func writeState(dir string, s mountState) (path string, err error) {
	if err := ensureStateDir(dir); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode mount state: %w", err)
	}
	path = filepath.Join(dir, stateFileName(s.Mountpoint))
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write mount state: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(append(b, '\n')); err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return "", fmt.Errorf("write mount state: %w", err)
	}
	return path, nil
}

// readState reads the state of the mount at mountpoint from the first of
// dirs that has it. It returns fs.ErrNotExist when none has.
func readState(dirs []string, mountpoint string) (mountState, string, error) {
	name := stateFileName(mountpoint)
	for _, d := range dirs {
		p := filepath.Join(d, name)
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return mountState{}, "", fmt.Errorf("read mount state: %w", err)
		}
		var s mountState
		if err := json.Unmarshal(b, &s); err != nil {
			return mountState{}, "", fmt.Errorf("read mount state %s: %w", p, err)
		}
		if s.Mountpoint != mountpoint {
			continue // hash collision or a hand-edited file: not ours
		}
		return s, p, nil
	}
	return mountState{}, "", fs.ErrNotExist
}

// removeState removes the state file at path if it still names pid (a
// later daemon on the same mountpoint may have replaced it).
func removeState(path string, pid int) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var s mountState
	if json.Unmarshal(b, &s) == nil && s.PID == pid {
		_ = os.Remove(path)
	}
}

// procStartTime returns the start time (clock ticks since boot, field 22
// of /proc/PID/stat) and the state letter of process pid.
func procStartTime(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may contain
	// anything: parse from the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return start, f[0][0], nil
}

// daemonRunning reports whether the process recorded in s still runs: it
// exists, is not a zombie, and started when s says (not a reused PID).
func daemonRunning(s mountState) bool {
	start, state, err := procStartTime(s.PID)
	if err != nil {
		return false
	}
	return state != 'Z' && state != 'X' && start == s.StartTime
}

// mountEntry is one line of /proc/self/mountinfo, as much as kmsfs needs.
type mountEntry struct {
	Mountpoint string
	FSType     string
	Source     string
}

// readMountinfo parses /proc/self/mountinfo (see proc(5)).
func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	return parseMountinfo(f)
}

func parseMountinfo(f io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || len(fields) < sep+3 {
			continue
		}
		out = append(out, mountEntry{
			Mountpoint: mountinfo.Unescape(fields[4]),
			FSType:     fields[sep+1],
			Source:     mountinfo.Unescape(fields[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return out, nil
}

// isFUSE reports whether a mount table entry is a FUSE filesystem.
func (m mountEntry) isFUSE() bool {
	return m.FSType == "fuse" || strings.HasPrefix(m.FSType, "fuse.")
}

// fuseMountAt returns the FUSE mount whose mountpoint is exactly path.
func fuseMountAt(entries []mountEntry, path string) (mountEntry, bool) {
	found, ok := mountEntry{}, false
	for _, e := range entries {
		if e.Mountpoint == path {
			// The last entry for a mountpoint is the one on top.
			found, ok = e, e.isFUSE()
		}
	}
	return found, ok
}

// enclosingFUSEMount returns the innermost FUSE mount containing path.
func enclosingFUSEMount(entries []mountEntry, path string) (mountEntry, bool) {
	best, ok := mountEntry{}, false
	for _, e := range entries {
		if !within(path, e.Mountpoint) {
			continue
		}
		if !ok || len(e.Mountpoint) >= len(best.Mountpoint) {
			best, ok = e, true
		}
	}
	return best, ok && best.isFUSE()
}

// within reports whether path is dir or inside it (both absolute, clean).
func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}
