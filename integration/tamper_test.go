package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Tampering and copies, edited while unmounted, each with its precise
// expectation through the mount and from `kmsfs fsck` (security_test.go's
// TestTamper covers flip, swap, header and xattr copy through the mount).
// Layout constants of chunk/FORMAT.md for chunk size 4096.
const (
	tHeader     = 56
	tDataOffset = 512 // header and key-record slot
	tCS         = 4096
	tSealed     = tCS + 28
)

// tChunk returns the backing range of chunk i.
func tChunk(i int) (int, int) { return tDataOffset + i*tSealed, tDataOffset + (i+1)*tSealed }

// fsckFinding is one problem of `kmsfs fsck --json`.
type fsckFinding struct {
	Kind     string `json:"kind"`
	Chunk    int64  `json:"chunk"`
	Warning  bool   `json:"warning"`
	Repaired bool   `json:"repaired"`
}

type fsckJSON struct {
	Files   []fsckFile `json:"files"`
	Summary struct {
		Files     int64 `json:"files"`
		Repaired  int64 `json:"repaired"`
		Remaining int64 `json:"remaining"`
		Freed     int64 `json:"freed_bytes"`
	} `json:"summary"`
	ExitCode int `json:"exit_code"`
}

// fsckFile is one entry of `kmsfs fsck --json` with findings.
type fsckFile struct {
	Path      string        `json:"path"`       // backing path
	PlainPath string        `json:"plain_path"` // its path in the mount (trees with encrypted names), "?" for a name that does not decrypt
	Problems  []fsckFinding `json:"problems"`
	Zeroed    []int64       `json:"zeroed"`
}

// Name is the path a finding is about as a user knows it: its path in
// the mount, or the backing path for kmsfs's own entries (which have no
// plaintext path) and in a tree with plaintext names (where both are the
// same).
func (f fsckFile) Name() string {
	if f.PlainPath != "" {
		return f.PlainPath
	}
	return f.Path
}

// fsck runs `kmsfs fsck --json args… CIPHERDIR` and returns its exit code
// and findings as "path kind chunk[ repaired]" lines, sorted, each path as
// fsckFile.Name gives it.
func fsck(t *testing.T, fs *testFS, dir string, args ...string) (int, []string, fsckJSON) {
	t.Helper()
	res := fs.Exec(append(append([]string{"fsck", "--json"}, args...), dir)...)
	var doc fsckJSON
	if err := json.Unmarshal([]byte(res.Stdout), &doc); err != nil {
		t.Fatalf("fsck %v: exit %d, output is not JSON: %v\nstdout:\n%s\nstderr:\n%s", args, res.Code, err, res.Stdout, res.Stderr)
	}
	if doc.ExitCode != res.Code {
		t.Errorf("fsck %v: exit %d but the report says %d", args, res.Code, doc.ExitCode)
	}
	var lines []string
	for _, f := range doc.Files {
		for _, p := range f.Problems {
			if p.Warning {
				continue
			}
			s := fmt.Sprintf("%s %s %d", f.Name(), p.Kind, p.Chunk)
			if p.Repaired {
				s += " repaired"
			}
			lines = append(lines, s)
		}
	}
	sort.Strings(lines)
	return res.Code, lines, doc
}

func sameLines(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got:\n  %s\n want:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// readChunkErr reads chunk i of path (tCS bytes) and returns the errno, 0
// when the bytes equal want's chunk.
func readChunkErr(t *testing.T, path string, i int, want []byte) syscall.Errno {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return errnoOf(err)
	}
	defer f.Close()
	buf := make([]byte, tCS)
	n, err := f.ReadAt(buf, int64(i*tCS))
	if err != nil && n < min(tCS, len(want)-i*tCS) {
		return errnoOf(err)
	}
	if !bytes.Equal(buf[:n], want[i*tCS:i*tCS+n]) {
		t.Errorf("%s chunk %d: read %d bytes that differ from what was written", path, i, n)
	}
	return 0
}

