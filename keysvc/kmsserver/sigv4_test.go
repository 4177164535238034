package kmsserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	testAccessKey = "AKIAIOSFODNN7EXAMPLE"
	testSecret    = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

func testLookup(id string) (string, string, bool) {
	if id == testAccessKey {
		return testSecret, "alice", true
	}
	return "", "", false
}

// signedRequest builds a KMS request and signs it with the SDK's signer,
// then turns it into what a server receives.
func signedRequest(t *testing.T, body string, at time.Time, region, service, secret string, mutate func(*http.Request)) *http.Request {
	t.Helper()
	r, err := http.NewRequest("POST", "http://127.0.0.1:4599/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-amz-json-1.1")
	r.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	r.Header.Set("User-Agent", "test-agent/1.0")
	r.Header.Set("Amz-Sdk-Request", "attempt=1;  max=3")
	sum := sha256.Sum256([]byte(body))
	creds := aws.Credentials{AccessKeyID: testAccessKey, SecretAccessKey: secret}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), service, region, at); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(r)
	}
	// Server side: Host is promoted out of the header map.
	srv := httptest.NewRequest("POST", "/", strings.NewReader(body))
	srv.Host = r.Host
	srv.Header = r.Header.Clone()
	srv.Header.Del("Host")
	srv.ContentLength = int64(len(body))
	return srv
}

func TestSigV4AcceptsSDKSignature(t *testing.T) {
	now := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	for _, region := range []string{"us-east-1", "local", "eu-central-2"} {
		for _, body := range []string{"{}", `{"Limit":10}`, ""} {
			r := signedRequest(t, body, now.Add(-time.Minute), region, "kms", testSecret, nil)
			caller, err := verifySigV4(r, []byte(body), now, testLookup)
			if err != nil {
				t.Fatalf("region %s body %q: %v (auth %s)", region, body, err, r.Header.Get("Authorization"))
			}
			if caller != "alice" {
				t.Fatalf("caller %q", caller)
			}
		}
	}
}

func TestSigV4Rejects(t *testing.T) {
	now := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	body := `{"Limit":10}`
	cases := []struct {
		name    string
		at      time.Time
		service string
		secret  string
		body    string // body the server receives, if different
		mutate  func(*http.Request)
		want    string
	}{
		{name: "unsigned", mutate: func(r *http.Request) { r.Header.Del("Authorization") }, want: "MissingAuthenticationTokenException"},
		{name: "wrong secret", secret: "not-the-secret", want: "InvalidSignatureException"},
		{name: "body changed", body: `{"Limit":11}`, want: "InvalidSignatureException"},
		{name: "signed header changed", mutate: func(r *http.Request) { r.Header.Set("X-Amz-Target", "TrentService.Decrypt") }, want: "InvalidSignatureException"},
		{name: "unknown access key", mutate: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), testAccessKey, "AKIAXXXXXXXXXXXXXXXX", 1))
		}, want: "UnrecognizedClientException"},
		{name: "expired", at: now.Add(-5*time.Minute - time.Second), want: "InvalidSignatureException"},
		{name: "from the future", at: now.Add(5*time.Minute + time.Second), want: "InvalidSignatureException"},
		{name: "other service", service: "s3", want: "InvalidSignatureException"},
		{name: "other algorithm", mutate: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256", 1))
		}, want: "IncompleteSignatureException"},
		{name: "no signature", mutate: func(r *http.Request) {
			a := r.Header.Get("Authorization")
			r.Header.Set("Authorization", a[:strings.Index(a, ", Signature=")])
		}, want: "IncompleteSignatureException"},
		{name: "no date", mutate: func(r *http.Request) { r.Header.Del("X-Amz-Date") }, want: "IncompleteSignatureException"},
		{name: "garbage date", mutate: func(r *http.Request) { r.Header.Set("X-Amz-Date", "yesterday") }, want: "IncompleteSignatureException"},
		{name: "host unsigned", mutate: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "SignedHeaders=", "SignedHeaders=x-", 1))
		}, want: "InvalidSignatureException"},
		{name: "session token", mutate: func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "tok") }, want: "UnrecognizedClientException"},
		{name: "garbage", mutate: func(r *http.Request) { r.Header.Set("Authorization", "AWS4-HMAC-SHA256 ,,,=") }, want: "IncompleteSignatureException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			at, service, secret, recv := tc.at, tc.service, tc.secret, tc.body
			if at.IsZero() {
				at = now
			}
			if service == "" {
				service = "kms"
			}
			if secret == "" {
				secret = testSecret
			}
			if recv == "" {
				recv = body
			}
			r := signedRequest(t, body, at, "us-east-1", service, secret, tc.mutate)
			_, err := verifySigV4(r, []byte(recv), now, testLookup)
			var ae *authError
			if !errors.As(err, &ae) || ae.typ != tc.want {
				t.Fatalf("verify = %v, want %s", err, tc.want)
			}
			if strings.Contains(ae.msg, testSecret) || strings.Contains(ae.msg, recv) {
				t.Fatalf("message %q leaks the secret or body", ae.msg)
			}
		})
	}
}

