package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requireBoto3 skips (or fails under CI=true) unless python3 can import
// boto3.
func requireBoto3(t *testing.T) {
	t.Helper()
	requireTool(t, "python3")
	if err := exec.Command("python3", "-c", "import boto3").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("boto3 is required when CI=true: %v", err)
		}
		t.Skipf("skipping: python3 cannot import boto3: %v", err)
	}
}

// TestBoto3Session runs testdata/kms_session.py, a boto3 client session of
// the same steps as TestAWSCLISession, against `kmsfs keysvc serve`.
func TestBoto3Session(t *testing.T) {
	requireBoto3(t)
	ks := startKeyServer(t)
	script, err := filepath.Abs(filepath.Join("testdata", "kms_session.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("python3", script)
	cmd.Env = append(append(cleanAWSEnv(), ks.AWSEnv()...), "KMSFS_KMS_ENDPOINT="+ks.Endpoint)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(commandTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("kms_session.py timed out:\n%s", out.String())
	}
	if err != nil || !strings.Contains(out.String(), "ALL OK") {
		t.Fatalf("kms_session.py: %v\n%s", err, out.String())
	}
	t.Logf("boto3 session:\n%s", out.String())
}
