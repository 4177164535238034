package cipherdir

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/names"
)

// DefaultRekeyTimeout bounds the key service calls of one file's rekey.
const DefaultRekeyTimeout = 60 * time.Second

// rekeyCopyBlock is how much plaintext Rekey moves at a time (a multiple
// of every chunk size).
const rekeyCopyBlock = 1 << 20

// ErrChanged: the file changed while Rekey re-encrypted it; nothing was
// replaced.
var ErrChanged = errors.New("the file changed while it was re-encrypted; nothing was replaced, run rekey again")

// Rekeyer re-encrypts single files of one CIPHERDIR under new data keys.
type Rekeyer struct {
	dir    string
	cfg    Config
	keys   keysvc.Service
	codecs chunk.Codecs
	trust  *Trust
	root   int
	// names is the tree's names key (nil for a v1 tree): a v2 file's user
	// attributes are bound to its file ID and re-encrypted under the new one.
	names *names.Keys

	// Wait makes Rekey wait for a file's internal locks while a mount in
	// shared mode writes it; by default a file still busy after a few
	// tries fails with ErrBusy and is left alone.
	Wait bool

	// beforeRelink, when set (tests only), runs after the other hard
	// links of a file were found and before they are re-linked: the
	// window in which a user who owns a directory can swap it.
	beforeRelink func()
}

// NewRekeyer opens the CIPHERDIR dir (whose config is cfg) for Rekey with
// the key service keys; only files whose records name a key cfg trusts
// (NewTrust, resolved within ctx) are re-encrypted. codecs (de)compress
// the files that are compressed; each keeps its compression. nk is the
// names key of a v2 tree (encrypted names and user attributes), nil for
// v1. Close releases it.
func NewRekeyer(ctx context.Context, dir string, cfg Config, keys keysvc.Service, codecs chunk.Codecs, nk *names.Keys) (*Rekeyer, error) {
	root, err := OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &Rekeyer{dir: dir, cfg: cfg, keys: keys, codecs: codecs, trust: NewTrust(ctx, keys, cfg, nil), root: root, names: nk}, nil
}

// Close releases the CIPHERDIR.
func (r *Rekeyer) Close() error { return unix.Close(r.root) }

// tempName returns a fresh name for a temporary file of rekey.
func tempName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return RekeyTempMarker + hex.EncodeToString(b[:])
}

