package integration

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDebugLogHasNoData mounts with --debug, writes, reads and sets an
// xattr value, each with a distinctive string: the daemon log must show
// the requests but no 8-byte run of either string (go-fuse's request
// logging prints the first 8 bytes of every read, write and xattr value).
func TestDebugLogHasNoData(t *testing.T) {
	t.Parallel()
	const (
		content = "QzXjVwKqYbNfMhGtPlRcDsLe-content"
		xattr   = "WvTgHnBkJmLpZqXcRsYd-xattr-value"
	)
	fs := newFS(t, WithMountArgs("--debug"))
	mustWrite(t, fs.Path("f"), []byte(content))
	if err := unix.Setxattr(fs.Path("f"), "user.note", []byte(xattr), 0); err != nil {
		t.Fatal(err)
	}
	// A fresh mount has nothing cached: the read reaches the daemon.
	fs.Remount()
	checkContent(t, fs.Path("f"), []byte(content))
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(fs.Path("f"), "user.note", buf); err != nil || string(buf[:n]) != xattr {
		t.Fatalf("getxattr: %q, %v", buf[:max(n, 0)], err)
	}
	fs.Unmount()
	log := fs.Log()
	for _, op := range []string{"op=create", "op=write", "op=read", "op=setxattr", "op=getxattr"} {
		if !strings.Contains(log, op) {
			t.Errorf("debug log has no %s line", op)
		}
	}
	for _, secret := range []string{content, xattr} {
		for i := 0; i+8 <= len(secret); i++ {
			if w := secret[i : i+8]; strings.Contains(log, w) {
				t.Fatalf("debug log contains %q, bytes %d-%d of %q", w, i, i+8, secret)
			}
		}
	}
}
