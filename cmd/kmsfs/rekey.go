package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	kfs "github.com/kmsfs/kmsfs/fs"
	"github.com/kmsfs/kmsfs/keysvc"
)

// rekeyTimeout bounds the key service calls of one file's rekey.
const rekeyTimeout = 60 * time.Second

// rekeyCopyBlock is how much plaintext rekey moves at a time (a multiple of
// every chunk size).
const rekeyCopyBlock = 1 << 20

// errChanged: the file changed while it was being re-encrypted.
var errChanged = errors.New("the file changed while it was re-encrypted; nothing was replaced, run rekey again")

// runRekey implements `kmsfs rekey PATH…`: each file gets a new data key
// and a new file ID, its content re-encrypted into a temporary file beside
// it, which then replaces it with one rename. Mode, owner, times, extended
// attributes and hard links are kept.
func runRekey(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("rekey")
	endpoint := fset.String("kms-endpoint", "", "AWS KMS endpoint URL (aws file systems)")
	var ks keystoreFlags
	ks.register(fset)
	pos, err := parseArgs(fset, "rekey", args, env, 1, -1)
	if err != nil {
		return err
	}
	type tree struct {
		cfg   cipherdir.Config
		svc   keyService
		close func()
	}
	trees := map[string]*tree{}
	defer func() {
		for _, t := range trees {
			t.close()
		}
	}()
	failed := 0
	fail := func(p string, err error) {
		failed++
		fmt.Fprintf(env.Stderr, "kmsfs: rekey: %s: %v\n", p, err)
	}
	for _, p := range pos {
		abs, err := filepath.Abs(p)
		if err != nil {
			fail(p, err)
			continue
		}
		backing, err := backingPath(abs)
		if err != nil {
			fail(p, err)
			continue
		}
		dir, err := findCipherDir(backing)
		if err != nil {
			fail(p, err)
			continue
		}
		t := trees[dir]
		if t == nil {
			cfg, err := cipherdir.LoadConfig(dir)
			if err != nil {
				fail(p, err)
				continue
			}
			svc, closeSvc, err := openService(ctx, cfg.KMS, &ks, *endpoint, env)
			if err != nil {
				return err
			}
			t = &tree{cfg: cfg, svc: svc, close: closeSvc}
			trees[dir] = t
		}
		oldID, newID, err := rekeyFile(ctx, t.svc, t.cfg, dir, backing)
		if err != nil {
			fail(p, err)
			continue
		}
		if newID == "" {
			fmt.Fprintf(env.Stdout, "rekey: %s is empty: it has no data key yet\n", p)
			continue
		}
		fmt.Fprintf(env.Stdout, "rekeyed %s: file ID %s -> %s\n", p, oldID, newID)
	}
	if failed > 0 {
		return withKind(errIncomplete, fmt.Errorf("rekey: %d of %d files failed (named above)", failed, len(pos)))
	}
	return nil
}

// findCipherDir returns the CIPHERDIR holding the backing file: the
// nearest ancestor directory with a kmsfs.conf.
func findCipherDir(backing string) (string, error) {
	for d := filepath.Dir(backing); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(filepath.Join(d, cipherdir.ConfigName)); err == nil {
			return d, nil
		}
		if d == "/" || d == "." {
			return "", withHint(withKind(errCipherDir, fmt.Errorf("%s is not inside a CIPHERDIR (no %s above it)", backing, cipherdir.ConfigName)),
				"PATH must be a file in a kmsfs mount or a backing file in a CIPHERDIR")
		}
	}
}

// tempName returns a fresh name for a temporary file of rekey.
func tempName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return rekeyTempMarker + hex.EncodeToString(b[:])
}

