package fs

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/cipherdir"
)

// TestRekeyTempHidden: the temporary file `kmsfs rekey` writes next to a
// file (cipherdir.RekeyTempMarker) is kmsfs's own, in any directory: the
// mount neither lists it nor lets it be looked up or created.
func TestRekeyTempHidden(t *testing.T) {
	tf := mountFS(t)
	if err := os.Mkdir(tf.path("sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tf.path("sub/visible"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := cipherdir.RekeyTempMarker + "0011223344556677"
	if err := os.WriteFile(tf.backing("sub/"+tmp), []byte("half-written ciphertext"), 0o600); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(tf.path("sub"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "visible" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("sub lists %v, want only visible", names)
	}
	if _, err := os.Stat(tf.path("sub/" + tmp)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of the rekey temporary file through the mount: %v, want ENOENT", err)
	}
	if err := os.WriteFile(tf.path("sub/x"+cipherdir.RekeyTempMarker+"1"), nil, 0o600); !errors.Is(err, syscall.EPERM) {
		t.Errorf("create of a rekey temporary name through the mount: %v, want EPERM", err)
	}
}
