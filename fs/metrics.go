package fs

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Metrics counts what a mount does, for `kmsfs mount --metrics`: FUSE
// requests by operation (count, errors, latency histogram), plaintext bytes
// encrypted and decrypted, content authentication failures and the data
// key pool. Every counter is an atomic: a request costs two clock reads
// and four atomic adds. The zero value is ready to use; one Metrics
// belongs to one mount.
type Metrics struct {
	bytesEncrypted atomic.Uint64 // plaintext bytes written through the mount
	bytesDecrypted atomic.Uint64 // plaintext bytes read through the mount
	authFailures   atomic.Uint64 // operations refused because a tag did not verify
	poolHits       atomic.Uint64 // creates served a pre-generated data key
	poolMisses     atomic.Uint64 // creates that asked the key service themselves
	ops            [numOps]opMetric
}

// opMetric is the counters of one FUSE operation.
type opMetric struct {
	count   atomic.Uint64
	errors  atomic.Uint64
	nanos   atomic.Uint64
	buckets [len(latencyBuckets) + 1]atomic.Uint64 // per bucket, not cumulative; last is +Inf
}

// latencyBuckets are the histogram's upper bounds: a FUSE round trip costs
// 20–100 µs, a KMS call milliseconds.
var latencyBuckets = [...]time.Duration{
	10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond, 100 * time.Microsecond,
	250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond,
	10 * time.Millisecond, 50 * time.Millisecond, 250 * time.Millisecond, time.Second,
}

// fuseOp names a counted FUSE operation.
type fuseOp int

const (
	opLookup fuseOp = iota
	opForget
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	opCreate
	opOpen
	opRead
	opWrite
	opLseek
	opRelease
	opFlush
	opFsync
	opFallocate
	opCopyFileRange
	opOpendir
	opReaddir
	opReaddirplus
	opReleasedir
	opFsyncdir
	opStatfs
	opStatx
	opGetlk
	opSetlk
	opSetlkw
	numOps
)

var opNames = [numOps]string{"lookup", "forget", "getattr", "setattr", "mknod", "mkdir", "unlink", "rmdir",
	"rename", "link", "symlink", "readlink", "access", "getxattr", "listxattr", "setxattr", "removexattr",
	"create", "open", "read", "write", "lseek", "release", "flush", "fsync", "fallocate", "copy_file_range",
	"opendir", "readdir", "readdirplus", "releasedir", "fsyncdir", "statfs", "statx",
	"getlk", "setlk", "setlkw"}

// record counts one request of op that started at start and ended with s.
func (m *Metrics) record(op fuseOp, start time.Time, s fuse.Status) {
	d := time.Since(start)
	o := &m.ops[op]
	o.count.Add(1)
	if s != fuse.OK {
		o.errors.Add(1)
	}
	o.nanos.Add(uint64(d))
	i := 0
	for i < len(latencyBuckets) && d > latencyBuckets[i] {
		i++
	}
	o.buckets[i].Add(1)
}

// authFailure counts one operation refused for a failed tag.
func (m *Metrics) authFailure() {
	if m != nil {
		m.authFailures.Add(1)
	}
}

