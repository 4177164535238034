package fs

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/names"
)

// errReservedName reports a name in the mount that maps to an internal
// file of the backing tree (the config file or its temporary copies).
// errno.go turns it into EPERM; Lookup answers ENOENT for it instead.
var errReservedName = errors.New("name is reserved for kmsfs")

// errEmptyNoID reports a v2 directory without an ID file that holds no
// user entries (a crash in rmdir left it): it is empty, lookups find
// nothing, and the first create in it gives it a fresh ID.
var errEmptyNoID = errors.New("empty directory without ID file")

// isReservedBacking reports whether a backing name in a directory (root
// says whether it is CIPHERDIR itself) of a plaintext-names (v1) tree
// belongs to kmsfs and must never be visible or reachable through the
// mount: cipherdir.IsInternalName.
func isReservedBacking(root bool, name string) bool {
	return cipherdir.IsInternalName(false, root, name)
}

// backingName translates a name in the mount into the name of the same
// entry in the backing tree of a plaintext-names (v1) tree. root says
// whether the directory is the root of the mount. Names of internal
// files fail with errReservedName. Encrypted names (v2) go through
// root.entryName instead.
func backingName(root bool, plain string) (string, error) {
	if isReservedBacking(root, plain) {
		return "", errReservedName
	}
	return plain, nil
}

// plainName is the inverse of backingName for v1 trees: the name a
// backing directory entry has in the mount, or ok=false when the entry
// must stay hidden.
func plainName(root bool, backing string) (plain string, ok bool) {
	if isReservedBacking(root, backing) {
		return "", false
	}
	return backing, true
}

// nodeOf returns the kmsfs node of an Inode.
func nodeOf(in *gofs.Inode) *node { return in.Operations().(*node) }

// entryName returns the backing name of the entry plain in the directory
// dir (whose backing directory is dirfd, or -1 to open it when needed)
// and, for a long encrypted name, the encoded name its sidecar must hold
// ("" otherwise). create says the caller is about to make the entry: an
// empty directory that lost its ID file then gets a fresh one.
func (r *root) entryName(dir *gofs.Inode, dirfd int, plain string, create bool) (backing, long string, err error) {
	if r.names == nil {
		b, err := backingName(dir.IsRoot(), plain)
		return b, "", err
	}
	id, err := r.dirID(dir, dirfd, create)
	if err != nil {
		return "", "", err
	}
	if e, ok := r.encNames.get(id, plain); ok {
		return e.backing, e.long, nil
	}
	backing, long, err = cipherdir.EntryName(r.names, id, plain)
	if err == nil {
		r.encNames.put(id, plain, encName{backing, long})
	}
	return backing, long, err
}

// dirID returns the ID of the directory dir of a v2 tree, read from its
// ID file on first use and then kept on the node (an ID never changes; a
// directory that is replaced is another inode and so another node).
// dirfd is dir's backing directory, or -1 to open it. A directory without
// ID file is errEmptyNoID when it holds no user entries (create: it gets
// a fresh ID) and an error that becomes EIO otherwise.
func (r *root) dirID(dir *gofs.Inode, dirfd int, create bool) (names.DirID, error) {
	nd := nodeOf(dir)
	if e := nd.dirID.Load(); e != nil && r.dirIDFresh(dir, e, create) {
		return e.id, nil
	}
	if dirfd < 0 {
		d, err := r.openDir(dir)
		if err != nil {
			return names.DirID{}, err
		}
		defer d.close()
		dirfd = d.fd
	}
	return r.loadDirID(nd, dirfd, create)
}

