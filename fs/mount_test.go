package fs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/cipherdir"
)

// The read-only mount is tested end to end by integration's TestReadOnly
// (kmsfs mount --ro), whose checks include every one the former fs-level
// TestReadOnly made (reads work, create and open for writing give EROFS).

// TestMountRejectsBadOptions checks that Mount refuses options it cannot
// serve, before mounting anything.
func TestMountRejectsBadOptions(t *testing.T) {
	cfg, err := cipherdir.NewConfig(cipherdir.KMSLocal, "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bad := cfg
	bad.ChunkSize = 3
	for _, tt := range []struct {
		name string
		opts Options
	}{
		{"no key service", Options{CipherDir: dir, Config: cfg}},
		{"invalid config", Options{CipherDir: dir, Config: bad, Keys: newFakeKeys()}},
		{"missing CIPHERDIR", Options{CipherDir: filepath.Join(dir, "missing"), Config: cfg, Keys: newFakeKeys()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Mount(t.TempDir(), tt.opts); err == nil {
				t.Errorf("mounted with %s", tt.name)
			}
		})
	}
}

func TestConfigHidden(t *testing.T) {
	tf := mountFS(t)
	if _, err := os.Stat(tf.path(cipherdir.ConfigName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat config: %v", err)
	}
	if err := os.WriteFile(tf.path(cipherdir.ConfigName), []byte("x"), 0o600); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("create config: %v, want EPERM", err)
	}
	os.WriteFile(tf.path("visible"), nil, 0o600)
	names, err := os.ReadDir(tf.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0].Name() != "visible" {
		t.Fatalf("root lists %v", names)
	}
	// Only the root hides the name.
	os.Mkdir(tf.path("sub"), 0o755)
	if err := os.WriteFile(tf.path("sub/"+cipherdir.ConfigName), []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cipherdir.LoadConfig(tf.cipher); err != nil {
		t.Fatalf("config damaged: %v", err)
	}
}