// WritePrometheus writes the mount's counters in the Prometheus text
// exposition format (version 0.0.4). Operations never requested are left
// out.
func (m *Metrics) WritePrometheus(w io.Writer) error {
	bw := bufio.NewWriter(w)
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	counter("kmsfs_plaintext_bytes_encrypted_total", "Plaintext bytes written (encrypted) through the mount.", m.bytesEncrypted.Load())
	counter("kmsfs_plaintext_bytes_decrypted_total", "Plaintext bytes read (decrypted) through the mount.", m.bytesDecrypted.Load())
	counter("kmsfs_authentication_failures_total", "Operations refused because a chunk or header failed authentication.", m.authFailures.Load())
	bw.WriteString("# HELP kmsfs_dek_pool_total Creates served from the pool of pre-generated data keys (hit) or by a key service call of their own (miss).\n# TYPE kmsfs_dek_pool_total counter\n")
	fmt.Fprintf(bw, "kmsfs_dek_pool_total{result=\"hit\"} %d\nkmsfs_dek_pool_total{result=\"miss\"} %d\n", m.poolHits.Load(), m.poolMisses.Load())

	bw.WriteString("# HELP kmsfs_fuse_requests_total FUSE requests by operation.\n# TYPE kmsfs_fuse_requests_total counter\n")
	for op := range numOps {
		if n := m.ops[op].count.Load(); n > 0 {
			fmt.Fprintf(bw, "kmsfs_fuse_requests_total{op=%q} %d\n", opNames[op], n)
		}
	}
	bw.WriteString("# HELP kmsfs_fuse_request_errors_total FUSE requests answered with an error, by operation.\n# TYPE kmsfs_fuse_request_errors_total counter\n")
	for op := range numOps {
		if m.ops[op].count.Load() > 0 {
			fmt.Fprintf(bw, "kmsfs_fuse_request_errors_total{op=%q} %d\n", opNames[op], m.ops[op].errors.Load())
		}
	}
	bw.WriteString("# HELP kmsfs_fuse_request_duration_seconds Time the daemon took to answer a FUSE request, by operation.\n# TYPE kmsfs_fuse_request_duration_seconds histogram\n")
	for op := range numOps {
		o := &m.ops[op]
		n := o.count.Load()
		if n == 0 {
			continue
		}
		var cum uint64
		for i, le := range latencyBuckets {
			cum += o.buckets[i].Load()
			fmt.Fprintf(bw, "kmsfs_fuse_request_duration_seconds_bucket{op=%q,le=%q} %d\n", opNames[op],
				strconv.FormatFloat(le.Seconds(), 'g', -1, 64), cum)
		}
		cum += o.buckets[len(latencyBuckets)].Load()
		fmt.Fprintf(bw, "kmsfs_fuse_request_duration_seconds_bucket{op=%q,le=\"+Inf\"} %d\n", opNames[op], cum)
		fmt.Fprintf(bw, "kmsfs_fuse_request_duration_seconds_sum{op=%q} %s\n", opNames[op],
			strconv.FormatFloat(time.Duration(o.nanos.Load()).Seconds(), 'g', -1, 64))
		fmt.Fprintf(bw, "kmsfs_fuse_request_duration_seconds_count{op=%q} %d\n", opNames[op], cum)
	}
	return bw.Flush()
}

// record counts a request of op on node that started at start and ended
// with s and, with Options.Debug, logs it (operation, node, status,
// duration) at debug level. The line never carries a file name, an xattr
// value, a symlink target or file data: go-fuse's own request logging
// (MountOptions.Debug) prints the first 8 bytes of every read and write
// and of other payloads, so it stays off.
func (w *rawFS) record(op fuseOp, start time.Time, s fuse.Status, node uint64) {
	w.m.record(op, start, s)
	if w.debug != nil {
		w.debug.Debug("fuse request", "op", opNames[op], "node", node, "status", s, "took", time.Since(start))
	}
}

// recordIO is record for a read or a write, whose debug line also gives
// the offset and the byte count (never the bytes).
func (w *rawFS) recordIO(op fuseOp, start time.Time, s fuse.Status, node, off uint64, n uint32) {
	w.m.record(op, start, s)
	if w.debug != nil {
		w.debug.Debug("fuse request", "op", opNames[op], "node", node, "status", s, "took", time.Since(start),
			"offset", off, "bytes", n)
	}
}

// The rawFS methods below time every FUSE request (and count the bytes of
// reads and writes) around go-fuse's node bridge. Write and Writev are in
// mount.go.

// Lookup implements fuse.RawFileSystem.
func (w *rawFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Lookup(c, h, name, out)
	w.record(opLookup, t, s, h.NodeId)
	return s
}