// rekeyFile re-encrypts the backing file at backing (in the tree dir with
// config cfg) under a new data key and file ID, and returns both file IDs
// ("" new for an empty file, which is left alone).
//
// Steps: unwrap the old key and verify the header; make a temporary file
// in the same directory with a new key record and header; copy the
// plaintext chunk by chunk (all-zero blocks stay holes); copy owner, mode,
// extended attributes and times; fsync; check that the old file did not
// change meanwhile; rename the temporary file over the old name; then give
// every other hard link of the old inode inside dir the new inode (link
// to a temporary name, rename over the link). Between the first and the
// last of those renames, different links of the file name different
// inodes with the same plaintext.
func rekeyFile(ctx context.Context, svc keyService, cfg cipherdir.Config, dir, backing string) (oldID, newID string, err error) {
	ctx, cancel := context.WithTimeout(ctx, rekeyTimeout)
	defer cancel()
	ofd, err := openBackingRead(backing)
	if err != nil {
		return "", "", err
	}
	old := os.NewFile(uintptr(ofd), backing)
	defer old.Close()
	var st unix.Stat_t
	if err := unix.Fstat(ofd, &st); err != nil {
		return "", "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", "", withKind(errCipherDir, errors.New("not a regular file"))
	}
	if st.Size == 0 {
		return "", "", nil
	}
	h, wk, err := readKeyRecord(ofd, cfg.KeyRecordMode())
	if err != nil {
		return "", "", withKind(errCipherDir, err)
	}
	oldID = h.FileID.String()
	if int(h.ChunkSize) != cfg.ChunkSize {
		return oldID, "", withKind(errCipherDir, fmt.Errorf("file %s has chunk size %d, the filesystem %d", oldID, h.ChunkSize, cfg.ChunkSize))
	}
	oldCipher, err := unwrapCipher(ctx, svc, cfg, wk, h)
	if err != nil {
		return oldID, "", err
	}
	var hb [chunk.HeaderSize]byte
	if _, err := old.ReadAt(hb[:], 0); err != nil {
		return oldID, "", err
	}
	if err := oldCipher.VerifyHeader(hb[:]); err != nil {
		return oldID, "", err
	}
	src := chunk.NewFile(old, oldCipher)
	size, err := src.Size()
	if err != nil {
		return oldID, "", err
	}

	nh, err := chunk.NewHeader(cfg.ChunkSize)
	if err != nil {
		return oldID, "", err
	}
	nh = nh.WithCompression(h.Compression()) // a file keeps its compression
	newID = nh.FileID.String()
	ec := keysvc.EncryptionContext{keysvc.ContextFilesystemID: cfg.FilesystemID, keysvc.ContextFileID: newID}
	dk, err := svc.GenerateDataKey(ctx, cfg.KeyID, ec)
	if err != nil {
		return oldID, "", fmt.Errorf("new data key: %w", err)
	}
	newCipher, err := chunk.NewCipher(dk.Plaintext, nh)
	keysvc.Zero(dk.Plaintext)
	if err != nil {
		return oldID, "", err
	}

	parent := filepath.Dir(backing)
	tmpPath := filepath.Join(parent, tempName())
	tfd, err := unix.Open(tmpPath, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return oldID, "", fmt.Errorf("temporary file: %w", err)
	}
	tmp := os.NewFile(uintptr(tfd), tmpPath)
	placed := false
	defer func() {
		tmp.Close()
		if !placed {
			os.Remove(tmpPath)
		}
	}()
	nhb, err := newCipher.MarshalHeader()
	if err != nil {
		return oldID, "", err
	}
	// Header and key-record slot in one pwrite, then the xattr.
	if _, err := cipherdir.WriteKeyRecord(tfd, nhb, dk.Wrapped.MarshalRecord(), cfg.KeyRecordMode()); err != nil {
		return oldID, "", fmt.Errorf("temporary file: %w", err)
	}
	dst := chunk.NewFile(kfs.PunchBacking(tmp), newCipher)
	if err := copyPlaintext(dst, src, size); err != nil {
		return oldID, "", err
	}
	if err := copyMetadata(ofd, tfd, &st); err != nil {
		return oldID, "", err
	}
	if err := unix.Fsync(tfd); err != nil {
		return oldID, "", fmt.Errorf("temporary file: fsync: %w", err)
	}

	links, err := otherLinks(dir, backing, &st)
	if err != nil {
		return oldID, "", err
	}
	var now unix.Stat_t
	if err := unix.Fstat(ofd, &now); err != nil {
		return oldID, "", err
	}
	if now.Size != st.Size || now.Mtim != st.Mtim || now.Ctim != st.Ctim {
		return oldID, "", errChanged
	}
	if err := os.Rename(tmpPath, backing); err != nil {
		return oldID, "", fmt.Errorf("replace: %w", err)
	}
	placed = true
	dirs := map[string]bool{parent: true}
	for _, l := range links {
		lt := filepath.Join(filepath.Dir(l), tempName())
		if err := os.Link(backing, lt); err != nil {
			return oldID, newID, fmt.Errorf("hard link %s: %w (it still names the old inode)", l, err)
		}
		if err := os.Rename(lt, l); err != nil {
			os.Remove(lt)
			return oldID, newID, fmt.Errorf("hard link %s: %w (it still names the old inode)", l, err)
		}
		dirs[filepath.Dir(l)] = true
	}
	for d := range dirs {
		if err := syncDirPath(d); err != nil {
			return oldID, newID, fmt.Errorf("fsync %s: %w", d, err)
		}
	}
	return oldID, newID, nil
}

