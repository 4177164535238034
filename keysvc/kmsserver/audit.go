package kmsserver

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// The audit log, the key server's CloudTrail: one JSON object per line for
// every request. Two rules keep an attacker without a credential from
// using it to fill the disk or hide in it:
//
//   - every string field taken from a request is cut to maxAuditField
//     bytes (a real access key ID is 20; a forged one may be 64 KiB);
//   - lines for requests that did not authenticate are limited to
//     auditUnauthBurst at once and auditUnauthRate per second after that;
//     the next line written carries the number left out
//     ("suppressedUnauthenticated").
//
// Lines for authenticated callers are never suppressed. Unless the server
// runs with AuditFailOpen, a request whose line cannot be written is
// answered with an internal error instead of its result.

const (
	// maxAuditField bounds each string field of an audit line that comes
	// from the request.
	maxAuditField = 256
	// auditUnauthRate and auditUnauthBurst limit the lines logged for
	// requests that failed authentication: about 300 bytes each, so at
	// most ~30 KB/s of them.
	auditUnauthRate  = 100
	auditUnauthBurst = 100
)

// auditRecord is one line of the audit log. It never holds plaintext,
// blobs or key material; the encryption context is not secret (AWS logs
// it too) and comes only from authenticated callers.
type auditRecord struct {
	Time              string            `json:"time"`
	RequestID         string            `json:"requestId"`
	SourceIP          string            `json:"sourceIp,omitempty"`
	Caller            string            `json:"caller,omitempty"`
	AccessKeyID       string            `json:"accessKeyId,omitempty"`
	Operation         string            `json:"operation"`
	KeyID             string            `json:"keyId,omitempty"`
	KeyMaterialID     string            `json:"keyMaterialId,omitempty"`
	EncryptionContext map[string]string `json:"encryptionContext,omitempty"`
	// ReEncrypt only: the key, material and context the blob was
	// re-encrypted to (KeyID and EncryptionContext are the source's).
	DestinationKeyID             string            `json:"destinationKeyId,omitempty"`
	DestinationKeyMaterialID     string            `json:"destinationKeyMaterialId,omitempty"`
	DestinationEncryptionContext map[string]string `json:"destinationEncryptionContext,omitempty"`
	Result                       string            `json:"result"`
	ErrorMessage                 string            `json:"errorMessage,omitempty"`
	// SuppressedUnauthenticated counts the lines for unauthenticated
	// requests left out since the previous line.
	SuppressedUnauthenticated int64 `json:"suppressedUnauthenticated,omitempty"`
}

// truncateField cuts s to at most maxAuditField bytes on a UTF-8 boundary,
// saying how long it was.
func truncateField(s string) string {
	if len(s) <= maxAuditField {
		return s
	}
	suffix := fmt.Sprintf("...(%d bytes)", len(s))
	cut := maxAuditField - len(suffix)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + suffix
}

// auditLimiter is a token bucket for unauthenticated lines.
type auditLimiter struct {
	tokens     float64
	last       time.Time
	suppressed int64
}

// allow reports whether a line for an unauthenticated request may be
// written at now, counting it as suppressed when not.
func (l *auditLimiter) allow(now time.Time) bool {
	if l.last.IsZero() {
		l.tokens = auditUnauthBurst
	} else if dt := now.Sub(l.last).Seconds(); dt > 0 {
		l.tokens = min(auditUnauthBurst, l.tokens+dt*auditUnauthRate)
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false
	}
	l.tokens--
	return true
}

// auditWriter serialises writes to the audit log.
type auditWriter struct {
	mu      sync.Mutex
	limiter auditLimiter
}

// write appends rec as one JSON line to s.opts.AuditLog. A line for an
// unauthenticated request may be suppressed (not an error). The error is
// the write's: the caller decides whether the request may still succeed.
func (s *Server) writeAudit(rec *auditRecord) error {
	if s.opts.AuditLog == nil {
		return nil
	}
	for _, f := range []*string{&rec.Caller, &rec.AccessKeyID, &rec.Operation, &rec.KeyID, &rec.DestinationKeyID, &rec.ErrorMessage} {
		*f = truncateField(*f)
	}
	a := &s.audit
	a.mu.Lock()
	defer a.mu.Unlock()
	if rec.Caller == "" && !a.limiter.allow(s.now()) {
		return nil
	}
	rec.SuppressedUnauthenticated = a.limiter.suppressed
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode audit line: %w", err)
	}
	if _, err := s.opts.AuditLog.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	a.limiter.suppressed = 0
	return nil
}