// loadDirID reads the ID file of the backing directory dirfd of nd and
// keeps the ID on nd (see dirID).
func (r *root) loadDirID(nd *node, dirfd int, create bool) (names.DirID, error) {
	id, err := cipherdir.ReadDirID(dirfd, r.names)
	if errors.Is(err, cipherdir.ErrNoDirID) {
		used, lerr := cipherdir.HasUserEntries(dirfd)
		switch {
		case lerr != nil:
			return names.DirID{}, lerr
		case used:
			r.nameLog.log(r, "directory has entries but no ID file: its entries cannot be read (restore kmsfs.dirid from a backup; kmsfs fsck reports it)", r.backingPathForLog(nd), err)
			return names.DirID{}, fmt.Errorf("%w (directory with entries)", err)
		case !create:
			return names.DirID{}, errEmptyNoID
		}
		if r.readOnly {
			return names.DirID{}, unix.EROFS
		}
		if r.shared {
			id, err = r.awaitDirID(dirfd)
		}
		if !r.shared || errors.Is(err, cipherdir.ErrNoDirID) {
			id, err = cipherdir.RepairDirID(dirfd, r.names)
		}
	}
	if err != nil {
		if !errors.Is(err, unix.ENOENT) {
			r.nameLog.log(r, "directory ID file is damaged or forged: the directory's entries cannot be read", r.backingPathForLog(nd), err)
		}
		return names.DirID{}, err
	}
	nd.dirID.Store(&dirIDEntry{id: id, at: time.Now()})
	return id, nil
}

// dirIDEntry is a directory's ID as kept on its node, with when it was
// read.
type dirIDEntry struct {
	id names.DirID
	at time.Time
}

// dirIDFresh reports whether the ID kept on a directory's node may be
// used. It always may outside shared mode: only this mount changes the
// tree, and an ID never changes but through a repair of an empty
// directory, which this mount does itself. In shared mode another host
// may have repaired an empty directory (after a crash, or while this
// mount's rmdir of it raced that host's create): a create reads the ID
// file again (entries made under an old ID would be unreadable to every
// other mount), and other operations use a kept ID for at most
// SharedCacheTimeout, the bound of every cache in shared mode. The root's
// ID is never repaired.
func (r *root) dirIDFresh(dir *gofs.Inode, e *dirIDEntry, create bool) bool {
	if !r.shared || dir.IsRoot() {
		return true
	}
	return !create && time.Since(e.at) < SharedCacheTimeout
}

// Waiting for another host's rmdir (shared mode): how often and how long
// awaitDirID looks again for the ID file of an empty directory.
const (
	dirIDWaits = 5
	dirIDPause = 20 * time.Millisecond
)

// awaitDirID is what a create in an empty directory without ID file does
// in shared mode before it gives the directory a fresh ID: another host's
// rmdir (or rename over it) removes the ID file before the directory
// (names/FORMAT.md, "rmdir") and writes the same ID back when the rmdir
// fails. A fresh ID given meanwhile would stay, and every mount that
// keeps the old one on its node would name new entries under it, which
// no other mount can read. So it looks again dirIDWaits times, dirIDPause
// apart: the directory gone answers ENOENT, the ID back is used, and only
// an ID file still missing (a crash in rmdir) is cipherdir.ErrNoDirID,
// for the caller to repair.
func (r *root) awaitDirID(dirfd int) (names.DirID, error) {
	for range dirIDWaits {
		time.Sleep(dirIDPause)
		var st unix.Stat_t
		if err := unix.Fstat(dirfd, &st); err != nil {
			return names.DirID{}, err
		}
		if st.Nlink == 0 {
			return names.DirID{}, unix.ENOENT
		}
		id, err := cipherdir.ReadDirID(dirfd, r.names)
		if !errors.Is(err, cipherdir.ErrNoDirID) {
			return id, err
		}
	}
	return names.DirID{}, cipherdir.ErrNoDirID
}

// backingPathForLog names the directory nd in a log line: its backing path
// relative to CIPHERDIR ("." for the root), which `kmsfs paths --decrypt`
// maps back; "?" when it cannot be resolved. Only for error paths: it
// resolves the whole path.
func (r *root) backingPathForLog(nd *node) string {
	parts, err := r.backingRel(&nd.Inode)
	switch {
	case err != nil:
		return "?"
	case len(parts) == 0:
		return "."
	}
	return strings.Join(parts, "/")
}