// unwrapCipher unwraps the file's data key and returns its cipher.
func unwrapCipher(ctx context.Context, svc keysvc.Service, cfg cipherdir.Config, wk keysvc.WrappedKey, h chunk.Header) (*chunk.Cipher, error) {
	ec := keysvc.EncryptionContext{keysvc.ContextFilesystemID: cfg.FilesystemID, keysvc.ContextFileID: h.FileID.String()}
	u, err := svc.Decrypt(ctx, wk.Blob, wk.KeyID, ec)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key of file %s: %w", h.FileID, err)
	}
	defer keysvc.Zero(u.Plaintext)
	return chunk.NewCipher(u.Plaintext, h)
}

// copyPlaintext copies size plaintext bytes from src to dst, which is
// empty but for its header. dst is first extended to size (holes), and
// blocks that read as all zeros are not written, so sparse files stay
// sparse.
func copyPlaintext(dst, src *chunk.File, size int64) error {
	if size == 0 {
		return nil
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

// copyMetadata gives the file tfd the owner, mode, extended attributes
// (all but kmsfs's own) and access and modification times of st, the file
// ofd. Owner goes before mode (chown clears set-ID bits); times go last.
func copyMetadata(ofd, tfd int, st *unix.Stat_t) error {
	if err := unix.Fchown(tfd, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("temporary file: chown: %w", err)
	}
	if err := unix.Fchmod(tfd, st.Mode&0o7777); err != nil {
		return fmt.Errorf("temporary file: chmod: %w", err)
	}
	names, err := listXattrs(ofd)
	if err != nil {
		return err
	}
	for _, name := range names {
		if strings.HasPrefix(name, "user.kmsfs.") {
			continue
		}
		val, err := getXattr(ofd, name)
		if err == nil {
			err = unix.Fsetxattr(tfd, name, val, 0)
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

// otherLinks returns the other names of the inode st (the file at path)
// inside dir. It fails when the inode has links outside dir: they would
// keep the old data key.
func otherLinks(dir, path string, st *unix.Stat_t) ([]string, error) {
	if st.Nlink <= 1 {
		return nil, nil
	}
	var links []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || p == path {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if s, ok := info.Sys().(*syscall.Stat_t); ok && s.Dev == st.Dev && s.Ino == st.Ino {
			links = append(links, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find hard links: %w", err)
	}
	if uint64(len(links)+1) != uint64(st.Nlink) {
		return nil, fmt.Errorf("the file has %d hard links but only %d are inside %s; refusing to leave the others on the old key", st.Nlink, len(links)+1, dir)
	}
	return links, nil
}
