package integration

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// keyServer is a running `kmsfs keysvc serve` of one test, with its own
// keystore and one credential.
type keyServer struct {
	Endpoint  string
	Keystore  string
	AuditLog  string
	AccessKey string
	Secret    string

	t   testing.TB
	cmd *exec.Cmd
}

var serveLineRE = regexp.MustCompile(`serving the AWS KMS API on (http://127\.0\.0\.1:[0-9]+)`)

// startKeyServer creates a keystore and a credential named "it", starts
// `kmsfs keysvc serve --listen 127.0.0.1:0` and waits for its readiness
// line. Cleanup stops it.
func startKeyServer(t testing.TB) *keyServer {
	t.Helper()
	dir, err := os.MkdirTemp(tempRoot, "keysvc-"+sanitize(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	ks := &keyServer{Keystore: filepath.Join(dir, "keystore"), AuditLog: filepath.Join(dir, "audit.jsonl"), t: t}
	out := runKmsfs(t, ks.kmsfsEnv(), "keysvc", "credentials", "--admin", "it")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "AWS_ACCESS_KEY_ID=") || !strings.HasPrefix(lines[1], "AWS_SECRET_ACCESS_KEY=") {
		t.Fatalf("kmsfs keysvc credentials printed %q, want exactly the two AWS_ lines", out)
	}
	ks.AccessKey = strings.TrimPrefix(lines[0], "AWS_ACCESS_KEY_ID=")
	ks.Secret = strings.TrimPrefix(lines[1], "AWS_SECRET_ACCESS_KEY=")

	t.Cleanup(ks.Stop)
	ks.Endpoint = ks.serve("127.0.0.1:0")
	return ks
}

// serve starts `kmsfs keysvc serve --listen listen` on ks's keystore,
// waits for its readiness line and returns the endpoint it names. The
// server runs until ks.Stop.
func (ks *keyServer) serve(listen string) string {
	t := ks.t
	t.Helper()
	cmd := exec.Command(binPath, "keysvc", "serve", "--listen", listen, "--audit-log", ks.AuditLog)
	cmd.Env = append(os.Environ(), ks.kmsfsEnv()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ks.cmd = cmd
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := serveLineRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
				break
			}
		}
		close(found)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case ep, ok := <-found:
		if !ok {
			t.Fatalf("kmsfs keysvc serve on %s exited without its readiness line; stderr:\n%s", listen, stderr.String())
		}
		return ep
	case <-time.After(30 * time.Second):
		t.Fatalf("kmsfs keysvc serve on %s printed no readiness line within 30s; stderr:\n%s", listen, stderr.String())
	}
	return ""
}

func (ks *keyServer) kmsfsEnv() []string { return []string{"KMSFS_KEYSTORE=" + ks.Keystore} }

// cleanAWSEnv is os.Environ() without any AWS_ variable, so the user's own
// AWS configuration cannot leak into a test.
func cleanAWSEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	return env
}

// AWSEnv is the environment of an AWS client of the server: its credential,
// a region, and nothing from the user's own AWS configuration.
func (ks *keyServer) AWSEnv() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + ks.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + ks.Secret,
		"AWS_REGION=us-east-1",
		"AWS_DEFAULT_REGION=us-east-1",
		"AWS_CONFIG_FILE=/nonexistent",
		"AWS_SHARED_CREDENTIALS_FILE=/nonexistent",
		"AWS_PAGER=",
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Stop sends SIGTERM and waits (bounded) for a graceful exit.
func (ks *keyServer) Stop() {
	if ks.cmd == nil || ks.cmd.Process == nil {
		return
	}
	cmd := ks.cmd
	ks.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			ks.t.Errorf("kmsfs keysvc serve exited with %v after SIGTERM", err)
		}
	case <-time.After(exitTimeout):
		_ = cmd.Process.Kill()
		<-done
		ks.t.Errorf("kmsfs keysvc serve did not exit within %v of SIGTERM", exitTimeout)
	}
}

