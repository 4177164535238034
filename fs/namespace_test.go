package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
)

func TestRenameFlags(t *testing.T) {
	tf := mountFS(t)
	os.WriteFile(tf.path("a"), []byte("A"), 0o600)
	os.WriteFile(tf.path("b"), []byte("B"), 0o600)
	os.Mkdir(tf.path("d"), 0o755)
	if err := unix.Renameat2(unix.AT_FDCWD, tf.path("a"), unix.AT_FDCWD, tf.path("b"), unix.RENAME_NOREPLACE); err != unix.EEXIST {
		t.Fatalf("RENAME_NOREPLACE over existing: %v", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tf.path("a"), unix.AT_FDCWD, tf.path("b"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	if string(readFile(t, tf.path("a"))) != "B" || string(readFile(t, tf.path("b"))) != "A" {
		t.Fatal("RENAME_EXCHANGE did not swap")
	}
	if err := os.Rename(tf.path("a"), tf.path("d/a2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tf.path("b"), tf.path("d/a2")); err != nil {
		t.Fatal(err)
	}
	if string(readFile(t, tf.path("d/a2"))) != "A" {
		t.Fatal("rename over existing")
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tf.path("d/a2"), unix.AT_FDCWD, tf.path("c"), unix.RENAME_NOREPLACE); err != nil {
		t.Fatal(err)
	}
	if string(readFile(t, tf.path("c"))) != "A" {
		t.Fatal("RENAME_NOREPLACE to a new name")
	}
	if err := os.Rename(tf.path("c"), tf.path(cipherdir.ConfigName)); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("rename onto the config name: %v, want EPERM", err)
	}
}

// TestLinks checks hard links (one content and file ID under two names)
// and symbolic links (targets kept as written, never followed in the
// backing tree).
func TestLinks(t *testing.T) {
	tf := mountFS(t)
	t.Run("hard link shares content and file ID", func(t *testing.T) {
		os.WriteFile(tf.path("orig"), []byte("shared"), 0o600)
		os.Mkdir(tf.path("dir"), 0o700)
		if err := os.Link(tf.path("orig"), tf.path("dir/link")); err != nil {
			t.Fatal(err)
		}
		f, _ := os.OpenFile(tf.path("dir/link"), os.O_WRONLY|os.O_APPEND, 0)
		f.WriteString(" content")
		f.Close()
		if got := string(readFile(t, tf.path("orig"))); got != "shared content" {
			t.Fatalf("through the other name: %q", got)
		}
		var s1, s2 syscall.Stat_t
		syscall.Stat(tf.path("orig"), &s1)
		syscall.Stat(tf.path("dir/link"), &s2)
		if s1.Ino != s2.Ino || s1.Nlink != 2 {
			t.Fatalf("inodes %d %d nlink %d", s1.Ino, s2.Ino, s1.Nlink)
		}
		i1, _ := cipherdir.FileInfo(tf.backing("orig"))
		i2, _ := cipherdir.FileInfo(tf.backing("dir/link"))
		if i1.FileID != i2.FileID || i1.FileID == "" {
			t.Fatalf("file IDs %q %q", i1.FileID, i2.FileID)
		}
		os.Remove(tf.path("orig"))
		if got := string(readFile(t, tf.path("dir/link"))); got != "shared content" {
			t.Fatalf("after unlinking the first name: %q", got)
		}
	})
	t.Run("symlink targets kept and backing links not followed", func(t *testing.T) {
		os.Mkdir(tf.path("dir"), 0o755)
		os.WriteFile(tf.path("dir/file"), []byte("x"), 0o600)
		if err := os.Symlink("dir", tf.path("ldir")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/nonexistent/target", tf.path("dangling")); err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(tf.path("ldir")); err != nil || got != "dir" {
			t.Fatalf("readlink %q %v", got, err)
		}
		if string(readFile(t, tf.path("ldir/file"))) != "x" {
			t.Fatal("through symlink")
		}
		fi, err := os.Lstat(tf.path("dangling"))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("lstat %v %v", fi, err)
		}
		long := strings.Repeat("a/", 2000) + "b"
		if err := os.Symlink(long, tf.path("long")); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.Readlink(tf.path("long")); got != long {
			t.Fatal("long target")
		}
		// A symlink in the backing tree is never followed where the plaintext
		// operation would not: a backing symlink to the outside stays a link.
		outside := t.TempDir()
		os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600)
		os.Symlink(outside, tf.backing("escape"))
		if fi, err := os.Lstat(tf.path("escape")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("backing symlink: %v %v", fi, err)
		}
		if _, err := os.Lstat(filepath.Join(outside, "x")); err == nil {
			t.Fatal("unexpected")
		}
	})
}

// TestMkdirModes checks the modes mkdir gives, set-group-ID inheritance,
// chmod, chown, fsync and rmdir of a directory.
func TestMkdirModes(t *testing.T) {
	tf := mountFS(t)
	for _, mode := range []os.FileMode{0o151, 0o700, 0o755, 0} {
		t.Run(fmt.Sprintf("mkdir %#o", uint32(mode)), func(t *testing.T) {
			p := tf.path("d" + mode.String())
			if err := syscall.Mkdir(p, uint32(mode)); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if want := mode &^ currentUmask(); fi.Mode().Perm() != want {
				t.Errorf("mkdir %o: mode %o, want %o", mode, fi.Mode().Perm(), want)
			}
		})
	}
	os.Mkdir(tf.path("sg"), 0o755)
	if err := syscall.Chmod(tf.path("sg"), 0o2755); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(tf.path("sg/child"), 0o755)
	if fi, _ := os.Lstat(tf.path("sg/child")); fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("directory in a set-group-ID directory lost S_ISGID: %v", fi.Mode())
	}
	if err := os.Chmod(tf.path("sg"), 0o711); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(tf.path("sg")); fi.Mode().Perm() != 0o711 {
		t.Errorf("chmod: %v", fi.Mode())
	}
	if err := os.Chown(tf.path("sg"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Lstat(tf.path("sg"), &st)
	if st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("chown: %d:%d", st.Uid, st.Gid)
	}
	d, err := os.Open(tf.path("sg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Errorf("fsync of a directory: %v", err)
	}
	d.Close()
	if err := os.Remove(tf.path("sg")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir of non-empty: %v", err)
	}
}

func TestMknod(t *testing.T) {
	tf := mountFS(t)
	if err := unix.Mkfifo(tf.path("fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(tf.path("fifo"))
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("fifo: %v %v", fi, err)
	}
	if err := unix.Mknod(tf.path("sock"), unix.S_IFSOCK|0o600, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(tf.path("reg"), unix.S_IFREG|0o600, 0); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tf.path("reg"), []byte("via mknod"), 0o600)
	if string(readFile(t, tf.path("reg"))) != "via mknod" {
		t.Fatal("regular file made by mknod")
	}
	tf.checkBacking(t, "reg", []byte("via mknod"))
}

func TestLongPaths(t *testing.T) {
	tf := mountFS(t)
	// Walk down with openat so no single path passed to the kernel gets
	// near PATH_MAX, while the backing path exceeds it.
	dirfd, err := unix.Open(tf.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	comp := strings.Repeat("d", 250)
	for i := 0; i < 20; i++ { // 20 * 251 bytes > 4096
		if err := unix.Mkdirat(dirfd, comp, 0o755); err != nil {
			t.Fatalf("depth %d: %v", i, err)
		}
		next, err := unix.Openat(dirfd, comp, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(dirfd)
		if err != nil {
			t.Fatalf("depth %d: %v", i, err)
		}
		dirfd = next
	}
	defer unix.Close(dirfd)
	fd, err := unix.Openat(dirfd, "file", unix.O_CREAT|unix.O_RDWR|unix.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(fd, []byte("deep"))
	unix.Close(fd)
	fd, err = unix.Openat(dirfd, "file", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	n, _ := unix.Read(fd, buf)
	unix.Close(fd)
	if string(buf[:n]) != "deep" {
		t.Fatalf("read %q", buf[:n])
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, "file", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Size != 4 {
		t.Fatalf("stat: %v size %d", err, st.Size)
	}
}
