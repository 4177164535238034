package awskms

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/kmsfs/kmsfs/keysvc"
)

var fileContext = keysvc.EncryptionContext{
	keysvc.ContextFilesystemID: "00112233445566778899aabbccddeeff",
	keysvc.ContextFileID:       "ffeeddccbbaa99887766554433221100",
}

func newFakeClient(t *testing.T) (*Client, *fakeKMS, string) {
	t.Helper()
	f := newFakeKMS()
	arn := f.addKey("alias/kmsfs")
	return newClient(f, 2*time.Second), f, arn
}

func TestRoundTrip(t *testing.T) {
	c, _, arn := newFakeClient(t)
	ctx := context.Background()
	for _, ref := range []string{arn, "alias/kmsfs", arn[strings.LastIndex(arn, "/")+1:]} {
		dk, err := c.GenerateDataKey(ctx, ref, fileContext)
		if err != nil {
			t.Fatalf("GenerateDataKey(%q): %v", ref, err)
		}
		if len(dk.Plaintext) != keysvc.DataKeySize || dk.Wrapped.KeyID != arn || len(dk.Wrapped.KeyMaterialID) != 64 {
			t.Fatalf("GenerateDataKey(%q) = %d-byte key, key %q, material %q", ref, len(dk.Plaintext), dk.Wrapped.KeyID, dk.Wrapped.KeyMaterialID)
		}
		for _, keyID := range []string{"", ref} {
			u, err := c.Decrypt(ctx, dk.Wrapped.Blob, keyID, fileContext)
			if err != nil {
				t.Fatalf("Decrypt(keyID %q): %v", keyID, err)
			}
			if !bytes.Equal(u.Plaintext, dk.Plaintext) || u.KeyID != arn || u.KeyMaterialID != dk.Wrapped.KeyMaterialID {
				t.Fatalf("Decrypt(keyID %q) returned another key or names", keyID)
			}
		}
	}
}

func TestDecryptFailures(t *testing.T) {
	c, f, arn := newFakeClient(t)
	other := f.addKey("alias/other")
	ctx := context.Background()
	dk, err := c.GenerateDataKey(ctx, arn, fileContext)
	if err != nil {
		t.Fatal(err)
	}
	blob := dk.Wrapped.Blob
	cases := []struct {
		name  string
		blob  []byte
		keyID string
		ec    keysvc.EncryptionContext
		want  error
	}{
		{"wrong context value", blob, "", keysvc.EncryptionContext{keysvc.ContextFilesystemID: "x", keysvc.ContextFileID: fileContext[keysvc.ContextFileID]}, keysvc.ErrInvalidCiphertext},
		{"missing context", blob, "", nil, keysvc.ErrInvalidCiphertext},
		{"extra context", blob, "", keysvc.EncryptionContext{keysvc.ContextFilesystemID: fileContext[keysvc.ContextFilesystemID], keysvc.ContextFileID: fileContext[keysvc.ContextFileID], "x": "y"}, keysvc.ErrInvalidCiphertext},
		{"flipped tag", flip(blob, len(blob)-1), "", fileContext, keysvc.ErrInvalidCiphertext},
		{"flipped nonce", flip(blob, 3), "", fileContext, keysvc.ErrInvalidCiphertext},
		{"truncated", blob[:10], "", fileContext, keysvc.ErrInvalidCiphertext},
		{"empty", nil, "", fileContext, keysvc.ErrInvalidCiphertext},
		{"other key named", blob, other, fileContext, keysvc.ErrIncorrectKey},
		{"unknown key named", blob, "alias/nope", fileContext, keysvc.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := c.Decrypt(ctx, tc.blob, tc.keyID, tc.ec)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decrypt = %v, want %v", err, tc.want)
			}
			if u.Plaintext != nil {
				t.Fatal("plaintext returned with an error")
			}
		})
	}
}

