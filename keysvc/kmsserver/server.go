// Package kmsserver is the key server: a keysvc/local Store served over
// HTTP as AWS KMS's JSON 1.1 protocol (POST /, X-Amz-Target:
// TrentService.<Operation>, Content-Type application/x-amz-json-1.1), so
// that aws-sdk-go-v2, the AWS CLI and boto3 all work against it unchanged.
// Every request must carry a SigV4 signature (service "kms", any region)
// by a credential of the keystore; the credential's name is the caller,
// whose rights are decided by the key's policy and the credential's
// identity policy. Every request is written to the audit log.
//
// The files, each reviewable on its own: server.go (HTTP, dispatch,
// shutdown), sigv4.go (signature verification), authz.go (how a key
// policy and an identity policy combine), policyeval.go and conditions.go
// (how one policy decides a request), api_*.go (the operations, their
// wire types and the AWS exception names), audit.go (the audit log) and
// limitlistener.go (the connection cap). The keystore itself, with the
// policy parser it validates writes with, is keysvc/local; this package
// imports it, never the reverse.
package kmsserver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// Options configure New.
type Options struct {
	// Logger receives server events (never key material); nil discards.
	Logger *slog.Logger
	// AuditLog, when non-nil, receives one JSON object per line for every
	// request: time, caller, operation, key, encryption context, result
	// (audit.go). Writes are serialised. A request whose line cannot be
	// written is answered with KMSInternalException instead of its result,
	// unless AuditFailOpen is set.
	AuditLog io.Writer
	// AuditFailOpen answers requests even when their audit line cannot be
	// written (the failure is logged).
	AuditFailOpen bool
	// Latency, when positive, delays every answer by this much, to test
	// clients against a KMS that is a network round trip away.
	Latency time.Duration
	// TLSConfig, when non-nil, makes Serve speak HTTPS.
	TLSConfig *tls.Config
	// Now is the clock for signature dates and audit times; nil means
	// time.Now.
	Now func() time.Time
	// ShutdownTimeout bounds the graceful shutdown when Serve's context
	// ends; 0 means 5 seconds.
	ShutdownTimeout time.Duration
	// MaxConnections caps the connections served at once; 0 means
	// DefaultMaxConnections. Further clients wait in the listen backlog
	// until a connection closes.
	MaxConnections int
}

// DefaultMaxConnections is Options.MaxConnections' default: a mount
// keeps a few connections open, so this serves dozens of mounts while
// bounding the memory and descriptors a flood of connections can take.
const DefaultMaxConnections = 256

// Server answers the AWS KMS API from a Store. It is an http.Handler.
type Server struct {
	store *local.Store
	// lookupCredential is store.LookupCredential; a test replaces it to
	// present a credential as an older keystore holds it.
	lookupCredential func(ctx context.Context, accessKeyID string) (local.Credential, error)
	opts             Options
	log              *slog.Logger
	now              func() time.Time

	audit auditWriter
}

// New returns a server for store. The store stays owned by the
// caller, who closes it after Serve returns.
func New(store *local.Store, opts Options) *Server {
	s := &Server{store: store, lookupCredential: store.LookupCredential, opts: opts, log: opts.Logger, now: opts.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.opts.ShutdownTimeout <= 0 {
		s.opts.ShutdownTimeout = 5 * time.Second
	}
	if s.opts.MaxConnections <= 0 {
		s.opts.MaxConnections = DefaultMaxConnections
	}
	return s
}

// Serve answers requests on ln until ctx ends, then shuts down gracefully:
// it stops accepting, lets requests in flight finish (at most
// ShutdownTimeout) and returns nil. It returns the error if serving fails
// otherwise. Serve closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       30 * time.Second, // an idle connection holds one of MaxConnections
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	ln = newLimitListener(ln, s.opts.MaxConnections)
	if s.opts.TLSConfig != nil {
		cfg := s.opts.TLSConfig.Clone()
		if cfg.MinVersion < tls.VersionTLS12 {
			cfg.MinVersion = tls.VersionTLS12
		}
		ln = tls.NewListener(ln, cfg)
	}
	var conns unusedConns
	hs.ConnState = conns.track
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("key server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownTimeout)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- hs.Shutdown(sctx) }()
	// hs.Serve returns as soon as Shutdown has closed the listener; from
	// then on no connection is added, and those that never carried a
	// request can go at once (net/http would wait 5 s for each).
	serr := <-errc
	conns.closeUnused()
	err := <-shut
	if serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		_ = hs.Close()
		return fmt.Errorf("key server shutdown: %w", err)
	}
	return nil
}

