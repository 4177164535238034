package fs

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestXattrHiding checks user xattrs on files and directories, and that
// the key record's xattr is neither visible nor changeable through the
// mount while it stays on the backing file.
func TestXattrHiding(t *testing.T) {
	tf := mountFS(t)
	p := tf.path("f")
	os.WriteFile(p, []byte("data"), 0o600)
	if err := unix.Setxattr(p, "user.color", []byte("blue"), 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if n, err := unix.Getxattr(p, "user.color", buf); err != nil || string(buf[:n]) != "blue" {
		t.Fatalf("getxattr %q %v", buf[:n], err)
	}
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	if list := string(buf[:n]); list != "user.color\x00" {
		t.Fatalf("listxattr %q", list)
	}
	if sz, err := unix.Listxattr(p, nil); err != nil || sz != len("user.color\x00") {
		t.Fatalf("listxattr size %d %v", sz, err)
	}
	// The key record's name and the rest of user.kmsfs.* are the mount's
	// own: hidden from reads and refused to changes.
	for _, tt := range []struct {
		name string
		op   func() error
		want error
	}{
		{"getxattr key", func() error { _, err := unix.Getxattr(p, KeyXattr, buf); return err }, unix.ENODATA},
		{"setxattr key", func() error { return unix.Setxattr(p, KeyXattr, []byte("x"), 0) }, unix.EPERM},
		{"setxattr user.kmsfs.other", func() error { return unix.Setxattr(p, "user.kmsfs.other", []byte("x"), 0) }, unix.EPERM},
		{"removexattr key", func() error { return unix.Removexattr(p, KeyXattr) }, unix.EPERM},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); err != tt.want {
				t.Fatalf("%s: %v, want %v", tt.name, err, tt.want)
			}
		})
	}
	if err := unix.Removexattr(p, "user.color"); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(p, "security.capability", buf); err != unix.ENODATA {
		t.Fatalf("security.capability: %v", err)
	}
	if _, err := unix.Lgetxattr(tf.backing("f"), KeyXattr, make([]byte, maxRecordSize)); err != nil {
		t.Fatalf("backing key xattr gone: %v", err)
	}
	if string(readFile(t, p)) != "data" {
		t.Fatal("content")
	}
	// Directories carry user xattrs too.
	os.Mkdir(tf.path("d"), 0o755)
	if err := unix.Setxattr(tf.path("d"), "user.d", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
}
