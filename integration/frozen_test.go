package integration

// Frozen CIPHERDIRs: every released on-disk format keeps a small example
// tree, made by the kmsfs of that format and checked in, that every later
// kmsfs must still mount read-write and read back exactly (as gocryptfs
// keeps its example filesystems from v0.4 on).
//
// testdata/frozen/VERSION/ holds
//
//	tree.tar.gz    the CIPHERDIRs with their local keystore and its passphrase
//	manifest.json  what the mount must show: every entry's type, mode,
//	               owner, size, SHA-256, symlink target, xattrs, link count
//	               and mtime, and each file's compression and chunk size
//
// Git keeps neither extended attributes, ownership, hard links nor holes,
// so the trees travel as a tar archive (GNU tar: --sparse, --xattrs), which
// keeps all four. TestFrozen tests every VERSION it finds; a new format
// version adds its own with
//
//	go test -run TestFrozenGenerate ./integration/ -args -frozen-gen=v2
//
// (-frozen-only=NAME,… writes only those specs: a variant added after its
// version's set, like v2-shared).
//
// run with the kmsfs that writes that format. Never regenerate an existing
// version: its tree is the evidence of what that format's kmsfs wrote.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var frozenOnly = flag.String("frozen-only", "",
	"TestFrozenGenerate writes only the frozen specs of this comma-separated `list` of names (default: all)")

var frozenGen = flag.String("frozen-gen", "",
	"TestFrozenGenerate writes testdata/frozen/`VERSION` with the kmsfs under test")

const (
	frozenDir      = "testdata/frozen"
	frozenArchive  = "tree.tar.gz"
	frozenManifest = "manifest.json"
	// frozenPassphrase is the passphrase of every frozen tree's keystore,
	// stored beside it as the file "passphrase": the frozen trees are test
	// data and must open anywhere.
	frozenPassphrase = "kmsfs frozen tree passphrase\n"
	// frozenMtime is the modification time of every regular file the
	// generator writes (so that the manifest pins mtimes too).
	frozenMtime = 1700000000
)

// frozenSet is manifest.json: the trees of one format version.
type frozenSet struct {
	Version        string       `json:"version"`
	KmsfsVersion   string       `json:"kmsfs_version"` // `kmsfs version` of the generator
	GitCommit      string       `json:"git_commit"`    // of the generator's source tree, "+dirty" when changed
	Keystore       string       `json:"keystore"`
	PassphraseFile string       `json:"passphrase_file"`
	Trees          []frozenTree `json:"trees"`
}

// frozenTree is one CIPHERDIR in the archive.
type frozenTree struct {
	Name     string        `json:"name"` // its directory in the archive
	InitArgs []string      `json:"init_args"`
	Notes    string        `json:"notes,omitempty"`
	Entries  []frozenEntry `json:"entries"`
}

// frozenEntry is what the mount shows for one path. Zero fields of
// HardlinkOf, Target, Compression and ChunkSize mean "none" or "not a file
// with content"; Mtime 0 means "not compared" (used only for expectations
// built by TestFrozen after its writes).
type frozenEntry struct {
	Path        string            `json:"path"`
	Type        string            `json:"type"` // file, dir, symlink, fifo
	Mode        string            `json:"mode"` // permission bits with setuid, setgid, sticky, in octal
	UID         int               `json:"uid"`
	GID         int               `json:"gid"`
	Size        int64             `json:"size,omitempty"`
	SHA256      string            `json:"sha256,omitempty"`
	Target      string            `json:"target,omitempty"`
	Xattrs      map[string][]byte `json:"xattrs,omitempty"`
	Nlink       uint64            `json:"nlink,omitempty"` // not for directories
	HardlinkOf  string            `json:"hardlink_of,omitempty"`
	Mtime       int64             `json:"mtime,omitempty"` // regular files only, seconds
	Compression string            `json:"compression,omitempty"`
	ChunkSize   int               `json:"chunk_size,omitempty"`
}

