// Package fs is the kmsfs filesystem: go-fuse v2 nodes over the backing
// tree (CIPHERDIR). Every operation resolves the backing directory as a
// file descriptor, makes one *at system call or one chunk operation, and
// maps its error to an errno in errno.go. Regular files are encrypted per
// file by the chunk package under a data key that the key service wraps;
// the wrapped key lives in the backing file's user.kmsfs.key xattr.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/internal/secmem"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/names"
)

// DefaultKMSTimeout bounds every key service call when Options.KMSTimeout
// is zero.
const DefaultKMSTimeout = 10 * time.Second

// cacheTimeout is the kernel's entry and attribute cache lifetime, as in
// libfuse: one second.
const cacheTimeout = time.Second

// Options configure a mount.
type Options struct {
	// CipherDir is the backing tree; its kmsfs.conf is Config.
	CipherDir string
	// Config is the tree's configuration (cipherdir.LoadConfig).
	Config cipherdir.Config
	// Keys unwraps and generates data keys. The caller passes a cached
	// service (keysvc.NewCache) so that opens rarely reach the KMS.
	Keys keysvc.Service
	// Codecs compress and decompress chunks (codec.All()). A file whose
	// compression has no codec here fails to open (EIO); the mount fails
	// when the compression Config gives new files has none.
	Codecs chunk.Codecs
	// ReadOnly mounts with "ro".
	ReadOnly bool
	// AllowOther lets other users in; it always comes with the kernel's
	// default_permissions checks.
	AllowOther bool
	// Logger receives error events (nil: discard).
	Logger *slog.Logger
	// KMSTimeout bounds each key service call (0: DefaultKMSTimeout).
	KMSTimeout time.Duration
	// Debug logs every FUSE request on Logger at debug level: operation,
	// node ID, status, duration, and offset and size of reads and writes;
	// never file names, file data or other payloads.
	Debug bool
	// KeyRecheck is how long an open file's data key is used before the
	// key service is asked again (through Keys, so give the DEK cache the
	// same MaxAge): the bound within which a disabled key stops reads and
	// writes of files already open. 0 means DefaultKeyRecheck.
	KeyRecheck time.Duration
	// KeyCheck is the key service open files re-validate their data key
	// with: the uncached service behind Keys, so that a check always
	// reaches the KMS and the bound is KeyRecheck, not KeyRecheck plus the
	// age of a cache entry. nil means Keys.
	KeyCheck keysvc.Service
	// Metrics receives the mount's counters (nil: counted and dropped).
	Metrics *Metrics
	// KeyPool is how many data keys (each with its file ID) are generated
	// ahead for creates, in the background (keypool.go). 0 means
	// DefaultKeyPool; negative disables the pool.
	KeyPool int
	// WritebackCache turns on the kernel's FUSE writeback cache: writes
	// return once in the page cache and reach the daemon in larger,
	// later batches. Only for a tree that no other mount or program
	// changes meanwhile (see mountOptions).
	WritebackCache bool
	// Shared runs the mount in shared mode, for a CIPHERDIR that other
	// hosts mount at the same time on shared storage (shared.go): internal
	// byte-range locks on backing files around every chunk rewrite and
	// size change, kernel entry and attribute caches bounded by
	// SharedCacheTimeout, close-to-open consistency. It cannot be combined
	// with WritebackCache, and the mount fails when the backing filesystem
	// refuses OFD locks. Config.Shared turns it on too.
	Shared bool
	// Memory holds the data keys the mount keeps for a while (the key
	// pool): locked, non-dumpable pages (package secmem). nil means an
	// arena of the mount's own, warning on Logger when refused.
	Memory *secmem.Arena

	// Names encrypts and decrypts entry names, symlink targets and user
	// extended attributes of an encrypted-names (v2) tree
	// (cipherdir.OpenNames); nil for a plaintext-names (v1) tree. The
	// root's ID file must exist (kmsfs init writes it).
	Names *names.Keys

	// beforeCreate, when set (tests only), runs in Create after the
	// kernel's lookup found no entry and before the backing file is
	// created, with the backing directory and name: a test makes the
	// name appear there to drive the race deterministically.
	beforeCreate func(dirfd int, name string)
	// afterCreate, when set (tests only), runs in createFile right after
	// the backing file is made, before its header: a test plays another
	// host opening the new, empty file at that instant.
	afterCreate func(dirfd int, name string)
}