// unusedConns tracks the server's connections that have not yet read a
// byte of a request (http.StateNew). http.Server.Shutdown closes idle
// keep-alive connections at once but treats a new one as busy for its
// first 5 seconds, so a connection an HTTP client dialled and never used
// (Go's transport dials spares) would hold a graceful shutdown up to
// that long. Closing such a connection drops no request that had begun
// to arrive; a client that sends one now finds the connection closed, as
// it would a moment later when the server exits.
type unusedConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// track is the http.Server's ConnState hook.
func (u *unusedConns) track(c net.Conn, st http.ConnState) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if st == http.StateNew {
		if u.conns == nil {
			u.conns = make(map[net.Conn]struct{})
		}
		u.conns[c] = struct{}{}
		return
	}
	delete(u.conns, c)
}

// closeUnused closes every connection still waiting for its first request.
func (u *unusedConns) closeUnused() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for c := range u.conns {
		_ = c.Close()
		delete(u.conns, c)
	}
}

// operation is one KMS API operation.
type operation struct {
	name     string
	newInput func() request
	run      func(c *call, in request) (any, *apiError)
}

// op binds an operation's typed input to its handler.
func op[In any, P interface {
	*In
	request
}](name string, run func(c *call, in P) (any, *apiError)) *operation {
	return &operation{
		name:     name,
		newInput: func() request { return P(new(In)) },
		run:      func(c *call, in request) (any, *apiError) { return run(c, in.(P)) },
	}
}

// operations is every operation the server answers, by name.
var operations = func() map[string]*operation {
	m := map[string]*operation{}
	for _, o := range []*operation{
		op("CreateKey", (*call).createKey),
		op("DescribeKey", (*call).describeKey),
		op("ListKeys", (*call).listKeys),
		op("EnableKey", (*call).enableKey),
		op("DisableKey", (*call).disableKey),
		op("ScheduleKeyDeletion", (*call).scheduleKeyDeletion),
		op("CancelKeyDeletion", (*call).cancelKeyDeletion),
		op("EnableKeyRotation", (*call).enableKeyRotation),
		op("DisableKeyRotation", (*call).disableKeyRotation),
		op("GetKeyRotationStatus", (*call).getKeyRotationStatus),
		op("RotateKeyOnDemand", (*call).rotateKeyOnDemand),
		op("ListKeyRotations", (*call).listKeyRotations),
		op("UpdateKeyDescription", (*call).updateKeyDescription),
		op("GetKeyPolicy", (*call).getKeyPolicy),
		op("PutKeyPolicy", (*call).putKeyPolicy),
		op("ListKeyPolicies", (*call).listKeyPolicies),
		op("TagResource", (*call).tagResource),
		op("UntagResource", (*call).untagResource),
		op("ListResourceTags", (*call).listResourceTags),
		op("CreateAlias", (*call).createAlias),
		op("UpdateAlias", (*call).updateAlias),
		op("DeleteAlias", (*call).deleteAlias),
		op("ListAliases", (*call).listAliases),
		op("GenerateDataKey", (*call).generateDataKey),
		op("GenerateDataKeyWithoutPlaintext", (*call).generateDataKeyWithoutPlaintext),
		op("Encrypt", (*call).encrypt),
		op("Decrypt", (*call).decrypt),
		op("ReEncrypt", (*call).reEncrypt),
		op("GenerateRandom", (*call).generateRandom),
	} {
		m[o.name] = o
	}
	return m
}()

// call is one request being answered.
type call struct {
	s         *Server
	ctx       context.Context
	principal string        // IAM ARN of the caller
	identity  *local.Policy // the caller's identity policy; nil: none
	secure    bool          // the request came over TLS
	audit     *auditRecord
}

