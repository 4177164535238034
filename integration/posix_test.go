package integration

import (
	"os"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkips lists posixtest cases skipped on kmsfs, each with the reason.
// A case may only be listed here when gocryptfs or go-fuse's own loopback
// fail it too; anything else is a kmsfs bug and must fail.
var posixSkips = map[string]string{
	// The case takes a write lock through one descriptor and expects a read
	// lock through a second descriptor of the same process to fail with
	// EAGAIN. POSIX record locks belong to the process, so on ext4 itself
	// the second lock succeeds (checked on this machine); only a filesystem
	// that implements locks as open-file-description locks whatever their
	// owner (go-fuse's loopback with EnableLocks) passes. kmsfs forwards
	// locks per owner (fs/locks.go), so one process's locks do not conflict,
	// as on ext4; gocryptfs does not forward locks (rfjakob/gocryptfs#39)
	// and fails the case the same way.
	"FcntlFlockLocksFile": "same-process POSIX locks do not conflict; fails on ext4 and gocryptfs alike",
}

// TestPosix runs go-fuse's posixtest.All against one mount, each case in a
// fresh directory. Not parallel: FdLeak counts this process's descriptors.
func TestPosix(t *testing.T) {
	fs := newFS(t)
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if reason, ok := posixSkips[name]; ok {
				t.Skip(reason)
			}
			dir := fs.Path(name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			posixtest.All[name](t, dir)
		})
	}
}