func TestKeyStates(t *testing.T) {
	c, f, arn := newFakeClient(t)
	ctx := context.Background()
	dk, err := c.GenerateDataKey(ctx, arn, fileContext)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		state types.KeyState
		want  error
	}{
		{types.KeyStateDisabled, keysvc.ErrDisabled},
		{types.KeyStatePendingDeletion, keysvc.ErrInvalidState},
	} {
		f.setState(arn, tc.state)
		if _, err := c.GenerateDataKey(ctx, arn, fileContext); !errors.Is(err, tc.want) {
			t.Errorf("%s: GenerateDataKey = %v, want %v", tc.state, err, tc.want)
		}
		if _, err := c.Decrypt(ctx, dk.Wrapped.Blob, "", fileContext); !errors.Is(err, tc.want) {
			t.Errorf("%s: Decrypt = %v, want %v", tc.state, err, tc.want)
		}
		info, err := c.DescribeKey(ctx, arn)
		if err != nil || info.Enabled || info.State != string(tc.state) {
			t.Errorf("%s: DescribeKey = %+v, %v", tc.state, info, err)
		}
	}
	f.setState(arn, types.KeyStateEnabled)
	if _, err := c.Decrypt(ctx, dk.Wrapped.Blob, "", fileContext); err != nil {
		t.Fatalf("Decrypt after re-enabling: %v", err)
	}
	if _, err := c.DescribeKey(ctx, "alias/missing"); !errors.Is(err, keysvc.ErrNotFound) {
		t.Fatalf("DescribeKey(missing) = %v", err)
	}
}

func TestRotationAndReEncrypt(t *testing.T) {
	c, f, arn := newFakeClient(t)
	dest := f.addKey("alias/dest")
	ctx := context.Background()
	old, err := c.GenerateDataKey(ctx, arn, fileContext)
	if err != nil {
		t.Fatal(err)
	}
	f.rotate(arn)
	info, err := c.DescribeKey(ctx, arn)
	if err != nil {
		t.Fatal(err)
	}
	if info.CurrentKeyMaterialID == old.Wrapped.KeyMaterialID || info.ARN != arn || !info.Enabled {
		t.Fatalf("DescribeKey after rotation = %+v", info)
	}
	u, err := c.Decrypt(ctx, old.Wrapped.Blob, arn, fileContext)
	if err != nil || !bytes.Equal(u.Plaintext, old.Plaintext) || u.KeyMaterialID != old.Wrapped.KeyMaterialID {
		t.Fatalf("Decrypt of pre-rotation blob: %v", err)
	}
	for _, to := range []string{arn, dest} {
		w, err := c.ReEncrypt(ctx, old.Wrapped.Blob, "", fileContext, to)
		if err != nil {
			t.Fatalf("ReEncrypt to %s: %v", to, err)
		}
		if w.KeyID != to || bytes.Equal(w.Blob, old.Wrapped.Blob) {
			t.Fatalf("ReEncrypt to %s: key %s", to, w.KeyID)
		}
		if to == arn && w.KeyMaterialID != info.CurrentKeyMaterialID {
			t.Fatalf("ReEncrypt used material %s, want current %s", w.KeyMaterialID, info.CurrentKeyMaterialID)
		}
		u, err := c.Decrypt(ctx, w.Blob, to, fileContext)
		if err != nil || !bytes.Equal(u.Plaintext, old.Plaintext) {
			t.Fatalf("Decrypt of re-encrypted blob: %v", err)
		}
	}
	if _, err := c.ReEncrypt(ctx, old.Wrapped.Blob, "", nil, dest); !errors.Is(err, keysvc.ErrInvalidCiphertext) {
		t.Fatalf("ReEncrypt with wrong context = %v", err)
	}
}

