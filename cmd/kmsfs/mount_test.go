package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/cipherdir"
)

func TestParseMountFlags(t *testing.T) {
	root := t.TempDir()
	cipher := filepath.Join(root, "cipher")
	mnt := filepath.Join(root, "mnt")
	for _, d := range []string{cipher, mnt, filepath.Join(cipher, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(root, "link")
	if err := os.Symlink(mnt, link); err != nil {
		t.Fatal(err)
	}
	te := newTestEnv(nil)
	f, err := parseMountFlags([]string{cipher, link, "--ro", "--cache-max-age", "1m", "--log-file", "rel.log"}, &te.Env)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if f.cipherDir != cipher || f.mountpoint != mnt || !f.readOnly || f.cacheMaxAge != time.Minute || f.logFile != filepath.Join(wd, "rel.log") {
		t.Errorf("parsed %+v", f)
	}

	for _, tt := range []struct {
		name string
		args []string
		kind error
	}{
		{"mountpoint inside cipherdir", []string{cipher, filepath.Join(cipher, "sub")}, errUsage},
		{"cipherdir inside mountpoint", []string{filepath.Join(cipher, "sub"), cipher}, errUsage},
		{"same dir", []string{cipher, cipher}, errUsage},
		{"mountpoint missing", []string{cipher, filepath.Join(root, "missing")}, errMountFailed},
		{"cipherdir missing", []string{filepath.Join(root, "missing"), mnt}, errCipherDir},
		{"negative cache age", []string{"--cache-max-age", "-1s", cipher, mnt}, errUsage},
		{"one argument", []string{cipher}, errUsage},
		{"pprof without metrics", []string{"--pprof", cipher, mnt}, errUsage},
		{"shared with the writeback cache", []string{"--shared", "--writeback-cache", cipher, mnt}, errUsage},
		{"pprof on a non-loopback metrics address", []string{"--pprof", "--metrics", "0.0.0.0:9101", "--metrics-any-address", cipher, mnt}, errUsage},
	} {
		if _, err := parseMountFlags(tt.args, &te.Env); !errors.Is(err, tt.kind) {
			t.Errorf("%s: err = %v, want class %v", tt.name, err, tt.kind)
		}
	}
}

// The daemon runs in "/", so every path it gets must be absolute, and it
// must get every flag that changes its behaviour.
func TestDaemonArgs(t *testing.T) {
	te := newTestEnv(map[string]string{"KMSFS_KEYSTORE": "rel-ks", "KMSFS_PASSPHRASE_FILE": "rel-pass"})
	f := &mountFlags{readOnly: true, allowOther: true, debug: true, logFile: "/l/log", cacheMaxAge: 0,
		endpoint: "http://127.0.0.1:1", cipherDir: "/c", mountpoint: "/m"}
	args, err := daemonArgs(f, cipherdir.Config{KMS: cipherdir.KMSLocal}, &te.Env)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	want := []string{"mount", "--foreground", "--ro", "--allow-other", "--debug", "--log-file", "/l/log",
		"--cache-max-age", "0s", "--kms-endpoint", "http://127.0.0.1:1",
		"--keystore", filepath.Join(wd, "rel-ks"), "--passphrase-file", filepath.Join(wd, "rel-pass"), "--", "/c", "/m"}
	if !slices.Equal(args, want) {
		t.Errorf("daemonArgs =\n%q\nwant\n%q", args, want)
	}
	args, err = daemonArgs(&mountFlags{cacheMaxAge: 5 * time.Minute, cipherDir: "/c", mountpoint: "/m"}, cipherdir.Config{KMS: cipherdir.KMSAWS}, &te.Env)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(args, "--keystore") {
		t.Errorf("aws filesystem got keystore flags: %q", args)
	}
	args, err = daemonArgs(&mountFlags{shared: true, cipherDir: "/c", mountpoint: "/m"}, cipherdir.Config{KMS: cipherdir.KMSAWS}, &te.Env)
	if err != nil || !slices.Contains(args, "--shared") {
		t.Errorf("shared mount: daemon args %q, %v: want --shared", args, err)
	}
}

func TestUnmountRefusesNonKmsfs(t *testing.T) {
	te := newTestEnv(nil)
	dir := t.TempDir()
	if code := runCmd(t, te, "unmount", dir); code != ExitUnmount || !strings.Contains(te.stderr.String(), "is not a kmsfs mount") {
		t.Errorf("unmount of a plain directory: exit %d, stderr %q", code, te.stderr.String())
	}
	if code := runCmd(t, te, "unmount", "--timeout", "0s", dir); code != ExitUsage {
		t.Errorf("unmount --timeout 0s: exit %d, want %d", code, ExitUsage)
	}
	if code := runCmd(t, te, "unmount"); code != ExitUsage {
		t.Errorf("unmount without MOUNTPOINT: exit %d, want %d", code, ExitUsage)
	}
}

func TestMountFailsInOneLine(t *testing.T) {
	te := newTestEnv(nil)
	dir := t.TempDir() // not a CIPHERDIR
	code := runCmd(t, te, "mount", dir, t.TempDir())
	if code != ExitCipherDir {
		t.Errorf("mount of a non-CIPHERDIR: exit %d, want %d", code, ExitCipherDir)
	}
	if lines := strings.Split(strings.TrimSuffix(te.stderr.String(), "\n"), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "(hint: ") {
		t.Errorf("stderr %q: want one line with the hint folded in", te.stderr.String())
	}
}
