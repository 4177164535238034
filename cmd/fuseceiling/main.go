// Command fuseceiling mounts go-fuse's loopback filesystem (fs.NewLoopbackRoot
// at the go-fuse version in go.mod) with kernel FUSE passthrough refused, so
// that every read and write travels through this daemon as it must for an
// encrypting filesystem. It is the benchmark's "ceiling": the fastest any
// go-fuse filesystem doing real work per request can be on this machine.
//
// Stock loopback, run as root on a kernel with FUSE passthrough (6.9+), hands
// each open file's descriptor to the kernel, which then reads and writes the
// backing file itself; the daemon never sees the data and the mount measures
// only the kernel. Passthrough is refused twice here:
//
//   - the mount does not negotiate CAP_PASSTHROUGH
//     (MountOptions.DisabledCapabilities), so the kernel refuses every
//     backing-file registration;
//   - every file handle answers PassthroughFd with false, so go-fuse never
//     asks for one.
//
// Usage:
//
//	fuseceiling [-allow-passthrough] [-debug] BACKINGDIR MOUNTPOINT
//
// Once mounted it prints one line "fuseceiling: mounted ..." on stdout and
// serves until SIGINT or SIGTERM, then unmounts. -allow-passthrough mounts
// stock loopback instead (passthrough allowed), for comparison.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func main() {
	os.Exit(run())
}

func run() int {
	allow := flag.Bool("allow-passthrough", false, "mount stock loopback (kernel passthrough allowed), for comparison")
	debug := flag.Bool("debug", false, "log every FUSE request")
	maxWrite := flag.Int("max-write", 0, "largest write request in bytes (0: go-fuse's default, 128 KiB)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: fuseceiling [flags] BACKINGDIR MOUNTPOINT\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		return 2
	}
	backing, err := filepath.Abs(flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "fuseceiling: %v\n", err)
		return 1
	}
	mnt := flag.Arg(1)

	// The kernel has applied the caller's umask already; go-fuse's loopback
	// would apply ours a second time.
	syscall.Umask(0)

	server, err := mount(backing, mnt, *allow, *debug, *maxWrite)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fuseceiling: mount: %v\n", err)
		return 1
	}
	offered := server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH != 0
	mode := "passthrough refused"
	if *allow {
		mode = "passthrough allowed"
	}
	fmt.Printf("fuseceiling: mounted %s on %s (%s; kernel offers passthrough: %t)\n", backing, mnt, mode, offered)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
	}
	for i := 0; ; i++ {
		err := server.Unmount()
		if err == nil {
			break
		}
		if i == 50 {
			fmt.Fprintf(os.Stderr, "fuseceiling: unmount: %v\n", err)
			return 1
		}
		time.Sleep(100 * time.Millisecond)
	}
	<-done
	return 0
}

// mount serves a loopback of backing on mnt with the same cache lifetimes
// as kmsfs and gocryptfs (one second for entries and attributes).
func mount(backing, mnt string, allowPassthrough, debug bool, maxWrite int) (*fuse.Server, error) {
	inner, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, err
	}
	var root fs.InodeEmbedder = inner
	mopts := fuse.MountOptions{
		FsName:   backing,
		Name:     "fuseceiling",
		Debug:    debug,
		MaxWrite: maxWrite,
	}
	if !allowPassthrough {
		ln := inner.(*fs.LoopbackNode)
		r := &node{LoopbackNode: ln}
		ln.RootData.RootNode = r
		root = r
		mopts.DisabledCapabilities = fuse.CAP_PASSTHROUGH
	}
	sec := time.Second
	return fs.Mount(mnt, root, &fs.Options{
		AttrTimeout:     &sec,
		EntryTimeout:    &sec,
		NullPermissions: true,
		MountOptions:    mopts,
	})
}

// node is a loopback node whose open files never offer passthrough. It
// wraps every child the loopback creates, so the whole tree is covered.
type node struct {
	*fs.LoopbackNode
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
)

// WrapChild wraps each new loopback child in a node.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if ln, ok := ops.(*fs.LoopbackNode); ok {
		return &node{LoopbackNode: ln}
	}
	return ops
}

// Open opens the backing file and hides its descriptor from the kernel.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	return refuse(fh), fuseFlags, errno
}

// Create creates the backing file and hides its descriptor from the kernel.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return ch, refuse(fh), fuseFlags, errno
}

// refuse wraps a loopback file handle in one that declines passthrough.
func refuse(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return &file{LoopbackFile: lf}
	}
	return fh
}

// file forwards everything to the loopback file except passthrough.
type file struct {
	*fs.LoopbackFile
}

var _ fs.FilePassthroughFder = (*file)(nil)

// PassthroughFd declines: go-fuse then serves reads and writes itself.
func (f *file) PassthroughFd() (int, bool) { return -1, false }