// TestClassify checks the one mapping from SDK errors to sentinels, and that
// the SDK error stays reachable.
func TestClassify(t *testing.T) {
	generic := func(code string, fault smithy.ErrorFault) error {
		return &smithy.GenericAPIError{Code: code, Message: "m", Fault: fault}
	}
	cases := []struct {
		err  error
		want error
	}{
		{&types.NotFoundException{}, keysvc.ErrNotFound},
		{&types.DisabledException{}, keysvc.ErrDisabled},
		{&types.KMSInvalidStateException{}, keysvc.ErrInvalidState},
		{&types.KeyUnavailableException{}, keysvc.ErrInvalidState},
		{&types.InvalidCiphertextException{}, keysvc.ErrInvalidCiphertext},
		{&types.IncorrectKeyException{}, keysvc.ErrIncorrectKey},
		{&types.InvalidKeyUsageException{}, keysvc.ErrInvalidArgument},
		{&types.InvalidArnException{}, keysvc.ErrInvalidArgument},
		{&types.InvalidAliasNameException{}, keysvc.ErrInvalidArgument},
		{&types.LimitExceededException{}, keysvc.ErrLimitExceeded},
		{&types.AlreadyExistsException{}, keysvc.ErrAlreadyExists},
		{&types.DependencyTimeoutException{}, keysvc.ErrUnavailable},
		{&types.KMSInternalException{}, keysvc.ErrUnavailable},
		{generic("AccessDeniedException", smithy.FaultClient), keysvc.ErrAccessDenied},
		{generic("UnrecognizedClientException", smithy.FaultClient), keysvc.ErrAccessDenied},
		{generic("InvalidSignatureException", smithy.FaultClient), keysvc.ErrAccessDenied},
		{generic("MissingAuthenticationTokenException", smithy.FaultClient), keysvc.ErrAccessDenied},
		{generic("ThrottlingException", smithy.FaultClient), keysvc.ErrUnavailable},
		{generic("ValidationException", smithy.FaultClient), keysvc.ErrInvalidArgument},
		{generic("SomethingNew", smithy.FaultServer), keysvc.ErrUnavailable},
		{generic("SomethingNew", smithy.FaultClient), keysvc.ErrInvalidArgument},
		{&smithy.InvalidParamsError{Context: "DecryptInput"}, keysvc.ErrInvalidArgument},
		{&credentialsError{err: errors.New("no profile")}, keysvc.ErrAccessDenied},
		{context.DeadlineExceeded, keysvc.ErrUnavailable},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, keysvc.ErrUnavailable},
	}
	all := []error{keysvc.ErrNotFound, keysvc.ErrDisabled, keysvc.ErrInvalidState, keysvc.ErrInvalidCiphertext,
		keysvc.ErrIncorrectKey, keysvc.ErrAccessDenied, keysvc.ErrUnavailable, keysvc.ErrInvalidArgument, keysvc.ErrAlreadyExists, keysvc.ErrLimitExceeded}
	for _, tc := range cases {
		wrapped := &smithy.OperationError{ServiceID: "KMS", OperationName: "Decrypt", Err: tc.err}
		got := classify("Decrypt", wrapped)
		for _, s := range all {
			if errors.Is(got, s) != (s == tc.want) {
				t.Errorf("classify(%T %v): errors.Is(%v) = %v", tc.err, tc.err, s, !(s == tc.want))
			}
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("classify(%T) lost the original error", tc.err)
		}
		if !strings.HasPrefix(got.Error(), "awskms: Decrypt: ") {
			t.Errorf("classify message %q lacks prefix", got)
		}
	}
}

