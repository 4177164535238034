package kmsserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/internal/testlog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// auditLines decodes an audit log.
func auditLines(t *testing.T, log string) []auditRecord {
	t.Helper()
	var out []auditRecord
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		if l == "" {
			continue
		}
		var r auditRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// TestAuditCapsUnauthenticated sends requests with a 64 KiB forged access
// key ID, as the attack that filled 30 MB in 1.2 s did: each line keeps at
// most maxAuditField bytes of it, lines beyond the burst are suppressed
// while the clock stands still, and the next line written reports how
// many were (issue 10, item 8).
func TestAuditCapsUnauthenticated(t *testing.T) {
	clk := newTestClock()
	store := openStore(t, privateDir(t), clk)
	audit := &testlog.Buffer{}
	srv := New(store, Options{AuditLog: audit, Now: clk.Now})
	forged := strings.Repeat("A", 64<<10)
	send := func() {
		now := clk.Now().UTC()
		r := httptest.NewRequest("POST", "/", strings.NewReader("{}"))
		r.Header.Set("X-Amz-Date", now.Format(amzDateFormat))
		r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+forged+"/"+now.Format("20060102")+
			"/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "UnrecognizedClientException") {
			t.Fatalf("forged request: %d %s", w.Code, w.Body)
		}
	}
	const n = 300
	for range n {
		send()
	}
	if size := len(audit.String()); size > auditUnauthBurst*1024 {
		t.Fatalf("%d forged requests wrote %d bytes of audit log, want at most %d", n, size, auditUnauthBurst*1024)
	}
	lines := auditLines(t, audit.String())
	if len(lines) != auditUnauthBurst {
		t.Fatalf("%d lines for %d forged requests at one instant, want the burst of %d", len(lines), n, auditUnauthBurst)
	}
	if l := lines[0]; len(l.AccessKeyID) > maxAuditField || !strings.HasPrefix(l.AccessKeyID, "AAAA") || !strings.Contains(l.AccessKeyID, "65536 bytes") {
		t.Errorf("logged access key ID %q: want its start, cut to %d bytes, with its length", l.AccessKeyID, maxAuditField)
	}
	clk.Advance(time.Second)
	send()
	lines = auditLines(t, audit.String())
	if got := lines[len(lines)-1].SuppressedUnauthenticated; got != n-auditUnauthBurst {
		t.Errorf("suppressedUnauthenticated = %d, want %d", got, n-auditUnauthBurst)
	}
}

// failingWriter is an audit log whose writes fail, as on a full disk.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestAuditFailsClosed checks that a request whose audit line cannot be
// written is refused with KMSInternalException, and answered with
// AuditFailOpen.
func TestAuditFailsClosed(t *testing.T) {
	for _, failOpen := range []bool{false, true} {
		store := openStore(t, privateDir(t), newTestClock())
		c, err := store.CreateCredential(context.Background(), "alice", selfServicePolicy("alice"))
		if err != nil {
			t.Fatal(err)
		}
		addr, _ := serve(t, store, Options{AuditLog: failingWriter{}, AuditFailOpen: failOpen})
		client := kms.New(kms.Options{
			Region:           "us-east-1",
			BaseEndpoint:     aws.String("http://" + addr),
			Credentials:      credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
			RetryMaxAttempts: 1,
		})
		_, err = client.GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(32)})
		if failOpen {
			if err != nil {
				t.Errorf("AuditFailOpen: %v", err)
			}
			continue
		}
		wantAPIError(t, err, "KMSInternalException")
	}
}

// TestAuditReEncryptRecordsBothKeys checks that ReEncrypt's audit line
// names the source and the destination key.
func TestAuditReEncryptRecordsBothKeys(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	alice := ts.client("alice")
	var arns []string
	for range 2 {
		k, err := alice.CreateKey(ctx, &kms.CreateKeyInput{})
		if err != nil {
			t.Fatal(err)
		}
		arns = append(arns, aws.ToString(k.KeyMetadata.Arn))
	}
	enc, err := alice.Encrypt(ctx, &kms.EncryptInput{KeyId: &arns[0], Plaintext: []byte("x"), EncryptionContext: map[string]string{"from": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: map[string]string{"from": "1"},
		DestinationKeyId: &arns[1], DestinationEncryptionContext: map[string]string{"to": "2"}}); err != nil {
		t.Fatal(err)
	}
	for _, l := range auditLines(t, ts.audit.String()) {
		if l.Operation != "ReEncrypt" {
			continue
		}
		if l.KeyID != arns[0] || l.DestinationKeyID != arns[1] || l.EncryptionContext["from"] != "1" ||
			l.DestinationEncryptionContext["to"] != "2" || l.KeyMaterialID == "" || l.DestinationKeyMaterialID == "" {
			t.Fatalf("ReEncrypt audit line %+v: want source %s and destination %s with their contexts and materials", l, arns[0], arns[1])
		}
		return
	}
	t.Fatal("no ReEncrypt line in the audit log")
}