// Rekey re-encrypts the backing file rel (relative to CIPHERDIR) under a
// new data key and file ID, and returns both file IDs ("" new for an empty
// file, which is left alone).
//
// Steps: take the file's internal locks (LockContent, waiting only with
// Wait; a file a shared-mode mount keeps writing fails with ErrBusy) and
// hold them to the end; unwrap the old key and verify the header
// (LoadKey, so only a key the tree trusts); make a temporary file (RekeyTempMarker, hidden
// from the mount and from fsck) in the file's directory with a new header,
// data key and key record (NewHeader, GenerateFileKey, FileCipher,
// StartFile: the mount's create path); copy the plaintext chunk by chunk,
// reserving the backing space of each write first as the mount does
// (all-zero blocks stay holes); copy owner, mode, extended attributes and
// times (in a v2 tree the encrypted user attributes are re-encrypted under
// the new file ID, names/FORMAT.md: they are bound to it, and are on the
// temporary file before it replaces the old one); fsync; check that the old file did not change meanwhile (its
// size and times: a mount writing to it makes Rekey fail with ErrChanged
// and replace nothing); rename the temporary file over the old name; then
// give every other hard link of the old inode the new inode (relink);
// then mark the old inode replaced (Retire), so that a shared-mode
// mount's writer that waited for the locks with a descriptor of it fails
// with ESTALE rather than write where no name leads. Between the first
// and the last of those renames, different links of the file name
// different inodes with the same plaintext. A mount that is not in
// shared mode takes no locks: a file it has open for writing must not be
// rekeyed (its writes after the rename would be lost).
//
// Every step works on directory descriptors: the file's directory is
// resolved once below CIPHERDIR (no symlinks) and held open, and each
// other link's directory is resolved again when it is re-linked, so
// nothing a user renames or swaps meanwhile makes Rekey create or replace
// a name outside CIPHERDIR.
func (r *Rekeyer) Rekey(ctx context.Context, rel string) (oldID, newID string, err error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultRekeyTimeout)
	defer cancel()
	rel = path.Clean(rel)
	pdir, name, err := r.parent(rel)
	if err != nil {
		return "", "", err
	}
	defer unix.Close(pdir)
	ofd, err := OpenFile(pdir, name, false)
	if err != nil {
		return "", "", err
	}
	old := os.NewFile(uintptr(ofd), rel)
	defer old.Close()
	// No mount in shared mode writes the file from here to the end
	// (LockContent: every writer needs the size lock's write side or a
	// chunk's), so what is copied is what is replaced.
	unlock, err := lockSoon(ofd, LockContent, r.Wait)
	if err != nil {
		return "", "", err
	}
	defer unlock()
	var st unix.Stat_t
	if err := unix.Fstat(ofd, &st); err != nil {
		return "", "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", "", errors.New("not a regular file")
	}
	if Retired(&st) {
		return "", "", ErrChanged // another rekey replaced it before the lock came
	}
	if st.Size == 0 {
		return "", "", nil
	}
	key, err := LoadKey(ctx, r.keys, r.trust, r.cfg, r.codecs, ofd)
	if err != nil {
		return "", "", err
	}
	oldID = key.Header.FileID.String()
	src := chunk.NewFile(old, key.Cipher)
	size, err := src.Size()
	if err != nil {
		return oldID, "", err
	}

	nh, err := NewHeader(r.cfg, key.Header.Compression()) // a file keeps its compression
	if err != nil {
		return oldID, "", err
	}
	newID = nh.FileID.String()
	dk, err := GenerateFileKey(ctx, r.keys, r.cfg, nh)
	if err != nil {
		return oldID, "", err
	}
	newCipher, rec, err := FileCipher(dk, nh, r.codecs)
	keysvc.Zero(dk.Plaintext)
	if err != nil {
		return oldID, "", err
	}

	// The temporary file goes next to the file, in the directory held
	// open since the file was opened: whatever is renamed meanwhile, it
	// and the rename below stay in that directory.
	tmpName := tempName()
	tfd, err := unix.Openat(pdir, tmpName, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return oldID, "", fmt.Errorf("temporary file: %w", err)
	}
	tmp := os.NewFile(uintptr(tfd), tmpName)
	placed := false
	defer func() {
		tmp.Close()
		if !placed {
			unix.Unlinkat(pdir, tmpName, 0)
		}
	}()
	if _, err := StartFile(tfd, newCipher, rec, r.cfg.KeyRecordMode()); err != nil {
		return oldID, "", fmt.Errorf("temporary file: %w", err)
	}
	dst := chunk.NewFile(punchingFile{tmp}, newCipher)
	if err := copyPlaintext(tfd, dst, src, size, r.cfg.ChunkSize); err != nil {
		return oldID, "", err
	}
	xc := xattrCopier{names: r.names, old: names.ObjectID(key.Header.FileID), new: names.ObjectID(nh.FileID)}
	if err := copyMetadata(ofd, tfd, &st, xc); err != nil {
		return oldID, "", err
	}
	if err := unix.Fsync(tfd); err != nil {
		return oldID, "", fmt.Errorf("temporary file: fsync: %w", err)
	}

	links, err := r.otherLinks(rel, &st)
	if err != nil {
		return oldID, "", err
	}
	var now unix.Stat_t
	if err := unix.Fstat(ofd, &now); err != nil {
		return oldID, "", err
	}
	if now.Size != st.Size || now.Mtim != st.Mtim || now.Ctim != st.Ctim {
		return oldID, "", ErrChanged
	}
	if r.beforeRelink != nil {
		r.beforeRelink()
	}
	if err := sameInode(pdir, name, &st); err != nil {
		return oldID, "", err
	}
	if err := unix.Renameat(pdir, tmpName, pdir, name); err != nil {
		return oldID, "", fmt.Errorf("replace: %w", err)
	}
	placed = true
	if err := syncDir(pdir); err != nil {
		return oldID, newID, fmt.Errorf("fsync the directory of %s: %w", rel, err)
	}
	var failed []string
	for _, lrel := range links {
		if err := r.relink(tfd, lrel, &st); err != nil {
			failed = append(failed, fmt.Sprintf("hard link %s: %v (it still names the old inode)", lrel, err))
		}
	}
	if len(failed) > 0 {
		return oldID, newID, errors.New(strings.Join(failed, "; "))
	}
	// No name leads to the old inode any more: mark it, still under the
	// lock, so that a shared-mode mount's writer holding a descriptor of
	// it, waiting for the lock, fails (ESTALE) instead of losing its write.
	if err := Retire(ofd); err != nil {
		return oldID, newID, fmt.Errorf("rekeyed, but a mount still writing the old inode would lose its writes: %w", err)
	}
	return oldID, newID, nil
}

