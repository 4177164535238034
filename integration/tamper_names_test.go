package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTamperNames is the tamper matrix of what a tree with encrypted names
// (format v2, names/FORMAT.md) adds to the content: names, directory IDs,
// long-name sidecars, symlink targets and user attributes, each edited
// while unmounted, with its result through a fresh mount ("What is
// detected": the entry left out of its listing, EIO or ENOENT, never a
// garbage name, one log line), what `kmsfs fsck --json` reports (kind and
// path in the mount), and what `fsck --repair` does (removes orphans and
// temporaries, gives an empty directory an ID; never removes user data).
// One tree, one directory per tampering.
func TestTamperNames(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	if fs.Config().FormatVersion != 2 {
		t.Fatalf("kmsfs init made format %d, want 2 (encrypted names)", fs.Config().FormatVersion)
	}
	r := newRand(53)
	long := func(c string) string { return strings.Repeat(c, 200) } // over 159 bytes: a hashed name and a sidecar
	longTarget := func(c string) string { return strings.Repeat(c, 1000) }

	// The tree, through the mount: files (plain path → content) and the
	// rest.
	files := map[string][]byte{}
	for _, p := range []string{
		"intact/file",
		"t-flip/victim", "t-flip/stay",
		"t-move/a/victim", "t-move/b/stay",
		"t-sidecar-edit/" + long("e"), "t-sidecar-del/" + long("d"), "t-sidecar-orphan/" + long("o"),
		"t-dirid-edit/x", "t-dirid-del/x",
		"t-swap/a/x", "t-swap/b/y",
		"t-xattr/copied", "t-xattr/donor", "t-xattr/renamed", "t-xattr/flipped",
		"t-foreign/x", "t-temp/x",
	} {
		if err := os.MkdirAll(filepath.Dir(fs.Path(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		files[p] = randomBytes(r, 100+r.IntN(5000))
		mustWrite(t, fs.Path(p), files[p])
	}
	if err := os.Mkdir(fs.Path("t-dirid-empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"t-link/short":     "short/target",
		"t-link/long-edit": longTarget("e"),
		"t-link/long-del":  longTarget("d"),
	}
	if err := os.Mkdir(fs.Path("t-link"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, target := range links {
		if err := os.Symlink(target, fs.Path(p)); err != nil {
			t.Fatal(err)
		}
	}
	// User attributes; the backing name of each is the one that appears
	// when it is set (names are encrypted under the file's ID).
	bx := map[string]string{} // "path user.name" → backing attribute name
	for _, a := range []struct{ path, name, value string }{
		{"t-xattr/copied", "user.note", "copied's own"},
		{"t-xattr/donor", "user.note", "the donor's"},
		{"t-xattr/renamed", "user.two", "two"},
		{"t-xattr/renamed", "user.one", "one"},
		{"t-xattr/flipped", "user.note", "flipped"},
	} {
		backing := fs.Backing(a.path)
		before := encXattrs(t, backing)
		if err := unix.Setxattr(fs.Path(a.path), a.name, []byte(a.value), 0); err != nil {
			t.Fatal(err)
		}
		added := without(encXattrs(t, backing), before)
		if len(added) != 1 {
			t.Fatalf("setxattr %s %s added backing attributes %q, want one", a.path, a.name, added)
		}
		bx[a.path+" "+a.name] = added[0]
	}
	fs.Unmount()

	// Backing paths of everything edited, mapped before any edit (a
	// directory's ID is needed to map its entries), and the map back from
	// backing directories to plaintext ones, for fsck's findings about
	// kmsfs's own files, which have no plaintext path.
	bp := backingPaths(t, fs, "t-flip/victim", "t-move/a/victim", "t-move/b",
		"t-sidecar-edit/"+long("e"), "t-sidecar-del/"+long("d"), "t-sidecar-orphan", "t-sidecar-orphan/"+long("o"),
		"t-dirid-edit", "t-dirid-del", "t-dirid-empty", "t-swap/a", "t-swap/b", "t-swap/a/x", "t-swap/b/y",
		"t-link/short", "t-link/long-edit", "t-link/long-del",
		"t-xattr/copied", "t-xattr/donor", "t-xattr/renamed", "t-xattr/flipped", "t-foreign", "t-temp")
	b := func(p string) string {
		t.Helper()
		v, ok := bp[p]
		if !ok {
			t.Fatalf("no backing path of %s mapped", p)
		}
		return v
	}
	plainDirOf := map[string]string{"kmsfs.targets": "kmsfs.targets"}
	for _, d := range []string{"t-sidecar-orphan", "t-foreign", "t-temp"} {
		plainDirOf[rel(t, fs, b(d))] = d
	}
	userEntries := countUserEntries(t, fs)

	// The tamperings.
	flipName := func(name string) string { // one bit of the ciphertext of a short name
		ct, err := base64.RawURLEncoding.DecodeString(name)
		if err != nil {
			t.Fatalf("backing name %q: %v", name, err)
		}
		ct[len(ct)/2] ^= 0x10
		return base64.RawURLEncoding.EncodeToString(ct)
	}
	flipped := filepath.Join(filepath.Dir(b("t-flip/victim")), flipName(filepath.Base(b("t-flip/victim"))))
	mustRename(t, b("t-flip/victim"), flipped)

	moved := filepath.Join(b("t-move/b"), filepath.Base(b("t-move/a/victim")))
	mustRename(t, b("t-move/a/victim"), moved)

	sidecarEdit := b("t-sidecar-edit/"+long("e")) + ".name"
	editFile(t, sidecarEdit, func(s []byte) { s[6+100] = otherB64(s[6+100]) }) // past the magic and version: the name
	sidecarDel := b("t-sidecar-del/"+long("d")) + ".name"
	mustRemove(t, sidecarDel)
	orphanSidecar := filepath.Join(b("t-sidecar-orphan"), "kmsfs.long."+hash64("no such entry")+".name")
	copyFile(t, b("t-sidecar-orphan/"+long("o"))+".name", orphanSidecar)

	editFile(t, filepath.Join(b("t-dirid-edit"), "kmsfs.dirid"), func(s []byte) { s[30] ^= 0x01 }) // a bit of the MAC
	mustRemove(t, filepath.Join(b("t-dirid-del"), "kmsfs.dirid"))
	emptyDir := b("t-dirid-empty")
	mustRemove(t, filepath.Join(emptyDir, "kmsfs.dirid")) // a crash between rmdir's unlink and rmdir
	swapA, swapB := filepath.Join(b("t-swap/a"), "kmsfs.dirid"), filepath.Join(b("t-swap/b"), "kmsfs.dirid")
	mustRename(t, swapA, swapA+".tmp")
	mustRename(t, swapB, swapA)
	mustRename(t, swapA+".tmp", swapB)

	linkShort := b("t-link/short")
	editSymlink(t, linkShort, func(s []byte) { s[len(s)/2] = otherB64(s[len(s)/2]) })
	targetFile := func(p string) string {
		link, err := os.Readlink(b(p))
		if err != nil {
			t.Fatal(err)
		}
		name, ok := strings.CutPrefix(link, "kmsfs.target.")
		if !ok {
			t.Fatalf("%s: backing target %q is not of the long form", p, link)
		}
		return fs.BackingRaw("kmsfs.targets", name)
	}
	targetEdit, targetDel := targetFile("t-link/long-edit"), targetFile("t-link/long-del")
	orphanTarget := fs.BackingRaw("kmsfs.targets", hash64("no such symlink"))
	copyFile(t, targetEdit, orphanTarget)
	editFile(t, targetEdit, func(s []byte) { s[len(s)/2] ^= 0x01 })
	mustRemove(t, targetDel)

	setBackingXattr := func(p, name string, value []byte) {
		t.Helper()
		if err := unix.Lsetxattr(b(p), name, value, 0); err != nil {
			t.Fatal(err)
		}
	}
	removeBackingXattr := func(p, name string) {
		t.Helper()
		if err := unix.Lremovexattr(b(p), name); err != nil {
			t.Fatal(err)
		}
	}
	backingXattr := func(p, name string) []byte {
		t.Helper()
		v, err := lgetXattr(b(p), name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	setBackingXattr("t-xattr/copied", bx["t-xattr/copied user.note"], backingXattr("t-xattr/donor", bx["t-xattr/donor user.note"]))
	setBackingXattr("t-xattr/renamed", bx["t-xattr/renamed user.two"], backingXattr("t-xattr/renamed", bx["t-xattr/renamed user.one"]))
	removeBackingXattr("t-xattr/renamed", bx["t-xattr/renamed user.one"])
	flippedX := "user.kmsfs.x." + flipName(strings.TrimPrefix(bx["t-xattr/flipped user.note"], "user.kmsfs.x."))
	setBackingXattr("t-xattr/flipped", flippedX, backingXattr("t-xattr/flipped", bx["t-xattr/flipped user.note"]))
	removeBackingXattr("t-xattr/flipped", bx["t-xattr/flipped user.note"])

	foreign := filepath.Join(b("t-foreign"), "README.txt")
	mustWrite(t, foreign, []byte("dropped here by something else"))
	temp := filepath.Join(b("t-temp"), "kmsfs.tmp.00112233445566778899aabbccddeeff")
	if err := os.Mkdir(temp, 0o700); err != nil { // an interrupted mkdir: a temporary with its ID file
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(b("t-temp"), "kmsfs.dirid"), filepath.Join(temp, "kmsfs.dirid"))

	// What a fresh mount shows. Names and directories first, in a mount of
	// their own (the daemon logs at most 20 lines a minute about names
	// that do not decrypt), then targets and attributes in another.
	fs.Mount()
	sameLines(t, "the tree as the mount lists it", walkMount(t, fs.Mnt),
		"intact/", "intact/file", "t-dirid-del: EIO", "t-dirid-edit: EIO", "t-dirid-empty/",
		"t-flip/", "t-flip/stay", "t-foreign/", "t-foreign/x", "t-link/", "t-link/long-del", "t-link/long-edit", "t-link/short",
		"t-move/", "t-move/a/", "t-move/b/", "t-move/b/stay",
		"t-sidecar-del/", "t-sidecar-edit/", "t-sidecar-orphan/", "t-sidecar-orphan/"+long("o"),
		"t-swap/", "t-swap/a/", "t-swap/b/", "t-temp/", "t-temp/x",
		"t-xattr/", "t-xattr/copied", "t-xattr/donor", "t-xattr/flipped", "t-xattr/renamed")
	for p, want := range map[string]syscall.Errno{
		"t-flip/victim":   syscall.ENOENT, // its backing name is no longer the name's
		"t-move/a/victim": syscall.ENOENT,
		"t-move/b/victim": syscall.ENOENT,
		"t-dirid-edit/x":  syscall.EIO,
		"t-dirid-del/x":   syscall.EIO,
		"t-dirid-empty/x": syscall.ENOENT,
		"t-swap/a/x":      syscall.ENOENT, // encrypted under the other directory's ID
		"t-swap/b/y":      syscall.ENOENT,
	} {
		if _, err := os.Lstat(fs.Path(p)); errnoOf(err) != want {
			t.Errorf("lstat %s: %v, want %v", p, err, errName(want))
		}
	}
	// A hashed entry whose sidecar is gone or bad is still reached by its
	// name (the name gives the hashed backing name; the sidecar only
	// serves listings).
	checkContent(t, fs.Path("t-sidecar-edit", long("e")), files["t-sidecar-edit/"+long("e")])
	checkContent(t, fs.Path("t-sidecar-del", long("d")), files["t-sidecar-del/"+long("d")])
	fs.Unmount()
	namesLog := daemonLog(fs.Log())
	fs.Mount()
	for p, want := range links {
		if got, err := os.Readlink(fs.Path(p)); errnoOf(err) != syscall.EIO {
			t.Errorf("readlink %s: %q, %v; want EIO (its target was %d bytes)", p, got, err, len(want))
		}
	}
	if got, err := getXattr(fs.Path("t-xattr/copied"), "user.note"); errnoOf(err) != syscall.EIO {
		t.Errorf("getxattr of a value copied from another file: %q, %v; want EIO", got, err)
	}
	if got, err := getXattr(fs.Path("t-xattr/donor"), "user.note"); err != nil || string(got) != "the donor's" {
		t.Errorf("getxattr of the donor: %q, %v", got, err)
	}
	if got, err := getXattr(fs.Path("t-xattr/renamed"), "user.two"); errnoOf(err) != syscall.EIO {
		t.Errorf("getxattr of a value renamed to another attribute: %q, %v; want EIO", got, err)
	}
	for p, want := range map[string][]string{
		"t-xattr/copied":  {"user.note"},
		"t-xattr/renamed": {"user.two"},
		"t-xattr/flipped": nil, // its name does not decrypt: left out
	} {
		if got := listXattr(t, fs.Path(p)); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("listxattr %s: %q, want %q", p, got, want)
		}
	}
	for p, name := range map[string]string{"t-xattr/renamed": "user.one", "t-xattr/flipped": "user.note"} {
		if _, err := getXattr(fs.Path(p), name); errnoOf(err) != syscall.ENODATA {
			t.Errorf("getxattr %s %s: %v, want ENODATA", p, name, err)
		}
	}
	fs.Unmount()
	targets := daemonLog(fs.Log()[len(namesLog.raw):])

	// A log line for each tampering the mount meets, naming the backing
	// entry (a directory by its backing path).
	const (
		leftOut   = "backing entry left out of a listing: its name does not decrypt in this directory"
		badID     = "directory ID file is damaged or forged: the directory's entries cannot be read"
		noID      = "directory has entries but no ID file: its entries cannot be read"
		badTarget = "symlink target does not decrypt"
		badValue  = "user attribute value does not decrypt for this file"
		badXName  = "user attribute left out of a listing: its name does not decrypt for this file"
	)
	namesLog.expect(t, leftOut, "backing_name="+filepath.Base(flipped))
	namesLog.expect(t, leftOut, "backing_name="+filepath.Base(moved))
	namesLog.expect(t, leftOut, "backing_name="+strings.TrimSuffix(filepath.Base(sidecarEdit), ".name"), "hash")
	namesLog.expect(t, leftOut, "backing_name="+strings.TrimSuffix(filepath.Base(sidecarDel), ".name"), "no such file")
	namesLog.expect(t, badID, "authentication", "backing_name="+rel(t, fs, b("t-dirid-edit")))
	namesLog.expect(t, noID, "backing_name="+rel(t, fs, b("t-dirid-del")))
	namesLog.expect(t, leftOut, "backing_name="+filepath.Base(b("t-swap/a/x")))
	namesLog.expect(t, leftOut, "backing_name="+filepath.Base(b("t-swap/b/y")))
	targets.expect(t, badTarget, "backing_name="+filepath.Base(linkShort))
	targets.expect(t, badTarget, "backing_name="+filepath.Base(b("t-link/long-edit")))
	targets.expect(t, badTarget, "backing_name="+filepath.Base(b("t-link/long-del")))
	targets.expect(t, badValue, "backing_name="+bx["t-xattr/copied user.note"])
	targets.expect(t, badValue, "backing_name="+bx["t-xattr/renamed user.two"])
	targets.expect(t, badXName, "backing_name="+flippedX)
	for _, l := range []daemonLines{namesLog, targets} {
		if strings.Contains(l.raw, "suppressed_before") {
			t.Errorf("the daemon dropped log lines about names:\n%s", l.raw)
		}
	}

	// fsck: every tampering, by its path in the mount ("?" for a name that
	// cannot be decrypted); kmsfs's own files by their backing path in
	// their directory. User attributes are not checked by fsck (only the
	// mount meets them), so t-xattr has no finding.
	wantFsck := []string{
		"t-flip/? name-bad",
		"t-move/b/? name-bad",
		"t-sidecar-edit/? sidecar-bad",
		"t-sidecar-del/? sidecar-missing",
		"t-sidecar-orphan/" + filepath.Base(orphanSidecar) + " sidecar-orphan warning",
		"t-dirid-edit dirid-bad",
		"t-dirid-del dirid-missing",
		"t-dirid-empty dirid-missing warning",
		"t-swap/a/? name-bad",
		"t-swap/b/? name-bad",
		"t-link/short target-bad",
		"t-link/long-edit target-bad",
		"t-link/long-del target-bad",
		"kmsfs.targets/" + filepath.Base(orphanTarget) + " target-orphan warning",
		"t-foreign/README.txt foreign warning",
		"t-temp/" + filepath.Base(temp) + " temp-leftover warning",
	}
	code, got := fsckNames(t, fs, plainDirOf)
	if code != 10 {
		t.Errorf("fsck of the tampered tree: exit %d, want 10", code)
	}
	sameLines(t, "fsck findings", got, wantFsck...)

	// --repair removes the orphans and the temporary and gives the empty
	// directory an ID; the rest remains (exit 11), and no user entry and
	// no foreign file goes.
	code, got = fsckNames(t, fs, plainDirOf, "--repair")
	if code != 11 {
		t.Errorf("fsck --repair: exit %d, want 11", code)
	}
	var wantRepair, wantAfter []string
	for _, w := range wantFsck {
		if strings.HasSuffix(w, " warning") && !strings.HasSuffix(w, " foreign warning") {
			wantRepair = append(wantRepair, w+" repaired")
		} else {
			wantRepair = append(wantRepair, w)
			wantAfter = append(wantAfter, w)
		}
	}
	sameLines(t, "fsck --repair", got, wantRepair...)
	for _, p := range []string{orphanSidecar, orphanTarget, temp} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after fsck --repair, %s: %v; want it removed", p, err)
		}
	}
	if _, err := os.Lstat(foreign); err != nil {
		t.Errorf("fsck --repair removed or broke a foreign file: %v", err)
	}
	if st, err := os.Lstat(filepath.Join(emptyDir, "kmsfs.dirid")); err != nil || st.Size() != 54 {
		t.Errorf("after fsck --repair, the empty directory's ID file: %v, %v; want 54 bytes", st, err)
	}
	if n := countUserEntries(t, fs); n != userEntries {
		t.Errorf("fsck --repair changed the number of user entries in the backing tree from %d to %d", userEntries, n)
	}
	code, got = fsckNames(t, fs, plainDirOf)
	if code != 10 {
		t.Errorf("fsck after the repair: exit %d, want 10", code)
	}
	sameLines(t, "fsck after the repair", got, wantAfter...)

	// The mount after the repair: the empty directory takes entries, every
	// file still readable reads as written.
	fs.Mount()
	mustWrite(t, fs.Path("t-dirid-empty", "new"), []byte("new"))
	if got := readDirNames(t, fs.Path("t-dirid-empty")); fmt.Sprint(got) != "[new]" {
		t.Errorf("the repaired empty directory lists %q", got)
	}
	for p, want := range files {
		switch {
		case strings.HasPrefix(p, "t-flip/victim"), strings.HasPrefix(p, "t-move/a/"),
			strings.HasPrefix(p, "t-dirid-edit/"), strings.HasPrefix(p, "t-dirid-del/"), strings.HasPrefix(p, "t-swap/"):
			continue // unreachable by its name (above)
		}
		checkContent(t, fs.Path(p), want)
	}
	fs.Unmount()
}

// daemonLines is a piece of a daemon log, split into lines.
type daemonLines struct {
	raw   string
	lines []string
}

func daemonLog(s string) daemonLines {
	return daemonLines{raw: s, lines: strings.Split(s, "\n")}
}

// expect fails unless a line holds msg and every one of parts (a syscall
// may ask twice: listxattr's size probe, say).
func (l daemonLines) expect(t *testing.T, msg string, parts ...string) {
	t.Helper()
	n := 0
	for _, line := range l.lines {
		ok := strings.Contains(line, "level=ERROR") && strings.Contains(line, msg)
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			n++
		}
	}
	if n == 0 {
		t.Errorf("no daemon log line says %q with %q:\n%s", msg, parts, l.raw)
	}
}

// fsckNames runs `kmsfs fsck --json args… CIPHERDIR` and returns its exit
// code and every finding, warnings included, as "path kind[ warning][
// repaired]" lines: user entries by their path in the mount, kmsfs's own
// files by the plaintext path of their directory (plainDirOf maps backing
// directories to those) and their backing name.
func fsckNames(t *testing.T, fs *testFS, plainDirOf map[string]string, args ...string) (int, []string) {
	t.Helper()
	code, _, doc := fsck(t, fs, fs.CipherDir, args...)
	var lines []string
	for _, f := range doc.Files {
		name := f.Name()
		if f.PlainPath == "" {
			dir, ok := plainDirOf[filepath.Dir(f.Path)]
			if !ok {
				t.Errorf("fsck: a finding about %s, in a directory the test did not expect", f.Path)
			}
			name = dir + "/" + filepath.Base(f.Path)
		}
		for _, p := range f.Problems {
			s := name + " " + p.Kind
			if p.Chunk != -1 {
				s += fmt.Sprintf(" chunk %d", p.Chunk)
			}
			if p.Warning {
				s += " warning"
			}
			if p.Repaired {
				s += " repaired"
			}
			lines = append(lines, s)
		}
	}
	sort.Strings(lines)
	return code, lines
}

// walkMount lists the tree under mnt as "path/" for directories, "path"
// for the rest and "path: ERRNO" for a directory that cannot be listed,
// sorted.
func walkMount(t *testing.T, mnt string) []string {
	t.Helper()
	var out []string
	var walk func(rel string)
	walk = func(rel string) {
		list, err := os.ReadDir(filepath.Join(mnt, rel))
		if err != nil {
			out = append(out, rel+": "+errName(errnoOf(err)))
			return
		}
		if rel != "" {
			out = append(out, rel+"/")
		}
		for _, e := range list {
			p := filepath.Join(rel, e.Name())
			if e.IsDir() {
				walk(p)
			} else {
				out = append(out, p)
			}
		}
	}
	walk("")
	sort.Strings(out)
	return out
}

// readDirNames lists a directory of the mount, sorted.
func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	list, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var out []string
	for _, e := range list {
		out = append(out, e.Name())
	}
	return out
}

// countUserEntries counts the backing entries of users (isUserEntry) in
// fs's tree.
func countUserEntries(t *testing.T, fs *testFS) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(fs.CipherDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == fs.CipherDir {
			return err
		}
		if !isUserEntry(true, false, d.Name()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// encXattrs returns the encrypted user attribute names (short form) of
// the backing entry p.
func encXattrs(t *testing.T, p string) []string {
	t.Helper()
	var out []string
	for _, n := range listXattrNoFollow(t, p) {
		if strings.HasPrefix(n, "user.kmsfs.x.") {
			out = append(out, n)
		}
	}
	return out
}

// without returns the elements of a not in b.
func without(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// backingPaths maps paths in the mount of fs (unmounted or not) to their
// backing paths with one `kmsfs paths --encrypt`.
func backingPaths(t *testing.T, fs *testFS, paths ...string) map[string]string {
	t.Helper()
	out := fs.Run(append([]string{"paths", "--encrypt", "--json", fs.CipherDir}, paths...)...)
	var doc struct {
		Paths []struct{ Input, Output, Error string }
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Paths) != len(paths) {
		t.Fatalf("kmsfs paths --encrypt: %v\n%s", err, out)
	}
	m := map[string]string{}
	for i, p := range doc.Paths {
		if p.Output == "" {
			t.Fatalf("kmsfs paths --encrypt %s: %s", paths[i], p.Error)
		}
		m[paths[i]] = filepath.Join(fs.CipherDir, p.Output)
	}
	return m
}

// rel returns p relative to fs's CIPHERDIR.
func rel(t *testing.T, fs *testFS, p string) string {
	t.Helper()
	r, err := filepath.Rel(fs.CipherDir, p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// hash64 is b64(SHA-256(s)): the shape of the hashes in long names and
// long-target file names.
func hash64(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// otherB64 returns another character of the base64url alphabet than c,
// one that keeps a name's encoding canonical (not in its last character).
func otherB64(c byte) byte {
	if c == 'A' {
		return 'B'
	}
	return 'A'
}

func mustRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func mustRemove(t *testing.T, p string) {
	t.Helper()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

// copyFile copies the regular file from to a new file to.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	mustWrite(t, to, mustRead(t, from))
}

// editFile rewrites the backing file p (even a read-only one) with edit
// applied to its content.
func editFile(t *testing.T, p string, edit func([]byte)) {
	t.Helper()
	b := mustRead(t, p)
	edit(b)
	mustRemove(t, p)
	mustWrite(t, p, b)
}

// editSymlink replaces the backing symlink p by one whose target is its
// target with edit applied.
func editSymlink(t *testing.T, p string, edit func([]byte)) {
	t.Helper()
	target, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	s := []byte(target)
	edit(s)
	if bytes.Equal(s, []byte(target)) {
		t.Fatalf("editSymlink %s: the target did not change", p)
	}
	mustRemove(t, p)
	if err := os.Symlink(string(s), p); err != nil {
		t.Fatal(err)
	}
}