// newRequestID returns a random request ID spelled as a UUID, as AWS
// spells its x-amzn-RequestId.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ServeHTTP answers one KMS API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &auditRecord{
		Time:      s.now().UTC().Format(time.RFC3339Nano),
		RequestID: newRequestID(),
		Operation: strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService."),
	}
	if len(rec.Operation) > 64 {
		rec.Operation = rec.Operation[:64]
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		rec.SourceIP = host
	}
	out, aerr := s.handle(w, r, rec)
	if s.opts.Latency > 0 {
		t := time.NewTimer(s.opts.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	h := w.Header()
	h.Set("X-Amzn-Requestid", rec.RequestID)
	h.Set("Content-Type", "application/x-amz-json-1.1")
	if z, ok := out.(zeroer); ok {
		defer z.zero()
	}
	var body []byte
	if aerr == nil {
		var err error
		if body, err = json.Marshal(out); err != nil {
			s.log.Error("key server: encode response", "operation", rec.Operation, "err", err)
			aerr = internalError
		}
	}
	defer clear(body) // may hold a plaintext data key
	if aerr != nil {
		rec.Result, rec.ErrorMessage = aerr.typ, aerr.msg
	} else {
		rec.Result = "Success"
	}
	if err := s.writeAudit(rec); err != nil {
		s.log.Error("key server: cannot write the audit log", "request_id", rec.RequestID, "operation", rec.Operation, "err", err)
		if !s.opts.AuditFailOpen {
			// Fail closed: no answer without its audit line. A change the
			// request made to the keystore stays made.
			writeError(w, internalError)
			return
		}
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, aerr *apiError) {
	body, _ := json.Marshal(struct {
		Type    string `json:"__type"`
		Message string `json:"message,omitempty"`
	}{aerr.typ, aerr.msg})
	w.WriteHeader(aerr.status)
	_, _ = w.Write(body)
}

// handle authenticates, decodes and runs the request.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, rec *auditRecord) (any, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	defer clear(body) // may hold a plaintext to encrypt
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, newAPIError(http.StatusRequestEntityTooLarge, "ValidationException", fmt.Sprintf("The request body is larger than %d bytes.", MaxRequestBody))
		}
		return nil, newAPIError(400, "SerializationException", "The request body could not be read.")
	}
	caller, accessKey, aerr := s.authenticate(r, body)
	rec.AccessKeyID = accessKey
	if aerr != nil {
		return nil, aerr
	}
	rec.Caller = local.PrincipalARN(caller.Name)
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		return nil, newAPIError(400, "UnknownOperationException", "Only POST / is served.")
	}
	name, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	o := operations[name]
	if !ok || o == nil {
		return nil, newAPIError(400, "UnknownOperationException", "")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || (mt != "application/x-amz-json-1.1" && mt != "application/json") {
		return nil, newAPIError(400, "SerializationException", "Content-Type must be application/x-amz-json-1.1.")
	}
	in, aerr := decodeRequest(o, body)
	if aerr != nil {
		return nil, aerr
	}
	c := &call{s: s, ctx: r.Context(), principal: rec.Caller, identity: s.identityOf(caller), secure: r.TLS != nil, audit: rec}
	out, aerr := o.run(c, in)
	if aerr == internalError {
		s.log.Error("key server: internal error", "operation", name, "request_id", rec.RequestID)
	}
	return out, aerr
}

// authenticate verifies the SigV4 signature and returns the caller's
// credential and access key ID. The credential is looked up afresh for
// every request, so a revoked one fails at once.
func (s *Server) authenticate(r *http.Request, body []byte) (caller local.Credential, accessKey string, aerr *apiError) {
	var lookupErr error
	lookup := func(id string) (string, string, bool) {
		accessKey = id
		c, err := s.lookupCredential(r.Context(), id)
		if err != nil {
			if !errors.Is(err, keysvc.ErrNotFound) {
				lookupErr = err
			}
			return "", "", false
		}
		caller = c
		return c.SecretAccessKey, c.Name, true
	}
	_, err := verifySigV4(r, body, s.now(), lookup)
	if lookupErr != nil {
		s.log.Error("key server: credential lookup failed", "err", lookupErr)
		return local.Credential{}, accessKey, internalError
	}
	var ae *authError
	if errors.As(err, &ae) {
		return local.Credential{}, accessKey, newAPIError(400, ae.typ, ae.msg)
	}
	if err != nil {
		return local.Credential{}, accessKey, internalError
	}
	return caller, accessKey, nil
}

// identityOf parses the credential's identity policy; nil when it has
// none. A policy that does not parse (it was checked when set) grants
// nothing.
func (s *Server) identityOf(c local.Credential) *local.Policy {
	if c.Policy == "" {
		return nil
	}
	p, err := local.ParseIdentityPolicy(c.Policy)
	if err != nil {
		s.log.Warn("key server: credential has an unparsable identity policy; it grants nothing", "access_key_id", c.AccessKeyID)
		return &local.Policy{}
	}
	return p
}

// authorize checks the caller's rights for action (e.g. "kms:Decrypt") on
// the key ref names, under the key's policy and the caller's identity
// policy (authz.go), with the operation's encryption context ec (nil if
// none), and returns the key's metadata. The audit record gets the key's
// ARN.
func (c *call) authorize(ref, action string, ec map[string]string) (local.KeyMetadata, *apiError) {
	m, policy, err := c.s.store.KeyAndPolicy(c.ctx, ref)
	if err != nil {
		return local.KeyMetadata{}, storeError(err, ref)
	}
	if c.audit.KeyID == "" {
		c.audit.KeyID = m.ARN
	}
	if aerr := c.checkPolicy(m.ARN, policy, action, ec); aerr != nil {
		return local.KeyMetadata{}, aerr
	}
	return m, nil
}