// Forget implements fuse.RawFileSystem.
func (w *rawFS) Forget(nodeid, nlookup uint64) {
	t := time.Now()
	w.RawFileSystem.Forget(nodeid, nlookup)
	w.record(opForget, t, fuse.OK, nodeid)
}

// GetAttr implements fuse.RawFileSystem.
func (w *rawFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.GetAttr(c, in, out)
	w.record(opGetattr, t, s, in.NodeId)
	return s
}

// SetAttr implements fuse.RawFileSystem.
func (w *rawFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.SetAttr(c, in, out)
	w.record(opSetattr, t, s, in.NodeId)
	return s
}

// Mknod implements fuse.RawFileSystem.
func (w *rawFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	in.Mode = w.withUmask(in.Mode, in.Umask) // acl.go
	s := w.RawFileSystem.Mknod(c, in, name, out)
	w.record(opMknod, t, s, in.NodeId)
	return s
}

// Mkdir implements fuse.RawFileSystem.
func (w *rawFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	in.Mode = w.withUmask(in.Mode, in.Umask) // acl.go
	s := w.RawFileSystem.Mkdir(c, in, name, out)
	w.record(opMkdir, t, s, in.NodeId)
	return s
}

// Unlink implements fuse.RawFileSystem.
func (w *rawFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Unlink(c, h, name)
	w.record(opUnlink, t, s, h.NodeId)
	return s
}

// Rmdir implements fuse.RawFileSystem.
func (w *rawFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Rmdir(c, h, name)
	w.record(opRmdir, t, s, h.NodeId)
	return s
}

// Rename implements fuse.RawFileSystem.
func (w *rawFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Rename(c, in, oldName, newName)
	w.record(opRename, t, s, in.NodeId)
	return s
}

// Link implements fuse.RawFileSystem.
func (w *rawFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Link(c, in, name, out)
	w.record(opLink, t, s, in.NodeId)
	return s
}

// Symlink implements fuse.RawFileSystem.
func (w *rawFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Symlink(c, h, target, name, out)
	w.record(opSymlink, t, s, h.NodeId)
	return s
}

// Readlink implements fuse.RawFileSystem.
func (w *rawFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t := time.Now()
	b, s := w.RawFileSystem.Readlink(c, h)
	w.record(opReadlink, t, s, h.NodeId)
	return b, s
}

// Access implements fuse.RawFileSystem.
func (w *rawFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Access(c, in)
	w.record(opAccess, t, s, in.NodeId)
	return s
}

// GetXAttr implements fuse.RawFileSystem.
func (w *rawFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, s := w.RawFileSystem.GetXAttr(c, h, attr, dest)
	w.record(opGetxattr, t, s, h.NodeId)
	return n, s
}

// ListXAttr implements fuse.RawFileSystem.
func (w *rawFS) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, s := w.RawFileSystem.ListXAttr(c, h, dest)
	w.record(opListxattr, t, s, h.NodeId)
	return n, s
}

// SetXAttr implements fuse.RawFileSystem.
func (w *rawFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t := time.Now()
	markKillSGID(in) // acl.go
	s := w.RawFileSystem.SetXAttr(c, in, attr, data)
	w.record(opSetxattr, t, s, in.NodeId)
	return s
}

// RemoveXAttr implements fuse.RawFileSystem.
func (w *rawFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.RemoveXAttr(c, h, attr)
	w.record(opRemovexattr, t, s, h.NodeId)
	return s
}

// Create implements fuse.RawFileSystem.
func (w *rawFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t := time.Now()
	in.Mode = w.withUmask(in.Mode, in.Umask) // acl.go
	s := w.RawFileSystem.Create(c, in, name, out)
	w.record(opCreate, t, s, in.NodeId)
	return s
}

// Open implements fuse.RawFileSystem.
func (w *rawFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Open(c, in, out)
	w.record(opOpen, t, s, in.NodeId)
	return s
}

