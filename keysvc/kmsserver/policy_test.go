package kmsserver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keysvc/local"
)

// req is an authRequest on a key for tests.
func req(principal, action string) *authRequest {
	return &authRequest{principal: principal, action: action, resource: local.KeyARN("1234abcd-12ab-34cd-56ef-1234567890ab")}
}

func TestPolicyEvaluate(t *testing.T) {
	alice, bob, carol := local.PrincipalARN("alice"), local.PrincipalARN("bob"), local.PrincipalARN("carol")
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
	p, err := local.ParseKeyPolicy(doc)
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
		{local.PrincipalARN("dave"), "kms:Decrypt", implicitDeny},
	}
	for _, tc := range cases {
		if got := evaluate(p, req(tc.who, tc.action)); got != tc.want {
			t.Errorf("evaluate(%s, %s) = %v, want %v", tc.who, tc.action, got, tc.want)
		}
	}
	withContext := req(carol, "kms:Encrypt")
	withContext.encryptionContext = map[string]string{"x": "y"}
	if got := evaluate(p, withContext); got != allowed {
		t.Errorf("carol Encrypt with context x=y: %v, want allowed", got)
	}
}

// TestPolicyAccountPrincipalAndDefault: the account principal delegates to
// identity policies (allowedForAccount), it does not allow by itself. On
// main it allowed every credential of the keystore.
func TestPolicyAccountPrincipalAndDefault(t *testing.T) {
	for _, principal := range []string{local.RootPrincipal, local.PrincipalARN("alice")} {
		p, err := local.ParseKeyPolicy(local.DefaultKeyPolicy(principal))
		if err != nil {
			t.Fatalf("default policy for %q does not parse: %v", principal, err)
		}
		wantAlice := allowed
		if principal == local.RootPrincipal {
			wantAlice = allowedForAccount
		}
		if got := evaluate(p, req(local.PrincipalARN("alice"), "kms:ScheduleKeyDeletion")); got != wantAlice {
			t.Errorf("default policy for %q: alice gets %v, want %v", principal, got, wantAlice)
		}
		if got := evaluate(p, req(local.PrincipalARN("bob"), "kms:Decrypt")); got != allowedForAccount {
			t.Errorf("default policy for %q: bob gets %v, want %v", principal, got, allowedForAccount)
		}
		if evaluate(p, req("arn:aws:iam::111122223333:user/alice", "kms:Decrypt")) != implicitDeny {
			t.Errorf("default policy for %q allows another account", principal)
		}
	}
	// A Deny naming the account denies each of its credentials.
	p, err := local.ParseKeyPolicy(`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*"},
	  {"Effect":"Deny","Principal":{"AWS":"000000000000"},"Action":"kms:Decrypt"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := evaluate(p, req(local.PrincipalARN("alice"), "kms:Decrypt")); got != explicitDeny {
		t.Errorf("Deny to the account: alice gets %v", got)
	}
}

// TestParseIdentityPolicy: an identity policy names no principal and needs
// a Resource.
func TestParseIdentityPolicy(t *testing.T) {
	if _, err := local.ParseIdentityPolicy(local.AdminPolicy); err != nil {
		t.Fatalf("AdminPolicy: %v", err)
	}
	for _, doc := range []string{
		`{"Statement": {"Effect": "Allow", "Action": "kms:*"}}`,
		`{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}}`,
		`{"Statement": {"Effect": "Allow", "Action": "kms:*", "Resource": "*", "Extra": 1}}`,
	} {
		var pe *local.PolicyError
		if _, err := local.ParseIdentityPolicy(doc); !errors.As(err, &pe) {
			t.Errorf("ParseIdentityPolicy(%s) = %v, want a PolicyError", doc, err)
		}
	}
	p, err := local.ParseIdentityPolicy(`{"Statement": [
	  {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:local:000000000000:key/*"},
	  {"Effect": "Allow", "Action": "kms:CreateAlias", "NotResource": "arn:aws:kms:local:000000000000:alias/prod-*"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		action, resource string
		want             decision
	}{
		{"kms:Decrypt", local.KeyARN("1234abcd-12ab-34cd-56ef-1234567890ab"), allowed},
		{"kms:Decrypt", local.AliasARN("alias/x"), implicitDeny},
		{"kms:CreateAlias", local.AliasARN("alias/team"), allowed},
		{"kms:CreateAlias", local.AliasARN("alias/prod-db"), implicitDeny},
	} {
		r := &authRequest{principal: local.PrincipalARN("a"), action: tc.action, resource: tc.resource}
		if got := evaluate(p, r); got != tc.want {
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
		p, err := local.ParseIdentityPolicy(`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":` + tc.cond + `}}`)
		if err != nil {
			t.Fatalf("%s: %v", tc.cond, err)
		}
		conds := p.Statement[0].Conditions
		r := &authRequest{principal: local.PrincipalARN("alice"), action: "kms:Decrypt", resource: "*", encryptionContext: tc.ec}
		if got := allConditions(conds, r); got != tc.want {
			t.Errorf("%s with context %v = %v, want %v", tc.cond, tc.ec, got, tc.want)
		}
	}
	// Unknown conditions: an Allow grants nothing, a Deny denies.
	p, err := local.ParseIdentityPolicy(`{"Statement": [
	  {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
	  {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := evaluate(p, req(local.PrincipalARN("a"), "kms:Decrypt")); got != explicitDeny {
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
	f.Add(local.DefaultKeyPolicy(local.PrincipalARN("alice")), "kmsfs:fs", "x")
	f.Add(local.AdminPolicy, "a", "b")
	f.Add(`{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"*"},"NotAction":"kms:*","NotResource":"*",
	  "Condition":{"ForAllValues:StringLike":{"kms:EncryptionContextKeys":["a*","?"]},"Null":{"kms:EncryptionContext:a":"true"}}}}`, "a", "")
	f.Fuzz(func(t *testing.T, doc, ecKey, ecValue string) {
		r := req(local.PrincipalARN("alice"), "kms:Decrypt")
		r.encryptionContext = map[string]string{ecKey: ecValue}
		for _, parse := range []func(string) (*local.Policy, error){local.ParseKeyPolicy, local.ParseIdentityPolicy} {
			p, err := parse(doc)
			if err != nil {
				var pe *local.PolicyError
				if !errors.As(err, &pe) {
					t.Fatalf("error %v is not a local.PolicyError", err)
				}
				continue
			}
			evaluate(p, r)
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