// parent opens the directory holding rel (below CIPHERDIR, resolved as
// OpenBeneath does) and returns it with rel's last name.
func (r *Rekeyer) parent(rel string) (int, string, error) {
	dir, name := path.Split(rel)
	fd, err := openDirBeneath(r.root, strings.TrimSuffix(dir, "/"))
	if err != nil {
		return -1, "", fmt.Errorf("directory of %s: %w", rel, err)
	}
	return fd, name, nil
}

// relink makes the hard link lrel name the new inode, open as tfd, in
// place of the old inode st: a link to the open file (through its /proc
// descriptor, so it is the very inode, whatever names it now) under a
// temporary name in lrel's directory, then a rename over lrel. The
// directory is resolved afresh below CIPHERDIR without following a
// symlink, and held open from the check of lrel to the rename, so a
// directory swapped for a symlink fails here instead of leading the link
// outside CIPHERDIR.
func (r *Rekeyer) relink(tfd int, lrel string, st *unix.Stat_t) error {
	ldir, lname, err := r.parent(lrel)
	if err != nil {
		return err
	}
	defer unix.Close(ldir)
	if err := sameInode(ldir, lname, st); err != nil {
		return err
	}
	lt := tempName()
	if err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(tfd), ldir, lt, unix.AT_SYMLINK_FOLLOW); err != nil {
		return err
	}
	if err := unix.Renameat(ldir, lt, ldir, lname); err != nil {
		unix.Unlinkat(ldir, lt, 0)
		return err
	}
	return syncDir(ldir)
}

// sameInode fails with ErrChanged unless name in dirfd is still the inode
// st.
func sameInode(dirfd int, name string, st *unix.Stat_t) error {
	var now unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &now, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if now.Dev != st.Dev || now.Ino != st.Ino {
		return ErrChanged
	}
	return nil
}

// syncDir fsyncs the directory dirfd (an O_PATH descriptor is reopened
// for it), making renames in it durable.
func syncDir(dirfd int) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}

// punchingFile is a backing *os.File that can punch holes, so that the
// unused tails of compressed chunks take no disk space (chunk.Puncher).
type punchingFile struct{ *os.File }