// TestFrozen extracts every frozen tree, mounts it read-write and checks
// every entry against the manifest; then appends to every file, renames a
// directory and a file, creates a file, checks the result, remounts,
// checks again, unmounts and runs fsck, which must find nothing.
func TestFrozen(t *testing.T) {
	requireFUSE(t)
	requireTool(t, "tar")
	versions, err := filepath.Glob(filepath.Join(frozenDir, "*", frozenManifest))
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) == 0 {
		t.Fatalf("no frozen trees under %s", frozenDir)
	}
	for _, m := range versions {
		dir := filepath.Dir(m)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			set := readFrozenSet(t, m)
			root := extractFrozen(t, filepath.Join(dir, frozenArchive))
			for _, tree := range set.Trees {
				t.Run(tree.Name, func(t *testing.T) {
					t.Parallel()
					checkFrozenTree(t, root, set, tree)
				})
			}
		})
	}
}

// readFrozenSet decodes a manifest.json.
func readFrozenSet(t *testing.T, path string) frozenSet {
	t.Helper()
	var set frozenSet
	if err := json.Unmarshal(mustRead(t, path), &set); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(set.Trees) == 0 {
		t.Fatalf("%s lists no trees", path)
	}
	return set
}

// extractFrozen unpacks archive into a fresh directory under the run's
// temporary root (removed when the test ends) and returns it.
func extractFrozen(t *testing.T, archive string) string {
	t.Helper()
	abs, err := filepath.Abs(archive)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp(tempRoot, sanitize(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if out, err := commandOutput("tar", "--extract", "--gzip", "--file", abs, "--directory", root,
		"--xattrs", "--xattrs-include=user.*", "--numeric-owner", "--preserve-permissions"); err != nil {
		t.Fatalf("tar --extract %s: %v\n%s", archive, err, out)
	}
	return root
}

// frozenFS returns a testFS for the CIPHERDIR root/name of an extracted
// archive, unmounted, with its mount point and log in a directory of its
// own (removed by the testFS cleanup).
func frozenFS(t *testing.T, root string, set frozenSet, name string) *testFS {
	t.Helper()
	work, err := os.MkdirTemp(root, "work-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	f := &testFS{
		CipherDir: filepath.Join(root, name),
		Mnt:       filepath.Join(work, "mnt"),
		Keystore:  filepath.Join(root, set.Keystore),
		LogFile:   filepath.Join(work, "kmsfs.log"),
		t:         t,
		dir:       work,
		env:       []string{"KMSFS_PASSPHRASE_FILE=" + filepath.Join(root, set.PassphraseFile)},
	}
	if err := os.Mkdir(f.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.cleanup)
	f.ChunkSize = f.Config().ChunkSize
	return f
}

// checkFrozenTree is TestFrozen for one tree.
func checkFrozenTree(t *testing.T, root string, set frozenSet, tree frozenTree) {
	f := frozenFS(t, root, set, tree.Name)
	checkFrozenInfo(t, f, tree.Entries)
	f.Mount()
	compareFrozen(t, "frozen tree", walkFrozen(t, f.Mnt), tree.Entries)

	want := frozenWrites(t, f, tree.Entries)
	after := walkFrozen(t, f.Mnt)
	compareFrozen(t, "after writing", after, want)

	f.Remount()
	compareFrozen(t, "after remount", walkFrozen(t, f.Mnt), after)
	f.Unmount()

	out := f.Run("fsck", f.CipherDir)
	if !strings.Contains(out, "no problems found") {
		t.Errorf("kmsfs fsck %s: exit 0 but the report does not say \"no problems found\":\n%s", tree.Name, out)
	}
}

// checkFrozenInfo compares what `kmsfs info` reads from each backing file
// (no key service involved) with the manifest: each file's compression
// and chunk size come from its own header.
func checkFrozenInfo(t *testing.T, f *testFS, entries []frozenEntry) {
	t.Helper()
	for _, e := range entries {
		if e.Compression == "" {
			continue
		}
		var info struct {
			Compression   string `json:"compression"`
			ChunkSize     int    `json:"chunk_size"`
			PlaintextSize int64  `json:"plaintext_size"`
		}
		out := f.Run("info", "--json", f.Backing(e.Path))
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("kmsfs info --json %s: %v\n%s", e.Path, err, out)
		}
		if info.Compression != e.Compression || info.ChunkSize != e.ChunkSize || info.PlaintextSize != e.Size {
			t.Errorf("kmsfs info %s: compression %s, chunk size %d, size %d; manifest: %s, %d, %d",
				e.Path, info.Compression, info.ChunkSize, info.PlaintextSize, e.Compression, e.ChunkSize, e.Size)
		}
	}
}

// frozenAppend is what TestFrozen appends to every regular file: more than
// a 4 KiB chunk, so that files grow across a chunk boundary.
var frozenAppend = []byte(strings.Repeat("appended by TestFrozen\n", 200))

// frozenWrites changes the mounted tree: it appends frozenAppend to every
// non-empty regular file (once per hard-link group), renames the first
// top-level directory and the first non-empty top-level file with one
// link, and
// creates a file. It returns the entries the mount must show now, with
// Mtime 0 (not compared) for the files it wrote.
func frozenWrites(t *testing.T, f *testFS, entries []frozenEntry) []frozenEntry {
	t.Helper()
	want := slices.Clone(entries)
	group := func(e frozenEntry) string {
		if e.HardlinkOf != "" {
			return e.HardlinkOf
		}
		return e.Path
	}
	appended := map[string]string{} // group → new SHA-256
	for _, e := range entries {
		if e.Type != "file" || e.Size == 0 || appended[group(e)] != "" {
			continue
		}
		old := mustRead(t, f.Path(e.Path))
		fd, err := os.OpenFile(f.Path(e.Path), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fd.Write(frozenAppend)
		if cerr := fd.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("appending to %s: %v", e.Path, err)
		}
		appended[group(e)] = sha256Hex(append(old, frozenAppend...))
	}
	for i, e := range want {
		if sum, ok := appended[group(e)]; ok {
			want[i].Size += int64(len(frozenAppend))
			want[i].SHA256 = sum
			want[i].Mtime = 0
		}
	}

	// renamed is a new name for a top-level entry, within NAME_MAX (a
	// 255-byte name loses its last bytes to the suffix).
	renamed := func(p string) string {
		const suffix = "-renamed"
		return p[:min(len(p), 255-len(suffix))] + suffix
	}
	rename := func(from, to string) {
		if err := os.Rename(f.Path(from), f.Path(to)); err != nil {
			t.Fatal(err)
		}
		moved := func(p string) string {
			if p == from || strings.HasPrefix(p, from+"/") {
				return to + strings.TrimPrefix(p, from)
			}
			return p
		}
		for i := range want {
			want[i].Path = moved(want[i].Path)
			if want[i].HardlinkOf != "" {
				want[i].HardlinkOf = moved(want[i].HardlinkOf)
			}
		}
	}
	if i := slices.IndexFunc(want, func(e frozenEntry) bool { return e.Type == "dir" && !strings.Contains(e.Path, "/") }); i >= 0 {
		p := want[i].Path
		rename(p, renamed(p))
	}
	if i := slices.IndexFunc(want, func(e frozenEntry) bool {
		return e.Type == "file" && e.Size > 0 && e.Nlink == 1 && !strings.Contains(e.Path, "/")
	}); i >= 0 {
		p := want[i].Path
		rename(p, renamed(p))
	}

	const created = "created-by-TestFrozen.bin"
	data := randomBytes(newRand(1), 3*f.ChunkSize+1)
	mustWrite(t, f.Path(created), data)
	var st unix.Stat_t
	if err := unix.Lstat(f.Path(created), &st); err != nil {
		t.Fatal(err)
	}
	want = append(want, frozenEntry{
		Path: created, Type: "file", Mode: fmt.Sprintf("%04o", st.Mode&07777),
		UID: os.Geteuid(), GID: os.Getegid(), Size: int64(len(data)), SHA256: sha256Hex(data), Nlink: 1,
	})
	slices.SortFunc(want, func(a, b frozenEntry) int { return strings.Compare(a.Path, b.Path) })
	return want
}

// walkFrozen describes every entry under dir (dir itself excluded), in
// lexical order of path. Every name of an inode with several links but
// the lexically first names that first in HardlinkOf. Compression and ChunkSize are left empty: they
// are read from the backing files by `kmsfs info`.
func walkFrozen(t *testing.T, dir string) []frozenEntry {
	t.Helper()
	var entries []frozenEntry
	first := map[[2]uint64]string{} // (dev, ino) → lexically first path
	inode := map[int][2]uint64{}    // index in entries → (dev, ino), for nlink > 1
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := frozenEntry{Path: rel, Mode: fmt.Sprintf("%04o", st.Mode&07777), UID: int(st.Uid), GID: int(st.Gid)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Type, e.Nlink, e.Mtime = "file", uint64(st.Nlink), st.Mtim.Sec
			sum, n := sha256File(t, p)
			e.Size = n
			if n != 0 {
				e.SHA256 = sum
			}
			if n != st.Size {
				return fmt.Errorf("%s: stat says %d bytes, reading gave %d", rel, st.Size, n)
			}
		case unix.S_IFDIR:
			e.Type = "dir"
		case unix.S_IFLNK:
			e.Type, e.Nlink = "symlink", uint64(st.Nlink)
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFIFO:
			e.Type, e.Nlink = "fifo", uint64(st.Nlink)
		default:
			return fmt.Errorf("%s: unexpected file type %#o", rel, st.Mode&unix.S_IFMT)
		}
		if st.Nlink > 1 && e.Type != "dir" {
			id := [2]uint64{st.Dev, st.Ino}
			if f, ok := first[id]; !ok || rel < f {
				first[id] = rel
			}
			inode[len(entries)] = id
		}
		if e.Type != "symlink" { // user.* attributes are not allowed on symlinks
			if e.Xattrs, err = userXattrs(p); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	for i, id := range inode {
		if p := first[id]; p != entries[i].Path {
			entries[i].HardlinkOf = p
		}
	}
	return entries
}

// userXattrs returns the user.* extended attributes of path (nil when
// there are none).
func userXattrs(path string) (map[string][]byte, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	var m map[string][]byte
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		val := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(path, name, val)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		if m == nil {
			m = map[string][]byte{}
		}
		m[name] = val[:vn]
	}
	return m, nil
}

// compareFrozen reports every difference between the entries the mount
// shows and those wanted. Ownership is compared only when running as root
// (tar restores it only then); Mtime only where the wanted entry has one.
func compareFrozen(t *testing.T, when string, got, want []frozenEntry) {
	t.Helper()
	byPath := func(es []frozenEntry) map[string]frozenEntry {
		m := make(map[string]frozenEntry, len(es))
		for _, e := range es {
			m[e.Path] = e
		}
		return m
	}
	g, w := byPath(got), byPath(want)
	for _, p := range slices.Sorted(maps.Keys(w)) {
		we := w[p]
		ge, ok := g[p]
		if !ok {
			t.Errorf("%s: %s (%s) is missing", when, p, we.Type)
			continue
		}
		if we.Mtime == 0 {
			ge.Mtime = 0
		}
		if os.Geteuid() != 0 {
			ge.UID, ge.GID, we.UID, we.GID = 0, 0, 0, 0
		}
		if diff := entryDiff(ge, we); diff != "" {
			t.Errorf("%s: %s: %s", when, p, diff)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(g)) {
		if _, ok := w[p]; !ok {
			t.Errorf("%s: unexpected entry %s (%s)", when, p, g[p].Type)
		}
	}
}

// entryDiff names the fields in which got differs from want, "" if none.
func entryDiff(got, want frozenEntry) string {
	var d []string
	field := func(name string, g, w any) {
		if fmt.Sprint(g) != fmt.Sprint(w) {
			d = append(d, fmt.Sprintf("%s %v, want %v", name, g, w))
		}
	}
	field("type", got.Type, want.Type)
	field("mode", got.Mode, want.Mode)
	field("uid", got.UID, want.UID)
	field("gid", got.GID, want.GID)
	field("size", got.Size, want.Size)
	field("sha256", got.SHA256, want.SHA256)
	field("target", got.Target, want.Target)
	field("nlink", got.Nlink, want.Nlink)
	field("hardlink of", got.HardlinkOf, want.HardlinkOf)
	field("mtime", got.Mtime, want.Mtime)
	if !maps.EqualFunc(got.Xattrs, want.Xattrs, func(a, b []byte) bool { return string(a) == string(b) }) {
		d = append(d, fmt.Sprintf("xattrs %q, want %q", got.Xattrs, want.Xattrs))
	}
	return strings.Join(d, "; ")
}

// frozenSpec describes one tree of a frozen set: how it is initialised and
// what is written into it, in phases.
type frozenSpec struct {
	name     string
	initArgs []string
	notes    string
	phases   []frozenPhase
}

// frozenPhase is one mount of the tree being generated. With compress
// set, kmsfs.conf's "compress" is switched to it for this mount (and the
// config restored afterwards): the setting only selects the compression
// of new files, each file's header records its own, so one tree can hold
// files of every algorithm. build writes files into the mount and returns
// the regular files it created with content.
type frozenPhase struct {
	compress string
	build    func(t *testing.T, f *testFS) []string
}

// frozenSpecs are the trees TestFrozenGenerate writes.
var frozenSpecs = []frozenSpec{
	{
		name:  "plain",
		notes: "defaults: 4 KiB chunks, no compression, key records in xattr and slot",
		phases: []frozenPhase{{build: func(t *testing.T, f *testFS) []string {
			r := newRand(1)
			cs := f.ChunkSize
			var files []string
			write := func(name string, data []byte) {
				mustWrite(t, f.Path(name), data)
				if len(data) > 0 {
					files = append(files, name)
				}
			}
			write("empty", nil)
			write("small.txt", []byte("hello, frozen tree\n"))
			write("one-chunk.bin", randomBytes(r, cs))
			write("one-chunk-plus-one.bin", randomBytes(r, cs+1))
			write("unicode ünï cödé ✓.txt", frozenText(3*cs/2))
			// Chunks 1 and 2 are holes: never written.
			writeAt(t, f.Path("sparse-hole.bin"), 0, randomBytes(r, cs))
			writeAt(t, f.Path("sparse-hole.bin"), int64(3*cs), randomBytes(r, 1000))
			files = append(files, "sparse-hole.bin")
			// Grown by truncate: a hole, then a last chunk of zeros.
			write("grown.bin", []byte("short"))
			must(t, os.Truncate(f.Path("grown.bin"), int64(2*cs+5)))
			write("exec.sh", []byte("#!/bin/sh\necho frozen\n"))
			must(t, os.Chmod(f.Path("exec.sh"), 0o755))
			write("xattr.txt", []byte("a file with extended attributes\n"))
			must(t, unix.Setxattr(f.Path("xattr.txt"), "user.comment", []byte("frozen tree"), 0))
			must(t, unix.Setxattr(f.Path("xattr.txt"), "user.binary", []byte{0, 1, 2, 0xff}, 0))
			write("linked-a.txt", frozenText(cs+100))
			must(t, os.Mkdir(f.Path("sub"), 0o755))
			must(t, unix.Setxattr(f.Path("sub"), "user.dir", []byte("directory attribute"), 0))
			must(t, os.Link(f.Path("linked-a.txt"), f.Path("sub", "linked-b.txt")))
			must(t, os.Mkdir(f.Path("sub", "deeper"), 0o700))
			write("sub/deeper/secret.txt", frozenText(2*cs+17))
			must(t, os.Chmod(f.Path("sub", "deeper", "secret.txt"), 0o600))
			must(t, os.Lchown(f.Path("sub", "deeper", "secret.txt"), 1234, 5678))
			must(t, os.Mkdir(f.Path("tmp"), 0o755))
			must(t, unix.Chmod(f.Path("tmp"), 0o1777)) // sticky: os.Chmod would drop the bit
			must(t, os.Symlink("small.txt", f.Path("link-to-small")))
			must(t, os.Symlink("../one-chunk.bin", f.Path("sub", "link-up")))
			must(t, os.Symlink("does/not/exist", f.Path("dangling")))
			must(t, os.Symlink("/nonexistent/absolute/path", f.Path("absolute")))
			must(t, unix.Mkfifo(f.Path("fifo"), 0o640))
			return files
		}}},
	},
	{
		name:     "compressed",
		initArgs: []string{"--compress", "zstd"},
		notes:    "zstd at init (64 KiB chunks); the s2 files were written with kmsfs.conf's compress switched to s2",
		phases: []frozenPhase{{build: func(t *testing.T, f *testFS) []string {
			r := newRand(2)
			cs := f.ChunkSize
			mustWrite(t, f.Path("empty"), nil)
			mustWrite(t, f.Path("zstd-text.txt"), frozenText(cs+1))
			mustWrite(t, f.Path("zstd-random.bin"), randomBytes(r, cs))
			writeAt(t, f.Path("zstd-sparse.bin"), 0, frozenText(1000))
			writeAt(t, f.Path("zstd-sparse.bin"), int64(2*cs), frozenText(500))
			must(t, unix.Setxattr(f.Path("zstd-text.txt"), "user.comment", []byte("compressed"), 0))
			must(t, os.Mkdir(f.Path("sub"), 0o755))
			mustWrite(t, f.Path("sub", "nested.txt"), frozenText(300))
			return []string{"zstd-text.txt", "zstd-random.bin", "zstd-sparse.bin", "sub/nested.txt"}
		}}, {compress: "s2", build: func(t *testing.T, f *testFS) []string {
			r := newRand(3)
			cs := f.ChunkSize
			mustWrite(t, f.Path("s2-text.txt"), frozenText(2*cs+10))
			mustWrite(t, f.Path("s2-random.bin"), randomBytes(r, 3000))
			must(t, os.Link(f.Path("s2-text.txt"), f.Path("sub", "s2-link.txt")))
			return []string{"s2-text.txt", "s2-random.bin"}
		}}},
	},
	{
		name:  "names",
		notes: "encrypted-names shapes (format 2): NAME_MAX names with sidecars, a long directory name, a 4,095-byte symlink target (its own file), a hashed attribute name, hard links across directories",
		phases: []frozenPhase{{build: func(t *testing.T, f *testFS) []string {
			r := newRand(4)
			long := func(prefix string) string { return prefix + strings.Repeat("n", 255-len(prefix)) }
			must(t, os.Mkdir(f.Path(long("dir-")), 0o755))
			mustWrite(t, f.Path(long("dir-"), long("file-")), frozenText(5000))
			mustWrite(t, f.Path("short.bin"), randomBytes(r, 100))
			must(t, os.Link(f.Path(long("dir-"), long("file-")), f.Path("hardlink-of-long")))
			must(t, os.Symlink(strings.Repeat("./", 2047)+"s", f.Path("target-4095")))
			must(t, os.Symlink(strings.Repeat("t", 735), f.Path("target-735")))
			must(t, os.Symlink(strings.Repeat("t", 736), f.Path(long("link-"))))
			must(t, unix.Setxattr(f.Path("short.bin"), "user."+strings.Repeat("x", 250), []byte("hashed attribute name"), 0))
			must(t, unix.Setxattr(f.Path(long("dir-")), "user.on-dir", []byte("directory attribute"), 0))
			must(t, os.Mkdir(f.Path("empty-dir"), 0o750))
			return []string{long("dir-") + "/" + long("file-"), "short.bin"}
		}}},
	},
	frozenSharedSpec,
}

// frozenSharedSpec is a tree made with `kmsfs init --shared` (its
// kmsfs.conf says "shared": true; frozen as v2-shared, after the v2 set
// was made without that field).
var frozenSharedSpec = frozenSpec{
	name:     "shared",
	initArgs: []string{"--shared"},
	notes:    "init --shared: kmsfs.conf records shared mode; every mount of it is in shared mode",
	phases: []frozenPhase{{build: func(t *testing.T, f *testFS) []string {
		r := newRand(5)
		mustWrite(t, f.Path("shared.bin"), randomBytes(r, 3*f.ChunkSize+17))
		must(t, os.Mkdir(f.Path("dir"), 0o755))
		mustWrite(t, f.Path("dir", "note.txt"), frozenText(900))
		return []string{"shared.bin", "dir/note.txt"}
	}}},
}

// frozenText returns n bytes of compressible text.
func frozenText(n int) []byte {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %06d: the quick brown fox jumps over the lazy dog\n", i)
	}
	return []byte(b.String()[:n])
}

// writeAt writes data at off into the file at path, creating it (0644).
func writeAt(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	fd, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fd.WriteAt(data, off)
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("writing %s at %d: %v", path, off, err)
	}
}

