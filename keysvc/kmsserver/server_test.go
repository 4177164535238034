package kmsserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/internal/testlog"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

type testServer struct {
	store    *local.Store
	endpoint string
	audit    *testlog.Buffer
	creds    map[string]local.Credential
}

// selfServicePolicy is the identity policy of the test servers' alice and
// bob: each may create and list keys, draw random bytes and manage the
// aliases alias/NAME-*, and nothing else. On the keys it creates it has
// every right through the keys' default policy, which names the creator;
// on anyone else's key, none.
func selfServicePolicy(name string) string {
	return `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Action":["kms:CreateKey","kms:ListKeys","kms:ListAliases","kms:GenerateRandom"],"Resource":"*"},
	  {"Effect":"Allow","Action":"kms:*Alias","Resource":"arn:aws:kms:local:000000000000:alias/` + name + `-*"}]}`
}

// startTestServer serves a fresh keystore on a loopback port with
// credentials alice and bob (selfServicePolicy), until the test ends; mod
// adjusts the server before it serves.
func startTestServer(t testing.TB, mod ...func(*Server)) *testServer {
	t.Helper()
	store, err := local.Open(privateDir(t), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{store: store, audit: &testlog.Buffer{}, creds: map[string]local.Credential{}}
	for _, name := range []string{"alice", "bob"} {
		c, err := store.CreateCredential(context.Background(), name, selfServicePolicy(name))
		if err != nil {
			t.Fatal(err)
		}
		ts.creds[name] = c
	}
	t.Cleanup(func() { store.Close() }) // after the server's cleanup
	addr, _ := serve(t, store, Options{AuditLog: ts.audit}, mod...)
	ts.endpoint = "http://" + addr
	return ts
}

// serve runs store's server with opts (adjusted by mod) on a loopback
// port until the test ends or stop is called, and returns its address and stop, which cancels
// Serve's context and returns Serve's result. A Serve error that no one
// asked stop for fails the test at cleanup.
func serve(t testing.TB, store *local.Store, opts Options, mod ...func(*Server)) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := New(store, opts)
	for _, m := range mod {
		m(srv)
	}
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	var serr error
	halt := func() error {
		once.Do(func() {
			cancel()
			select {
			case serr = <-done:
			case <-time.After(30 * time.Second):
				serr = errors.New("Serve did not return after cancel")
			}
		})
		return serr
	}
	asked := false
	t.Cleanup(func() {
		if err := halt(); err != nil && !asked {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), func() error { asked = true; return halt() }
}

// client returns an SDK client signing as the named credential.
func (ts *testServer) client(name string) *kms.Client {
	c := ts.creds[name]
	return kms.New(kms.Options{
		Region:           "eu-west-3",
		BaseEndpoint:     aws.String(ts.endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
		RetryMaxAttempts: 1,
	})
}

// wantAPIError checks that err is the AWS error code.
func wantAPIError(t *testing.T, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != code {
		t.Fatalf("error = %v, want %s", err, code)
	}
}

func TestServerSession(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	c := ts.client("alice")
	ck, err := c.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("kmsfs test")})
	if err != nil {
		t.Fatal(err)
	}
	arn := aws.ToString(ck.KeyMetadata.Arn)
	if !strings.HasPrefix(arn, "arn:aws:kms:local:000000000000:key/") || ck.KeyMetadata.KeyState != types.KeyStateEnabled ||
		ck.KeyMetadata.CreationDate == nil || time.Since(*ck.KeyMetadata.CreationDate) > time.Minute {
		t.Fatalf("CreateKey metadata %+v", ck.KeyMetadata)
	}
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/alice-test"), TargetKeyId: ck.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/alice-test"), TargetKeyId: ck.KeyMetadata.KeyId})
	wantAPIError(t, err, "AlreadyExistsException")
	_, err = c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/aws/x"), TargetKeyId: ck.KeyMetadata.KeyId})
	wantAPIError(t, err, "InvalidAliasNameException")
	la, err := c.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(arn)})
	if err != nil || len(la.Aliases) != 1 || aws.ToString(la.Aliases[0].AliasName) != "alias/alice-test" {
		t.Fatalf("ListAliases = %+v, %v", la, err)
	}

	ec := map[string]string{"kmsfs:fs": "a", "kmsfs:file": "b"}
	dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/alice-test"), KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	if len(dk.Plaintext) != 32 || aws.ToString(dk.KeyId) != arn || len(aws.ToString(dk.KeyMaterialId)) != 64 {
		t.Fatalf("GenerateDataKey: %d bytes, key %s", len(dk.Plaintext), aws.ToString(dk.KeyId))
	}
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec})
	if err != nil || !bytes.Equal(dec.Plaintext, dk.Plaintext) || aws.ToString(dec.KeyMaterialId) != aws.ToString(dk.KeyMaterialId) {
		t.Fatalf("Decrypt: %v", err)
	}
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: map[string]string{"kmsfs:fs": "a"}})
	wantAPIError(t, err, "InvalidCiphertextException")

	// Rotation: old blobs still decrypt, new ones use the new material.
	if _, err := c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	rot, err := c.ListKeyRotations(ctx, &kms.ListKeyRotationsInput{KeyId: aws.String(arn)})
	if err != nil || len(rot.Rotations) != 1 || rot.Rotations[0].RotationType != types.RotationTypeOnDemand {
		t.Fatalf("ListKeyRotations = %+v, %v", rot, err)
	}
	if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec, KeyId: aws.String(arn)}); err != nil {
		t.Fatalf("Decrypt of pre-rotation blob: %v", err)
	}
	re, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: dk.CiphertextBlob, SourceEncryptionContext: ec,
		DestinationKeyId: aws.String(arn), DestinationEncryptionContext: ec})
	if err != nil || aws.ToString(re.DestinationKeyMaterialId) == aws.ToString(dk.KeyMaterialId) ||
		aws.ToString(re.SourceKeyMaterialId) != aws.ToString(dk.KeyMaterialId) {
		t.Fatalf("ReEncrypt = %+v, %v", re, err)
	}

	// Encrypt limits.
	for _, n := range []int{1, 4096} {
		if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(arn), Plaintext: make([]byte, n)}); err != nil {
			t.Fatalf("Encrypt(%d bytes): %v", n, err)
		}
	}
	_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(arn), Plaintext: bytes.Repeat([]byte("S3CR3T"), 700)})
	wantAPIError(t, err, "ValidationException")
	if strings.Contains(err.Error(), "S3CR3T") {
		t.Fatalf("error echoes plaintext: %v", err)
	}

	// States.
	if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec})
	wantAPIError(t, err, "DisabledException")
	if _, err := c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	sd, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(arn), PendingWindowInDays: aws.Int32(7)})
	if err != nil || sd.KeyState != types.KeyStatePendingDeletion || sd.DeletionDate == nil ||
		time.Until(*sd.DeletionDate) < 6*24*time.Hour {
		t.Fatalf("ScheduleKeyDeletion = %+v, %v", sd, err)
	}
	_, err = c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(arn), NumberOfBytes: aws.Int32(16)})
	wantAPIError(t, err, "KMSInvalidStateException")
	_, err = c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(arn), PendingWindowInDays: aws.Int32(6)})
	wantAPIError(t, err, "ValidationException")
	if _, err := c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	dkey, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/alice-test")})
	if err != nil || dkey.KeyMetadata.KeyState != types.KeyStateDisabled {
		t.Fatalf("after CancelKeyDeletion: %+v, %v", dkey, err)
	}
	if _, err := c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}

	// Rotation schedule.
	_, err = c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(arn), RotationPeriodInDays: aws.Int32(89)})
	wantAPIError(t, err, "ValidationException")
	if _, err := c.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: aws.String(arn), RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatal(err)
	}
	st, err := c.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: aws.String(arn)})
	if err != nil || !st.KeyRotationEnabled || aws.ToInt32(st.RotationPeriodInDays) != 90 || st.NextRotationDate == nil {
		t.Fatalf("GetKeyRotationStatus = %+v, %v", st, err)
	}

	// Tags, random, policies.
	if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(arn), Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("fs")}}}); err != nil {
		t.Fatal(err)
	}
	tags, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(arn)})
	if err != nil || len(tags.Tags) != 1 || aws.ToString(tags.Tags[0].TagValue) != "fs" {
		t.Fatalf("ListResourceTags = %+v, %v", tags, err)
	}
	rnd, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(1024)})
	if err != nil || len(rnd.Plaintext) != 1024 {
		t.Fatalf("GenerateRandom: %v", err)
	}
	pol, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(arn)})
	if err != nil || !strings.Contains(aws.ToString(pol.Policy), local.PrincipalARN("alice")) {
		t.Fatalf("GetKeyPolicy = %v, %v", aws.ToString(pol.Policy), err)
	}
	if _, err := c.UntagResource(ctx, &kms.UntagResourceInput{KeyId: aws.String(arn), TagKeys: []string{"team"}}); err != nil {
		t.Fatal(err)
	}
	if tags, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(arn)}); err != nil || len(tags.Tags) != 0 {
		t.Fatalf("ListResourceTags after UntagResource = %+v, %v", tags, err)
	}
	if _, err := c.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(arn), Description: aws.String("renamed")}); err != nil {
		t.Fatal(err)
	}
	if d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(arn)}); err != nil || aws.ToString(d.KeyMetadata.Description) != "renamed" {
		t.Fatalf("DescribeKey after UpdateKeyDescription = %+v, %v", d, err)
	}
	if lp, err := c.ListKeyPolicies(ctx, &kms.ListKeyPoliciesInput{KeyId: aws.String(arn)}); err != nil || len(lp.PolicyNames) != 1 || lp.PolicyNames[0] != "default" {
		t.Fatalf("ListKeyPolicies = %+v, %v", lp, err)
	}
	_, err = c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(arn), PolicyName: aws.String("other")})
	wantAPIError(t, err, "NotFoundException")
	keys, err := c.ListKeys(ctx, &kms.ListKeysInput{})
	if err != nil || len(keys.Keys) != 1 || keys.Truncated {
		t.Fatalf("ListKeys = %+v, %v", keys, err)
	}
}