// awsCLI runs `aws kms …` against ks and returns stdout and stderr and
// whether it succeeded.
func (ks *keyServer) awsCLI(t *testing.T, extraEnv []string, args ...string) (string, string, error) {
	t.Helper()
	full := append([]string{"kms"}, args...)
	full = append(full, "--endpoint-url", ks.Endpoint, "--output", "json")
	cmd := exec.Command("aws", full...)
	cmd.Env = append(append(cleanAWSEnv(), ks.AWSEnv()...), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return stdout.String(), stderr.String(), err
	case <-time.After(commandTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("aws %s timed out", strings.Join(args, " "))
		return "", "", nil
	}
}

// aws runs an AWS CLI command that must succeed and decodes its JSON
// output (nil when empty).
func (ks *keyServer) aws(t *testing.T, args ...string) map[string]any {
	t.Helper()
	out, errOut, err := ks.awsCLI(t, nil, args...)
	if err != nil {
		t.Fatalf("aws kms %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	if strings.TrimSpace(out) == "" {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("aws kms %s: output is not JSON: %v\n%s", args[0], err, out)
	}
	return m
}

// awsFails runs an AWS CLI command that must fail with the AWS error code.
func (ks *keyServer) awsFails(t *testing.T, code string, extraEnv []string, args ...string) string {
	t.Helper()
	out, errOut, err := ks.awsCLI(t, extraEnv, args...)
	if err == nil {
		t.Fatalf("aws kms %s succeeded, want %s:\n%s", strings.Join(args, " "), code, out)
	}
	if !strings.Contains(errOut, "("+code+")") {
		t.Fatalf("aws kms %s failed with\n%s\nwant error code %s", strings.Join(args, " "), errOut, code)
	}
	return errOut
}

// str digs a string out of decoded JSON by path.
func str(t *testing.T, m map[string]any, path ...string) string {
	t.Helper()
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("JSON %v has no %s", m, strings.Join(path, "."))
		}
		v = mm[p]
	}
	s, ok := v.(string)
	if !ok {
		t.Fatalf("JSON %v: %s is %T, not a string", m, strings.Join(path, "."), v)
	}
	return s
}

