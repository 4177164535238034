package local

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// req is an authRequest on a key for tests.
func req(principal, action string) *authRequest {
	return &authRequest{principal: principal, action: action, resource: keyARN("1234abcd-12ab-34cd-56ef-1234567890ab")}
}

func TestPolicyEvaluate(t *testing.T) {
	alice, bob, carol := PrincipalARN("alice"), PrincipalARN("bob"), PrincipalARN("carol")
	doc := `{
	  "Version": "2012-10-17",
	  "Statement": [
	    {"Effect": "Allow", "Principal": {"AWS": "` + alice + `"}, "Action": "kms:*", "Resource": "*"},
	    {"Effect": "Allow", "Principal": {"AWS": ["` + bob + `"]}, "Action": ["kms:Decrypt", "kms:Generate*"], "Resource": "*"},
	    {"Effect": "Deny", "Principal": {"AWS": "` + bob + `"}, "Action": "kms:GenerateRandom*", "Resource": "*"},
	    {"Effect": "Allow", "Principal": "*", "Action": "kms:Describe?ey", "Resource": "*"},
	    {"Effect": "Allow", "Principal": {"AWS": "` + carol + `"}, "Action": "kms:Encrypt",
	     "Condition": {"StringEquals": {"kms:EncryptionContext:x": "y"}}},
	    {"Effect": "Allow", "Principal": {"AWS": "` + carol + `"}, "Action": "kms:Decrypt",
	     "Condition": {"NumericLessThan": {"kms:EncryptionContext:x": "3"}}},
	    {"Effect": "Allow", "NotPrincipal": {"AWS": "` + carol + `"}, "NotAction": ["kms:*Key*", "kms:Decrypt", "kms:Encrypt", "kms:Generate*"]}
	  ]
	}`
	p, err := parsePolicy(doc)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		who, action string
		want        decision
	}{
		{alice, "kms:Decrypt", allowed},
		{alice, "kms:PutKeyPolicy", allowed},
		{bob, "kms:decrypt", allowed},
		{bob, "kms:GenerateDataKey", allowed},
		{bob, "kms:GenerateDataKeyWithoutPlaintext", allowed},
		{bob, "kms:GenerateRandom", explicitDeny},
		{bob, "kms:Encrypt", implicitDeny},
		{carol, "kms:DescribeKey", allowed},
		{carol, "kms:Encrypt", implicitDeny}, // no encryption context: the condition is false
		{carol, "kms:Decrypt", implicitDeny}, // unknown operator: fail closed
		{carol, "kms:TagResource", implicitDeny},
		{bob, "kms:TagResource", allowed}, // NotPrincipal + NotAction
		{bob, "kms:ScheduleKeyDeletion", implicitDeny},
		{PrincipalARN("dave"), "kms:Decrypt", implicitDeny},
	}
	for _, tc := range cases {
		if got := p.evaluate(req(tc.who, tc.action)); got != tc.want {
			t.Errorf("evaluate(%s, %s) = %v, want %v", tc.who, tc.action, got, tc.want)
		}
	}
	withContext := req(carol, "kms:Encrypt")
	withContext.encryptionContext = map[string]string{"x": "y"}
	if got := p.evaluate(withContext); got != allowed {
		t.Errorf("carol Encrypt with context x=y: %v, want allowed", got)
	}
}

