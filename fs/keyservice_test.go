package fs

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestKeyService checks how a mount uses the key service: failures give
// EACCES with one log line each, and concurrent opens share one unwrap.
func TestKeyService(t *testing.T) {
	t.Run("failures give EACCES and one log line each", func(t *testing.T) {
		tf := mountFS(t)
		os.WriteFile(tf.path("f"), []byte("secret"), 0o600)
		tf.waitReleased(t)
		tf.keys.setDisabled(true)
		if _, err := os.ReadFile(tf.path("f")); !errors.Is(err, syscall.EACCES) {
			t.Fatalf("open with disabled key: %v, want EACCES", err)
		}
		if err := os.WriteFile(tf.path("g"), nil, 0o600); !errors.Is(err, syscall.EACCES) {
			t.Fatalf("create with disabled key: %v, want EACCES", err)
		}
		if _, err := os.Lstat(tf.backing("g")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("failed create left a backing file: %v", err)
		}
		if !strings.Contains(tf.log.String(), "key service failure") {
			t.Errorf("no log line for the key service failure: %q", tf.log.String())
		}
		if strings.Count(tf.log.String(), "\n") != 2 {
			t.Errorf("want one log line per failure, got %q", tf.log.String())
		}
		tf.keys.setDisabled(false)
		if string(readFile(t, tf.path("f"))) != "secret" {
			t.Fatal("after re-enabling")
		}
	})
	t.Run("key cached while open", func(t *testing.T) {
		tf := mountFS(t)
		os.WriteFile(tf.path("f"), []byte("x"), 0o600)
		tf.waitReleased(t)
		_, d0 := tf.keys.counts()
		var files []*os.File
		for i := 0; i < 5; i++ {
			f, err := os.Open(tf.path("f"))
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		_, d1 := tf.keys.counts()
		if d1-d0 != 1 {
			t.Errorf("5 concurrent opens made %d Decrypt calls, want 1", d1-d0)
		}
		for _, f := range files {
			f.Close()
		}
	})
}
