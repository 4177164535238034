package kmsserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SigV4 verification for the key server, following AWS's "Signature
// Version 4 signing process": the server rebuilds the canonical request
// from the headers the client says it signed, derives the signing key from
// the credential's secret and the credential scope, and compares the
// signatures in constant time.
//
// The canonical request is rebuilt here rather than by re-signing with the
// SDK's signer: a signer chooses which headers to sign by its own rules
// (the Go SDK skips User-Agent and adds Content-Length, botocore signs
// something else), while a verifier must use exactly the client's
// SignedHeaders list. The tests check this code against the SDK's signer;
// the integration tests check it against botocore (AWS CLI, boto3).

const (
	sigV4Algorithm = "AWS4-HMAC-SHA256"
	sigV4Service   = "kms"
	sigV4Terminal  = "aws4_request"
	amzDateFormat  = "20060102T150405Z"
	// maxClockSkew is how far the request's X-Amz-Date may be from the
	// server's clock: 5 minutes, as AWS allows for SigV4.
	maxClockSkew = 5 * time.Minute
)

// requiredSignedHeaders must be in a request's SignedHeaders whenever the
// request carries them (Host always does), besides the header that
// carries the signing time (x-amz-date, or date). Every AWS SDK and
// botocore signs them; without them a signature would not cover which
// operation is called (X-Amz-Target) or how the body is read, and a
// request signed for ListKeys could be sent on as DisableKey. A request
// without X-Amz-Target or Content-Type is refused later, as an unknown
// operation or a serialization error.
var requiredSignedHeaders = []struct{ name, display string }{
	{"host", "Host"},
	{"x-amz-target", "X-Amz-Target"},
	{"content-type", "Content-Type"},
}

// authError is a failed authentication, with the AWS error type to answer.
type authError struct {
	typ string // e.g. "InvalidSignatureException"
	msg string
}

func (e *authError) Error() string { return e.typ + ": " + e.msg }

// sigV4Auth is a parsed Authorization header.
type sigV4Auth struct {
	accessKeyID   string
	date          string // yyyymmdd from the credential scope
	region        string
	service       string
	terminal      string
	signedHeaders []string
	signature     string
}

// parseAuthorization parses "AWS4-HMAC-SHA256 Credential=AKID/date/region/
// service/aws4_request, SignedHeaders=a;b, Signature=hex".
func parseAuthorization(h string) (sigV4Auth, error) {
	incomplete := func(msg string) (sigV4Auth, error) {
		return sigV4Auth{}, &authError{"IncompleteSignatureException", msg}
	}
	alg, rest, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || alg != sigV4Algorithm {
		return incomplete("Unsupported AWS 'algorithm': only " + sigV4Algorithm + " is accepted.")
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return incomplete("Authorization header requires each component to be of the form key=value.")
		}
		if _, dup := fields[k]; dup {
			return incomplete("Authorization header has a duplicate '" + k + "' parameter.")
		}
		fields[k] = v
	}
	for _, need := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[need] == "" {
			return incomplete("Authorization header requires '" + need + "' parameter.")
		}
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[0] == "" {
		return incomplete("Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term.")
	}
	a := sigV4Auth{
		accessKeyID:   scope[0],
		date:          scope[1],
		region:        scope[2],
		service:       scope[3],
		terminal:      scope[4],
		signedHeaders: strings.Split(fields["SignedHeaders"], ";"),
		signature:     fields["Signature"],
	}
	for _, s := range a.signedHeaders {
		if s == "" || s != strings.ToLower(s) {
			return incomplete("SignedHeaders must be a semicolon-separated list of lower-case header names.")
		}
	}
	return a, nil
}

// requestTime returns the signing time from X-Amz-Date, else Date.
func requestTime(r *http.Request) (time.Time, string, error) {
	if v := r.Header.Get("X-Amz-Date"); v != "" {
		t, err := time.Parse(amzDateFormat, v)
		if err != nil {
			return time.Time{}, "", &authError{"IncompleteSignatureException", "X-Amz-Date must be in ISO 8601 basic format (yyyyMMdd'T'HHmmss'Z')."}
		}
		return t, v, nil
	}
	if v := r.Header.Get("Date"); v != "" {
		t, err := http.ParseTime(v)
		if err != nil {
			return time.Time{}, "", &authError{"IncompleteSignatureException", "Date header is not a valid HTTP date."}
		}
		return t.UTC(), t.UTC().Format(amzDateFormat), nil
	}
	return time.Time{}, "", &authError{"IncompleteSignatureException", "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."}
}

// secretLookup returns the secret access key for an access key ID and the
// caller's name, or ok=false when the keystore does not know the key.
type secretLookup func(accessKeyID string) (secret, caller string, ok bool)

