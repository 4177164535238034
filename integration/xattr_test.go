package integration

import (
	"bytes"
	"errors"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// keyXattr is the backing-file xattr holding the wrapped data key.
const keyXattr = "user.kmsfs.key"

// listXattr returns the xattr names of path (following symlinks).
func listXattr(t testing.TB, path string) []string {
	t.Helper()
	n, err := unix.Listxattr(path, nil)
	if err != nil {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	buf := make([]byte, n)
	n, err = unix.Listxattr(path, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	sort.Strings(names)
	return names
}

// getXattr returns the value of name on path.
func getXattr(path, name string) ([]byte, error) {
	n, err := unix.Getxattr(path, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	n, err = unix.Getxattr(path, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// TestXattrs covers user xattrs on files and directories through the mount:
// set, get, list, replace, create-only, remove, and persistence.
func TestXattrs(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	mustWrite(t, fs.Path("f"), []byte("data"))
	if err := unix.Mkdir(fs.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := randomBytes(newRand(7), 3000)
	for _, p := range []string{fs.Path("f"), fs.Path("d")} {
		if err := unix.Setxattr(p, "user.one", []byte("1"), 0); err != nil {
			t.Fatalf("setxattr %s: %v", p, err)
		}
		if err := unix.Setxattr(p, "user.big", big, 0); err != nil {
			t.Fatalf("setxattr big: %v", err)
		}
		if err := unix.Setxattr(p, "user.empty", nil, 0); err != nil {
			t.Fatalf("setxattr empty value: %v", err)
		}
		if err := unix.Setxattr(p, "user.one", []byte("x"), unix.XATTR_CREATE); !errors.Is(err, syscall.EEXIST) {
			t.Errorf("XATTR_CREATE on existing: %v, want EEXIST", err)
		}
		if err := unix.Setxattr(p, "user.none", []byte("x"), unix.XATTR_REPLACE); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("XATTR_REPLACE on missing: %v, want ENODATA", err)
		}
		if err := unix.Setxattr(p, "user.one", []byte("one"), unix.XATTR_REPLACE); err != nil {
			t.Errorf("XATTR_REPLACE: %v", err)
		}
		if err := unix.Setxattr(p, "user.gone", []byte("soon"), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Removexattr(p, "user.gone"); err != nil {
			t.Errorf("removexattr: %v", err)
		}
		if err := unix.Removexattr(p, "user.gone"); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("removexattr of a missing name: %v, want ENODATA", err)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, p := range []string{fs.Path("f"), fs.Path("d")} {
			if got := listXattr(t, p); strings.Join(got, ",") != "user.big,user.empty,user.one" {
				t.Errorf("%s: listxattr %s: %q", when, p, got)
			}
			for name, want := range map[string][]byte{"user.one": []byte("one"), "user.big": big, "user.empty": {}} {
				got, err := getXattr(p, name)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: getxattr %s %s: %d bytes, %v", when, p, name, len(got), err)
				}
			}
			if _, err := getXattr(p, "user.gone"); !errors.Is(err, syscall.ENODATA) {
				t.Errorf("%s: getxattr of a removed name: %v, want ENODATA", when, err)
			}
		}
		checkContent(t, fs.Path("f"), []byte("data"))
	}
	check("before remount")
	fs.Remount()
	check("after remount")
	// A small buffer gets ERANGE.
	if _, err := unix.Getxattr(fs.Path("f"), "user.big", make([]byte, 10)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("getxattr with a small buffer: %v, want ERANGE", err)
	}
}

// TestInternalXattrsHidden checks that the key xattr and every other
// user.kmsfs.* name are invisible and untouchable through the mount, while
// the backing file keeps its key xattr unchanged.
func TestInternalXattrsHidden(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	mustWrite(t, fs.Path("f"), []byte("secret data"))
	if err := unix.Mkdir(fs.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	before, err := getXattr(fs.Backing("f"), keyXattr)
	if err != nil {
		t.Fatalf("backing file has no %s: %v", keyXattr, err)
	}
	p := fs.Path("f")
	for _, name := range listXattr(t, p) {
		if strings.HasPrefix(name, "user.kmsfs.") {
			t.Errorf("listxattr through the mount shows internal %q", name)
		}
	}
	for _, name := range []string{keyXattr, "user.kmsfs.other", "user.kmsfs."} {
		if v, err := getXattr(p, name); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("getxattr %s through the mount: %d bytes, %v; want ENODATA (invisible)", name, len(v), err)
		}
		if err := unix.Setxattr(p, name, []byte("forged"), 0); err == nil {
			t.Errorf("setxattr %s through the mount succeeded", name)
		} else {
			t.Logf("setxattr %s: %v", name, err)
		}
		if err := unix.Setxattr(p, name, []byte("forged"), unix.XATTR_REPLACE); err == nil {
			t.Errorf("setxattr %s XATTR_REPLACE through the mount succeeded", name)
		}
		if err := unix.Removexattr(p, name); err == nil {
			t.Errorf("removexattr %s through the mount succeeded", name)
		}
		if err := unix.Setxattr(fs.Path("d"), name, []byte("forged"), 0); err == nil {
			t.Errorf("setxattr %s on a directory through the mount succeeded", name)
		}
	}
	after, err := getXattr(fs.Backing("f"), keyXattr)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("backing %s changed: %v", keyXattr, err)
	}
	for _, name := range []string{"user.kmsfs.other", "user.kmsfs."} {
		if _, err := getXattr(fs.Backing("f"), name); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("backing file got %s: %v", name, err)
		}
	}
	checkContent(t, p, []byte("secret data"))

	t.Run("getfattr", func(t *testing.T) {
		requireTool(t, "getfattr")
		out, err := exec.Command("getfattr", "-d", "-m", "-", p).CombinedOutput()
		if err != nil {
			t.Fatalf("getfattr: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "user.kmsfs") {
			t.Errorf("getfattr -d -m - shows internal xattrs:\n%s", out)
		}
	})
}
