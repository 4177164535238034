package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// credential runs `kmsfs keysvc credentials --policy FILE NAME` on ks's
// keystore with the policy text and returns the access key and secret.
func (ks *keyServer) credential(t *testing.T, name, policy string) (accessKey, secret string) {
	t.Helper()
	file := filepath.Join(filepath.Dir(ks.Keystore), name+"-policy.json")
	if err := os.WriteFile(file, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runKmsfs(t, ks.kmsfsEnv(), "keysvc", "credentials", "--policy", file, name)
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "AWS_ACCESS_KEY_ID="); ok {
			accessKey = v
		}
		if v, ok := strings.CutPrefix(line, "AWS_SECRET_ACCESS_KEY="); ok {
			secret = v
		}
	}
	if accessKey == "" || secret == "" {
		t.Fatalf("kmsfs keysvc credentials printed %q", out)
	}
	return accessKey, secret
}

// TestMountWithLeastPrivilegeCredential mounts a filesystem on `kmsfs
// keysvc serve` with a credential holding only the mount policy of doc/SECURITY.md
// (keysvc/kmsserver/testdata/policies/mount.json) for its key and filesystem
// ID: files are written and read back after a remount (no cached data
// key). A second filesystem on the same key is out of that credential's
// reach; revoking the credential stops the mount's next KMS call.
func TestMountWithLeastPrivilegeCredential(t *testing.T) {
	ks := startKeyServer(t)
	keyID := strings.TrimSpace(runKmsfs(t, ks.kmsfsEnv(), "key", "create", "--description", "least privilege"))
	newAdminFS := func() *testFS {
		return newFS(t, WithInitArgs("--kms", "aws", "--key", keyID, "--kms-endpoint", ks.Endpoint),
			WithMountArgs("--kms-endpoint", ks.Endpoint), WithEnv(ks.AWSEnv()...), WithoutMount())
	}
	fs, other := newAdminFS(), newAdminFS()
	tmpl, err := os.ReadFile(filepath.Join("..", "keysvc", "kmsserver", "testdata", "policies", "mount.json"))
	if err != nil {
		t.Fatal(err)
	}
	policy := strings.NewReplacer("KEY_ID", keyID, "FS_ID", fs.Config().FilesystemID).Replace(string(tmpl))
	ak, secret := ks.credential(t, "host-a", policy)
	asHost := []string{"AWS_ACCESS_KEY_ID=" + ak, "AWS_SECRET_ACCESS_KEY=" + secret}
	fs.env = append(fs.env, asHost...)
	other.env = append(other.env, asHost...)

	fs.Mount()
	data := bytes.Repeat([]byte("least privilege\n"), 4096)
	if err := os.WriteFile(fs.Path("a.txt"), data, 0o600); err != nil {
		t.Fatalf("write as host-a: %v", err)
	}
	fs.Remount()
	if got, err := os.ReadFile(fs.Path("a.txt")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back as host-a after remount: %v", err)
	}

	// The other filesystem's keys carry another kmsfs:fs: its names key
	// does not unwrap, so the mount fails (exit 4) before any file.
	res := other.Exec("mount", "--kms-endpoint", ks.Endpoint, other.CipherDir, other.Mnt)
	if res.Code != 4 || !strings.Contains(res.Stderr, "names key") || !strings.Contains(res.Stderr, "AccessDenied") {
		t.Fatalf("mounting another filesystem as host-a: exit %d, want 4 naming the names key and AccessDenied\n%s", res.Code, res.Stderr)
	}

	// Revoked: the next data key request fails.
	runKmsfs(t, ks.kmsfsEnv(), "keysvc", "credentials", "revoke", "host-a")
	if err := os.WriteFile(fs.Path("c.txt"), []byte("x"), 0o600); err == nil {
		t.Fatal("host-a created a file after its credential was revoked")
	}
	audit, _ := os.ReadFile(ks.AuditLog)
	if !bytes.Contains(audit, []byte(`"caller":"arn:aws:iam::000000000000:user/host-a"`)) ||
		!bytes.Contains(audit, []byte(`"result":"AccessDeniedException"`)) ||
		!bytes.Contains(audit, []byte(`"result":"UnrecognizedClientException"`)) {
		t.Fatalf("audit log lacks host-a's calls, its denial or its revoked request:\n%s", audit)
	}
}
