// POSIX ACLs on the mount: inheritance of default ACLs, the caller's umask,
// and the kernel's permission checks against access ACLs.

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobodyUID is the user the ACL tests grant access to by a named entry.
const nobodyUID = 65534

// requireACLTools skips (or fails under CI=true) without setfacl and getfacl
// (Debian package acl, installed by .ci/deps.sh).
func requireACLTools(t testing.TB) {
	t.Helper()
	requireTool(t, "sh")
	requireTool(t, "setfacl")
	requireTool(t, "getfacl")
}

// shellIn runs script with sh -e in dir as the test's user and returns its
// output; a failing command fails the test.
func shellIn(t testing.TB, dir, script string) string {
	t.Helper()
	return runShell(t, exec.Command("sh", "-ec", script), dir)
}

// shellAs is shellIn as uid/gid uid with no supplementary groups.
func shellAs(t testing.TB, uid uint32, dir, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	return runShell(t, cmd, dir)
}

func runShell(t testing.TB, cmd *exec.Cmd, dir string) string {
	t.Helper()
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %q: %v\n%s", dir, cmd.Args, err, out)
	}
	return string(out)
}

// plainAndMounted runs script in a plain directory of the backing
// filesystem (the same one as the CIPHERDIR) and at the root of the mount,
// and returns both outputs: the reference and kmsfs's.
func plainAndMounted(t testing.TB, fs *testFS, script string) (plain, mounted string) {
	t.Helper()
	dir := filepath.Join(fs.dir, "plain")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return shellIn(t, dir, script), shellIn(t, fs.Mnt, script)
}

// describeEntries is a shell fragment that prints, for each entry named in
// $entries, its mode and its ACLs with numeric IDs.
const describeEntries = `
for e in $entries; do
	echo "== $e $(stat -c %a "$e")"
	getfacl -n --omit-header "$e"
done`

// TestACLUmaskUnderDefaultACL checks, against the same commands in a plain
// directory of the backing filesystem, that entries created under a default
// ACL take their permissions from the ACL and the requested mode and that
// the caller's umask is ignored, as on ext4: under umask 722 a file made
// with mode 0666 in a directory whose default ACL has user::r-x is
// user::r--, not user::--- (the kernel applying the umask before kmsfs saw
// the request). Also: a minimal default ACL (no mask, no named entry),
// mknod, nested inheritance, and an unrelated directory next to them that
// still gets the umask.
func TestACLUmaskUnderDefaultACL(t *testing.T) {
	t.Parallel()
	requireACLTools(t)
	fs := newFS(t)
	script := `
mkdir d min nodefault
setfacl -d -m u::r-x,g::rwx,o::r-x,u:65534:rwx,g:65534:r-x,m::rwx d
setfacl -d -m u::rw-,g::r--,o::--- min
umask 722
touch d/file
mkdir d/sub
mkfifo d/fifo
touch d/sub/deeper
mkdir d/sub/deepdir
touch min/file
mkdir min/dir
touch nodefault/file
mkdir nodefault/dir
umask 0
touch d/umask0
mkdir d/umask0dir
entries="d d/file d/sub d/fifo d/sub/deeper d/sub/deepdir min/file min/dir nodefault/file nodefault/dir d/umask0 d/umask0dir"
` + describeEntries
	plain, mounted := plainAndMounted(t, fs, script)
	if plain != mounted {
		t.Errorf("getfacl differs between a plain directory and kmsfs\nplain:\n%s\nkmsfs:\n%s", plain, mounted)
	}
	if !strings.Contains(plain, "== d/file 464\n") {
		t.Errorf("reference run does not show the case the test is about (d/file mode 464):\n%s", plain)
	}
}

