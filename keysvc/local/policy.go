package local

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Key policies, the subset the key server enforces.
//
// A policy is AWS's JSON document: {"Version": …, "Statement": [ {"Sid",
// "Effect": "Allow"|"Deny", "Principal" | "NotPrincipal", "Action" |
// "NotAction", "Resource", "Condition"} ]}. Evaluation follows AWS's order:
// an explicit Deny that matches wins, else a matching Allow grants, else the
// request is denied.
//
// Principals are IAM ARNs. A keystore credential named NAME is the
// principal arn:aws:iam::000000000000:user/NAME. "*" matches everyone; the
// account ("000000000000" or arn:aws:iam::000000000000:root) matches every
// credential of the keystore, as AWS's account principal delegates to IAM,
// and here every keystore credential is the account's. Actions match
// case-insensitively with the wildcards * and ?. Resource is ignored (a key
// policy always applies to its own key).
//
// Conditions cannot be evaluated here, so the server fails closed: an Allow
// statement with a Condition grants nothing, a Deny statement with one
// denies as if the condition held.

// PrincipalARN returns the IAM principal ARN of the keystore credential
// with the given name.
func PrincipalARN(name string) string {
	return "arn:aws:iam::" + AccountID + ":user/" + name
}

// policyDocument is the decoded policy.
type policyDocument struct {
	Version   string        `json:"Version"`
	ID        string        `json:"Id,omitempty"`
	Statement statementList `json:"Statement"`
}

type policyStatement struct {
	Sid          string          `json:"Sid,omitempty"`
	Effect       string          `json:"Effect"`
	Principal    *principalSet   `json:"Principal,omitempty"`
	NotPrincipal *principalSet   `json:"NotPrincipal,omitempty"`
	Action       stringList      `json:"Action,omitempty"`
	NotAction    stringList      `json:"NotAction,omitempty"`
	Resource     stringList      `json:"Resource,omitempty"`
	Condition    json.RawMessage `json:"Condition,omitempty"`
}

// statementList accepts one statement object or an array of them.
type statementList []policyStatement

func (l *statementList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		var s policyStatement
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = statementList{s}
		return nil
	}
	var ss []policyStatement
	if err := json.Unmarshal(b, &ss); err != nil {
		return err
	}
	*l = ss
	return nil
}

// stringList accepts a string or an array of strings.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = stringList{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return err
	}
	*l = ss
	return nil
}

// MarshalJSON writes a one-element list as a plain string, as AWS does.
func (l stringList) MarshalJSON() ([]byte, error) {
	if len(l) == 1 {
		return json.Marshal(l[0])
	}
	return json.Marshal([]string(l))
}

// principalSet is "*" or {"AWS": "arn" | ["arn", …], "Service": …}. Only
// AWS principals can match a keystore credential.
type principalSet struct {
	Any bool
	AWS []string
}

func (p *principalSet) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s != "*" {
			return fmt.Errorf("principal string must be \"*\"")
		}
		p.Any = true
		return nil
	}
	var m map[string]stringList
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	if len(m) == 0 {
		return fmt.Errorf("empty principal")
	}
	p.AWS = m["AWS"]
	return nil
}

func (p *principalSet) MarshalJSON() ([]byte, error) {
	if p.Any {
		return json.Marshal("*")
	}
	if len(p.AWS) == 1 {
		return json.Marshal(map[string]string{"AWS": p.AWS[0]})
	}
	return json.Marshal(map[string][]string{"AWS": p.AWS})
}

func (p *principalSet) matches(principal string) bool {
	if p.Any {
		return true
	}
	for _, a := range p.AWS {
		switch a {
		case "*", principal:
			return true
		case AccountID, RootPrincipal:
			if strings.HasPrefix(principal, "arn:aws:iam::"+AccountID+":") {
				return true
			}
		}
	}
	return false
}

// policyError is a malformed policy document.
type policyError struct{ msg string }

func (e *policyError) Error() string { return e.msg }

// parsePolicy decodes and validates a key policy document.
func parsePolicy(doc string) (*policyDocument, error) {
	if len(doc) == 0 || len(doc) > MaxPolicySize {
		return nil, &policyError{fmt.Sprintf("The policy must be 1 to %d characters.", MaxPolicySize)}
	}
	var p policyDocument
	dec := json.NewDecoder(strings.NewReader(doc))
	if err := dec.Decode(&p); err != nil {
		return nil, &policyError{"The new key policy contains invalid JSON."}
	}
	if dec.More() {
		return nil, &policyError{"The new key policy contains invalid JSON."}
	}
	if len(p.Statement) == 0 {
		return nil, &policyError{"The policy must contain at least one statement."}
	}
	for i, s := range p.Statement {
		switch s.Effect {
		case "Allow", "Deny":
		default:
			return nil, &policyError{fmt.Sprintf("Statement %d: Effect must be \"Allow\" or \"Deny\".", i)}
		}
		if (s.Principal == nil) == (s.NotPrincipal == nil) {
			return nil, &policyError{fmt.Sprintf("Statement %d: exactly one of Principal and NotPrincipal is required in a key policy.", i)}
		}
		if (len(s.Action) == 0) == (len(s.NotAction) == 0) {
			return nil, &policyError{fmt.Sprintf("Statement %d: exactly one of Action and NotAction is required.", i)}
		}
		for _, a := range append(append([]string(nil), s.Action...), s.NotAction...) {
			if a != "*" && !strings.HasPrefix(strings.ToLower(a), "kms:") {
				return nil, &policyError{fmt.Sprintf("Statement %d: action %q is not a kms action.", i, a)}
			}
		}
	}
	return &p, nil
}

// decision is the outcome of evaluating a policy.
type decision int

const (
	implicitDeny decision = iota
	allowed
	explicitDeny
)

// evaluate decides whether principal may perform action (e.g.
// "kms:Decrypt") under p.
func (p *policyDocument) evaluate(principal, action string) decision {
	allow := false
	for _, s := range p.Statement {
		if !s.applies(principal, action) {
			continue
		}
		if s.Effect == "Deny" {
			return explicitDeny
		}
		if len(s.Condition) == 0 || string(s.Condition) == "{}" {
			allow = true
		}
	}
	if allow {
		return allowed
	}
	return implicitDeny
}

func (s *policyStatement) applies(principal, action string) bool {
	switch {
	case s.Principal != nil && !s.Principal.matches(principal):
		return false
	case s.NotPrincipal != nil && s.NotPrincipal.matches(principal):
		return false
	}
	if len(s.Action) > 0 {
		return anyMatch(s.Action, action)
	}
	return !anyMatch(s.NotAction, action)
}

func anyMatch(patterns []string, action string) bool {
	for _, p := range patterns {
		if wildcardMatch(strings.ToLower(p), strings.ToLower(action)) {
			return true
		}
	}
	return false
}

// wildcardMatch matches s against pattern with * (any run) and ? (one
// character), iteratively so that no pattern can take exponential time.
func wildcardMatch(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
