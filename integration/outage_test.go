package integration

import (
	"bytes"
	"errors"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// restartKeyServer starts `kmsfs keysvc serve` again on the address and
// with the keystore ks was started with, after ks.Stop, so that a mount
// pointed at ks.Endpoint finds it again.
func restartKeyServer(t *testing.T, ks *keyServer) {
	t.Helper()
	u, err := url.Parse(ks.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if ep := ks.serve(u.Host); ep != ks.Endpoint {
		t.Fatalf("kmsfs keysvc serve came back on %s, want %s", ep, ks.Endpoint)
	}
}

// timed runs op and returns its duration and error; it fails the test when
// op has not returned after a minute (a hang).
func timed(t *testing.T, what string, op func() error) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- op() }()
	select {
	case err := <-errc:
		return time.Since(start), err
	case <-time.After(time.Minute):
		t.Fatalf("%s hangs", what)
		return 0, nil
	}
}

// TestOutageKeyServer mounts on --kms aws pointed at `kmsfs keysvc serve`
// and stops the server (SIGTERM: connections are refused from then on;
// TestMountOnKeyServer covers a frozen server). While it is down:
//   - a file open before the outage keeps reading and writing, also after
//     --cache-max-age has passed and its key is due for re-validation
//     (an unreachable key service does not revoke it; one log line says so);
//   - a file whose data key is in the DEK cache opens again (cache hit);
//   - opening a file whose key is not cached, and creating a file, fail
//     with EIO within a few seconds, and the log names the key service;
//   - listing works.
//
// When the server is back on the same address, everything works again
// without a remount.
func TestOutageKeyServer(t *testing.T) {
	t.Parallel()
	ks := startKeyServer(t)
	keyID := strings.TrimSpace(runKmsfs(t, ks.kmsfsEnv(), "key", "create", "--description", "outage"))
	const maxAge = 6 * time.Second
	fs := newFS(t,
		WithInitArgs("--kms", "aws", "--key", keyID, "--kms-endpoint", ks.Endpoint),
		WithMountArgs("--kms-endpoint", ks.Endpoint, "--cache-max-age", maxAge.String()),
		WithEnv(ks.AWSEnv()...))
	r := newRand(testSeed(t))
	content := map[string][]byte{}
	for _, name := range []string{"open.dat", "cached.dat", "cold.dat"} {
		content[name] = randomBytes(r, 100000)
		mustWrite(t, fs.Path(name), content[name])
	}
	// A fresh daemon: no data key cached.
	fs.Remount()

	open, err := os.OpenFile(fs.Path("open.dat"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	checkContent(t, fs.Path("cached.dat"), content["cached.dat"]) // caches its key, then closes
	cachedAt := time.Now()

	ks.Stop()
	down := time.Now()

	// The open file reads and writes from its cipher.
	rw := func(when string) {
		t.Helper()
		patch := randomBytes(r, 5000)
		off := r.Int64N(int64(len(content["open.dat"])))
		d, err := timed(t, "write to the open file", func() error { _, err := open.WriteAt(patch, off); return err })
		if err != nil {
			t.Errorf("%s: write to the file open before the outage: %v", when, err)
			return
		}
		if end := off + int64(len(patch)); end > int64(len(content["open.dat"])) {
			content["open.dat"] = append(content["open.dat"], make([]byte, end-int64(len(content["open.dat"])))...)
		}
		copy(content["open.dat"][off:], patch)
		got := make([]byte, len(content["open.dat"]))
		if _, err := open.ReadAt(got, 0); err != nil {
			t.Errorf("%s: read of the file open before the outage: %v", when, err)
		} else if !bytes.Equal(got, content["open.dat"]) {
			t.Errorf("%s: the open file reads back wrong at %d", when, firstDiff(got, content["open.dat"]))
		}
		t.Logf("%s: write to the open file took %v", when, d.Round(time.Millisecond))
	}
	rw("key server down")

	// A cached key: a new open works while the cache entry is younger
	// than --cache-max-age.
	d, err := timed(t, "open of a file with a cached key", func() error {
		got, err := os.ReadFile(fs.Path("cached.dat"))
		if err == nil && !bytes.Equal(got, content["cached.dat"]) {
			err = errors.New("content differs")
		}
		return err
	})
	if time.Since(cachedAt) < maxAge {
		if err != nil {
			t.Errorf("open of a file whose key is cached, key server down: %v", err)
		}
		t.Logf("open with a cached key: %v in %v", err, d.Round(time.Millisecond))
	}

	// Uncached open and create fail fast with EIO.
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"open of a file whose key is not cached", func() error { _, err := os.ReadFile(fs.Path("cold.dat")); return err }},
		{"create", func() error { return os.WriteFile(fs.Path("new.dat"), []byte("x"), 0o644) }},
	} {
		d, err := timed(t, tc.name, tc.op)
		t.Logf("%s with the key server down: %v after %v", tc.name, err, d.Round(time.Millisecond))
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s with the key server down: %v, want EIO", tc.name, err)
		}
		if d > 12*time.Second {
			t.Errorf("%s took %v to fail, want a few seconds", tc.name, d)
		}
	}
	if _, err := os.Stat(fs.Path("new.dat")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a create that failed left new.dat behind: %v", err)
	}
	if _, err := os.ReadDir(fs.Mnt); err != nil {
		t.Errorf("readdir with the key server down: %v", err)
	}
	if log := fs.Log(); !strings.Contains(log, "key service failure") {
		t.Errorf("the daemon log has no 'key service failure' line:\n%s", log)
	}

	// Past --cache-max-age the open file's key is due for re-validation,
	// which cannot reach the key service: the file keeps working.
	if wait := time.Until(down.Add(maxAge + time.Second)); wait > 0 {
		time.Sleep(wait) // the cache age is wall-clock time
	}
	rw("key server down, past --cache-max-age")
	if err := unix.Fsync(int(open.Fd())); err != nil {
		t.Errorf("fsync of the open file, key server down: %v", err)
	}
	for _, line := range strings.Split(fs.Log(), "\n") {
		if strings.Contains(line, "re-validate") {
			t.Logf("daemon log: %.200s…", line)
		}
	}

	// The server comes back on the same address: no remount needed.
	restartKeyServer(t, ks)
	checkContent(t, fs.Path("cold.dat"), content["cold.dat"])
	mustWrite(t, fs.Path("new.dat"), []byte("after the outage"))
	checkContent(t, fs.Path("new.dat"), []byte("after the outage"))
	rw("key server back")
	if err := open.Close(); err != nil {
		t.Fatal(err)
	}
	fs.Remount()
	for _, name := range []string{"open.dat", "cached.dat", "cold.dat"} {
		checkContent(t, fs.Path(name), content[name])
	}
}