// Read implements fuse.RawFileSystem.
func (w *rawFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := time.Now()
	r, s := w.RawFileSystem.Read(c, in, buf)
	var n int
	if s == fuse.OK && r != nil {
		n = r.Size()
		w.m.bytesDecrypted.Add(uint64(n))
	}
	w.recordIO(opRead, t, s, in.NodeId, in.Offset, uint32(n))
	return r, s
}

// Lseek implements fuse.RawFileSystem.
func (w *rawFS) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Lseek(c, in, out)
	w.record(opLseek, t, s, in.NodeId)
	return s
}

// Release implements fuse.RawFileSystem.
func (w *rawFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	t := time.Now()
	w.RawFileSystem.Release(c, in)
	w.record(opRelease, t, fuse.OK, in.NodeId)
}

// CopyFileRange implements fuse.RawFileSystem.
func (w *rawFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	t := time.Now()
	n, s := w.RawFileSystem.CopyFileRange(c, in)
	w.record(opCopyFileRange, t, s, in.NodeId)
	return n, s
}

// Flush implements fuse.RawFileSystem.
func (w *rawFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	t := time.Now()
	// The handle learns the lock owner through the request's cancel
	// channel, unique while the request is in flight (locks.go).
	w.locks.flushing.Store(c, in.LockOwner)
	s := w.RawFileSystem.Flush(c, in)
	w.locks.flushing.Delete(c)
	w.record(opFlush, t, s, in.NodeId)
	return s
}

// GetLk implements fuse.RawFileSystem.
func (w *rawFS) GetLk(c <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.GetLk(c, in, out)
	w.record(opGetlk, t, s, in.NodeId)
	return s
}

// SetLk implements fuse.RawFileSystem.
func (w *rawFS) SetLk(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.SetLk(c, in)
	w.record(opSetlk, t, s, in.NodeId)
	return s
}

// SetLkw implements fuse.RawFileSystem; its duration includes the wait.
func (w *rawFS) SetLkw(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.SetLkw(c, in)
	w.record(opSetlkw, t, s, in.NodeId)
	return s
}

// Fsync implements fuse.RawFileSystem.
func (w *rawFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Fsync(c, in)
	w.record(opFsync, t, s, in.NodeId)
	return s
}

// Fallocate implements fuse.RawFileSystem.
func (w *rawFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Fallocate(c, in)
	w.record(opFallocate, t, s, in.NodeId)
	return s
}

// OpenDir implements fuse.RawFileSystem.
func (w *rawFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.OpenDir(c, in, out)
	w.record(opOpendir, t, s, in.NodeId)
	return s
}

// ReadDir implements fuse.RawFileSystem.
func (w *rawFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.ReadDir(c, in, out)
	w.record(opReaddir, t, s, in.NodeId)
	return s
}

// ReadDirPlus implements fuse.RawFileSystem.
func (w *rawFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.ReadDirPlus(c, in, out)
	w.record(opReaddirplus, t, s, in.NodeId)
	return s
}

// ReleaseDir implements fuse.RawFileSystem.
func (w *rawFS) ReleaseDir(in *fuse.ReleaseIn) {
	t := time.Now()
	w.RawFileSystem.ReleaseDir(in)
	w.record(opReleasedir, t, fuse.OK, in.NodeId)
}

// FsyncDir implements fuse.RawFileSystem.
func (w *rawFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.FsyncDir(c, in)
	w.record(opFsyncdir, t, s, in.NodeId)
	return s
}

// StatFs implements fuse.RawFileSystem.
func (w *rawFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.StatFs(c, h, out)
	w.record(opStatfs, t, s, h.NodeId)
	return s
}

// Statx implements fuse.RawFileSystem.
func (w *rawFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	t := time.Now()
	s := w.RawFileSystem.Statx(c, in, out)
	w.record(opStatx, t, s, in.NodeId)
	return s
}