// TestCanonicalRequestAWSExample checks the canonical request and signature
// against the worked example of AWS's SigV4 documentation (IAM ListUsers,
// GET with a query string).
func TestCanonicalRequestAWSExample(t *testing.T) {
	r := httptest.NewRequest("GET", "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08", nil)
	r.Host = "iam.amazonaws.com"
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	r.Header.Set("X-Amz-Date", "20150830T123600Z")
	signed := []string{"content-type", "host", "x-amz-date"}
	got := canonicalRequest(r, signed, nil)
	want := "GET\n/\nAction=ListUsers&Version=2010-05-08\n" +
		"content-type:application/x-www-form-urlencoded; charset=utf-8\nhost:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n" +
		"content-type;host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got != want {
		t.Fatalf("canonical request\n%s\nwant\n%s", got, want)
	}
	sum := sha256.Sum256([]byte(got))
	if h := hex.EncodeToString(sum[:]); h != "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59" {
		t.Fatalf("canonical request hash %s", h)
	}
	key := signingKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam")
	sts := "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\nf536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
	if sig := hex.EncodeToString(hmacSHA256(key, []byte(sts))); sig != "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7" {
		t.Fatalf("signature %s", sig)
	}
}

func TestURIEncode(t *testing.T) {
	for in, want := range map[string]string{
		"abcXYZ019-_.~": "abcXYZ019-_.~",
		"a b":           "a%20b",
		"a/b":           "a%2Fb",
		"é":             "%C3%A9",
		"%41":           "%2541",
	} {
		if got := uriEncode(in, true); got != want {
			t.Errorf("uriEncode(%q) = %q, want %q", in, got, want)
		}
	}
	if !bytes.Equal([]byte(uriEncode("a/b", false)), []byte("a/b")) {
		t.Error("slash encoded")
	}
}

// resign replaces r's signature by a valid one over only the headers
// signed, as a client that signs too little would send it.
func resign(r *http.Request, body string, signed []string) {
	amzDate := r.Header.Get("X-Amz-Date")
	date := amzDate[:8]
	scope := date + "/us-east-1/kms/aws4_request"
	sum := sha256.Sum256([]byte(canonicalRequest(r, signed, []byte(body))))
	sts := sigV4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	sig := hex.EncodeToString(hmacSHA256(signingKey(testSecret, date, "us-east-1", "kms"), []byte(sts)))
	r.Header.Set("Authorization", sigV4Algorithm+" Credential="+testAccessKey+"/"+scope+", SignedHeaders="+strings.Join(signed, ";")+", Signature="+sig)
}

// TestSigV4RequiresSignedHeaders checks that a request whose signature is
// valid but leaves Host, X-Amz-Date, X-Amz-Target or Content-Type out of
// SignedHeaders is refused: otherwise the operation (X-Amz-Target) of a
// signed ListKeys could be changed to DisableKey (issue 10, item 7).
func TestSigV4RequiresSignedHeaders(t *testing.T) {
	now := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	body := "{}"
	all := []string{"content-type", "host", "x-amz-date", "x-amz-target"}
	r := signedRequest(t, body, now, "us-east-1", "kms", testSecret, func(r *http.Request) { resign(r, body, all) })
	if _, err := verifySigV4(r, []byte(body), now, testLookup); err != nil {
		t.Fatalf("signed over %v: %v", all, err)
	}
	for i, left := range all {
		signed := append(append([]string{}, all[:i]...), all[i+1:]...)
		r := signedRequest(t, body, now, "us-east-1", "kms", testSecret, func(r *http.Request) {
			resign(r, body, signed)
			if left == "x-amz-target" {
				r.Header.Set("X-Amz-Target", "TrentService.DisableKey")
			}
		})
		_, err := verifySigV4(r, []byte(body), now, testLookup)
		var ae *authError
		if !errors.As(err, &ae) || ae.typ != "InvalidSignatureException" || !strings.Contains(strings.ToLower(ae.msg), left) {
			t.Errorf("%s not signed: verify = %v, want InvalidSignatureException naming it", left, err)
		}
	}
}

// TestSigV4ClockSkew checks AWS's 5-minute window either side.
func TestSigV4ClockSkew(t *testing.T) {
	now := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		off time.Duration
		ok  bool
	}{{-5 * time.Minute, true}, {5 * time.Minute, true}, {-6 * time.Minute, false}, {6 * time.Minute, false}} {
		r := signedRequest(t, "{}", now.Add(tc.off), "us-east-1", "kms", testSecret, nil)
		_, err := verifySigV4(r, []byte("{}"), now, testLookup)
		if (err == nil) != tc.ok {
			t.Errorf("signed %v from the server's clock: err = %v, want ok = %v", tc.off, err, tc.ok)
		}
	}
}