// TestCallDeadlineIgnoresCancellation: a cancelled caller context (a signal
// to the process doing a FUSE read) must not abort the KMS call, while the
// call's own timeout bounds it.
func TestCallDeadlineIgnoresCancellation(t *testing.T) {
	c, f, arn := newFakeClient(t)
	c.timeout = 300 * time.Millisecond
	var sawDeadline atomic.Bool
	f.before = func(ctx context.Context, op string) error {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= 300*time.Millisecond {
			sawDeadline.Store(true)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
			return nil
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.GenerateDataKey(ctx, arn, fileContext); err != nil {
		t.Fatalf("GenerateDataKey with cancelled caller context: %v", err)
	}
	if !sawDeadline.Load() {
		t.Fatal("call ran without its own deadline")
	}

	f.before = func(ctx context.Context, op string) error {
		<-ctx.Done()
		return &smithy.OperationError{ServiceID: "KMS", OperationName: op, Err: ctx.Err()}
	}
	start := time.Now()
	_, err := c.DescribeKey(context.Background(), arn)
	if !errors.Is(err, keysvc.ErrUnavailable) {
		t.Fatalf("hung call = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("hung call took %v, timeout was 300ms", d)
	}
	// A shorter caller deadline wins over the call timeout.
	c.timeout = time.Minute
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	start = time.Now()
	if _, err := c.DescribeKey(short, arn); !errors.Is(err, keysvc.ErrUnavailable) {
		t.Fatalf("call under short caller deadline = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("call ignored the caller's deadline: %v", d)
	}
}

// kmsHandler answers the KMS JSON protocol with canned responses, for tests
// of the real SDK client's configuration (endpoint, retries, decoding).
type kmsHandler struct {
	calls   atomic.Int32
	targets atomic.Value // last X-Amz-Target
	respond func(n int32, w http.ResponseWriter)
}

func (h *kmsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := h.calls.Add(1)
	h.targets.Store(r.Header.Get("X-Amz-Target"))
	_, _ = io.Copy(io.Discard, r.Body)
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIDTEST/") {
		w.WriteHeader(400)
		fmt.Fprint(w, `{"__type":"MissingAuthenticationTokenException","message":"no auth"}`)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	h.respond(n, w)
}

func kmsError(w http.ResponseWriter, status int, typ string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"__type":%q,"message":"refused"}`, typ)
}

func newSDKClient(t *testing.T, endpoint string, attempts int) *Client {
	t.Helper()
	c, err := New(context.Background(), Options{
		Endpoint:    endpoint,
		Region:      "eu-west-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
		CallTimeout: 5 * time.Second,
		MaxAttempts: attempts,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSDKClientDecodesResponses(t *testing.T) {
	h := &kmsHandler{respond: func(_ int32, w http.ResponseWriter) {
		// 32 bytes of 0x01 and a 4-byte blob, base64.
		fmt.Fprint(w, `{"KeyId":"arn:aws:kms:eu-west-1:111122223333:key/k","KeyMaterialId":"abc",`+
			`"Plaintext":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","CiphertextBlob":"AAECAw=="}`)
	}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := newSDKClient(t, srv.URL, 1)
	dk, err := c.GenerateDataKey(context.Background(), "alias/k", fileContext)
	if err != nil {
		t.Fatal(err)
	}
	if h.targets.Load() != "TrentService.GenerateDataKey" {
		t.Fatalf("target %v", h.targets.Load())
	}
	if len(dk.Plaintext) != 32 || dk.Plaintext[0] != 1 || !bytes.Equal(dk.Wrapped.Blob, []byte{0, 1, 2, 3}) ||
		dk.Wrapped.KeyMaterialID != "abc" || !strings.HasSuffix(dk.Wrapped.KeyID, ":key/k") {
		t.Fatalf("decoded %+v", dk.Wrapped)
	}
}

func TestSDKClientEndpointFromEnvironment(t *testing.T) {
	h := &kmsHandler{respond: func(_ int32, w http.ResponseWriter) {
		fmt.Fprint(w, `{"KeyMetadata":{"KeyId":"k","Arn":"arn:aws:kms:eu-west-1:1:key/k","Enabled":true,"KeyState":"Enabled","CurrentKeyMaterialId":"m1"}}`)
	}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	t.Setenv("AWS_ENDPOINT_URL_KMS", srv.URL)
	c := newSDKClient(t, "", 1)
	info, err := c.DescribeKey(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if info != (keysvc.KeyInfo{KeyID: "k", ARN: "arn:aws:kms:eu-west-1:1:key/k", Enabled: true, State: "Enabled", CurrentKeyMaterialID: "m1"}) {
		t.Fatalf("DescribeKey = %+v", info)
	}
}

func TestSDKClientRetries(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		typ       string
		attempts  int
		wantCalls int32
		want      error
	}{
		{"throttling retried then given up", 400, "ThrottlingException", 2, 2, keysvc.ErrUnavailable},
		{"limit exceeded retried", 400, "LimitExceededException", 2, 2, keysvc.ErrLimitExceeded},
		{"internal retried", 500, "KMSInternalException", 3, 3, keysvc.ErrUnavailable},
		{"access denied not retried", 400, "AccessDeniedException", 3, 1, keysvc.ErrAccessDenied},
		{"disabled not retried", 400, "DisabledException", 3, 1, keysvc.ErrDisabled},
		{"bad signature not retried", 400, "InvalidSignatureException", 3, 1, keysvc.ErrAccessDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &kmsHandler{respond: func(_ int32, w http.ResponseWriter) { kmsError(w, tc.status, tc.typ) }}
			srv := httptest.NewServer(h)
			defer srv.Close()
			c := newSDKClient(t, srv.URL, tc.attempts)
			_, err := c.Decrypt(context.Background(), []byte("blob"), "", fileContext)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decrypt = %v, want %v", err, tc.want)
			}
			if got := h.calls.Load(); got != tc.wantCalls {
				t.Fatalf("%d attempts, want %d", got, tc.wantCalls)
			}
		})
	}
	t.Run("throttling then success", func(t *testing.T) {
		h := &kmsHandler{respond: func(n int32, w http.ResponseWriter) {
			if n == 1 {
				kmsError(w, 400, "ThrottlingException")
				return
			}
			fmt.Fprint(w, `{"KeyId":"arn:k","KeyMaterialId":"m","Plaintext":"AQID"}`)
		}}
		srv := httptest.NewServer(h)
		defer srv.Close()
		c := newSDKClient(t, srv.URL, 3)
		u, err := c.Decrypt(context.Background(), []byte("blob"), "", fileContext)
		if err != nil || !bytes.Equal(u.Plaintext, []byte{1, 2, 3}) || h.calls.Load() != 2 {
			t.Fatalf("Decrypt = %v after %d calls", err, h.calls.Load())
		}
	})
}

// TestSDKClientServerGone: with nothing listening, calls fail fast as
// ErrUnavailable instead of hanging.
func TestSDKClientServerGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newSDKClient(t, "http://"+addr, 3)
	start := time.Now()
	_, err = c.DescribeKey(context.Background(), "alias/x")
	if !errors.Is(err, keysvc.ErrUnavailable) {
		t.Fatalf("DescribeKey = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestNewOptions(t *testing.T) {
	if _, err := New(context.Background(), Options{CallTimeout: -1}); !errors.Is(err, keysvc.ErrInvalidArgument) {
		t.Fatalf("negative timeout: %v", err)
	}
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	creds := credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")
	if _, err := New(context.Background(), Options{Credentials: creds}); !errors.Is(err, keysvc.ErrInvalidArgument) {
		t.Fatalf("no region, no endpoint: %v", err)
	}
	c, err := New(context.Background(), Options{Credentials: creds, Endpoint: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatalf("endpoint without region: %v", err)
	}
	if c.timeout != DefaultCallTimeout {
		t.Fatalf("timeout %v", c.timeout)
	}
	failing := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, errors.New("no credentials here")
	})
	if _, err := New(context.Background(), Options{Credentials: failing, Region: "eu-west-1"}); !errors.Is(err, keysvc.ErrAccessDenied) {
		t.Fatalf("failing credentials: %v", err)
	}
}

// TestSDKClientCABundle: an HTTPS endpoint with a private CA is trusted
// through AWS_CA_BUNDLE, the SDK's standard setting.
func TestSDKClientCABundle(t *testing.T) {
	h := &kmsHandler{respond: func(_ int32, w http.ResponseWriter) {
		fmt.Fprint(w, `{"KeyMetadata":{"KeyId":"k","Arn":"arn:k","Enabled":true,"KeyState":"Enabled"}}`)
	}}
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	bundle := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(bundle, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newSDKClient(t, srv.URL, 1).DescribeKey(context.Background(), "k"); !errors.Is(err, keysvc.ErrUnavailable) {
		t.Fatalf("untrusted certificate: %v, want ErrUnavailable", err)
	}
	t.Setenv("AWS_CA_BUNDLE", bundle)
	if _, err := newSDKClient(t, srv.URL, 1).DescribeKey(context.Background(), "k"); err != nil {
		t.Fatalf("with AWS_CA_BUNDLE: %v", err)
	}
}