// blobFile writes a base64 blob from the CLI's output to a file and returns
// its fileb:// reference.
func blobFile(t *testing.T, dir, name, b64 string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("%s is not base64: %v", name, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return "fileb://" + p
}

// TestAWSCLISession drives `kmsfs keysvc serve` with the real AWS CLI, the
// way an operator would drive AWS KMS.
func TestAWSCLISession(t *testing.T) {
	requireTool(t, "aws")
	ks := startKeyServer(t)
	dir := t.TempDir()

	created := ks.aws(t, "create-key", "--description", "kmsfs integration")
	keyID := str(t, created, "KeyMetadata", "KeyId")
	arn := str(t, created, "KeyMetadata", "Arn")
	if str(t, created, "KeyMetadata", "KeyState") != "Enabled" {
		t.Fatalf("create-key: %v", created)
	}
	ks.aws(t, "create-alias", "--alias-name", "alias/it", "--target-key-id", keyID)
	aliases := ks.aws(t, "list-aliases", "--key-id", keyID)
	if !strings.Contains(fmt.Sprint(aliases), "alias/it") {
		t.Fatalf("list-aliases: %v", aliases)
	}

	// A data key, and its blob decrypting to it.
	dk := ks.aws(t, "generate-data-key", "--key-id", "alias/it", "--key-spec", "AES_256")
	if str(t, dk, "KeyId") != arn {
		t.Fatalf("generate-data-key names %s, want %s", str(t, dk, "KeyId"), arn)
	}
	preRotation := blobFile(t, dir, "dk.blob", str(t, dk, "CiphertextBlob"))
	preMaterial := str(t, dk, "KeyMaterialId")
	dec := ks.aws(t, "decrypt", "--ciphertext-blob", preRotation)
	if str(t, dec, "Plaintext") != str(t, dk, "Plaintext") {
		t.Fatal("decrypt returned another data key")
	}

	// Encrypt and decrypt with an encryption context; a wrong one fails.
	if err := os.WriteFile(filepath.Join(dir, "msg"), []byte("attack at dawn"), 0o600); err != nil {
		t.Fatal(err)
	}
	enc := ks.aws(t, "encrypt", "--key-id", "alias/it", "--plaintext", "fileb://"+filepath.Join(dir, "msg"),
		"--encryption-context", "purpose=test,fs=0011")
	encBlob := blobFile(t, dir, "msg.blob", str(t, enc, "CiphertextBlob"))
	dec = ks.aws(t, "decrypt", "--ciphertext-blob", encBlob, "--encryption-context", "fs=0011,purpose=test")
	if got, _ := base64.StdEncoding.DecodeString(str(t, dec, "Plaintext")); string(got) != "attack at dawn" {
		t.Fatalf("decrypt with context = %q", got)
	}
	msg := ks.awsFails(t, "InvalidCiphertextException", nil, "decrypt", "--ciphertext-blob", encBlob, "--encryption-context", "purpose=prod,fs=0011")
	if strings.Contains(msg, "attack") {
		t.Fatalf("error echoes the plaintext: %s", msg)
	}
	ks.awsFails(t, "InvalidCiphertextException", nil, "decrypt", "--ciphertext-blob", encBlob)

	// Rotation: a new key material; the pre-rotation blob still decrypts.
	ks.aws(t, "rotate-key-on-demand", "--key-id", keyID)
	rots := ks.aws(t, "list-key-rotations", "--key-id", keyID)
	list, _ := rots["Rotations"].([]any)
	if len(list) != 1 || !strings.Contains(fmt.Sprint(list[0]), "ON_DEMAND") {
		t.Fatalf("list-key-rotations after one rotation: %v", rots)
	}
	dec = ks.aws(t, "decrypt", "--ciphertext-blob", preRotation, "--key-id", arn)
	if str(t, dec, "Plaintext") != str(t, dk, "Plaintext") || str(t, dec, "KeyMaterialId") != preMaterial {
		t.Fatalf("decrypt of the pre-rotation blob: %v", dec)
	}
	dk2 := ks.aws(t, "generate-data-key", "--key-id", keyID, "--number-of-bytes", "32")
	if str(t, dk2, "KeyMaterialId") == preMaterial {
		t.Fatal("data keys after rotation use the old key material")
	}

	// Re-encrypt the old blob under the current material.
	re := ks.aws(t, "re-encrypt", "--ciphertext-blob", preRotation, "--destination-key-id", "alias/it")
	if str(t, re, "SourceKeyMaterialId") != preMaterial || str(t, re, "DestinationKeyMaterialId") == preMaterial {
		t.Fatalf("re-encrypt: %v", re)
	}
	dec = ks.aws(t, "decrypt", "--ciphertext-blob", blobFile(t, dir, "re.blob", str(t, re, "CiphertextBlob")))
	if str(t, dec, "Plaintext") != str(t, dk, "Plaintext") {
		t.Fatal("re-encrypted blob decrypts to another key")
	}

	// Disabled keys refuse to decrypt.
	ks.aws(t, "disable-key", "--key-id", keyID)
	ks.awsFails(t, "DisabledException", nil, "decrypt", "--ciphertext-blob", preRotation)
	ks.aws(t, "enable-key", "--key-id", keyID)

	// Deletion: scheduled, refused while pending, cancelled to Disabled.
	sched := ks.aws(t, "schedule-key-deletion", "--key-id", keyID, "--pending-window-in-days", "7")
	if str(t, sched, "KeyState") != "PendingDeletion" {
		t.Fatalf("schedule-key-deletion: %v", sched)
	}
	ks.awsFails(t, "ValidationException", nil, "schedule-key-deletion", "--key-id", keyID, "--pending-window-in-days", "6")
	ks.awsFails(t, "KMSInvalidStateException", nil, "generate-data-key", "--key-id", keyID, "--key-spec", "AES_256")
	ks.awsFails(t, "KMSInvalidStateException", nil, "decrypt", "--ciphertext-blob", preRotation)
	ks.aws(t, "cancel-key-deletion", "--key-id", keyID)
	if st := str(t, ks.aws(t, "describe-key", "--key-id", "alias/it"), "KeyMetadata", "KeyState"); st != "Disabled" {
		t.Fatalf("after cancel-key-deletion the key is %s, want Disabled", st)
	}
	ks.aws(t, "enable-key", "--key-id", keyID)

	// Rotation schedule, policy, tags, random.
	ks.aws(t, "enable-key-rotation", "--key-id", keyID, "--rotation-period-in-days", "90")
	if st := ks.aws(t, "get-key-rotation-status", "--key-id", keyID); st["KeyRotationEnabled"] != true || fmt.Sprint(st["RotationPeriodInDays"]) != "90" {
		t.Fatalf("get-key-rotation-status: %v", st)
	}
	ks.awsFails(t, "ValidationException", nil, "enable-key-rotation", "--key-id", keyID, "--rotation-period-in-days", "2561")
	if pol := str(t, ks.aws(t, "get-key-policy", "--key-id", keyID, "--policy-name", "default"), "Policy"); !strings.Contains(pol, "user/it") {
		t.Fatalf("default policy does not name the creator: %s", pol)
	}
	ks.aws(t, "tag-resource", "--key-id", keyID, "--tags", "TagKey=team,TagValue=storage")
	if tags := ks.aws(t, "list-resource-tags", "--key-id", keyID); !strings.Contains(fmt.Sprint(tags), "storage") {
		t.Fatalf("list-resource-tags: %v", tags)
	}
	if r := ks.aws(t, "generate-random", "--number-of-bytes", "64"); len(str(t, r, "Plaintext")) != 88 {
		t.Fatalf("generate-random: %v", r)
	}

	// Authentication: unsigned, badly signed and unknown-key requests.
	ks.awsFails(t, "MissingAuthenticationTokenException", nil, "list-keys", "--no-sign-request")
	ks.awsFails(t, "InvalidSignatureException", []string{"AWS_SECRET_ACCESS_KEY=" + strings.Repeat("x", 40)}, "list-keys")
	ks.awsFails(t, "UnrecognizedClientException", []string{"AWS_ACCESS_KEY_ID=AKIAAAAAAAAAAAAAAAAA"}, "list-keys")

	// The audit log saw the session, with callers and contexts, and holds
	// no data key.
	audit, err := os.ReadFile(ks.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"operation":"Decrypt"`, `"caller":"arn:aws:iam::000000000000:user/it"`,
		`"encryptionContext":{"fs":"0011","purpose":"prod"},"result":"InvalidCiphertextException"`,
		`"result":"MissingAuthenticationTokenException"`} {
		if !bytes.Contains(audit, []byte(want)) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	if bytes.Contains(audit, []byte(str(t, dk, "Plaintext"))) {
		t.Error("audit log holds a plaintext data key")
	}
}

// TestUnsignedRequestRefused posts a KMS request without any signature,
// as curl would.
func TestUnsignedRequestRefused(t *testing.T) {
	ks := startKeyServer(t)
	for _, target := range []string{"TrentService.ListKeys", "TrentService.GenerateDataKey"} {
		req, err := http.NewRequest("POST", ks.Endpoint+"/", strings.NewReader(`{"KeyId":"alias/any","KeySpec":"AES_256"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Amz-Target", target)
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Type string `json:"__type"`
		}
		if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || e.Type != "MissingAuthenticationTokenException" {
			t.Fatalf("unsigned %s: %d %s", target, resp.StatusCode, body)
		}
	}
	if _, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command("curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", ks.Endpoint+"/",
			"-H", "X-Amz-Target: TrentService.ListKeys", "-H", "Content-Type: application/x-amz-json-1.1", "-d", "{}").Output()
		if err != nil || !bytes.Contains(out, []byte("MissingAuthenticationTokenException")) || !bytes.HasSuffix(out, []byte("400")) {
			t.Fatalf("unsigned curl: %v %s", err, out)
		}
	}
}

