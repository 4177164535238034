package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestKeyDisable disables the filesystem's key in the local keystore while
// mounted with the data-key cache off: existing files can no longer be
// opened for reading and no new file can be created (EACCES); enabling the
// key restores access. The daemon must notice the keystore change made by
// another process.
func TestKeyDisable(t *testing.T) {
	t.Parallel()
	fs := newFS(t, WithMountArgs("--cache-max-age", "0s"))
	cfg := fs.Config()
	mustWrite(t, fs.Path("f"), []byte("readable while the key is enabled"))
	fs.Remount() // nothing cached in the kernel either
	fs.Run("key", "disable", cfg.KeyID)

	if data, err := os.ReadFile(fs.Path("f")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("reading a file while its key is disabled: %q, %v; want EACCES", data, err)
	}
	if err := os.WriteFile(fs.Path("new"), []byte("x"), 0o644); !errors.Is(err, syscall.EACCES) {
		t.Errorf("creating a file while the key is disabled: %v, want EACCES", err)
	}
	// Metadata stays available.
	if _, err := os.Stat(fs.Path("f")); err != nil {
		t.Errorf("stat while the key is disabled: %v", err)
	}

	fs.Run("key", "enable", cfg.KeyID)
	checkContent(t, fs.Path("f"), []byte("readable while the key is enabled"))
	mustWrite(t, fs.Path("new"), []byte("x"))
}

// TestPassphraseKeystore uses a keystore protected by a passphrase file: no
// root key file is written, the filesystem works across remounts, and a
// mount with the wrong passphrase fails with a one-line reason.
func TestPassphraseKeystore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := newFS(t, WithEnv("KMSFS_PASSPHRASE_FILE="+pass))
	mustWrite(t, fs.Path("f"), []byte("behind a passphrase"))
	if _, err := os.Stat(filepath.Join(fs.Keystore, "root.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a passphrase keystore has a root.key file: %v", err)
	}
	fs.Remount()
	checkContent(t, fs.Path("f"), []byte("behind a passphrase"))
	fs.Unmount()

	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrong, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := execKmsfs([]string{"KMSFS_KEYSTORE=" + fs.Keystore, "KMSFS_PASSPHRASE_FILE=" + wrong},
		"mount", "--log-file", fs.LogFile, fs.CipherDir, fs.Mnt)
	if res.Code == 0 {
		t.Fatalf("mount with the wrong passphrase succeeded")
	}
	if lines := strings.Split(strings.TrimSpace(res.Stderr), "\n"); len(lines) != 1 {
		t.Errorf("wrong passphrase: stderr %q, want one line", res.Stderr)
	}
	if _, live := findMount(fs.Mnt); live {
		t.Fatalf("mounted with the wrong passphrase")
	}
	fs.Mount()
	checkContent(t, fs.Path("f"), []byte("behind a passphrase"))
}
