package main

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"
)

const sampleMountinfo = `22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /tmp/a\040b rw,nosuid,nodev,relatime shared:20 - fuse.kmsfs /srv/ci\040pher rw,user_id=0,group_id=0
41 22 0:36 / /tmp/plain rw,relatime shared:21 - fuse.other src rw
42 40 0:37 / /tmp/a\040b/inner rw,relatime shared:22 - ext4 /dev/vdb rw
43 22 0:38 / /tmp/plain rw,relatime shared:23 - tmpfs tmpfs rw
garbage line
`

func TestParseMountinfo(t *testing.T) {
	entries, err := parseMountinfo(strings.NewReader(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 5 {
		t.Fatalf("got %d entries, want 5: %+v", len(entries), entries)
	}
	e := entries[1]
	if e.Mountpoint != "/tmp/a b" || e.FSType != "fuse.kmsfs" || e.Source != "/srv/ci pher" || !e.isFUSE() {
		t.Errorf("entry 1 = %+v", e)
	}

	if m, ok := fuseMountAt(entries, "/tmp/a b"); !ok || m.Source != "/srv/ci pher" {
		t.Errorf("fuseMountAt(/tmp/a b) = %+v, %v", m, ok)
	}
	// A tmpfs mounted over the FUSE mount hides it.
	if _, ok := fuseMountAt(entries, "/tmp/plain"); ok {
		t.Error("fuseMountAt(/tmp/plain) found the hidden FUSE mount")
	}
	if _, ok := fuseMountAt(entries, "/tmp"); ok {
		t.Error("fuseMountAt(/tmp) found a mount")
	}

	for _, tt := range []struct {
		path string
		mp   string
		ok   bool
	}{
		{"/tmp/a b/x/y", "/tmp/a b", true},
		{"/tmp/a b", "/tmp/a b", true},
		{"/tmp/a bc/x", "", false},      // prefix of a name is not containment
		{"/tmp/a b/inner/f", "", false}, // innermost mount is ext4
		{"/etc/passwd", "", false},      // only the root ext4 mount
		{"/tmp/plain/f", "", false},     // tmpfs on top
	} {
		m, ok := enclosingFUSEMount(entries, tt.path)
		if ok != tt.ok || (ok && m.Mountpoint != tt.mp) {
			t.Errorf("enclosingFUSEMount(%q) = %+v, %v; want %q, %v", tt.path, m, ok, tt.mp, tt.ok)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir() + "/state"
	start, _, err := procStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	s := mountState{PID: os.Getpid(), StartTime: start, CipherDir: "/c", Mountpoint: "/m", KMS: "local", Started: time.Now().UTC().Truncate(time.Second)}
	path, err := writeState(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, %v; want 0700", fi.Mode(), err)
	}
	got, gotPath, err := readState([]string{t.TempDir(), dir}, "/m")
	if err != nil || gotPath != path || got != s {
		t.Fatalf("readState = %+v, %q, %v; want %+v, %q", got, gotPath, err, s, path)
	}
	if !daemonRunning(got) {
		t.Error("daemonRunning(self) = false")
	}
	reused := got
	reused.StartTime++
	if daemonRunning(reused) {
		t.Error("daemonRunning with another start time (reused PID) = true")
	}
	if _, _, err := readState([]string{dir}, "/other"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("readState(other mountpoint) err = %v", err)
	}
	removeState(path, s.PID+1) // someone else's: kept
	if _, err := os.Stat(path); err != nil {
		t.Errorf("removeState removed another daemon's state: %v", err)
	}
	removeState(path, s.PID)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removeState kept our state: %v", err)
	}
}

func TestEnsureStateDirRefusesOthersWritable(t *testing.T) {
	dir := t.TempDir() + "/open"
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := ensureStateDir(dir); err == nil {
		t.Error("a world-writable state directory was accepted")
	}
}

func TestDaemonRunningGone(t *testing.T) {
	// PID 0 is never a process of ours; /proc/0 does not exist.
	if daemonRunning(mountState{PID: 0}) {
		t.Error("daemonRunning(pid 0) = true")
	}
}

func TestReadinessProtocol(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode int
		wantMsg  string
		wantHint string
	}{
		{"ready", nil, ExitOK, "", ""},
		{"key disabled", withKind(errMountFailed, errors.New("key k is disabled: key is disabled")), ExitMount, "key k is disabled: key is disabled", ""},
		{"with hint", withHint(withKind(errCipherDir, errors.New("bad\nconfig")), "fix it"), ExitCipherDir, "bad config", "fix it"},
	}
	for _, tt := range tests {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		rd := &readiness{pipe: w}
		rd.report(tt.err)
		rd.report(errors.New("second report is ignored"))
		status, readErr := readReady(r)
		r.Close()
		if readErr != nil {
			t.Fatalf("%s: readReady: %v", tt.name, readErr)
		}
		if got := exitCode(status); got != tt.wantCode {
			t.Errorf("%s: code %d, want %d", tt.name, got, tt.wantCode)
		}
		if status != nil && (status.Error() != tt.wantMsg || hintFor(status) != tt.wantHint) {
			t.Errorf("%s: got %q hint %q, want %q hint %q", tt.name, status.Error(), hintFor(status), tt.wantMsg, tt.wantHint)
		}
	}
	var nilReady *readiness
	nilReady.report(nil) // --foreground: no pipe, no panic

	if _, err := readReady(strings.NewReader("")); !errors.Is(err, io.EOF) {
		t.Errorf("silent daemon: err = %v, want EOF", err)
	}
	if _, err := readReady(strings.NewReader("hello\n")); err == nil {
		t.Error("garbage accepted")
	}
}
