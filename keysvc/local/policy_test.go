package local

import (
	"errors"
	"strings"
	"testing"
)

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
		_, err := ParseKeyPolicy(tc.doc)
		var pe *PolicyError
		if !errors.As(err, &pe) || !strings.Contains(pe.msg, tc.msg) {
			t.Errorf("%s: ParseKeyPolicy = %v, want a PolicyError saying %q", tc.name, err, tc.msg)
		}
	}
	for _, doc := range []string{
		`{"Statement": {` + ok + `}}`,
		`{"Version": "2012-10-17", "Id": "x", "Statement": [{"Sid": "a", ` + ok + `, "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": true}}}]}`,
		`{"Statement": {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*"}}`,
		`{"Statement": {"Effect": "Allow", "Principal": {"AWS": ["000000000000", "arn:aws:iam::000000000000:root"], "Service": "s3.amazonaws.com"}, "Action": "kms:*"}}`,
	} {
		if _, err := ParseKeyPolicy(doc); err != nil {
			t.Errorf("ParseKeyPolicy(%s): %v", doc, err)
		}
	}
}
