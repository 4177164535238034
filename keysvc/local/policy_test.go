package local

import (
	"errors"
	"strings"
	"testing"
)

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
		{carol, "kms:Encrypt", implicitDeny}, // Condition: fail closed
		{carol, "kms:TagResource", implicitDeny},
		{bob, "kms:TagResource", allowed}, // NotPrincipal + NotAction
		{bob, "kms:ScheduleKeyDeletion", implicitDeny},
		{PrincipalARN("dave"), "kms:Decrypt", implicitDeny},
	}
	for _, tc := range cases {
		if got := p.evaluate(tc.who, tc.action); got != tc.want {
			t.Errorf("evaluate(%s, %s) = %v, want %v", tc.who, tc.action, got, tc.want)
		}
	}
}

func TestPolicyAccountPrincipalAndDefault(t *testing.T) {
	for _, principal := range []string{RootPrincipal, PrincipalARN("alice")} {
		p, err := parsePolicy(DefaultKeyPolicy(principal))
		if err != nil {
			t.Fatalf("default policy for %q does not parse: %v", principal, err)
		}
		if p.evaluate(PrincipalARN("alice"), "kms:ScheduleKeyDeletion") != allowed {
			t.Errorf("default policy for %q does not allow alice", principal)
		}
		wantBob := allowed
		if principal != RootPrincipal {
			wantBob = implicitDeny
		}
		if got := p.evaluate(PrincipalARN("bob"), "kms:Decrypt"); got != wantBob {
			t.Errorf("default policy for %q: bob gets %v", principal, got)
		}
		if p.evaluate("arn:aws:iam::111122223333:user/alice", "kms:Decrypt") != implicitDeny {
			t.Errorf("default policy for %q allows another account", principal)
		}
	}
}

func TestParsePolicyRejects(t *testing.T) {
	for _, doc := range []string{
		``,
		`not json`,
		`{"Statement": []}`,
		`{"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "kms:*"}]}`,
		`{"Statement": [{"Effect": "Allow", "Action": "kms:*"}]}`,
		`{"Statement": [{"Effect": "Allow", "Principal": "*"}]}`,
		`{"Statement": [{"Effect": "Allow", "Principal": "alice", "Action": "kms:*"}]}`,
		`{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}]}`,
		`{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*"}} {}`,
		strings.Repeat(" ", MaxPolicySize+1),
	} {
		_, err := parsePolicy(doc)
		var pe *policyError
		if !errors.As(err, &pe) {
			t.Errorf("parsePolicy(%.40q) = %v, want a policyError", doc, err)
		}
	}
	if _, err := parsePolicy(`{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "kms:*"}}`); err != nil {
		t.Errorf("single statement object: %v", err)
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