// root is the state shared by every node of one mount.
type root struct {
	fd         int // O_PATH directory descriptor of CIPHERDIR
	dev        uint64
	rootIno    uint64 // CIPHERDIR's inode number
	cfg        cipherdir.Config
	keys       keysvc.Service
	codecs     chunk.Codecs
	trust      *cipherdir.Trust // the keys whose records are accepted
	log        *slog.Logger
	kmsTimeout time.Duration
	keyRecheck time.Duration  // see Options.KeyRecheck
	keyCheck   keysvc.Service // see Options.KeyCheck
	readOnly   bool
	shared     bool // shared mode (Options.Shared or Config.Shared)
	asRoot     bool // the daemon runs as root: give new files the caller's owner
	// euid and egid are the daemon's: a new backing file gets them unless
	// changed, so a caller with the same IDs needs no chown.
	euid, egid int
	// umask is the daemon's file mode creation mask, or -1 if unknown: a
	// new file whose permissions it would not touch needs no chmod.
	umask int
	// caps are the ACL-related capabilities the kernel granted (acl.go),
	// set once at INIT before any request.
	caps kernelCaps

	// dirs caches the descriptors of recently used backing directories.
	dirs dirCache

	// marks carry the flags of WRITE requests that the handle must see
	// (see rawFS).
	marks writeMarks

	closeOnce sync.Once

	// noReserve is set once the backing filesystem answers fallocate with
	// EOPNOTSUPP: writes then go unreserved (reserve.go).
	noReserve atomic.Bool

	// authLogged makes each authentication failure one log line per
	// authLogWindow (errno.go).
	authLogged logOnce

	metrics *Metrics
	pool    *keyPool // nil when disabled
	mem     *secmem.Arena
	ownMem  bool // mem is the mount's own: close releases it

	beforeCreate func(dirfd int, name string) // see Options.beforeCreate
	afterCreate  func(dirfd int, name string) // see Options.afterCreate

	// names is Options.Names: nil for plaintext names. plainNames and
	// encNames keep decrypted and encrypted names; nameLog rate-limits the
	// lines about names that do not decrypt (names.go).
	names      *names.Keys
	plainNames nameCache[string]
	encNames   nameCache[encName]
	nameLog    nameLogger

	mu       sync.Mutex
	contents map[uint64]*content // open regular files by backing inode

	// locks are the application locks taken through this mount, on the
	// backing files (locks.go).
	locks lockTable
}

