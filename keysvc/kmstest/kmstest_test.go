package kmstest_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/kmsfs/kmsfs/keysvc/awskms"
	"github.com/kmsfs/kmsfs/keysvc/kmsserver"
	"github.com/kmsfs/kmsfs/keysvc/kmstest"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// TestStore runs the suite on the embedded keystore, in process.
func TestStore(t *testing.T) {
	kmstest.Run(t, func(t *testing.T) kmstest.Backend {
		s, err := local.Open(filepath.Join(t.TempDir(), "keystore"), local.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return kmstest.Backend{Service: s, Admin: kmstest.StoreAdmin(s)}
	})
}

// sdkBackend connects the AWS SDK client (keysvc/awskms) and an admin client
// to a KMS endpoint.
func sdkBackend(t *testing.T, endpoint, accessKey, secret string, gaps map[string]string) kmstest.Backend {
	t.Helper()
	creds := credentials.NewStaticCredentialsProvider(accessKey, secret, "")
	svc, err := awskms.New(context.Background(), awskms.Options{
		Endpoint: endpoint, Region: "us-east-1", Credentials: creds, CallTimeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	admin := kms.New(kms.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), Credentials: creds})
	return kmstest.Backend{Service: svc, Admin: kmstest.SDKAdmin(admin), Gaps: gaps}
}

// TestServerThroughSDK runs the suite on `kmsfs keysvc serve`'s server on
// a loopback port, through keysvc/awskms.
func TestServerThroughSDK(t *testing.T) {
	store, err := local.Open(filepath.Join(t.TempDir(), "keystore"), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cred, err := store.CreateCredential(context.Background(), "kmstest", local.AdminPolicy)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- kmsserver.New(store, kmsserver.Options{}).Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	endpoint := "http://" + ln.Addr().String()
	kmstest.Run(t, func(t *testing.T) kmstest.Backend {
		return sdkBackend(t, endpoint, cred.AccessKeyID, cred.SecretAccessKey, nil)
	})
}

// motoGaps are moto's known departures from AWS KMS, each verified against
// moto 5.2 by running this suite without them (every one fails then).
var motoGaps = map[string]string{
	kmstest.GapContextCollision:     "moto builds the AAD by concatenating keys and values, so {ab:c} and {a:bc} collide",
	kmstest.GapRotation:             "moto's RotateKeyOnDemand records a rotation but keeps encrypting under the same material",
	kmstest.GapKeyMaterialID:        "moto returns no KeyMaterialId or CurrentKeyMaterialId",
	kmstest.GapKeyState:             "moto encrypts and decrypts under disabled and pending-deletion keys",
	kmstest.GapIncorrectKey:         "moto answers AccessDeniedException, not IncorrectKeyException, when Decrypt's KeyId names another key",
	kmstest.GapCiphertextValidation: "moto answers AccessDeniedException, not InvalidCiphertextException, for a blob whose embedded key ID it cannot parse",
}

var (
	motoOnce     sync.Once
	motoEndpoint string
	motoErr      error
)

// startMoto starts one moto_server for the test binary on a free loopback
// port. It is stopped by TestMain.
func startMoto() (string, error) {
	motoOnce.Do(func() {
		path, err := exec.LookPath("moto_server")
		if err != nil {
			motoErr = err
			return
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			motoErr = err
			return
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		cmd := exec.Command(path, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
		cmd.Stdout, cmd.Stderr = nil, nil
		if err := cmd.Start(); err != nil {
			motoErr = err
			return
		}
		motoCmd = cmd
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				motoErr = fmt.Errorf("moto_server did not listen on %s within 30s", addr)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		motoEndpoint = "http://" + addr
	})
	return motoEndpoint, motoErr
}

var motoCmd *exec.Cmd

func TestMain(m *testing.M) {
	code := m.Run()
	if motoCmd != nil {
		_ = motoCmd.Process.Kill()
		_ = motoCmd.Wait()
	}
	os.Exit(code)
}

// TestMoto runs the suite on moto's server, a third-party emulator, with
// its known gaps skipped by name. CI=true makes a missing moto_server fail.
func TestMoto(t *testing.T) {
	if _, err := exec.LookPath("moto_server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("moto_server is required when CI=true: %v", err)
		}
		t.Skipf("moto_server not installed: %v", err)
	}
	endpoint, err := startMoto()
	if err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	kmstest.Run(t, func(t *testing.T) kmstest.Backend {
		return sdkBackend(t, endpoint, "testing", "testing", motoGaps)
	})
}