// decryptEntry returns the name in the mount of the backing entry backing
// in the directory with ID id (backing directory dirfd), through the name
// cache. ok is false for an entry that must not be listed: internal, or
// one that does not decrypt (logged, rate-limited).
func (r *root) decryptEntry(dirfd int, id names.DirID, backing string) (string, bool) {
	k := names.Classify(backing)
	if k != names.KindName && k != names.KindLongName {
		return "", false
	}
	if p, ok := r.plainNames.get(id, backing); ok {
		return p, true
	}
	p, err := cipherdir.DecryptEntry(dirfd, r.names, id, backing)
	if err != nil {
		r.nameLog.log(r, "backing entry left out of a listing: its name does not decrypt in this directory", backing, err)
		return "", false
	}
	r.plainNames.put(id, backing, p)
	if k == names.KindName {
		// The lookup that follows a listing entry (READDIRPLUS, ls -l)
		// needs the other direction: a short name is its own encryption.
		r.encNames.put(id, p, encName{backing: backing})
	}
	return p, true
}

// nameCacheMax bounds each of the two name caches of a mount (decrypted
// names of listings, encrypted names of lookups): at most this many
// entries each, about 190 bytes an entry with short names (≈ 6 MiB each at
// the bound; BenchmarkNameCacheMemory), in two generations.
const nameCacheMax = 1 << 15

// nameCache keeps recently translated names, keyed by directory ID and
// name: decrypted names so that listing a directory again decrypts
// nothing (and reads no sidecar), and encrypted ones so that the lookups,
// getattrs and getxattrs of one entry encrypt its name once. It is bounded
// by two generations of at most nameCacheMax/2 entries: when the current
// one is full it becomes the previous one and the old previous one is
// dropped, so recently used entries (found in either, and moved to the
// current) survive and memory never passes the bound. A translation never
// changes (the names key, the directory ID and the name determine it), so
// entries need no invalidation; a removed entry just ages out.
type nameCache[V any] struct {
	mu        sync.Mutex
	cur, prev map[nameKey]V
}

type nameKey struct {
	dir  names.DirID
	name string
}

func (c *nameCache[V]) get(dir names.DirID, name string) (V, bool) {
	k := nameKey{dir, name}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.cur[k]; ok {
		return v, true
	}
	v, ok := c.prev[k]
	if ok {
		c.insert(k, v)
	}
	return v, ok
}

func (c *nameCache[V]) put(dir names.DirID, name string, v V) {
	c.mu.Lock()
	c.insert(nameKey{dir, name}, v)
	c.mu.Unlock()
}

// insert adds k to the current generation, rotating when it is full. The
// caller holds c.mu.
func (c *nameCache[V]) insert(k nameKey, v V) {
	if c.cur == nil || len(c.cur) >= nameCacheMax/2 {
		c.prev, c.cur = c.cur, make(map[nameKey]V, 1024)
	}
	c.cur[k] = v
}

// len returns the number of cached entries (both generations; an entry
// in both counts twice).
func (c *nameCache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev)
}

// encName is a cached encryption of a name: its backing name and, for a
// long name, the encoded name its sidecar holds.
type encName struct{ backing, long string }

// nameLogWindow and nameLogBurst rate-limit the log lines about names
// that do not decrypt: a damaged directory is listed again and again, and
// the log should not grow with every ls.
const (
	nameLogWindow = time.Minute
	nameLogBurst  = 20
)

// nameLogger writes at most nameLogBurst lines per nameLogWindow and
// counts the ones it drops, reporting the count with the next line.
type nameLogger struct {
	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed atomic.Int64
}

func (l *nameLogger) log(r *root, msg, backing string, err error) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.start) >= nameLogWindow {
		l.start, l.n = now, 0
	}
	ok := l.n < nameLogBurst
	if ok {
		l.n++
	}
	l.mu.Unlock()
	if !ok {
		l.suppressed.Add(1)
		return
	}
	attrs := []any{"err", err.Error()}
	if backing != "" {
		attrs = append(attrs, "backing_name", backing)
	}
	if s := l.suppressed.Swap(0); s > 0 {
		attrs = append(attrs, "suppressed_before", s)
	}
	r.log.Error(msg, attrs...)
}