// newRoot opens the backing tree and returns its root node.
func newRoot(opts Options) (*node, error) {
	if opts.Keys == nil {
		return nil, errors.New("fs: no key service")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	shared := opts.Shared || opts.Config.Shared
	if shared && opts.WritebackCache {
		return nil, errors.New("fs: shared mode and the writeback cache exclude each other: with it, writes reach the backing file late and the kernel trusts its own file size over other hosts' changes")
	}
	if _, err := opts.Codecs.Lookup(opts.Config.Compression()); err != nil {
		return nil, fmt.Errorf("fs: new files are compressed with %s: %w", opts.Config.Compression(), err)
	}
	fd, err := unix.Open(opts.CipherDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fs: open %s: %w", opts.CipherDir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("fs: stat %s: %w", opts.CipherDir, err)
	}
	if shared {
		if err := probeLocks(fd); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("fs: %s: %w", opts.CipherDir, err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	timeout := opts.KMSTimeout
	if timeout <= 0 {
		timeout = DefaultKMSTimeout
	}
	recheck := opts.KeyRecheck
	if recheck <= 0 {
		recheck = DefaultKeyRecheck
	}
	check := opts.KeyCheck
	if check == nil {
		check = opts.Keys
	}
	m := opts.Metrics
	if m == nil {
		m = &Metrics{}
	}
	r := &root{
		metrics:    m,
		keyRecheck: recheck,
		keyCheck:   check,
		fd:         fd,
		dev:        st.Dev,
		rootIno:    st.Ino,
		cfg:        opts.Config,
		keys:       opts.Keys,
		codecs:     opts.Codecs,
		log:        log,
		kmsTimeout: timeout,
		readOnly:   opts.ReadOnly,
		shared:     shared,
		asRoot:     os.Geteuid() == 0,
		euid:       os.Geteuid(),
		egid:       os.Getegid(),
		umask:      readUmask(),
		contents:   make(map[uint64]*content),

		marks: newWriteMarks(),
		dirs:  dirCache{now: time.Now, ttl: dirCacheTTL},

		beforeCreate: opts.beforeCreate,
		afterCreate:  opts.afterCreate,
		names:        opts.Names,
	}
	if shared {
		r.dirs.ttl = SharedCacheTimeout
	}
	rootNode := &node{r: r}
	if r.names != nil {
		id, err := cipherdir.ReadDirID(fd, r.names)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("fs: the root of %s: %w", opts.CipherDir, err)
		}
		rootNode.dirID.Store(&dirIDEntry{id: id, at: time.Now()})
	}
	r.mem = opts.Memory
	if r.mem == nil {
		r.mem, r.ownMem = secmem.New(secmem.Options{Logger: log}), true
	}
	// Only records naming a key of Config (or of its previous_keys, read
	// again when a record names a key not known yet) are opened.
	tctx, cancel := context.WithTimeout(context.Background(), timeout)
	r.trust = cipherdir.NewTrust(tctx, opts.Keys, opts.Config, func() (cipherdir.Config, error) {
		return cipherdir.LoadConfigAt(fd)
	})
	cancel()
	if opts.KeyPool >= 0 && !opts.ReadOnly {
		size := opts.KeyPool
		if size == 0 {
			size = DefaultKeyPool
		}
		r.pool = newKeyPool(r, size, min(recheck, maxPooledKeyAge))
	}
	return rootNode, nil
}

// close releases the backing tree descriptor; called once the mount is gone.
func (r *root) close() {
	r.closeOnce.Do(func() {
		r.pool.close()
		if r.ownMem {
			r.mem.Close()
		}
		r.dirs.clear()
		r.locks.close()
		unix.Close(r.fd)
	})
}

// mountOptions returns the go-fuse options of a mount.
func mountOptions(opts Options) *gofs.Options {
	sec := cacheTimeout
	entry := sec
	if opts.Shared || opts.Config.Shared {
		// Another host's change of attributes shows within this bound,
		// of names at once: every path walk asks (shared.go).
		// WritebackCache was refused by newRoot.
		sec, entry = SharedCacheTimeout, 0
	}
	mo := fuse.MountOptions{
		FsName:     opts.CipherDir,
		Name:       "kmsfs",
		AllowOther: opts.AllowOther,
		// Debug stays off: go-fuse's request log shows 8 bytes of every
		// read and write. rawFS logs requests instead (Options.Debug).
		MaxWrite: 1 << 20,
		// Never let the kernel read the backing file itself: it would hand
		// ciphertext to the reader. The handle does not implement
		// FilePassthroughFder either; this is the second lock on that door.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		// The file system clears set-ID bits itself on write, truncate
		// and chown (rawFS, Setattr). Without this the kernel asks for
		// security.capability before every write: a second round trip
		// per write(2) (bench/README.md). With it, the kernel asks
		// once per inode (SB_NOSEC).
		//
		// CAP_DONT_MASK, with EnableAcl (FUSE_POSIX_ACL): the kernel
		// checks access ACLs and leaves the caller's umask to us, so that
		// a default ACL decides a new entry's mode; CAP_SETXATTR_EXT
		// tells us when setting an ACL must clear the set-group-ID bit
		// (acl.go).
		ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2 | fuse.CAP_DONT_MASK | fuse.CAP_SETXATTR_EXT,
		EnableAcl:         true,
		// Our read replies are decrypted bytes in memory, never a file
		// range the kernel could splice; with splicing on, go-fuse still
		// tries a pipe first for each one and falls back, at four wasted
		// system calls per read.
		DisableSplice: true,
		// flock and fcntl locks reach the file system (locks.go), which
		// takes them on the backing file, where other mounts see them.
		// Without this the kernel keeps them per mount.
		EnableLocks: true,
	}
	if opts.AllowOther {
		mo.Options = append(mo.Options, "default_permissions")
	}
	if opts.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	if opts.WritebackCache {
		// The kernel keeps written pages and sends them later, in
		// batches, flagged FUSE_WRITE_CACHE (rawFS places those where
		// the kernel says, O_APPEND or not), may read pages through a
		// write-only handle (every backing descriptor is read-write),
		// and trusts its own file size over ours. A change to the
		// backing tree by anything but this mount is then seen late or
		// overwritten: opt-in only.
		mo.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
	}
	return &gofs.Options{
		MountOptions: mo,
		EntryTimeout: &entry,
		AttrTimeout:  &sec,
		// Report modes as they are: a directory made with mode 0 is 0.
		NullPermissions: true,
	}
}

// Mount mounts the backing tree opts.CipherDir at mountpoint and serves it
// until the returned server is unmounted. It returns once the kernel has
// the mount.
func Mount(mountpoint string, opts Options) (*fuse.Server, error) {
	server, _, err := mount(mountpoint, opts)
	return server, err
}

// readUmask returns the process's umask from /proc/self/status (Linux
// 4.7 and later), or -1. Reading it with umask(2) would mean setting it,
// and other goroutines may be creating files meanwhile.
func readUmask() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				return -1
			}
			return int(m)
		}
	}
	return -1
}

