package fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestOtherUser runs commands as uid 4321 on a mount with allow_other (and
// so default_permissions), after opening the test's root-only temporary
// directories to it.
func TestOtherUser(t *testing.T) {
	tf := mountFS(t, func(o *Options) { o.AllowOther = true })
	// The test's temporary directories are root-only; open the way.
	for _, d := range []string{filepath.Dir(tf.mnt), tf.cipher} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	// Entries made by another user belong to that user, with the mode asked
	// for after its umask, and it cannot read a root-only file.
	t.Run("entries belong to the caller", func(t *testing.T) {
		os.WriteFile(tf.path("private"), []byte("root only"), 0o600)
		script := `umask 027; cd "$1" && echo hi > f && mkdir d && ln -s target l && mkfifo p && ` +
			`chmod 0751 d && if cat private 2>/dev/null; then echo READ-PRIVATE; fi`
		cmd := exec.Command("/bin/sh", "-c", script, "sh", tf.mnt)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 8765}}
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Contains(string(out), "READ-PRIVATE") {
			t.Fatalf("as uid 4321: %v\n%s", err, out)
		}
		for name, mode := range map[string]uint32{"f": 0o640, "d": 0o751, "l": 0o777, "p": 0o640} {
			t.Run(name+" owned by the caller", func(t *testing.T) {
				var st syscall.Stat_t
				if err := syscall.Lstat(tf.path(name), &st); err != nil {
					t.Fatal(err)
				}
				if st.Uid != 4321 || st.Gid != 8765 || st.Mode&0o7777 != mode {
					t.Errorf("%s: owner %d:%d mode %o, want 4321:8765 %o", name, st.Uid, st.Gid, st.Mode&0o7777, mode)
				}
				var bst syscall.Stat_t
				syscall.Lstat(tf.backing(name), &bst)
				if bst.Uid != 4321 || bst.Gid != 8765 {
					t.Errorf("%s: backing owner %d:%d", name, bst.Uid, bst.Gid)
				}
			})
		}
		if string(readFile(t, tf.path("f"))) != "hi\n" {
			t.Fatal("content")
		}
	})
	// The mount handles killing set-ID bits itself (CAP_HANDLE_KILLPRIV_V2),
	// so a write or truncate by a user without CAP_FSETID must clear
	// set-user-ID, and set-group-ID when group execute is set, exactly as on a
	// local file system; root's writes keep them.
	t.Run("writes kill set-ID bits", func(t *testing.T) {
		files := map[string]struct{ mode, want uint32 }{
			"write-suid-sgid":  {0o6775, 0o775},  // both go: group execute is set
			"write-sgid-nox":   {0o2765, 0o2765}, // no group execute: the bit stays
			"truncate-suid":    {0o4777, 0o777},
			"write-plain":      {0o666, 0o666},
			"root-write-keeps": {0o4777, 0o4777},
			"append-suid-sgid": {0o6777, 0o777},
			"ftruncate-suid":   {0o4777, 0o777},
		}
		for name, f := range files {
			p := tf.path(name)
			if err := os.WriteFile(p, []byte("original"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, 4321, 8765); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, os.FileMode(f.mode&0o777)|modeBits(f.mode)); err != nil {
				t.Fatal(err)
			}
		}
		script := `cd "$1" && printf x | dd of=write-suid-sgid conv=notrunc status=none && ` +
			`printf x | dd of=write-sgid-nox conv=notrunc status=none && ` +
			`truncate -s 3 truncate-suid && printf x | dd of=write-plain conv=notrunc status=none && ` +
			`echo more >> append-suid-sgid && ` +
			`python3 -c 'import os; fd = os.open("ftruncate-suid", os.O_WRONLY); os.ftruncate(fd, 2)'`
		cmd := exec.Command("/bin/sh", "-c", script, "sh", tf.mnt)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 8765}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("as uid 4321: %v\n%s", err, out)
		}
		if err := os.WriteFile(tf.path("root-write-keeps"), []byte("root"), 0); err != nil {
			t.Fatal(err)
		}
		for name, f := range files {
			t.Run(name, func(t *testing.T) {
				var st syscall.Stat_t
				if err := syscall.Stat(tf.path(name), &st); err != nil {
					t.Fatal(err)
				}
				var bst syscall.Stat_t
				if err := syscall.Stat(tf.backing(name), &bst); err != nil {
					t.Fatal(err)
				}
				if st.Mode&0o7777 != f.want || bst.Mode&0o7777 != f.want {
					t.Errorf("%s: mode %o (backing %o), want %o", name, st.Mode&0o7777, bst.Mode&0o7777, f.want)
				}
			})
		}
	})
}