func TestServerPolicies(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	alice, bob := ts.client("alice"), ts.client("bob")
	ck, err := alice.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	arn := ck.KeyMetadata.Arn
	dk, err := alice.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: arn, NumberOfBytes: aws.Int32(32)})
	if err != nil {
		t.Fatal(err)
	}
	// The default policy gives the creator everything and bob nothing.
	_, err = bob.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = bob.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: arn})
	wantAPIError(t, err, "AccessDeniedException")

	policy := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"` + local.PrincipalARN("alice") + `"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"` + local.PrincipalARN("bob") + `"},"Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*"},
	  {"Effect":"Deny","Principal":{"AWS":"` + local.PrincipalARN("bob") + `"},"Action":"kms:GenerateDataKeyWithoutPlaintext","Resource":"*"}]}`
	if _, err := alice.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: arn, Policy: aws.String(policy)}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob}); err != nil {
		t.Fatalf("bob Decrypt after grant: %v", err)
	}
	if _, err := bob.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: arn, NumberOfBytes: aws.Int32(32)}); err != nil {
		t.Fatalf("bob GenerateDataKey after grant: %v", err)
	}
	_, err = bob.GenerateDataKeyWithoutPlaintext(ctx, &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: arn, NumberOfBytes: aws.Int32(32)})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = bob.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: dk.CiphertextBlob, DestinationKeyId: arn})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = bob.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: arn, Policy: aws.String(policy)})
	wantAPIError(t, err, "AccessDeniedException")

	// Lockout safety check.
	lockout := `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"` + local.PrincipalARN("bob") + `"},"Action":"kms:*"}]}`
	_, err = alice.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: arn, Policy: aws.String(lockout)})
	wantAPIError(t, err, "MalformedPolicyDocumentException")
	_, err = alice.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: arn, Policy: aws.String(`{"Statement": 3}`)})
	wantAPIError(t, err, "MalformedPolicyDocumentException")
	if _, err := alice.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: arn, Policy: aws.String(lockout), BypassPolicyLockoutSafetyCheck: true}); err != nil {
		t.Fatal(err)
	}
	_, err = alice.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: arn})
	wantAPIError(t, err, "AccessDeniedException")
	if _, err := bob.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: arn}); err != nil {
		t.Fatalf("bob after handover: %v", err)
	}
	// Every denial is in the audit log, with the caller.
	if !strings.Contains(ts.audit.String(), `"caller":"`+local.PrincipalARN("bob")+`","accessKeyId":"`+ts.creds["bob"].AccessKeyID+`","operation":"Decrypt","keyId":"`+aws.ToString(arn)+`"`) {
		t.Fatalf("audit log lacks bob's Decrypt:\n%s", ts.audit.String())
	}
}

// rawPost sends a request signed (or not) as alice and returns the status
// and decoded error type and message.
func rawPost(t *testing.T, ts *testServer, target, contentType string, body []byte, sign bool) (int, map[string]any) {
	t.Helper()
	r, err := http.NewRequest("POST", ts.endpoint+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if target != "" {
		r.Header.Set("X-Amz-Target", target)
	}
	r.Header.Set("Content-Type", contentType)
	if sign {
		c := ts.creds["alice"]
		sum := sha256.Sum256(body)
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey},
			r, hex.EncodeToString(sum[:]), "kms", "us-west-2", time.Now())
		if err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("response %q is not JSON: %v", b, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		t.Fatalf("Content-Type %q", ct)
	}
	return resp.StatusCode, m
}

func TestServerWireErrors(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	alice := ts.client("alice")
	ck, err := alice.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	dk, err := alice.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: ck.KeyMetadata.KeyId, KeySpec: types.DataKeySpecAes128})
	if err != nil {
		t.Fatal(err)
	}
	const ct = "application/x-amz-json-1.1"
	b64 := base64.StdEncoding.EncodeToString
	cases := []struct {
		name, target, contentType, body string
		unsigned                        bool
		status                          int
		typ                             string
	}{
		{"unsigned", "TrentService.ListKeys", ct, "{}", true, 400, "MissingAuthenticationTokenException"},
		{"unknown operation", "TrentService.LaunchMissiles", ct, "{}", false, 400, "UnknownOperationException"},
		{"no target", "", ct, "{}", false, 400, "UnknownOperationException"},
		{"wrong content type", "TrentService.ListKeys", "text/plain", "{}", false, 400, "SerializationException"},
		{"not JSON", "TrentService.ListKeys", ct, "[1,2", false, 400, "SerializationException"},
		{"wrong type", "TrentService.GenerateRandom", ct, `{"NumberOfBytes":"ten"}`, false, 400, "SerializationException"},
		{"bad base64", "TrentService.Decrypt", ct, `{"CiphertextBlob":"!!!"}`, false, 400, "SerializationException"},
		{"missing blob", "TrentService.Decrypt", ct, `{}`, false, 400, "ValidationException"},
		{"garbage blob", "TrentService.Decrypt", ct, `{"CiphertextBlob":"` + b64([]byte("garbage garbage")) + `"}`, false, 400, "InvalidCiphertextException"},
		{"truncated blob", "TrentService.Decrypt", ct, `{"CiphertextBlob":"` + b64(dk.CiphertextBlob[:60]) + `"}`, false, 400, "InvalidCiphertextException"},
		{"blob too long", "TrentService.Decrypt", ct, `{"CiphertextBlob":"` + b64(make([]byte, 6145)) + `"}`, false, 400, "ValidationException"},
		{"both key spec and bytes", "TrentService.GenerateDataKey", ct, `{"KeyId":"` + *ck.KeyMetadata.KeyId + `","KeySpec":"AES_256","NumberOfBytes":32}`, false, 400, "ValidationException"},
		{"bad key spec", "TrentService.GenerateDataKey", ct, `{"KeyId":"x","KeySpec":"AES_512"}`, false, 400, "ValidationException"},
		{"unknown key", "TrentService.DescribeKey", ct, `{"KeyId":"00000000-0000-4000-8000-000000000000"}`, false, 400, "NotFoundException"},
		{"incorrect key", "TrentService.Decrypt", ct, `{"CiphertextBlob":"` + b64(dk.CiphertextBlob) + `","KeyId":"alias/none"}`, false, 400, "NotFoundException"},
		{"asymmetric algorithm", "TrentService.Decrypt", ct, `{"CiphertextBlob":"` + b64(dk.CiphertextBlob) + `","EncryptionAlgorithm":"RSAES_OAEP_SHA_1"}`, false, 400, "InvalidKeyUsageException"},
		{"grant token", "TrentService.Decrypt", ct, `{"CiphertextBlob":"` + b64(dk.CiphertextBlob) + `","GrantTokens":["t"]}`, false, 400, "InvalidGrantTokenException"},
		{"dry run", "TrentService.Decrypt", ct, `{"CiphertextBlob":"` + b64(dk.CiphertextBlob) + `","DryRun":true}`, false, 400, "DryRunOperationException"},
		{"huge body", "TrentService.ListKeys", ct, `{"Marker":"` + strings.Repeat("a", MaxRequestBody) + `"}`, false, 413, "ValidationException"},
		{"bad marker", "TrentService.ListKeys", ct, `{"Marker":"zzz"}`, false, 400, "InvalidMarkerException"},
		{"asymmetric key", "TrentService.CreateKey", ct, `{"KeySpec":"RSA_2048","KeyUsage":"SIGN_VERIFY"}`, false, 400, "UnsupportedOperationException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, m := rawPost(t, ts, tc.target, tc.contentType, []byte(tc.body), !tc.unsigned)
			if status != tc.status || m["__type"] != tc.typ {
				t.Fatalf("got %d %v, want %d %s", status, m, tc.status, tc.typ)
			}
		})
	}
	// A blob damaged anywhere is InvalidCiphertextException, never a crash.
	for i := 0; i < len(dk.CiphertextBlob); i += 7 {
		bad := bytes.Clone(dk.CiphertextBlob)
		bad[i] ^= 0x40
		_, err := alice.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: bad})
		if i >= 4 && i < 20 {
			// The key UUID: another (unknown) key.
			wantAPIError(t, err, "InvalidCiphertextException")
			continue
		}
		wantAPIError(t, err, "InvalidCiphertextException")
	}
	for n := 1; n < len(dk.CiphertextBlob); n += 5 {
		_, err := alice.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob[:n]})
		wantAPIError(t, err, "InvalidCiphertextException")
	}
	// No plaintext or data key in the audit log.
	if log := ts.audit.String(); strings.Contains(log, b64(dk.Plaintext)) || strings.Contains(log, b64(dk.CiphertextBlob)) {
		t.Fatal("audit log holds key material")
	}
}

func TestServerIncorrectKey(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	c := ts.client("alice")
	k1, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	k2, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: k1.KeyMetadata.KeyId, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: k2.KeyMetadata.Arn})
	wantAPIError(t, err, "IncorrectKeyException")

	// Pagination: two keys, one per page.
	p1, err := c.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1)})
	if err != nil || len(p1.Keys) != 1 || !p1.Truncated || p1.NextMarker == nil {
		t.Fatalf("ListKeys page 1 = %+v, %v", p1, err)
	}
	p2, err := c.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1), Marker: p1.NextMarker})
	if err != nil || len(p2.Keys) != 1 || p2.Truncated || aws.ToString(p2.Keys[0].KeyId) == aws.ToString(p1.Keys[0].KeyId) {
		t.Fatalf("ListKeys page 2 = %+v, %v", p2, err)
	}
}

func TestServeShutdown(t *testing.T) {
	addr, stop := serveForShutdown(t, Options{})
	postEmpty(t, addr)
	if err := stop(); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("listener still open")
	}
}

// TestServeShutdownUnusedConn: a connection that was dialled and never
// carried a request (Go's HTTP transport dials spares) must not hold up a
// graceful shutdown. net/http alone waits 5 s for such a connection, so
// with a 3 s bound Serve failed with "context deadline exceeded" (seen in
// CI, with the SDK client's spare connections).
func TestServeShutdownUnusedConn(t *testing.T) {
	addr, stop := serveForShutdown(t, Options{ShutdownTimeout: 3 * time.Second})
	unused, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer unused.Close()
	// One request on another connection proves the server is serving, so
	// the unused connection has been accepted by the time we cancel.
	postEmpty(t, addr)
	if err := stop(); err != nil {
		t.Fatalf("Serve = %v, want nil with only an unused connection open", err)
	}
	if _, err := unused.Read(make([]byte, 1)); err == nil {
		t.Fatal("unused connection still open after shutdown")
	}
}

// serveForShutdown serves a fresh store on a loopback port (see serve).
func serveForShutdown(t *testing.T, opts Options) (string, func() error) {
	t.Helper()
	store, err := local.Open(privateDir(t), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return serve(t, store, opts)
}

// postEmpty sends one (unsigned, refused) request to the server at addr.
func postEmpty(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/", "application/x-amz-json-1.1", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// selfSignedTLS returns a server TLS config for 127.0.0.1 and a pool that
// trusts it.
func selfSignedTLS(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kmsfs test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// TestServerTLSAndLatency serves HTTPS with an added latency and checks
// that the SDK client gets through and waits.
func TestServerTLSAndLatency(t *testing.T) {
	store, err := local.Open(privateDir(t), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() }) // after the server's cleanup
	cred, err := store.CreateCredential(context.Background(), "alice", local.AdminPolicy)
	if err != nil {
		t.Fatal(err)
	}
	cfg, pool := selfSignedTLS(t)
	addr, _ := serve(t, store, Options{TLSConfig: cfg, Latency: 100 * time.Millisecond})
	c := kms.New(kms.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("https://" + addr),
		Credentials:  credentials.NewStaticCredentialsProvider(cred.AccessKeyID, cred.SecretAccessKey, ""),
		HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	})
	start := time.Now()
	if _, err := c.CreateKey(context.Background(), &kms.CreateKeyInput{}); err != nil {
		t.Fatalf("CreateKey over TLS: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("answer came after %v, latency is 100ms", d)
	}
	// Plain HTTP to the TLS port gets nowhere.
	if resp, err := http.Post("http://"+addr+"/", "application/x-amz-json-1.1", strings.NewReader("{}")); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || bytes.Contains(b, []byte("KeyMetadata")) {
			t.Fatalf("plain HTTP answered: %d %s", resp.StatusCode, b)
		}
	}
}

// TestServerScheduledEvents moves the keystore's clock: automatic rotation
// happens when due, and a key whose deletion came due is gone.
func TestServerScheduledEvents(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	store, err := local.Open(privateDir(t), local.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() }) // after the server's cleanup
	cred, err := store.CreateCredential(context.Background(), "alice", local.AdminPolicy)
	if err != nil {
		t.Fatal(err)
	}
	// The server's clock (signatures) stays real; the keystore's moves.
	addr, _ := serve(t, store, Options{})
	ts := &testServer{store: store, endpoint: "http://" + addr, creds: map[string]local.Credential{"alice": cred}}
	c := ts.client("alice")
	bg := context.Background()

	k, err := c.CreateKey(bg, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(bg, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("before")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnableKeyRotation(bg, &kms.EnableKeyRotationInput{KeyId: k.KeyMetadata.KeyId, RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatal(err)
	}
	advance(91 * 24 * time.Hour)
	rot, err := c.ListKeyRotations(bg, &kms.ListKeyRotationsInput{KeyId: k.KeyMetadata.KeyId})
	if err != nil || len(rot.Rotations) != 1 || rot.Rotations[0].RotationType != types.RotationTypeAutomatic {
		t.Fatalf("after 91 days: rotations %+v, %v", rot, err)
	}
	dec, err := c.Decrypt(bg, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "before" {
		t.Fatalf("decrypt after automatic rotation: %v", err)
	}

	if _, err := c.ScheduleKeyDeletion(bg, &kms.ScheduleKeyDeletionInput{KeyId: k.KeyMetadata.KeyId, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	advance(6 * 24 * time.Hour)
	d, err := c.DescribeKey(bg, &kms.DescribeKeyInput{KeyId: k.KeyMetadata.KeyId})
	if err != nil || d.KeyMetadata.KeyState != types.KeyStatePendingDeletion {
		t.Fatalf("6 days into the window: %+v, %v", d, err)
	}
	advance(2 * 24 * time.Hour)
	_, err = c.DescribeKey(bg, &kms.DescribeKeyInput{KeyId: k.KeyMetadata.KeyId})
	wantAPIError(t, err, "NotFoundException")
	_, err = c.Decrypt(bg, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	wantAPIError(t, err, "InvalidCiphertextException")
}