// TestMountOnKeyServer initialises and mounts a filesystem on --kms aws
// pointed at `kmsfs keysvc serve`, and checks that stopping the server makes
// new opens fail within seconds instead of hanging the mount.
func TestMountOnKeyServer(t *testing.T) {
	requireTool(t, "aws")
	ks := startKeyServer(t)
	created := ks.aws(t, "create-key", "--description", "kmsfs mount")
	ks.aws(t, "create-alias", "--alias-name", "alias/fs", "--target-key-id", str(t, created, "KeyMetadata", "KeyId"))
	fs := newFS(t,
		WithInitArgs("--kms", "aws", "--key", "alias/fs", "--kms-endpoint", ks.Endpoint),
		WithMountArgs("--kms-endpoint", ks.Endpoint),
		WithEnv(ks.AWSEnv()...))
	if cfg := fs.Config(); cfg.KMS != "aws" || cfg.KeyID != str(t, created, "KeyMetadata", "Arn") {
		t.Fatalf("kmsfs.conf: %+v", cfg)
	}
	data := bytes.Repeat([]byte("kmsfs on the key server\n"), 1000)
	if err := os.WriteFile(fs.Path("a.txt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(fs.Path("a.txt")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	// A fresh mount has no cached data key: opening a.txt needs the server.
	fs.Remount()
	if got, err := os.ReadFile(fs.Path("a.txt")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after remount: %v", err)
	}
	audit, _ := os.ReadFile(ks.AuditLog)
	if !bytes.Contains(audit, []byte(`"operation":"Decrypt"`)) || !bytes.Contains(audit, []byte(`"kmsfs:fs"`)) {
		t.Fatal("the mount's Decrypt is not in the audit log with the filesystem context")
	}
	for _, name := range []string{"b.txt", "d.txt"} {
		if err := os.WriteFile(fs.Path(name), []byte("second"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs.Remount()

	// A key server that accepts but never answers (stopped with SIGSTOP):
	// the open fails once the per-call deadline passes, and works again
	// when the server comes back.
	if err := ks.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	errc := make(chan error, 1)
	go func() { _, err := os.ReadFile(fs.Path("d.txt")); errc <- err }()
	select {
	case err := <-errc:
		t.Logf("open with the key server frozen failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
		if err == nil {
			t.Error("open succeeded with the key server frozen")
		}
	case <-time.After(60 * time.Second):
		_ = ks.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatal("open hangs with the key server frozen")
	}
	if err := ks.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(fs.Path("d.txt")); err != nil || string(got) != "second" {
		t.Fatalf("open after the key server came back: %q, %v", got, err)
	}

	ks.Stop()
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"open of an existing file", func() error { _, err := os.ReadFile(fs.Path("b.txt")); return err }},
		{"create of a new file", func() error { return os.WriteFile(fs.Path("c.txt"), []byte("x"), 0o644) }},
	} {
		start := time.Now()
		errc := make(chan error, 1)
		go func() { errc <- tc.op() }()
		select {
		case err := <-errc:
			if err == nil {
				t.Errorf("%s succeeded with the key server stopped", tc.name)
			}
			t.Logf("%s with the key server stopped failed after %v: %v", tc.name, time.Since(start).Round(time.Millisecond), err)
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("%s took %v to fail", tc.name, d)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s hangs with the key server stopped", tc.name)
		}
	}
	// Listing still works (no key needed), and unmounting is clean.
	if _, err := os.ReadDir(fs.Mnt); err != nil {
		t.Errorf("readdir with the key server stopped: %v", err)
	}
	fs.Unmount()
}