// mount is Mount, also returning the mount's shared state (for tests).
func mount(mountpoint string, opts Options) (*fuse.Server, *root, error) {
	rn, err := newRoot(opts)
	if err != nil {
		return nil, nil, err
	}
	o := mountOptions(opts)
	// go-fuse's own messages (a failed reply, a panic in a handler) go
	// to the mount's logger rather than the process's standard logger.
	o.MountOptions.Logger = slog.NewLogLogger(rn.r.log.Handler(), slog.LevelWarn)
	raw := &rawFS{RawFileSystem: gofs.NewNodeFS(rn, o), marks: rn.r.marks, m: rn.r.metrics, locks: &rn.r.locks,
		caps: &rn.r.caps, want: requestedCaps(&o.MountOptions)}
	if opts.Debug {
		raw.debug = rn.r.log
	}
	server, err := fuse.NewServer(raw, mountpoint, &o.MountOptions)
	if err != nil {
		rn.r.close()
		return nil, nil, fmt.Errorf("fs: mount %s: %w", mountpoint, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		server.Unmount()
		rn.r.close()
		return nil, nil, fmt.Errorf("fs: mount %s: %w", mountpoint, err)
	}
	go func() {
		server.Wait()
		rn.r.close()
	}()
	return server, rn.r, nil
}

// writable answers EROFS on a read-only mount (the kernel refuses most
// writes itself; this covers the rest) and 0 otherwise.
func (r *root) writable() syscall.Errno {
	if r.readOnly {
		return syscall.EROFS
	}
	return 0
}

// rawFS sits between the kernel and go-fuse's node bridge to hand the
// handle two facts that only a WRITE request's flags carry:
//
//   - the write(2) came through a descriptor in O_APPEND mode (the flags
//     follow fcntl changes too). Only such writes are placed at the
//     plaintext end of file; page-cache writeback (mmap, FUSE_WRITE_CACHE)
//     may use any writable handle of the inode, an O_APPEND one included,
//     and must land where the kernel says.
//   - the writer lacks CAP_FSETID, so the set-user-ID bit and a set-group-ID
//     bit with group execute must go (FUSE_WRITE_KILL_SUIDGID): with
//     CAP_HANDLE_KILLPRIV_V2 (mountOptions) that is the file system's job.
//
// The facts travel as the request's cancel channel, the one value the
// bridge hands on to the handle; a WRITE is never cancelled midway here.
type rawFS struct {
	fuse.RawFileSystem
	marks writeMarks
	locks *lockTable   // the FLUSH owners (rawFS.Flush)
	m     *Metrics     // every request is timed and counted (metrics.go)
	debug *slog.Logger // logs every request when set (Options.Debug)
	// caps receives, at INIT, which of the capabilities in want the
	// kernel granted (acl.go).
	caps *kernelCaps
	want uint64
}

// requestedCaps returns the optional capabilities mo asks the kernel for.
func requestedCaps(mo *fuse.MountOptions) uint64 {
	want := mo.ExtraCapabilities
	if mo.EnableAcl {
		want |= fuse.CAP_POSIX_ACL
	}
	return want &^ mo.DisabledCapabilities
}

// writeMarks are the stand-in cancel channels of rawFS, one per
// combination of facts; they are never closed.
type writeMarks struct {
	appendMode, killPriv, both chan struct{}
}

func newWriteMarks() writeMarks {
	return writeMarks{appendMode: make(chan struct{}), killPriv: make(chan struct{}), both: make(chan struct{})}
}

func (w *rawFS) mark(cancel <-chan struct{}, in *fuse.WriteIn) <-chan struct{} {
	app := in.Flags&syscall.O_APPEND != 0 && in.WriteFlags&fuse.WRITE_CACHE == 0
	kill := in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0
	switch {
	case app && kill:
		return w.marks.both
	case app:
		return w.marks.appendMode
	case kill:
		return w.marks.killPriv
	}
	return cancel
}

// Write implements fuse.RawFileSystem.
func (w *rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, s := w.RawFileSystem.Write(w.mark(cancel, in), in, data)
	w.m.bytesEncrypted.Add(uint64(n))
	w.recordIO(opWrite, t, s, in.NodeId, in.Offset, n)
	return n, s
}

// Writev implements fuse.RawFileSystem.
func (w *rawFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t := time.Now()
	n, s := w.RawFileSystem.Writev(w.mark(cancel, in), in, data)
	w.m.bytesEncrypted.Add(uint64(n))
	w.recordIO(opWrite, t, s, in.NodeId, in.Offset, n)
	return n, s
}

// writeFlags reports what rawFS marked on a WRITE request's context: an
// O_APPEND write(2), and set-ID bits to kill.
func (r *root) writeFlags(ctx context.Context) (appendMode, killPriv bool) {
	fc, ok := ctx.(*fuse.Context)
	if !ok {
		return false, false
	}
	switch fc.Cancel {
	case (<-chan struct{})(r.marks.both):
		return true, true
	case (<-chan struct{})(r.marks.appendMode):
		return true, false
	case (<-chan struct{})(r.marks.killPriv):
		return false, true
	}
	return false, false
}