// must fails the test on a non-nil error.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestFrozenGenerate writes testdata/frozen/VERSION (VERSION from
// -frozen-gen) with the kmsfs under test, from frozenSpecs; without the
// flag it is skipped. It refuses to overwrite an existing version.
func TestFrozenGenerate(t *testing.T) {
	if *frozenGen == "" {
		t.Skip("run with -args -frozen-gen=VERSION to write testdata/frozen/VERSION")
	}
	requireFUSE(t)
	requireRoot(t) // chown, and tar keeping ownership
	requireTool(t, "tar")
	out := filepath.Join(frozenDir, *frozenGen)
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists: a frozen tree is never regenerated (remove it by hand only if this version was never released)", out)
	}
	stage, err := os.MkdirTemp(tempRoot, "frozen-gen-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(stage) })
	set := frozenSet{
		Version:        *frozenGen,
		KmsfsVersion:   strings.TrimSpace(runKmsfs(t, nil, "version")),
		GitCommit:      gitCommit(),
		Keystore:       "keystore",
		PassphraseFile: "passphrase",
	}
	env := []string{
		"KMSFS_KEYSTORE=" + filepath.Join(stage, set.Keystore),
		"KMSFS_PASSPHRASE_FILE=" + filepath.Join(stage, set.PassphraseFile),
	}
	if err := os.WriteFile(filepath.Join(stage, set.PassphraseFile), []byte(frozenPassphrase), 0o600); err != nil {
		t.Fatal(err)
	}
	members := []string{set.PassphraseFile, set.Keystore}
	for _, spec := range frozenSpecs {
		if *frozenOnly != "" && !slices.Contains(strings.Split(*frozenOnly, ","), spec.name) {
			continue
		}
		runKmsfs(t, env, append(append([]string{"init"}, spec.initArgs...), filepath.Join(stage, spec.name))...)
		f := frozenFS(t, stage, set, spec.name)
		tree := frozenTree{Name: spec.name, InitArgs: spec.initArgs, Notes: spec.notes}
		if tree.InitArgs == nil {
			tree.InitArgs = []string{}
		}
		wantCompression := map[string]string{}
		for _, ph := range spec.phases {
			restore := setFrozenCompress(t, f, ph.compress)
			f.Mount()
			for _, p := range ph.build(t, f) {
				wantCompression[p] = ph.compress
			}
			for _, e := range walkFrozen(t, f.Mnt) {
				if e.Type == "file" && e.Mtime != frozenMtime {
					must(t, os.Chtimes(f.Path(e.Path), time.Unix(frozenMtime, 0), time.Unix(frozenMtime, 0)))
				}
			}
			f.Unmount()
			restore()
		}
		f.Mount()
		tree.Entries = walkFrozen(t, f.Mnt)
		f.Unmount()
		for i, e := range tree.Entries {
			if e.Type != "file" || e.Size == 0 {
				continue
			}
			var info struct {
				Compression string `json:"compression"`
				ChunkSize   int    `json:"chunk_size"`
			}
			if err := json.Unmarshal([]byte(f.Run("info", "--json", f.Backing(e.Path))), &info); err != nil {
				t.Fatal(err)
			}
			tree.Entries[i].Compression, tree.Entries[i].ChunkSize = info.Compression, info.ChunkSize
			if want, ok := wantCompression[e.Path]; ok && want != "" && info.Compression != want {
				t.Fatalf("%s/%s: compression %s, want %s", spec.name, e.Path, info.Compression, want)
			}
		}
		set.Trees = append(set.Trees, tree)
		members = append(members, spec.name)
	}
	must(t, os.MkdirAll(out, 0o755))
	if o, err := commandOutput("tar", append([]string{"--create", "--gzip",
		"--file", filepath.Join(out, frozenArchive), "--directory", stage,
		"--sparse", "--xattrs", "--xattrs-include=user.*", "--numeric-owner", "--sort=name",
		"--format=posix", "--pax-option=delete=atime,delete=ctime"}, members...)...); err != nil {
		t.Fatalf("tar --create: %v\n%s", err, o)
	}
	b, err := json.MarshalIndent(set, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(out, frozenManifest), append(b, '\n'), 0o644))
	t.Logf("wrote %s; now run: go test -run TestFrozen ./integration/", out)
}

// setFrozenCompress switches kmsfs.conf's "compress" to alg (nothing when
// alg is "") and returns the function that puts the original file back.
func setFrozenCompress(t *testing.T, f *testFS, alg string) (restore func()) {
	t.Helper()
	if alg == "" {
		return func() {}
	}
	path := f.BackingRaw(configName)
	orig := mustRead(t, path)
	var cfg map[string]any
	must(t, json.Unmarshal(orig, &cfg))
	cfg["compress"] = alg
	b, err := json.MarshalIndent(cfg, "", "  ")
	must(t, err)
	must(t, os.WriteFile(path, b, 0o644))
	return func() { must(t, os.WriteFile(path, orig, 0o644)) }
}

// gitCommit names the commit of the source tree this test runs in, with
// "+dirty" when it has uncommitted changes; "" when git cannot tell.
func gitCommit() string {
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(rev))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "+dirty"
	}
	return c
}
