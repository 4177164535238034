package integration

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// setConfigKey rewrites key_id in CIPHERDIR/kmsfs.conf (the tree is not
// mounted).
func (fs *testFS) setConfigKey(from, to string) {
	fs.t.Helper()
	p := fs.BackingRaw(configName)
	b, err := os.ReadFile(p)
	if err != nil {
		fs.t.Fatal(err)
	}
	s := strings.Replace(string(b), `"key_id": "`+from+`"`, `"key_id": "`+to+`"`, 1)
	if s == string(b) {
		fs.t.Fatalf("no key_id %s in %s", from, b)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		fs.t.Fatal(err)
	}
}

// setPreviousKeys sets previous_keys in CIPHERDIR/kmsfs.conf (the tree is
// not mounted).
func (fs *testFS) setPreviousKeys(keys ...string) {
	fs.t.Helper()
	p := fs.BackingRaw(configName)
	b, err := os.ReadFile(p)
	if err != nil {
		fs.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		fs.t.Fatal(err)
	}
	m["previous_keys"] = keys
	if b, err = json.MarshalIndent(m, "", "  "); err != nil {
		fs.t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		fs.t.Fatal(err)
	}
}

// TestPlantedFileUnderForeignKey: someone who can write CIPHERDIR and
// holds another key the victim's credential may decrypt under plants a
// file whose key record names that key (and the victim's filesystem ID).
// The mount answers EIO and logs why, fsck reports untrusted-key (exit
// 10, and --repair leaves it: exit 11), and rewrap fails the file instead
// of adopting it under the filesystem's key.
func TestPlantedFileUnderForeignKey(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	own := fs.Config().KeyID
	mustWrite(t, fs.Path("mine"), []byte("the victim's file"))
	id := strings.TrimSpace(fs.Run("key", "create"))
	foreign := own[:strings.LastIndex(own, "/")+1] + id
	// The attacker's file: made by a mount of the same tree configured
	// with the attacker's key (and the filesystem's as a previous key, so
	// that the names key opens and the planted file gets a valid name).
	fs.Unmount()
	conf, err := os.ReadFile(fs.BackingRaw(configName))
	if err != nil {
		t.Fatal(err)
	}
	fs.setConfigKey(own, foreign)
	fs.setPreviousKeys(own)
	fs.Mount()
	mustWrite(t, fs.Path("planted"), []byte("attacker content"))
	fs.Unmount()
	if err := os.WriteFile(fs.BackingRaw(configName), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	fs.Mount()

	checkContent(t, fs.Path("mine"), []byte("the victim's file"))
	if b, err := os.ReadFile(fs.Path("planted")); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the planted file: %q, %v; want EIO", b, err)
	}
	fs.Unmount()
	if log := fs.Log(); !strings.Contains(log, "does not trust") {
		t.Errorf("no log line about the untrusted key:\n%s", log)
	}

	res := fs.Exec("fsck", fs.CipherDir)
	// v2 trees name the backing path beside the plaintext one.
	if res.Code != 10 || !regexp.MustCompile(`(?m)^planted( \(backing [^)]+\))?: `).MatchString(res.Stdout) || !strings.Contains(res.Stdout, "untrusted-key") {
		t.Errorf("fsck: exit %d, want 10 and untrusted-key for planted\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	res = fs.Exec("fsck", "--repair", fs.CipherDir)
	if res.Code != 11 || !strings.Contains(res.Stdout, "untrusted-key") {
		t.Errorf("fsck --repair: exit %d, want 11 (untrusted-key remains)\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	res = fs.Exec("rewrap", "--force", "--key", own, fs.CipherDir)
	if res.Code != 8 || !strings.Contains(res.Stderr, "does not trust") {
		t.Errorf("rewrap: exit %d, want 8 naming the untrusted file\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if fi := fs.info(fs.Backing("planted")); fi.KeyID != foreign {
		t.Errorf("rewrap re-wrapped the planted file under %s", fi.KeyID)
	}
}
