package integration

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// headerMagic starts every non-empty backing file; recordMagic starts every
// key xattr value.
const (
	headerMagic = "KMSF"
	recordMagic = "KMSK"
)

// TestCiphertextOnly writes distinctive plaintext in every way a user can
// (write, append, sparse write, mmap, truncate, rename, hard link, nested
// directories) and then proves that no backing file or xattr contains any of
// it, that every backing regular file carries the key xattr, and that the
// backing sizes and headers follow the format.
func TestCiphertextOnly(t *testing.T) {
	t.Parallel()
	tfs := newFS(t)
	cs := tfs.ChunkSize
	r := newRand(99)
	marker := func(name string) []byte { return []byte("KMSFS-PLAINTEXT-MARKER-" + name + "|") }
	repeat := func(name string, n int) []byte {
		return bytes.Repeat(marker(name), n/len(marker(name))+1)[:n]
	}
	var markers [][]byte
	write := func(name string, data []byte) {
		t.Helper()
		markers = append(markers, marker(filepath.Base(name)))
		mustWrite(t, tfs.Path(name), data)
	}
	write("text", repeat("text", 10<<10))
	write("exact", repeat("exact", cs))
	write("tiny", marker("tiny"))
	write("empty", nil)
	if err := os.MkdirAll(tfs.Path("sub", "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("sub/dir/nested", repeat("nested", 3*cs+7))
	write("torename", repeat("torename", 5000))
	if err := os.Rename(tfs.Path("torename"), tfs.Path("sub", "renamed")); err != nil {
		t.Fatal(err)
	}
	write("truncated", repeat("truncated", 4*cs))
	if err := os.Truncate(tfs.Path("truncated"), int64(2*cs+cs/2)); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(tfs.Path("text"), tfs.Path("hardlink")); err != nil {
		t.Fatal(err)
	}
	// Sparse: a marker far past EOF.
	markers = append(markers, marker("sparse"))
	f, err := os.Create(tfs.Path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(repeat("sparse", 100), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Appended in small pieces.
	markers = append(markers, marker("appended"))
	f, err = os.OpenFile(tfs.Path("appended"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := f.Write(marker("appended")); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	// Through a shared mapping.
	markers = append(markers, marker("mmapped"))
	f, err = os.Create(tfs.Path("mmapped"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3 * 4096); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, 3*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(m, repeat("mmapped", len(m)))
	unix.Msync(m, unix.MS_SYNC)
	unix.Munmap(m)
	f.Close()
	// Random content: look for 32-byte windows of it.
	random := randomBytes(r, 64<<10)
	mustWrite(t, tfs.Path("random"), random)
	for off := 0; off+32 <= len(random); off += 4000 {
		markers = append(markers, random[off:off+32])
	}
	// User xattr values are not the content; still, a marker in the content
	// must not leak into any xattr of the backing file.

	// Names, symlink targets and user xattrs (names and values), each
	// with a marker no encoding makes by chance (upper case and '-').
	nameMark := "KMSFS-NAME-MARKER-"
	if err := os.Mkdir(tfs.Path(nameMark+"dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(nameMark+"dir/"+nameMark+"file", marker("named"))
	write(nameMark+strings.Repeat("long", 55), marker("longnamed")) // 238 bytes: a sidecar
	if err := os.Symlink(nameMark+"target", tfs.Path("link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(nameMark+strings.Repeat("t", 3000), tfs.Path("longlink")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"tiny", nameMark + "dir"} {
		if err := unix.Setxattr(tfs.Path(p), "user."+nameMark+"xattr", marker("xattrvalue"), 0); err != nil {
			t.Fatal(err)
		}
	}
	markers = append(markers, []byte(nameMark), marker("xattrvalue"))

	tfs.Unmount()

	type backingFile struct {
		rel    string
		plain  string // its path in the mount
		ino    uint64
		size   int64
		record []byte
	}
	var files []backingFile
	err = filepath.WalkDir(tfs.CipherDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tfs.CipherDir, path)
		if strings.Contains(rel, nameMark) {
			t.Errorf("backing path %s contains a plaintext name", rel)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if l, err := os.Readlink(path); err != nil || strings.Contains(l, nameMark) {
				t.Errorf("backing symlink %s: target %q, %v", rel, l, err)
			}
		}
		data, rerr := os.ReadFile(path)
		if d.Type().IsRegular() && rerr != nil {
			return rerr
		}
		for _, mk := range markers {
			if bytes.Contains(data, mk) {
				t.Errorf("backing %s contains plaintext %q", rel, short(mk))
			}
		}
		xnames := listXattrNoFollow(t, path)
		for _, name := range xnames {
			if strings.Contains(name, nameMark) {
				t.Errorf("xattr name %s of backing %s is in plaintext", name, rel)
			}
			v, err := lgetXattr(path, name)
			if err != nil {
				t.Errorf("lgetxattr %s %s: %v", rel, name, err)
				continue
			}
			for _, mk := range markers {
				if bytes.Contains(v, mk) {
					t.Errorf("xattr %s of backing %s contains plaintext %q", name, rel, short(mk))
				}
			}
		}
		if !d.Type().IsRegular() || rel == configName {
			return nil
		}
		if !isUserEntry(true, !strings.Contains(rel, "/"), d.Name()) || strings.HasPrefix(rel, "kmsfs.targets/") {
			return nil // kmsfs's own: the config's copy, ID files, sidecars, long targets
		}
		rec, err := lgetXattr(path, keyXattr)
		if err != nil {
			t.Errorf("backing file %s has no %s xattr: %v", rel, keyXattr, err)
		} else if !bytes.HasPrefix(rec, []byte(recordMagic)) {
			t.Errorf("backing %s: %s does not start with %q", rel, keyXattr, recordMagic)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		files = append(files, backingFile{rel: rel, plain: tfs.Plain(rel), ino: st.Ino, size: st.Size, record: rec})
		if len(data) > 0 && !bytes.HasPrefix(data, []byte(headerMagic)) {
			t.Errorf("backing %s does not start with %q", rel, headerMagic)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 12 {
		t.Errorf("found %d backing regular files, want at least 12", len(files))
	}
	// Every inode has its own wrapped key and file ID; hard links share.
	seenRecord := map[string]uint64{}
	seenID := map[string]uint64{}
	for _, f := range files {
		if prev, ok := seenRecord[string(f.record)]; ok && prev != f.ino {
			t.Errorf("backing %s reuses another file's wrapped key", f.rel)
		}
		seenRecord[string(f.record)] = f.ino
		if f.size >= 56 {
			id := fileIDOf(t, tfs.BackingRaw(f.rel))
			if prev, ok := seenID[id]; ok && prev != f.ino {
				t.Errorf("backing %s reuses file ID %s", f.rel, id)
			}
			seenID[id] = f.ino
		}
	}

	// Backing sizes follow from plaintext sizes.
	tfs.Mount()
	for _, f := range files {
		fi, err := os.Stat(tfs.Path(f.plain))
		if err != nil {
			t.Errorf("%s: %v", f.plain, err)
			continue
		}
		want := backingSize(fi.Size(), cs)
		if fi.Size() == 0 && f.size == 0 {
			want = 0
		}
		if f.size != want {
			t.Errorf("%s: plaintext %d bytes, backing %d bytes, want %d", f.rel, fi.Size(), f.size, want)
		}
	}
	checkContent(t, tfs.Path("random"), random)
	checkContent(t, tfs.Path("hardlink"), repeat("text", 10<<10))
	checkContent(t, tfs.Path("truncated"), repeat("truncated", 4*cs)[:2*cs+cs/2])
}

// fileIDOf returns the hex file ID from the header of a backing file, laid
// out as chunk/FORMAT.md specifies: magic(4) version(2) algorithm(1) chunk
// size(4) file ID(16) flags(1).
func fileIDOf(t testing.TB, backing string) string {
	t.Helper()
	f, err := os.Open(backing)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := make([]byte, 28)
	if _, err := f.ReadAt(h, 0); err != nil {
		t.Fatalf("reading header of %s: %v", backing, err)
	}
	if string(h[:4]) != headerMagic {
		t.Fatalf("%s: no kmsfs header", backing)
	}
	return hex.EncodeToString(h[11:27])
}

// listXattrNoFollow lists the xattr names of path itself.
func listXattrNoFollow(t testing.TB, path string) []string {
	t.Helper()
	n, err := unix.Llistxattr(path, nil)
	if err != nil {
		t.Fatalf("llistxattr %s: %v", path, err)
	}
	buf := make([]byte, n)
	n, err = unix.Llistxattr(path, buf)
	if err != nil {
		t.Fatalf("llistxattr %s: %v", path, err)
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names
}

// lgetXattr reads xattr name of path itself.
func lgetXattr(path, name string) ([]byte, error) {
	n, err := unix.Lgetxattr(path, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	n, err = unix.Lgetxattr(path, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// short renders a marker for an error message.
func short(b []byte) string {
	if len(b) > 40 {
		b = b[:40]
	}
	return fmt.Sprintf("%q", b)
}