// verifySigV4 authenticates r, whose body has already been read into body.
// It returns the caller's name. now is the server's clock.
func verifySigV4(r *http.Request, body []byte, now time.Time, lookup secretLookup) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if r.URL.Query().Get("X-Amz-Signature") != "" {
			return "", &authError{"IncompleteSignatureException", "Query-string (presigned) authentication is not supported by this service; sign the Authorization header."}
		}
		return "", &authError{"MissingAuthenticationTokenException", "Missing Authentication Token"}
	}
	a, err := parseAuthorization(h)
	if err != nil {
		return "", err
	}
	t, amzDate, err := requestTime(r)
	if err != nil {
		return "", err
	}
	for _, h := range requiredSignedHeaders {
		present := h.name == "host" || len(r.Header.Values(h.name)) > 0
		if present && !hasHeader(a.signedHeaders, h.name) {
			return "", &authError{"InvalidSignatureException", "'" + h.display + "' must be a signed header."}
		}
	}
	if r.Header.Get("X-Amz-Date") != "" {
		if !hasHeader(a.signedHeaders, "x-amz-date") {
			return "", &authError{"InvalidSignatureException", "'X-Amz-Date' must be a signed header."}
		}
	} else if !hasHeader(a.signedHeaders, "date") {
		return "", &authError{"InvalidSignatureException", "'Date' must be a signed header."}
	}
	if a.date != t.Format("20060102") {
		return "", &authError{"InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '" + a.date + "' != '" + t.Format("20060102") + "', from '" + amzDate + "'."}
	}
	if a.service != sigV4Service {
		return "", &authError{"InvalidSignatureException", "Credential should be scoped to correct service: '" + sigV4Service + "'."}
	}
	if a.terminal != sigV4Terminal {
		return "", &authError{"InvalidSignatureException", "Credential should be scoped with a valid terminator: '" + sigV4Terminal + "', not '" + a.terminal + "'."}
	}
	if a.region == "" {
		return "", &authError{"InvalidSignatureException", "Credential should be scoped to a valid region."}
	}
	if t.Before(now.Add(-maxClockSkew)) {
		return "", &authError{"InvalidSignatureException", fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - 5 min.)",
			amzDate, now.Add(-maxClockSkew).UTC().Format(amzDateFormat), now.UTC().Format(amzDateFormat))}
	}
	if t.After(now.Add(maxClockSkew)) {
		return "", &authError{"InvalidSignatureException", fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + 5 min.)",
			amzDate, now.Add(maxClockSkew).UTC().Format(amzDateFormat), now.UTC().Format(amzDateFormat))}
	}
	secret, caller, ok := lookup(a.accessKeyID)
	if !ok {
		return "", &authError{"UnrecognizedClientException", "The security token included in the request is invalid."}
	}
	if r.Header.Get("X-Amz-Security-Token") != "" {
		// Local credentials are long-term keys; a session token belongs to
		// some other issuer, as AWS would say.
		return "", &authError{"UnrecognizedClientException", "The security token included in the request is invalid."}
	}
	scope := a.date + "/" + a.region + "/" + a.service + "/" + a.terminal
	creq := canonicalRequest(r, a.signedHeaders, body)
	sum := sha256.Sum256([]byte(creq))
	stringToSign := sigV4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := signingKey(secret, a.date, a.region, a.service)
	want := hex.EncodeToString(hmacSHA256(key, []byte(stringToSign)))
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(a.signature))) {
		return "", &authError{"InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}
	}
	return caller, nil
}

func hasHeader(list []string, name string) bool {
	for _, h := range list {
		if h == name {
			return true
		}
	}
	return false
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// signingKey derives the SigV4 signing key for one day, region and service.
func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), []byte(date))
	k = hmacSHA256(k, []byte(region))
	k = hmacSHA256(k, []byte(service))
	return hmacSHA256(k, []byte(sigV4Terminal))
}

// canonicalRequest builds the SigV4 canonical request of r over the given
// signed headers and body.
func canonicalRequest(r *http.Request, signed []string, body []byte) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(r.URL))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL))
	b.WriteByte('\n')
	for _, name := range signed {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(canonicalHeaderValue(r, name))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signed, ";"))
	b.WriteByte('\n')
	sum := sha256.Sum256(body)
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String()
}

// canonicalHeaderValue joins the header's values with commas, trimming and
// collapsing runs of spaces, as SigV4 specifies. Go's server moves Host out
// of the header map into r.Host and may keep Content-Length only as
// r.ContentLength; both are put back here.
func canonicalHeaderValue(r *http.Request, name string) string {
	var values []string
	switch name {
	case "host":
		values = []string{r.Host}
	default:
		values = r.Header.Values(name)
		if len(values) == 0 && name == "content-length" && r.ContentLength >= 0 {
			values = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
	}
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(out, ",")
}

// canonicalURI encodes each path segment of the path as sent (already
// percent-encoded once) a second time, as SigV4 does for every service but
// S3. KMS clients always send "/".
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = uriEncode(s, true)
	}
	return strings.Join(segs, "/")
}

// canonicalQuery sorts the query parameters by name, then value, each
// URI-encoded.
func canonicalQuery(u *url.URL) string {
	q := u.Query()
	if len(q) == 0 {
		return ""
	}
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, pair{uriEncode(k, true), uriEncode(v, true)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.k + "=" + p.v
	}
	return strings.Join(out, "&")
}

// uriEncode percent-encodes every byte except the unreserved characters
// A-Z a-z 0-9 - _ . ~ (and '/' unless encodeSlash).
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}
