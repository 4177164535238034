package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNamespaceDifferential runs random namespace operations (mkdir, rmdir,
// create and open with assorted flags, unlink, rename with and without
// RENAME_NOREPLACE and RENAME_EXCHANGE, link, symlink, readlink, stat,
// small writes and reads) over a small pool of paths, both in the mount and
// in a reference directory, and requires the same errno for every call, the
// same results, and the same tree at the end and after remount.
func TestNamespaceDifferential(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	fs := newFS(t)
	nd := &nsDiffer{t: t, mnt: fs.Mnt, ref: t.TempDir(), r: newRand(seed), seed: seed}
	const ops = 10000
	for nd.step = 0; nd.step < ops && !t.Failed(); nd.step++ {
		nd.randomOp()
	}
	nd.compareTrees("at the end")
	fs.Remount()
	nd.compareTrees("after remount")
	if !t.Failed() {
		t.Logf("%d namespace operations (%d changing calls succeeded, %d failed alike), zero mismatches (seed %d)",
			ops, nd.ok, nd.fail, seed)
	}
}

type nsDiffer struct {
	t        *testing.T
	mnt, ref string
	r        *rand.Rand
	seed     uint64
	step     int
	hist     []string
	ok, fail int // calls that succeeded or failed (alike on both sides)
}

// nsPaths is the pool every operation draws from; nesting makes rename into
// a subdirectory, non-empty rmdir and similar cases common.
// nsLong is a name of NAME_MAX bytes: with encrypted names it is stored
// under a hash with a sidecar, so every operation on it exercises the
// long-name paths.
var nsLong = "L" + strings.Repeat("n", 254)

var nsPaths = []string{"a", "b", "c", "a/a", "a/b", "b/a", "b/c", "a/a/a", "a/a/b", "c/a",
	nsLong, "a/" + nsLong, nsLong + "/a", nsLong + "/" + nsLong}

// nsTargets are the symlink targets drawn from: relative ones that stay
// inside the tree, so that both trees resolve alike (a target climbing
// out of the mount would resolve to the host's files, and a rename
// between the two then fails with EXDEV), up to PATH_MAX-1 bytes (4,095).
var nsTargets = []string{"a", "../b", "a/b", "nonexistent", ".", "../a/a", nsLong,
	strings.Repeat("./", 2047) + "a", strings.Repeat("x", 200) + "/" + strings.Repeat("y/", 1947)}

// nsXattrs are the attribute names drawn from (user.* up to
// XATTR_NAME_MAX: the long one is stored hashed with encrypted names).
var nsXattrs = []string{"user.a", "user.b", "user." + strings.Repeat("x", 250)}

func (nd *nsDiffer) path() string { return nsPaths[nd.r.IntN(len(nsPaths))] }

func (nd *nsDiffer) record(format string, args ...any) {
	nd.hist = append(nd.hist, fmt.Sprintf("#%d ", nd.step)+fmt.Sprintf(format, args...))
	if len(nd.hist) > histLen {
		nd.hist = nd.hist[1:]
	}
}

func (nd *nsDiffer) mismatch(format string, args ...any) {
	nd.t.Helper()
	nd.t.Fatalf("MISMATCH at operation %d (seed %d, replay with KMSFS_SEED=%d): %s\nrecent operations:\n  %s",
		nd.step, nd.seed, nd.seed, fmt.Sprintf(format, args...), strings.Join(nd.hist, "\n  "))
}

// both runs op with the mount root and with the reference root and requires
// the same errno.
func (nd *nsDiffer) both(what string, op func(root string) error) {
	nd.t.Helper()
	nd.record("%s", what)
	merr := op(nd.mnt)
	rerr := op(nd.ref)
	if errnoOf(merr) != errnoOf(rerr) {
		nd.mismatch("%s: mount %v, reference %v", what, merr, rerr)
	}
	if rerr == nil {
		nd.ok++
	} else {
		nd.fail++
	}
}

func (nd *nsDiffer) randomOp() {
	p, q := nd.path(), nd.path()
	j := func(root, rel string) string { return filepath.Join(root, rel) }
	switch op := nd.r.IntN(18); op {
	case 0, 1:
		nd.both("mkdir "+p, func(root string) error { return unix.Mkdir(j(root, p), 0o755) })
	case 2:
		nd.both("rmdir "+p, func(root string) error { return unix.Rmdir(j(root, p)) })
	case 3, 4:
		flags := []int{
			unix.O_CREAT | unix.O_WRONLY, unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY,
			unix.O_RDONLY, unix.O_RDWR | unix.O_TRUNC, unix.O_RDONLY | unix.O_NOFOLLOW,
			unix.O_RDONLY | unix.O_DIRECTORY, unix.O_WRONLY, unix.O_CREAT | unix.O_RDWR | unix.O_NOFOLLOW,
		}[nd.r.IntN(8)]
		nd.both(fmt.Sprintf("open %s %s", p, flagString(flags)), func(root string) error {
			fd, err := unix.Open(j(root, p), flags|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			return err
		})
	case 5:
		nd.both("unlink "+p, func(root string) error { return unix.Unlink(j(root, p)) })
	case 6, 7:
		flags := []uint{0, 0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE}[nd.r.IntN(4)]
		nd.both(fmt.Sprintf("rename %s %s flags %d", p, q, flags), func(root string) error {
			return unix.Renameat2(unix.AT_FDCWD, j(root, p), unix.AT_FDCWD, j(root, q), flags)
		})
	case 8:
		nd.both("link "+p+" "+q, func(root string) error { return unix.Link(j(root, p), j(root, q)) })
	case 9:
		// Relative targets only, so that both trees resolve alike.
		target := nsTargets[nd.r.IntN(len(nsTargets))]
		nd.both(fmt.Sprintf("symlink (%d bytes) %s", len(target), p), func(root string) error { return unix.Symlink(target, j(root, p)) })
	case 10:
		nd.record("readlink %s", p)
		mt, merr := readlink(j(nd.mnt, p))
		rt, rerr := readlink(j(nd.ref, p))
		if errnoOf(merr) != errnoOf(rerr) || mt != rt {
			nd.mismatch("readlink %s: mount (%q, %v), reference (%q, %v)", p, mt, merr, rt, rerr)
		}
	case 11:
		for _, follow := range []bool{false, true} {
			nd.record("stat %s follow=%v", p, follow)
			ms, merr := nsStat(j(nd.mnt, p), follow)
			rs, rerr := nsStat(j(nd.ref, p), follow)
			if errnoOf(merr) != errnoOf(rerr) || ms != rs {
				nd.mismatch("stat %s follow=%v: mount (%s, %v), reference (%s, %v)", p, follow, ms, merr, rs, rerr)
			}
		}
	case 12, 13:
		data := randomBytes(nd.r, nd.r.IntN(9000))
		nd.both(fmt.Sprintf("write %s %d bytes", p, len(data)), func(root string) error {
			fd, err := unix.Open(j(root, p), unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			_, err = unix.Write(fd, data)
			return err
		})
	case 15:
		name := nsXattrs[nd.r.IntN(len(nsXattrs))]
		value := randomBytes(nd.r, nd.r.IntN(300))
		flags := []int{0, unix.XATTR_CREATE, unix.XATTR_REPLACE}[nd.r.IntN(3)]
		nd.both(fmt.Sprintf("setxattr %s %.12s %d bytes flags %d", p, name, len(value), flags), func(root string) error {
			return unix.Lsetxattr(j(root, p), name, value, flags)
		})
	case 16:
		name := nsXattrs[nd.r.IntN(len(nsXattrs))]
		nd.both(fmt.Sprintf("removexattr %s %.12s", p, name), func(root string) error {
			return unix.Lremovexattr(j(root, p), name)
		})
	case 17:
		nd.record("xattrs %s", p)
		mx, merr := xattrString(j(nd.mnt, p))
		rx, rerr := xattrString(j(nd.ref, p))
		if errnoOf(merr) != errnoOf(rerr) || mx != rx {
			nd.mismatch("xattrs %s: mount (%q, %v), reference (%q, %v)", p, mx, merr, rx, rerr)
		}
	default:
		nd.record("read %s", p)
		mb, merr := readAll(j(nd.mnt, p))
		rb, rerr := readAll(j(nd.ref, p))
		if errnoOf(merr) != errnoOf(rerr) || !bytes.Equal(mb, rb) {
			nd.mismatch("read %s: mount (%d bytes, %v), reference (%d bytes, %v)", p, len(mb), merr, len(rb), rerr)
		}
	}
}

// compareTrees requires both trees to have the same entries with the same
// type, size (except directories), link count (except directories),
// content and link targets.
func (nd *nsDiffer) compareTrees(when string) {
	nd.t.Helper()
	for _, p := range nsPaths {
		for _, follow := range []bool{false, true} {
			ms, merr := nsStat(filepath.Join(nd.mnt, p), follow)
			rs, rerr := nsStat(filepath.Join(nd.ref, p), follow)
			if errnoOf(merr) != errnoOf(rerr) || ms != rs {
				nd.mismatch("%s: stat %s follow=%v: mount (%s, %v), reference (%s, %v)", when, p, follow, ms, merr, rs, rerr)
			}
		}
		mb, merr := readAll(filepath.Join(nd.mnt, p))
		rb, rerr := readAll(filepath.Join(nd.ref, p))
		if errnoOf(merr) != errnoOf(rerr) || !bytes.Equal(mb, rb) {
			nd.mismatch("%s: read %s: mount (%d bytes, %v), reference (%d bytes, %v)", when, p, len(mb), merr, len(rb), rerr)
		}
		mx, merr := xattrString(filepath.Join(nd.mnt, p))
		rx, rerr := xattrString(filepath.Join(nd.ref, p))
		if errnoOf(merr) != errnoOf(rerr) || mx != rx {
			nd.mismatch("%s: xattrs %s: mount (%q, %v), reference (%q, %v)", when, p, mx, merr, rx, rerr)
		}
	}
	for _, dir := range append([]string{"."}, nsPaths...) {
		ml, merr := dirNames(filepath.Join(nd.mnt, dir))
		rl, rerr := dirNames(filepath.Join(nd.ref, dir))
		if errnoOf(merr) != errnoOf(rerr) || ml != rl {
			nd.mismatch("%s: readdir %s: mount (%q, %v), reference (%q, %v)", when, dir, ml, merr, rl, rerr)
		}
	}
}

// dirNames lists a directory, sorted, as one string.
func dirNames(path string) (string, error) {
	ents, err := os.ReadDir(path)
	if err != nil {
		return "", err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return strings.Join(names, "/"), nil
}

// xattrString returns the user.* attributes of path (not following a
// symlink), sorted, with their values, as one string.
func xattrString(path string) (string, error) {
	m, err := userXattrs(path)
	if err != nil {
		return "", err
	}
	var out []string
	for name, v := range m {
		out = append(out, fmt.Sprintf("%s=%x", name, v))
	}
	sort.Strings(out)
	return strings.Join(out, " "), nil
}
func readlink(path string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlink(path, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// readAll reads a file with raw syscalls so that errnos stay comparable.
func readAll(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

// nsStat describes what must agree between the trees.
func nsStat(path string, follow bool) (string, error) {
	var st unix.Stat_t
	var err error
	if follow {
		err = unix.Stat(path, &st)
	} else {
		err = unix.Lstat(path, &st)
	}
	if err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Sprintf("dir mode=%o nlink=%d", st.Mode, st.Nlink), nil
	}
	return fmt.Sprintf("mode=%o nlink=%d size=%d", st.Mode, st.Nlink, st.Size), nil
}