// TestPolicyAccountPrincipalAndDefault: the account principal delegates to
// identity policies (allowedForAccount), it does not allow by itself. On
// main it allowed every credential of the keystore.
func TestPolicyAccountPrincipalAndDefault(t *testing.T) {
	for _, principal := range []string{RootPrincipal, PrincipalARN("alice")} {
		p, err := parsePolicy(DefaultKeyPolicy(principal))
		if err != nil {
			t.Fatalf("default policy for %q does not parse: %v", principal, err)
		}
		wantAlice := allowed
		if principal == RootPrincipal {
			wantAlice = allowedForAccount
		}
		if got := p.evaluate(req(PrincipalARN("alice"), "kms:ScheduleKeyDeletion")); got != wantAlice {
			t.Errorf("default policy for %q: alice gets %v, want %v", principal, got, wantAlice)
		}
		if got := p.evaluate(req(PrincipalARN("bob"), "kms:Decrypt")); got != allowedForAccount {
			t.Errorf("default policy for %q: bob gets %v, want %v", principal, got, allowedForAccount)
		}
		if p.evaluate(req("arn:aws:iam::111122223333:user/alice", "kms:Decrypt")) != implicitDeny {
			t.Errorf("default policy for %q allows another account", principal)
		}
	}
	// A Deny naming the account denies each of its credentials.
	p, err := parsePolicy(`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*"},
	  {"Effect":"Deny","Principal":{"AWS":"000000000000"},"Action":"kms:Decrypt"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.evaluate(req(PrincipalARN("alice"), "kms:Decrypt")); got != explicitDeny {
		t.Errorf("Deny to the account: alice gets %v", got)
	}
}

// TestParsePolicyRejects: what AWS refuses with
// MalformedPolicyDocumentException. On main, the partial-wildcard
// principals, duplicate keys and unknown elements were accepted.
func TestParsePolicyRejects(t *testing.T) {
	const ok = `"Effect": "Allow", "Principal": "*", "Action": "kms:*"`
	for _, tc := range []struct{ name, doc, msg string }{
		{"empty", ``, "1 to"},
		{"not json", `not json`, "invalid JSON"},
		{"no statements", `{"Statement": []}`, "at least one statement"},
		{"no statement element", `{"Version": "2012-10-17"}`, "at least one statement"},
		{"bad effect", `{"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "kms:*"}]}`, "Effect"},
		{"no principal", `{"Statement": [{"Effect": "Allow", "Action": "kms:*"}]}`, "Principal"},
		{"no action", `{"Statement": [{"Effect": "Allow", "Principal": "*"}]}`, "Action"},
		{"principal string", `{"Statement": [{"Effect": "Allow", "Principal": "alice", "Action": "kms:*"}]}`, "Principal"},
		{"not kms", `{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}]}`, "not a kms action"},
		{"trailing value", `{"Statement": {` + ok + `}} {}`, "invalid JSON"},
		{"too long", strings.Repeat(" ", MaxPolicySize+1), "1 to"},
		// Partial wildcards in principals.
		{"wildcard account", `{"Statement": {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::*:role/x"}, "Action": "kms:*"}}`, "wildcard"},
		{"wildcard name", `{"Statement": {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:*"}, "Action": "kms:*"}}`, "wildcard"},
		{"wildcard user", `{"Statement": {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::000000000000:user/a?"]}, "Action": "kms:*"}}`, "wildcard"},
		{"wildcard not principal", `{"Statement": {"Effect": "Deny", "NotPrincipal": {"AWS": "0000*"}, "Action": "kms:*"}}`, "wildcard"},
		{"unknown principal kind", `{"Statement": {"Effect": "Allow", "Principal": {"Group": "x"}, "Action": "kms:*"}}`, "unknown element"},
		// Duplicate keys, at any depth.
		{"duplicate top", `{"Statement": {` + ok + `}, "Statement": {` + ok + `}}`, "twice"},
		{"duplicate effect", `{"Statement": {"Effect": "Deny", ` + ok + `}}`, "twice"},
		{"duplicate principal", `{"Statement": {` + ok + `, "Principal": {"AWS": "*"}}}`, "twice"},
		{"duplicate condition key", `{"Statement": {` + ok + `, "Condition": {"StringEquals": {"kms:CallerAccount": "1", "kms:CallerAccount": "2"}}}}`, "twice"},
		// Unknown elements.
		{"unknown top", `{"Statement": {` + ok + `}, "Statment": []}`, "unknown element"},
		{"lower-case top", `{"statement": {` + ok + `}}`, "unknown element"},
		{"unknown statement element", `{"Statement": {` + ok + `, "Resources": "*"}}`, "unknown element"},
		{"lower-case effect", `{"Statement": {"effect": "Allow", "Principal": "*", "Action": "kms:*"}}`, "unknown element"},
		{"bad version", `{"Version": "2024-01-01", "Statement": {` + ok + `}}`, "Version"},
		{"action and not action", `{"Statement": {` + ok + `, "NotAction": "kms:Decrypt"}}`, "exactly one of Action"},
		{"resource and not resource", `{"Statement": {` + ok + `, "Resource": "*", "NotResource": "x"}}`, "exactly one of Resource"},
		{"bad condition", `{"Statement": {` + ok + `, "Condition": {"StringEquals": "x"}}}`, "Condition"},
		{"condition object value", `{"Statement": {` + ok + `, "Condition": {"StringEquals": {"k": {"a": 1}}}}}`, "Condition"},
	} {
		_, err := parsePolicy(tc.doc)
		var pe *policyError
		if !errors.As(err, &pe) || !strings.Contains(pe.msg, tc.msg) {
			t.Errorf("%s: parsePolicy = %v, want a policyError saying %q", tc.name, err, tc.msg)
		}
	}
	for _, doc := range []string{
		`{"Statement": {` + ok + `}}`,
		`{"Version": "2012-10-17", "Id": "x", "Statement": [{"Sid": "a", ` + ok + `, "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": true}}}]}`,
		`{"Statement": {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*"}}`,
		`{"Statement": {"Effect": "Allow", "Principal": {"AWS": ["000000000000", "arn:aws:iam::000000000000:root"], "Service": "s3.amazonaws.com"}, "Action": "kms:*"}}`,
	} {
		if _, err := parsePolicy(doc); err != nil {
			t.Errorf("parsePolicy(%s): %v", doc, err)
		}
	}
}

// TestParseIdentityPolicy: an identity policy names no principal and needs
// a Resource.
func TestParseIdentityPolicy(t *testing.T) {
	if _, err := parseIdentityPolicy(AdminPolicy); err != nil {
		t.Fatalf("AdminPolicy: %v", err)
	}
	for _, doc := range []string{
		`{"Statement": {"Effect": "Allow", "Action": "kms:*"}}`,
		`{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}}`,
		`{"Statement": {"Effect": "Allow", "Action": "kms:*", "Resource": "*", "Extra": 1}}`,
	} {
		var pe *policyError
		if _, err := parseIdentityPolicy(doc); !errors.As(err, &pe) {
			t.Errorf("parseIdentityPolicy(%s) = %v, want a policyError", doc, err)
		}
	}
	p, err := parseIdentityPolicy(`{"Statement": [
	  {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:local:000000000000:key/*"},
	  {"Effect": "Allow", "Action": "kms:CreateAlias", "NotResource": "arn:aws:kms:local:000000000000:alias/prod-*"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		action, resource string
		want             decision
	}{
		{"kms:Decrypt", keyARN("1234abcd-12ab-34cd-56ef-1234567890ab"), allowed},
		{"kms:Decrypt", aliasARN("alias/x"), implicitDeny},
		{"kms:CreateAlias", aliasARN("alias/team"), allowed},
		{"kms:CreateAlias", aliasARN("alias/prod-db"), implicitDeny},
	} {
		r := &authRequest{principal: PrincipalARN("a"), action: tc.action, resource: tc.resource}
		if got := p.evaluate(r); got != tc.want {
			t.Errorf("%s on %s: %v, want %v", tc.action, tc.resource, got, tc.want)
		}
	}
}

// TestConditions drives each supported operator and key, and the
// fail-closed cases. On main every Allow with a Condition granted nothing.
func TestConditions(t *testing.T) {
	ec := map[string]string{"kmsfs:fs": "fs-1", "kmsfs:file": "f-9"}
	for _, tc := range []struct {
		cond string
		ec   map[string]string
		want condResult
	}{
		{`{"StringEquals": {"kms:EncryptionContext:kmsfs:fs": "fs-1"}}`, ec, condTrue},
		{`{"StringEquals": {"kms:EncryptionContext:kmsfs:fs": ["fs-0", "fs-1"]}}`, ec, condTrue},
		{`{"StringEquals": {"kms:EncryptionContext:kmsfs:fs": "fs-2"}}`, ec, condFalse},
		{`{"StringEquals": {"kms:EncryptionContext:kmsfs:fs": "FS-1"}}`, ec, condFalse},
		{`{"StringEquals": {"KMS:EncryptionContext:KMSFS:FS": "fs-1"}}`, ec, condTrue}, // key names fold case
		{`{"StringEquals": {"kms:EncryptionContext:kmsfs:fs": "fs-1"}}`, nil, condFalse},
		{`{"StringEqualsIgnoreCase": {"kms:EncryptionContext:kmsfs:fs": "FS-1"}}`, ec, condTrue},
		{`{"StringNotEquals": {"kms:EncryptionContext:kmsfs:fs": "fs-1"}}`, ec, condFalse},
		{`{"StringNotEquals": {"kms:EncryptionContext:kmsfs:fs": "fs-2"}}`, ec, condTrue},
		{`{"StringNotEquals": {"kms:EncryptionContext:kmsfs:fs": "fs-2"}}`, nil, condTrue},
		{`{"StringLike": {"kms:EncryptionContext:kmsfs:fs": "fs-*"}}`, ec, condTrue},
		{`{"StringLike": {"kms:EncryptionContext:kmsfs:fs": "fs-?0"}}`, ec, condFalse},
		{`{"StringNotLike": {"kms:EncryptionContext:kmsfs:fs": "prod-*"}}`, ec, condTrue},
		{`{"StringEqualsIfExists": {"kms:EncryptionContext:kmsfs:fs": "fs-1"}}`, nil, condTrue},
		{`{"StringEqualsIfExists": {"kms:EncryptionContext:kmsfs:fs": "fs-2"}}`, ec, condFalse},
		{`{"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["kmsfs:fs", "kmsfs:file"]}}`, ec, condTrue},
		{`{"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["kmsfs:fs"]}}`, ec, condFalse},
		{`{"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["kmsfs:fs"]}}`, nil, condTrue},
		{`{"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "kmsfs:file"}}`, ec, condTrue},
		{`{"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "other:*"}}`, ec, condFalse},
		{`{"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "kmsfs:file"}}`, nil, condFalse},
		{`{"Null": {"kms:EncryptionContext:kmsfs:fs": "false"}}`, ec, condTrue},
		{`{"Null": {"kms:EncryptionContext:kmsfs:fs": "false"}}`, nil, condFalse},
		{`{"Null": {"kms:EncryptionContextKeys": "true"}}`, nil, condTrue},
		{`{"Bool": {"aws:SecureTransport": "false"}}`, nil, condTrue},
		{`{"Bool": {"aws:SecureTransport": true}}`, nil, condFalse},
		{`{"StringEquals": {"kms:CallerAccount": "000000000000"}}`, nil, condTrue},
		{`{"StringEquals": {"kms:ViaService": "ec2.local.amazonaws.com"}}`, ec, condFalse},
		{`{"StringEquals": {"aws:PrincipalArn": "arn:aws:iam::000000000000:user/alice"}}`, nil, condTrue},
		// Two tests AND together.
		{`{"StringEquals": {"kms:EncryptionContext:kmsfs:fs": "fs-1", "kms:EncryptionContext:kmsfs:file": "f-0"}}`, ec, condFalse},
		// Fail closed: unknown operators and keys, policy variables, a set
		// key without a set operator, a set operator on Null.
		{`{"NumericLessThan": {"kms:EncryptionContext:kmsfs:fs": "3"}}`, ec, condUnknown},
		{`{"StringEquals": {"kms:GrantIsForAWSResource": "true"}}`, ec, condUnknown},
		{`{"StringEquals": {"kms:EncryptionContext:kmsfs:fs": "${aws:username}"}}`, ec, condUnknown},
		{`{"StringEquals": {"kms:EncryptionContextKeys": "kmsfs:fs"}}`, ec, condUnknown},
		{`{"ForAllValues:Null": {"kms:EncryptionContextKeys": "true"}}`, ec, condUnknown},
		{`{"Null": {"kms:EncryptionContextKeys": "maybe"}}`, ec, condUnknown},
		{`{"StringEquals": {"kms:EncryptionContext:kmsfs:fs": "fs-2"}, "Whatever": {"x": "y"}}`, ec, condFalse},
		{`{"StringEquals": {"kms:EncryptionContext:kmsfs:fs": "fs-1"}, "Whatever": {"x": "y"}}`, ec, condUnknown},
	} {
		conds, err := parseConditions([]byte(tc.cond), "test")
		if err != nil {
			t.Fatalf("%s: %v", tc.cond, err)
		}
		r := &authRequest{principal: PrincipalARN("alice"), action: "kms:Decrypt", resource: "*", encryptionContext: tc.ec}
		if got := allConditions(conds, r); got != tc.want {
			t.Errorf("%s with context %v = %v, want %v", tc.cond, tc.ec, got, tc.want)
		}
	}
	// Unknown conditions: an Allow grants nothing, a Deny denies.
	p, err := parseIdentityPolicy(`{"Statement": [
	  {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
	  {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.evaluate(req(PrincipalARN("a"), "kms:Decrypt")); got != explicitDeny {
		t.Errorf("Deny with an unknown condition: %v, want explicitDeny", got)
	}
}

func TestWildcardMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "kms:x", true}, {"kms:*", "kms:decrypt", true},
		{"kms:gen*key", "kms:generatedatakey", true}, {"kms:gen*key", "kms:generatedatakeypair", false},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"", "", true}, {"", "a", false},
		{"*a*a*a*a*a*a*b", strings.Repeat("a", 60), false},
	} {
		if got := wildcardMatch(tc.p, tc.s); got != tc.want {
			t.Errorf("wildcardMatch(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}

// FuzzParsePolicy: the parser never panics, and what it accepts evaluates
// without panicking for any request.
func FuzzParsePolicy(f *testing.F) {
	f.Add(DefaultKeyPolicy(PrincipalARN("alice")), "kmsfs:fs", "x")
	f.Add(AdminPolicy, "a", "b")
	f.Add(`{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"*"},"NotAction":"kms:*","NotResource":"*",
	  "Condition":{"ForAllValues:StringLike":{"kms:EncryptionContextKeys":["a*","?"]},"Null":{"kms:EncryptionContext:a":"true"}}}}`, "a", "")
	f.Fuzz(func(t *testing.T, doc, ecKey, ecValue string) {
		r := req(PrincipalARN("alice"), "kms:Decrypt")
		r.encryptionContext = map[string]string{ecKey: ecValue}
		for _, parse := range []func(string) (*policyDocument, error){parsePolicy, parseIdentityPolicy} {
			p, err := parse(doc)
			if err != nil {
				var pe *policyError
				if !errors.As(err, &pe) {
					t.Fatalf("error %v is not a policyError", err)
				}
				continue
			}
			p.evaluate(r)
		}
	})
}

// TestFuzzPolicyCorpusPresent fails when the checked-in seed corpus of
// FuzzParsePolicy is missing.
func TestFuzzPolicyCorpusPresent(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzParsePolicy"))
	if err != nil || len(entries) == 0 {
		t.Fatalf("seed corpus testdata/fuzz/FuzzParsePolicy is empty or missing: %v", err)
	}
}