// TestACLDefaultInherited checks that a default ACL on a directory reaches
// new files (as their access ACL, masked by the requested mode, with the
// umask ignored) and new subdirectories (as both their access and their
// default ACL), and through them the next level down.
func TestACLDefaultInherited(t *testing.T) {
	t.Parallel()
	requireACLTools(t)
	fs := newFS(t)
	shellIn(t, fs.Mnt, `
mkdir top
setfacl -d -m u:65534:rw-,g::r-x top
umask 022
touch top/file
mkdir top/sub
touch top/sub/file
mkdir top/sub/subsub
`)
	want := map[string][]string{
		// 0666 requested: the mask keeps rw-, the umask's w cut is not
		// applied, so the named entry is fully effective.
		"top/file": {"user:65534:rw-\n", "group::r-x\t#effective:r--\n", "mask::rw-\n", "other::r--\n"},
		"top/sub": {"user:65534:rw-\n", "mask::rwx\n", "default:user:65534:rw-\n",
			"default:group::r-x\n", "default:mask::rwx\n"},
		"top/sub/file":   {"user:65534:rw-\n", "mask::rw-\n"},
		"top/sub/subsub": {"user:65534:rw-\n", "default:user:65534:rw-\n", "default:mask::rwx\n"},
	}
	for name, lines := range want {
		out := shellIn(t, fs.Mnt, "getfacl -n --omit-header "+name)
		for _, l := range lines {
			if !strings.Contains(out, l) {
				t.Errorf("getfacl %s lacks %q:\n%s", name, l, out)
			}
		}
		// The ACL lives on the backing entry (the backing filesystem's
		// own ACL), so the CIPHERDIR shows the same.
	}
	var st syscall.Stat_t
	if err := syscall.Stat(fs.Path("top", "file"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o664 {
		t.Errorf("top/file: mode %o, want 664 (group bits are the ACL mask)", st.Mode&0o777)
	}
}

// readAs runs cat on path as uid/gid with no supplementary groups and
// reports whether it could read, with cat's output.
func readAs(uid uint32, path string) (bool, string) {
	cmd := exec.Command("cat", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return err == nil, string(out)
}

// TestACLAccessEntryChecked checks that the kernel's permission checks on an
// --allow-other mount honour access ACLs, and that it never decides on a
// stale one: a named-user entry granting read on a 0600 file lets that user
// read; chmod (which rewrites the ACL mask), removing the entry and a new
// file inheriting the entry from a default ACL all take effect at once.
func TestACLAccessEntryChecked(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	requireACLTools(t)
	fs := newFS(t, WithMountArgs("--allow-other"))
	for _, d := range []string{tempRoot, fs.dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	p := fs.Path("secret")
	if err := os.WriteFile(p, []byte("for nobody"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	step := func(what, script string, wantRead bool) {
		t.Helper()
		if script != "" {
			shellIn(t, fs.Mnt, script)
		}
		ok, out := readAs(nobodyUID, p)
		if ok != wantRead {
			acl := shellIn(t, fs.Mnt, "getfacl -n --omit-header secret")
			t.Errorf("%s: uid %d read %v (%q), want %v; ACL:\n%s", what, nobodyUID, ok, out, wantRead, acl)
		}
		if ok && out != "for nobody" {
			t.Errorf("%s: uid %d read %q", what, nobodyUID, out)
		}
	}
	step("mode 0600, no ACL", "", false)
	step("setfacl -m u:65534:r", "setfacl -m u:65534:r-- secret", true)
	step("chmod 600 (mask ---)", "chmod 600 secret", false)
	step("chmod 640 (mask r--)", "chmod 640 secret", true)
	step("setfacl -x u:65534", "setfacl -x u:65534 secret", false)

	// A file inheriting the grant from its directory's default ACL, created
	// with mode 0600 as the umask would never give it.
	shellIn(t, fs.Mnt, "mkdir shared && chmod 711 shared && setfacl -d -m u:65534:r-- shared")
	q := fs.Path("shared", "inherited")
	if err := os.WriteFile(q, []byte("inherited"), 0o640); err != nil {
		t.Fatal(err)
	}
	if ok, out := readAs(nobodyUID, q); !ok || out != "inherited" {
		acl := shellIn(t, fs.Mnt, "getfacl -n --omit-header shared/inherited")
		t.Errorf("file under a default ACL granting uid %d read: read %v %q; ACL:\n%s", nobodyUID, ok, out, acl)
	}
}

// TestACLNoDefaultUmask checks that without a default ACL the caller's umask
// still applies exactly once, as before ACL support: files, directories and
// FIFOs, under umask 027 and umask 0, with no ACL left on them, matching
// the same commands in a plain directory.
func TestACLNoDefaultUmask(t *testing.T) {
	t.Parallel()
	requireACLTools(t)
	fs := newFS(t)
	script := `
umask 027
touch f
mkdir d
mkfifo p
umask 0
touch f0
mkdir d0
umask 777
touch f777
mkdir d777
entries="f d p f0 d0 f777 d777"
` + describeEntries
	plain, mounted := plainAndMounted(t, fs, script)
	if plain != mounted {
		t.Errorf("modes differ between a plain directory and kmsfs\nplain:\n%s\nkmsfs:\n%s", plain, mounted)
	}
	for name, mode := range map[string]uint32{"f": 0o640, "d": 0o750, "p": 0o640, "f0": 0o666, "d0": 0o777,
		"f777": 0, "d777": 0} {
		var st syscall.Stat_t
		if err := syscall.Lstat(fs.Path(name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != mode {
			t.Errorf("%s: mode %o, want %o", name, st.Mode&0o7777, mode)
		}
	}
}

// TestACLSetgidCleared checks, against a plain directory, that an owner who
// is not in a file's group loses the set-group-ID bit when setting an
// access ACL on it, as on a local filesystem (the kernel flags the request;
// the root daemon's backing filesystem would keep the bit), and that root
// keeps it.
func TestACLSetgidCleared(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	requireACLTools(t)
	fs := newFS(t, WithMountArgs("--allow-other"))
	for _, d := range []string{tempRoot, fs.dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	setup := "touch mine root && chown 65534:0 mine && chmod 2775 mine root"
	plainDir := filepath.Join(fs.dir, "plain")
	if err := os.Mkdir(plainDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var got [2]string
	for i, dir := range []string{plainDir, fs.Mnt} {
		shellIn(t, dir, setup)
		shellAs(t, nobodyUID, dir, "setfacl -m u:4242:r-- mine")
		shellIn(t, dir, "setfacl -m u:4242:r-- root")
		got[i] = shellIn(t, dir, "stat -c '%n %a' mine root")
	}
	if got[0] != got[1] {
		t.Errorf("modes after setfacl differ: plain directory\n%skmsfs\n%s", got[0], got[1])
	}
	if want := "mine 775\nroot 2775\n"; got[0] != want {
		t.Errorf("reference run gave\n%swant\n%s", got[0], want)
	}
}