// PunchHole deallocates length bytes at off, keeping the file size.
func (p punchingFile) PunchHole(off, length int64) error {
	return unix.Fallocate(int(p.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// copyPlaintext copies size plaintext bytes from src to dst (backing
// descriptor dfd, chunk size cs), which is empty but for its header. dst
// is first extended to size (holes), and blocks that read as all zeros
// are not written, so sparse files stay sparse. The backing bytes of the
// chunks each step writes are reserved first (Reserve), so a full disk
// fails the copy instead of tearing a chunk.
func copyPlaintext(dfd int, dst, src *chunk.File, size int64, cs int) error {
	if size == 0 {
		return nil
	}
	reserve := func(off, n int64) error {
		start, end := ChunkSpanBytes(cs, off/int64(cs), (off+n-1)/int64(cs), size)
		err := Reserve(dfd, start, end)
		if ReserveUnsupported(err) {
			return nil
		}
		return err
	}
	last := (size - 1) / int64(cs) * int64(cs)
	if err := reserve(last, size-last); err != nil {
		return fmt.Errorf("extend temporary file: %w", err)
	}
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("extend temporary file: %w", err)
	}
	buf := make([]byte, rekeyCopyBlock)
	defer clear(buf)
	for off := int64(0); off < size; {
		n, err := src.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read at %d: %w", off, err)
		}
		if n == 0 {
			return fmt.Errorf("read at %d: %w", off, io.ErrUnexpectedEOF)
		}
		if !allZero(buf[:n]) {
			if err := reserve(off, int64(n)); err != nil {
				return fmt.Errorf("write at %d: %w", off, err)
			}
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("write at %d: %w", off, err)
			}
		}
		off += int64(n)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// xattrCopier carries a file's encrypted user attributes (tree format v2)
// from its old file ID to its new one. With names nil (a v1 tree) every
// attribute is copied as it is.
type xattrCopier struct {
	names    *names.Keys
	old, new names.ObjectID
}

// convert returns the backing name and value under which the backing
// attribute name (value val) goes on the new file: itself, or for an
// encrypted user attribute of a v2 tree, its plaintext re-encrypted under
// the new file ID. An attribute that does not decrypt under the old ID
// fails the rekey: copied as it is it would stay bound to the old ID, and
// dropping it would lose it silently.
func (x xattrCopier) convert(name string, val []byte) (string, []byte, error) {
	if x.names == nil || !names.IsXattrBackingName(name) {
		return name, val, nil
	}
	plain, err := x.names.DecryptXattrName(x.old, name, val)
	if err != nil {
		return "", nil, fmt.Errorf("xattr %s does not decrypt under the file's ID (remove or restore it first): %w", name, err)
	}
	v, err := x.names.DecryptXattrValue(x.old, plain, val)
	if err != nil {
		return "", nil, fmt.Errorf("xattr %s does not decrypt under the file's ID (remove or restore it first): %w", name, err)
	}
	defer clear(v)
	return x.names.EncryptXattr(x.new, plain, v)
}

// copyMetadata gives the file tfd the owner, mode, extended attributes
// (all but kmsfs's own; encrypted user attributes converted by xc) and
// access and modification times of st, the file ofd. Owner goes before
// mode (chown clears set-ID bits); times go last.
func copyMetadata(ofd, tfd int, st *unix.Stat_t, xc xattrCopier) error {
	if err := unix.Fchown(tfd, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("temporary file: chown: %w", err)
	}
	if err := unix.Fchmod(tfd, st.Mode&0o7777); err != nil {
		return fmt.Errorf("temporary file: chmod: %w", err)
	}
	attrs, err := listXattrs(ofd)
	if err != nil {
		return err
	}
	for _, name := range attrs {
		// kmsfs's own (the key record) stay behind; the encrypted user
		// attributes of a v2 tree share the prefix but are the user's.
		if strings.HasPrefix(name, InternalXattrPrefix) && (xc.names == nil || !names.IsXattrBackingName(name)) {
			continue
		}
		val, err := getXattr(ofd, name)
		if err == nil {
			var newName string
			var newVal []byte
			if newName, newVal, err = xc.convert(name, val); err != nil {
				return fmt.Errorf("temporary file: %w", err)
			}
			err = unix.Fsetxattr(tfd, newName, newVal, 0)
		}
		if err != nil {
			if strings.HasPrefix(name, "security.") && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP)) {
				continue // set by the system (an LSM label), not the user's
			}
			return fmt.Errorf("temporary file: copy xattr %s: %w", name, err)
		}
	}
	ts := []unix.Timespec{unix.Timespec(st.Atim), unix.Timespec(st.Mtim)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(tfd), ts, 0); err != nil {
		return fmt.Errorf("temporary file: set times: %w", err)
	}
	return nil
}

// listXattrs returns the names of fd's extended attributes.
func listXattrs(fd int) ([]string, error) {
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Flistxattr(fd, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

// getXattr returns the value of fd's extended attribute name.
func getXattr(fd int, name string) ([]byte, error) {
	for size := 4096; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Fgetxattr(fd, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// otherLinks returns the other names (relative to CIPHERDIR) of the inode
// st, the file rel. It fails when the inode has links outside CIPHERDIR:
// they would keep the old data key.
func (r *Rekeyer) otherLinks(rel string, st *unix.Stat_t) ([]string, error) {
	if st.Nlink <= 1 {
		return nil, nil
	}
	var links []string
	err := Walk(r.root, r.cfg.EncryptedNames(), func(e Entry) error {
		if e.IsRegular() && e.Rel != path.Clean(rel) && e.Stat.Dev == st.Dev && e.Stat.Ino == st.Ino {
			links = append(links, e.Rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find hard links: %w", err)
	}
	if uint64(len(links)+1) != uint64(st.Nlink) {
		return nil, fmt.Errorf("the file has %d hard links but only %d are inside %s; refusing to leave the others on the old key", st.Nlink, len(links)+1, r.dir)
	}
	return links, nil
}