// TestTamperMatrix: every tampering of issue 5's list, its result through
// the mount, what fsck reports, and what fsck --repair (with and without
// --zero-unreadable) fixes.
func TestTamperMatrix(t *testing.T) {
	t.Parallel()
	tamperMatrix(t, randomBytes)
}

// tamperMatrix is TestTamperMatrix with the file contents from gen and
// extra init options (compress_test.go reruns it with compression on text).
func tamperMatrix(t *testing.T, gen func(r *rand.Rand, n int) []byte, opts ...Option) {
	fs := newFS(t, append([]Option{WithChunkSize(tCS)}, opts...)...)
	r := newRand(51)
	names := []string{"flip", "swap", "foreign-chunk", "header", "xattr-copy", "slot-copy", "cut", "emptied", "zeroed", "intact", "donor"}
	files := map[string][]byte{}
	for _, name := range names {
		files[name] = gen(r, 4*tCS)
		mustWrite(t, fs.Path(name), files[name])
	}
	// sparse: chunks 0-3 data, 4-5 holes, chunk 6 data.
	sparse := append(gen(r, 4*tCS), make([]byte, 2*tCS)...)
	sparse = append(sparse, gen(r, 100)...)
	f, err := os.OpenFile(fs.Path("sparse-zeroed"), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(sparse[:4*tCS], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(sparse[6*tCS:], 6*tCS); err != nil {
		t.Fatal(err)
	}
	f.Close()
	files["sparse-zeroed"] = sparse
	ids := map[string]string{}
	for name := range files {
		ids[name] = fileIDOf(t, fs.Backing(name))
	}
	fs.Unmount()

	donor := mustRead(t, fs.Backing("donor"))
	edit := func(name string, fn func(b []byte) []byte) {
		t.Helper()
		b := fn(mustRead(t, fs.Backing(name)))
		if err := os.WriteFile(fs.Backing(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	edit("flip", func(b []byte) []byte { s, _ := tChunk(2); b[s+100] ^= 0x04; return b })
	edit("swap", func(b []byte) []byte {
		s1, e1 := tChunk(1)
		s2, e2 := tChunk(2)
		c1 := bytes.Clone(b[s1:e1])
		copy(b[s1:e1], b[s2:e2])
		copy(b[s2:e2], c1)
		return b
	})
	edit("foreign-chunk", func(b []byte) []byte { s, e := tChunk(1); copy(b[s:e], donor[s:e]); return b })
	edit("header", func(b []byte) []byte { b[20] ^= 0x80; return b }) // a bit of the file ID
	edit("slot-copy", func(b []byte) []byte { copy(b[tHeader:tDataOffset], donor[tHeader:tDataOffset]); return b })
	edit("cut", func(b []byte) []byte { _, e := tChunk(1); return b[:e] }) // chunks 0-1 left: a cut at a boundary
	edit("emptied", func(b []byte) []byte { return b[:tDataOffset] })
	edit("zeroed", func(b []byte) []byte { s, e := tChunk(1); clear(b[s:e]); return b })
	edit("sparse-zeroed", func(b []byte) []byte { s, e := tChunk(2); clear(b[s:e]); return b })
	donorX, err := lgetXattr(fs.Backing("donor"), keyXattr)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(fs.Backing("xattr-copy"), keyXattr, donorX, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lremovexattr(fs.Backing("slot-copy"), keyXattr); err != nil {
		t.Fatal(err)
	}

	// fsck sees all of it, unmounted, and changes nothing.
	code, got, _ := fsck(t, fs, fs.CipherDir)
	want := []string{
		"flip chunk-tag 2", "swap chunk-tag 1", "swap chunk-tag 2", "foreign-chunk chunk-tag 1",
		"header no-key -1", "xattr-copy xattr-bad -1", "slot-copy no-key -1", "cut truncated 1",
		"emptied truncated 0", "zeroed unexpected-hole 1",
	}
	if code != 10 {
		t.Errorf("fsck of the tampered tree: exit %d, want 10", code)
	}
	sameLines(t, "fsck findings", got, want...)

	fs.Mount()
	all := func(e syscall.Errno, n int) map[int]syscall.Errno {
		m := map[int]syscall.Errno{}
		for i := range n {
			m[i] = e
		}
		return m
	}
	expect := map[string]map[int]syscall.Errno{
		"flip":          {2: syscall.EIO},
		"swap":          {1: syscall.EIO, 2: syscall.EIO},
		"foreign-chunk": {1: syscall.EIO},
		"header":        all(syscall.EIO, 4),
		"xattr-copy":    all(syscall.EIO, 4), // the xattr wins, and its encryption context names another file
		"slot-copy":     all(syscall.EIO, 4), // no xattr: the slot's record names another file
		"cut":           {1: syscall.EIO},    // chunk 1 is now last and opens only as a middle chunk
		"zeroed":        {1: syscall.EIO},
		"sparse-zeroed": {}, // documented gap: a zeroed middle chunk of a sparse file reads as zeros
		"intact":        {},
		"donor":         {},
	}
	for name, errs := range expect {
		wantData := files[name]
		if name == "sparse-zeroed" {
			wantData = bytes.Clone(wantData)
			clear(wantData[2*tCS : 3*tCS])
		}
		n := (len(wantData) + tCS - 1) / tCS
		if name == "cut" {
			n = 2
		}
		for i := n - 1; i >= 0; i-- { // later chunks first: no readahead masks an error
			if got := readChunkErr(t, fs.Path(name), i, wantData); got != errs[i] {
				t.Errorf("%s chunk %d: errno %v, want %v", name, i, errName(got), errName(errs[i]))
			}
		}
	}
	if fi, err := os.Stat(fs.Path("cut")); err != nil || fi.Size() != 2*tCS {
		t.Errorf("cut: size %v, %v; want %d", fi, err, 2*tCS)
	}
	// Truncated to empty: the size says 0, so the open must fail.
	if b, err := os.ReadFile(fs.Path("emptied")); !errors.Is(err, syscall.EIO) {
		t.Errorf("emptied: read %d bytes, %v; want EIO at open", len(b), err)
	}
	// The flipped chunk: log lines name the file ID and chunk 2, and why.
	var flipLines []string
	for _, line := range strings.Split(fs.Log(), "\n") {
		if strings.Contains(line, ids["flip"]) {
			flipLines = append(flipLines, line)
		}
	}
	if len(flipLines) != 1 {
		t.Errorf("%d log lines name file ID %s of the flipped file, want 1:\n%s", len(flipLines), ids["flip"], strings.Join(flipLines, "\n"))
	}
	for _, line := range flipLines {
		if !strings.Contains(line, "content authentication failed") || !strings.Contains(line, "chunk=2") || !strings.Contains(line, "tag mismatch") {
			t.Errorf("flip log line does not name chunk 2 and the reason: %s", line)
		}
	}
	fs.Unmount()

	// --repair: only the foreign xattr is repairable without loss (from
	// the slot); the rest remains, exit 11.
	code, got, _ = fsck(t, fs, fs.CipherDir, "--repair")
	for i, w := range want {
		if w == "xattr-copy xattr-bad -1" {
			want[i] += " repaired"
		}
	}
	if code != 11 {
		t.Errorf("fsck --repair: exit %d, want 11", code)
	}
	sameLines(t, "fsck --repair", got, want...)
	// --zero-unreadable: unreadable chunks become sealed zeros, the cut
	// is accepted, the emptied file becomes empty; the two files without a
	// usable key record remain.
	code, got, doc := fsck(t, fs, fs.CipherDir, "--repair", "--zero-unreadable")
	if code != 11 {
		t.Errorf("fsck --repair --zero-unreadable: exit %d, want 11", code)
	}
	sameLines(t, "fsck --repair --zero-unreadable", got,
		"flip chunk-tag 2 repaired", "swap chunk-tag 1 repaired", "swap chunk-tag 2 repaired", "foreign-chunk chunk-tag 1 repaired",
		"header no-key -1", "slot-copy no-key -1", "cut truncated 1 repaired", "emptied truncated 0 repaired", "zeroed unexpected-hole 1 repaired")
	zeroed := map[string]string{}
	for _, f := range doc.Files {
		if len(f.Zeroed) > 0 {
			zeroed[f.Name()] = fmt.Sprint(f.Zeroed)
		}
	}
	if fmt.Sprint(zeroed) != "map[flip:[2] foreign-chunk:[1] swap:[1 2] zeroed:[1]]" {
		t.Errorf("zeroed chunks listed: %v", zeroed)
	}
	code, got, _ = fsck(t, fs, fs.CipherDir)
	sameLines(t, "fsck after the repairs", got, "header no-key -1", "slot-copy no-key -1")
	if code != 10 {
		t.Errorf("fsck after the repairs: exit %d, want 10", code)
	}

	// The mount reads what the repairs promised.
	fs.Mount()
	withZeros := func(name string, chunks ...int) []byte {
		b := bytes.Clone(files[name])
		for _, i := range chunks {
			clear(b[i*tCS : (i+1)*tCS])
		}
		return b
	}
	checkContent(t, fs.Path("xattr-copy"), files["xattr-copy"])
	checkContent(t, fs.Path("flip"), withZeros("flip", 2))
	checkContent(t, fs.Path("swap"), withZeros("swap", 1, 2))
	checkContent(t, fs.Path("zeroed"), withZeros("zeroed", 1))
	checkContent(t, fs.Path("cut"), files["cut"][:2*tCS])
	checkContent(t, fs.Path("emptied"), nil)
}

// copyTree is a second CIPHERDIR (a copy of fs's) mounted with fs's
// keystore. The caller fills c.CipherDir before mounting.
func copyTree(t *testing.T, fs *testFS, name string) *testFS {
	t.Helper()
	dir, err := os.MkdirTemp(tempRoot, sanitize(t.Name())+"-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	c := &testFS{
		CipherDir: filepath.Join(dir, "cipher"),
		Mnt:       filepath.Join(dir, "mnt"),
		Keystore:  fs.Keystore,
		LogFile:   filepath.Join(dir, "kmsfs.log"),
		ChunkSize: fs.ChunkSize,
		t:         t,
		dir:       dir,
		env:       fs.env,
	}
	if err := os.Mkdir(c.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.cleanup)
	return c
}

// copyFixture writes files of several shapes into a mounted fs and
// returns their contents by relative path.
func copyFixture(t *testing.T, fs *testFS) map[string][]byte {
	t.Helper()
	r := newRand(52)
	files := map[string][]byte{
		"empty":        nil,
		"one":          {7},
		"chunk":        randomBytes(r, fs.ChunkSize),
		"5000":         randomBytes(r, 5000),
		"d/e/deep":     randomBytes(r, 3*fs.ChunkSize+1),
		"d/big":        randomBytes(r, 200<<10),
		"d/with space": randomBytes(r, 10),
	}
	for p, b := range files {
		if err := os.MkdirAll(filepath.Dir(fs.Path(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, fs.Path(p), b)
	}
	// A sparse file.
	f, err := os.OpenFile(fs.Path("sparse"), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	sp := make([]byte, 10*fs.ChunkSize+3)
	copy(sp, "head")
	copy(sp[len(sp)-3:], "end")
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("end"), int64(len(sp)-3))
	f.Close()
	files["sparse"] = sp
	return files
}

// isUserEntry reports whether the backing name is a user's entry (a
// file, directory, symlink… of the mount) rather than one of kmsfs's own
// files: in a tree with encrypted names (v2) exactly the names
// names.Classify calls KindName (canonical unpadded base64url of at most
// 255 characters decoding to 16 + 16·k bytes, k ≥ 1) or KindLongName
// ("kmsfs.long." and 43 such characters), in every directory; in a v1
// tree every name but the configuration's in the root and rekey's
// temporaries (cipherdir.IsInternalName). A copy of those rules, because
// integration imports nothing of the project: names/FORMAT.md is the
// contract both follow.
func isUserEntry(v2, atRoot bool, name string) bool {
	if !v2 {
		if atRoot && (name == configName || strings.HasPrefix(name, configName+".")) {
			return false
		}
		return !strings.Contains(name, ".kmsfs-rekey-")
	}
	canonical := func(s string) ([]byte, bool) {
		b, err := base64.RawURLEncoding.Strict().DecodeString(s)
		return b, err == nil && base64.RawURLEncoding.EncodeToString(b) == s
	}
	if h, ok := strings.CutPrefix(name, "kmsfs.long."); ok {
		b, ok := canonical(h)
		return ok && len(b) == 32
	}
	b, ok := canonical(name)
	return ok && len(name) <= 255 && len(b) >= 32 && len(b)%16 == 0
}

// keyXattrCount counts the backing content files of fs's tree with and
// without the key xattr. kmsfs's own files (the configuration; in a tree
// with encrypted names also directory ID files, sidecars, long-target
// files and temporaries) carry no key record and are not counted.
func keyXattrCount(t *testing.T, fs *testFS) (with, without int) {
	t.Helper()
	v2 := fs.Config().FormatVersion >= 2
	err := filepath.WalkDir(fs.CipherDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == fs.CipherDir {
			return err
		}
		user := isUserEntry(v2, filepath.Dir(p) == fs.CipherDir, d.Name())
		switch {
		case d.IsDir() && !user:
			return filepath.SkipDir // kmsfs.targets, a temporary directory
		case !d.Type().IsRegular() || !user:
			return nil
		}
		if _, err := lgetXattr(p, keyXattr); err == nil {
			with++
		} else {
			without++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", fs.CipherDir, err)
	}
	return with, without
}

// TestCopyDropsXattrs: copies of a CIPHERDIR made by tools that drop
// extended attributes lose nothing: a mount of the copy reads every file,
// restoring each key xattr on first open, and fsck --repair restores them
// too.
func TestCopyDropsXattrs(t *testing.T) {
	t.Parallel()
	methods := []copyMethod{
		{"cp", "cp", func(src, dst string) *exec.Cmd { return exec.Command("cp", "-r", src, dst) }},
		{"tar", "tar", func(src, dst string) *exec.Cmd {
			return exec.Command("sh", "-c", `mkdir "$2" && tar -C "$1" -cf - . | tar -C "$2" -xf -`, "sh", src, dst)
		}},
		{"rsync", "rsync", func(src, dst string) *exec.Cmd { return exec.Command("rsync", "-a", src+"/", dst) }},
	}
	// Every tool on a tree with encrypted names (the default); cp on one
	// with plaintext names, whose restore path is the same code.
	for _, format := range []struct {
		name    string
		opts    []Option
		methods []copyMethod
	}{
		{"v2", nil, methods},
		{"v1", []Option{WithInitArgs("--plaintext-names")}, methods[:1]},
	} {
		t.Run(format.name, func(t *testing.T) {
			t.Parallel()
			copyDropsXattrs(t, format.methods, format.opts...)
		})
	}
}

// copyMethod is a tool that copies a CIPHERDIR src to dst (which does not
// exist yet) dropping extended attributes.
type copyMethod struct {
	name string
	tool string
	copy func(src, dst string) *exec.Cmd
}

// copyDropsXattrs is TestCopyDropsXattrs on one tree made with opts,
// copied by each of methods.
func copyDropsXattrs(t *testing.T, methods []copyMethod, opts ...Option) {
	fs := newFS(t, opts...)
	files := copyFixture(t, fs)
	fs.Unmount()
	nonEmpty := len(files) // every file has a header, "empty" too
	if with, without := keyXattrCount(t, fs); with != nonEmpty || without != 0 {
		t.Fatalf("the original tree: %d files with the key xattr, %d without; want %d with", with, without, nonEmpty)
	}

	for _, m := range methods {
		t.Run(m.name, func(t *testing.T) {
			requireTool(t, m.tool)
			for _, via := range []string{"mount", "fsck"} {
				c := copyTree(t, fs, m.name+"-"+via)
				if out, err := m.copy(fs.CipherDir, c.CipherDir).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", m.name, err, out)
				}
				if with, without := keyXattrCount(t, c); with != 0 || without != nonEmpty {
					t.Fatalf("%s copy: %d files with the key xattr, %d without; the test needs a copy that drops all %d", m.name, with, without, nonEmpty)
				}
				code, got, _ := fsck(t, c, c.CipherDir)
				if code != 10 || len(got) != nonEmpty {
					t.Errorf("fsck of the %s copy: exit %d, %d findings (want 10, %d xattr-missing):\n%s", m.name, code, len(got), nonEmpty, strings.Join(got, "\n"))
				}
				for _, g := range got {
					if !strings.Contains(g, " xattr-missing -1") {
						t.Errorf("fsck of the %s copy: unexpected finding %s", m.name, g)
					}
				}
				if via == "fsck" {
					if code, _, _ := fsck(t, c, c.CipherDir, "--repair"); code != 13 {
						t.Errorf("fsck --repair of the %s copy: exit %d, want 13", m.name, code)
					}
					if with, without := keyXattrCount(t, c); with != nonEmpty || without != 0 {
						t.Errorf("after fsck --repair: %d files with the key xattr, %d without", with, without)
					}
				}
				c.Mount()
				for p, want := range files {
					checkContent(t, c.Path(p), want)
				}
				c.Unmount()
				if with, without := keyXattrCount(t, c); with != nonEmpty || without != 0 {
					t.Errorf("%s copy after reading through the mount (%s): %d files with the key xattr, %d without", m.name, via, with, without)
				}
				if via == "mount" && strings.Count(c.Log(), "restored the missing key xattr") != nonEmpty {
					t.Errorf("want one restore log line per file (%d):\n%s", nonEmpty, c.Log())
				}
				if code, got, _ := fsck(t, c, c.CipherDir); code != 0 {
					t.Errorf("fsck of the %s copy afterwards: exit %d\n%s", m.name, code, strings.Join(got, "\n"))
				}
			}
		})
	}
}

// TestBackingWithoutXattrs runs a tree on ramfs, which keeps no extended
// attributes at all (setxattr answers EOPNOTSUPP): init detects it and
// records key_record "slot", the mount works, fsck is clean; and a copy
// of an xattr tree onto ramfs mounts and reads too.
func TestBackingWithoutXattrs(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ram, err := os.MkdirTemp(tempRoot, "ramfs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", ram, "ramfs", 0, "mode=0755"); err != nil {
		t.Skipf("cannot mount ramfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(ram, 0); err != nil {
			t.Errorf("unmount ramfs: %v", err)
		}
		os.Remove(ram)
	})
	if err := unix.Setxattr(ram, "user.probe", []byte{1}, 0); !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTSUP) {
		t.Skipf("ramfs here takes user xattrs (%v)", err)
	}

	// A tree born on ramfs.
	src := newFS(t, WithoutMount())
	ramTree := copyTree(t, src, "born")
	ramTree.CipherDir = filepath.Join(ram, "born")
	if err := os.Mkdir(ramTree.CipherDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := ramTree.Run("init", ramTree.CipherDir)
	if !strings.Contains(out, "key records:   slot") {
		t.Errorf("init on ramfs does not say key records: slot:\n%s", out)
	}
	if cfg := mustRead(t, filepath.Join(ramTree.CipherDir, "kmsfs.conf")); !bytes.Contains(cfg, []byte(`"key_record": "slot"`)) {
		t.Errorf("kmsfs.conf on ramfs:\n%s", cfg)
	}
	ramTree.Mount()
	files := copyFixture(t, ramTree)
	ramTree.Unmount()
	ramTree.Mount()
	for p, want := range files {
		checkContent(t, ramTree.Path(p), want)
	}
	ramTree.Unmount()
	if code, got, _ := fsck(t, ramTree, ramTree.CipherDir); code != 0 {
		t.Errorf("fsck of the ramfs tree: exit %d\n%s", code, strings.Join(got, "\n"))
	}

	// An xattr+slot tree copied onto ramfs: the xattrs cannot come along
	// and cannot be restored, and the slots serve.
	xt := newFS(t)
	files = copyFixture(t, xt)
	xt.Unmount()
	moved := copyTree(t, xt, "moved")
	moved.CipherDir = filepath.Join(ram, "moved")
	if out, err := exec.Command("cp", "-r", xt.CipherDir, moved.CipherDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	moved.Mount()
	for p, want := range files {
		checkContent(t, moved.Path(p), want)
	}
	moved.Unmount()
	if code, got, _ := fsck(t, moved, moved.CipherDir); code != 0 {
		t.Errorf("fsck of the xattr tree copied onto ramfs: exit %d\n%s", code, strings.Join(got, "\n"))
	}
}

// TestFsckCLI: the command's contract beyond the findings: a check while
// mounted is allowed, a repair is refused unless --force; --keys counts
// files per key and key material (issue 4: what a rewrap still has to
// move); human-readable lines name the path, file ID and kind; usage
// errors. On a tree with encrypted names (the default) and on one with
// plaintext names, whose lines name the path once.
func TestFsckCLI(t *testing.T) {
	t.Parallel()
	t.Run("v2", func(t *testing.T) { t.Parallel(); fsckCLI(t) })
	t.Run("v1", func(t *testing.T) { t.Parallel(); fsckCLI(t, WithInitArgs("--plaintext-names")) })
}

// fsckCLI is TestFsckCLI on a tree made with opts.
func fsckCLI(t *testing.T, opts ...Option) {
	fs := newFS(t, opts...)
	for _, name := range []string{"a", "b", "c"} {
		mustWrite(t, fs.Path(name), []byte("content of "+name))
	}
	keyID := fs.Config().KeyID

	res := fs.Exec("fsck", fs.CipherDir)
	if res.Code != 0 || !strings.Contains(res.Stdout, "fsck: no problems found") {
		t.Errorf("fsck of a clean mounted tree: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	res = fs.Exec("fsck", "--repair", fs.CipherDir)
	if res.Code != 3 || !strings.Contains(res.Stderr, "mounted") {
		t.Errorf("fsck --repair while mounted: exit %d, stderr %q; want 3 naming the mount", res.Code, res.Stderr)
	}
	if res = fs.Exec("fsck", "--repair", "--force", fs.CipherDir); res.Code != 0 {
		t.Errorf("fsck --repair --force while mounted: exit %d\n%s", res.Code, res.Stderr)
	}
	if res = fs.Exec("fsck", "--zero-unreadable", fs.CipherDir); res.Code != 2 {
		t.Errorf("fsck --zero-unreadable without --repair: exit %d, want 2", res.Code)
	}

	// One rotation, one new file: two key materials, 3 + 1 files.
	fs.Run("key", "rotate", keyID)
	mustWrite(t, fs.Path("d"), []byte("after the rotation"))
	out := fs.Run("fsck", "--keys", fs.CipherDir)
	if !strings.Contains(out, "  "+keyID+": 4 files") || strings.Count(out, "    material ") != 2 ||
		!strings.Contains(out, ": 3 files") || !strings.Contains(out, ": 1 files") {
		t.Errorf("fsck --keys:\n%s", out)
	}
	fs.Unmount()

	backing := fs.Backing("b")
	id := fileIDOf(t, backing)
	if err := unix.Lremovexattr(backing, keyXattr); err != nil {
		t.Fatal(err)
	}
	res = fs.Exec("fsck", fs.CipherDir)
	path := "b" // the line names the path in the mount, and in a v2 tree the backing path too
	if fs.Config().FormatVersion >= 2 {
		path += " (backing " + filepath.Base(backing) + ")"
	}
	want := path + ": file " + id + ": file: xattr-missing: "
	if res.Code != 10 || !strings.Contains(res.Stdout, want) || !strings.Contains(res.Stdout, "fsck: 1 problems in 1 files") {
		t.Errorf("fsck with one xattr missing: exit %d, want 10 and a line starting %q:\n%s", res.Code, want, res.Stdout)
	}
	res = fs.Exec("fsck", "--repair", fs.CipherDir)
	if res.Code != 13 || !strings.Contains(res.Stdout, "[repaired: ") {
		t.Errorf("fsck --repair: exit %d, want 13:\n%s", res.Code, res.Stdout)
	}
	if res = fs.Exec("fsck", fs.CipherDir); res.Code != 0 {
		t.Errorf("fsck after the repair: exit %d\n%s", res.Code, res.Stdout)
	}
}
