package local

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Policies, the subset of AWS's policy language the key server enforces.
//
// A policy is AWS's JSON document: {"Version", "Id", "Statement": [ {"Sid",
// "Effect": "Allow"|"Deny", "Principal" | "NotPrincipal", "Action" |
// "NotAction", "Resource" | "NotResource", "Condition"} ]}. Two kinds are
// used: a key policy (the resource policy of one key; every statement names
// a Principal) and an identity policy (attached to a credential; no
// Principal, every statement names a Resource). How a policy decides a
// request, and how the two kinds combine, is in keysvc/kmsserver
// (policyeval.go, authz.go, conditions.go).
//
// Principals are IAM ARNs. A keystore credential named NAME is the
// principal arn:aws:iam::000000000000:user/NAME. "*" (or {"AWS": "*"})
// matches everyone. The account ("000000000000" or
// arn:aws:iam::000000000000:root) in an Allow statement of a key policy
// does not grant anything by itself: as in AWS, it delegates to the
// caller's identity policy. In a Deny statement it matches every credential
// of the keystore. Actions and resources match with the wildcards * and ?
// (actions case-insensitively). A key policy's Resource is "*" or the key's
// ARN.
//
// Conditions are evaluated for the operators StringEquals, StringNotEquals,
// StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike,
// StringNotLike, Bool and Null, the set prefixes ForAllValues: and
// ForAnyValue:, and the suffix IfExists, over the condition keys
// kms:EncryptionContext:KEY, kms:EncryptionContextKeys, kms:CallerAccount,
// kms:ViaService (never present: no AWS service calls this server),
// aws:PrincipalArn and aws:SecureTransport. Anything else (another
// operator or key, a policy variable such as ${aws:username}) cannot be
// evaluated and fails closed: an Allow statement that holds it grants
// nothing, a Deny statement that holds it denies.

// PrincipalARN returns the IAM principal ARN of the keystore credential
// with the given name.
func PrincipalARN(name string) string {
	return "arn:aws:iam::" + AccountID + ":user/" + name
}

// policyKind says which elements a policy's statements must and may have.
type policyKind int

const (
	keyPolicy      policyKind = iota // resource policy of a key: Principal required
	identityPolicy                   // policy of a credential: no Principal, Resource required
)

func (k policyKind) String() string {
	if k == identityPolicy {
		return "identity policy"
	}
	return "key policy"
}

// Policy is a parsed, validated policy document. The store parses every
// policy when it is written (the one parser is here, so nothing invalid is
// stored); the key server (keysvc/kmsserver) evaluates the parsed form.
// Its fields are read-only for callers.
type Policy struct {
	Statement []PolicyStatement
}

// PolicyStatement is one statement of a Policy: its Effect ("Allow" or
// "Deny") and the elements it names; an element the statement does not
// have is nil.
type PolicyStatement struct {
	Effect       string
	Principal    *PrincipalSet
	NotPrincipal *PrincipalSet
	Action       []string
	NotAction    []string
	Resource     []string
	NotResource  []string
	Conditions   []PolicyCondition
}

// PolicyCondition is one test of a Condition block: operator, condition
// key and the policy's values (strings; JSON booleans and numbers are spelled as
// JSON spells them).
type PolicyCondition struct {
	Op     string
	Key    string
	Values []string
}

// PrincipalSet is "*" or {"AWS": "arn" | ["arn", …], "Service": …}. Only
// AWS principals can match a keystore credential.
type PrincipalSet struct {
	Any bool
	AWS []string
}

// PolicyError is a malformed policy document. The key server answers it
// as MalformedPolicyDocumentException with ClientMessage.
type PolicyError struct{ msg string }

// Error is the message without its final period, to read as a Go error.
func (e *PolicyError) Error() string { return strings.TrimSuffix(e.msg, ".") }

// ClientMessage is the message for the client, a sentence as AWS writes
// it.
func (e *PolicyError) ClientMessage() string { return e.msg }

func malformed(format string, args ...any) error {
	return &PolicyError{fmt.Sprintf(format, args...)}
}

// Element names allowed at the top of a policy and in a statement. Names
// are case-sensitive, as AWS's.
var (
	topElements       = []string{"Version", "Id", "Statement"}
	statementElements = []string{"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)

// ParseKeyPolicy decodes and validates a key policy document.
func ParseKeyPolicy(doc string) (*Policy, error) { return parseDocument(doc, keyPolicy) }

// ParseIdentityPolicy decodes and validates an identity policy document.
func ParseIdentityPolicy(doc string) (*Policy, error) {
	return parseDocument(doc, identityPolicy)
}

// parseDocument decodes and validates a policy of the given kind. It
// rejects what AWS rejects: invalid JSON, duplicate keys in any object,
// unknown elements, partial-wildcard principals, a missing or doubled
// Principal/Action/Resource element.
func parseDocument(doc string, kind policyKind) (*Policy, error) {
	if len(doc) == 0 || len(doc) > MaxPolicySize {
		return nil, malformed("The policy must be 1 to %d characters.", MaxPolicySize)
	}
	if err := checkJSON(doc); err != nil {
		return nil, err
	}
	top, err := object([]byte(doc), "The policy")
	if err != nil {
		return nil, err
	}
	if err := onlyElements(top, topElements, "The policy"); err != nil {
		return nil, err
	}
	if raw, ok := top["Version"]; ok {
		var v string
		if json.Unmarshal(raw, &v) != nil || (v != "2012-10-17" && v != "2008-10-17") {
			return nil, malformed("The policy Version must be \"2012-10-17\" or \"2008-10-17\".")
		}
	}
	if raw, ok := top["Id"]; ok {
		var id string
		if json.Unmarshal(raw, &id) != nil {
			return nil, malformed("The policy Id must be a string.")
		}
	}
	raw, ok := top["Statement"]
	if !ok {
		return nil, malformed("The policy must contain at least one statement.")
	}
	var raws []json.RawMessage
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' {
		raws = []json.RawMessage{raw}
	} else if json.Unmarshal(raw, &raws) != nil {
		return nil, malformed("The policy Statement must be an object or an array of objects.")
	}
	if len(raws) == 0 {
		return nil, malformed("The policy must contain at least one statement.")
	}
	p := &Policy{}
	for i, r := range raws {
		s, err := parseStatement(r, kind, i)
		if err != nil {
			return nil, err
		}
		p.Statement = append(p.Statement, s)
	}
	return p, nil
}

func parseStatement(raw json.RawMessage, kind policyKind, i int) (PolicyStatement, error) {
	var s PolicyStatement
	where := fmt.Sprintf("Statement %d", i)
	m, err := object(raw, where)
	if err != nil {
		return s, err
	}
	if err := onlyElements(m, statementElements, where); err != nil {
		return s, err
	}
	if r, ok := m["Sid"]; ok {
		var sid string
		if json.Unmarshal(r, &sid) != nil {
			return s, malformed("%s: Sid must be a string.", where)
		}
	}
	if json.Unmarshal(m["Effect"], &s.Effect) != nil || (s.Effect != "Allow" && s.Effect != "Deny") {
		return s, malformed("%s: Effect must be \"Allow\" or \"Deny\".", where)
	}
	_, hasP := m["Principal"]
	_, hasNP := m["NotPrincipal"]
	switch {
	case kind == identityPolicy && (hasP || hasNP):
		return s, malformed("%s: an identity policy must not name a Principal or NotPrincipal.", where)
	case kind == keyPolicy && hasP == hasNP:
		return s, malformed("%s: exactly one of Principal and NotPrincipal is required in a key policy.", where)
	case hasP:
		if s.Principal, err = parsePrincipal(m["Principal"], where); err != nil {
			return s, err
		}
	case hasNP:
		if s.NotPrincipal, err = parsePrincipal(m["NotPrincipal"], where); err != nil {
			return s, err
		}
	}
	if s.Action, s.NotAction, err = pair(m, "Action", "NotAction", where, true); err != nil {
		return s, err
	}
	for _, a := range append(slices.Clone(s.Action), s.NotAction...) {
		if a != "*" && !strings.HasPrefix(strings.ToLower(a), "kms:") {
			return s, malformed("%s: action %q is not a kms action.", where, a)
		}
	}
	if s.Resource, s.NotResource, err = pair(m, "Resource", "NotResource", where, kind == identityPolicy); err != nil {
		return s, err
	}
	if s.Resource == nil && s.NotResource == nil {
		s.Resource = []string{"*"} // a key policy statement without Resource is about its key
	}
	if r, ok := m["Condition"]; ok {
		if s.Conditions, err = parseConditions(r, where); err != nil {
			return s, err
		}
	}
	return s, nil
}

// pair decodes exactly one of the elements a and notA (at most one when
// not required), each a string or a non-empty array of strings.
func pair(m map[string]json.RawMessage, a, notA, where string, required bool) (list, notList []string, err error) {
	ra, hasA := m[a]
	rn, hasN := m[notA]
	if hasA && hasN || required && !hasA && !hasN {
		return nil, nil, malformed("%s: exactly one of %s and %s is required.", where, a, notA)
	}
	if hasA {
		list, err = stringList(ra, where+": "+a)
	}
	if hasN {
		notList, err = stringList(rn, where+": "+notA)
	}
	return list, notList, err
}

// stringList decodes a string or a non-empty array of non-empty strings.
func stringList(raw json.RawMessage, what string) ([]string, error) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil, malformed("%s must not be empty.", what)
		}
		return []string{one}, nil
	}
	var many []string
	if json.Unmarshal(raw, &many) != nil || len(many) == 0 || slices.Contains(many, "") {
		return nil, malformed("%s must be a string or a non-empty array of strings.", what)
	}
	return many, nil
}

// parsePrincipal decodes "*" or {"AWS"|"Service"|"Federated"|"CanonicalUser":
// string or list}. AWS accepts "*" alone as a wildcard principal, never a
// wildcard inside an ARN or account ID.
func parsePrincipal(raw json.RawMessage, where string) (*PrincipalSet, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s != "*" {
			return nil, malformed("%s: a Principal given as a string must be \"*\"; name others as {\"AWS\": \"ARN\"}.", where)
		}
		return &PrincipalSet{Any: true}, nil
	}
	m, err := object(raw, where+": Principal")
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, malformed("%s: the Principal is empty.", where)
	}
	if err := onlyElements(m, []string{"AWS", "Service", "Federated", "CanonicalUser"}, where+": Principal"); err != nil {
		return nil, err
	}
	p := &PrincipalSet{}
	for kind, r := range m {
		list, err := stringList(r, where+": Principal "+kind)
		if err != nil {
			return nil, err
		}
		for _, v := range list {
			if v != "*" && strings.ContainsAny(v, "*?") {
				return nil, malformed("%s: invalid principal %q: a wildcard may only stand alone (\"*\"), not inside an ARN or account ID.", where, v)
			}
		}
		if kind == "AWS" {
			p.AWS = list
		}
	}
	return p, nil
}

// parseConditions decodes {"Operator": {"key": value | [values]}}.
func parseConditions(raw json.RawMessage, where string) ([]PolicyCondition, error) {
	ops, err := object(raw, where+": Condition")
	if err != nil {
		return nil, err
	}
	var out []PolicyCondition
	for _, op := range sortedKeys(ops) {
		keys, err := object(ops[op], where+": Condition "+op)
		if err != nil {
			return nil, err
		}
		for _, key := range sortedKeys(keys) {
			vals, err := conditionValues(keys[key])
			if err != nil {
				return nil, malformed("%s: Condition %s %s: values must be strings, booleans or numbers, or an array of them.", where, op, key)
			}
			out = append(out, PolicyCondition{Op: op, Key: key, Values: vals})
		}
	}
	return out, nil
}

func conditionValues(raw json.RawMessage) ([]string, error) {
	scalar := func(r json.RawMessage) (string, error) {
		var v any
		if err := json.Unmarshal(r, &v); err != nil {
			return "", err
		}
		switch v := v.(type) {
		case string:
			return v, nil
		case bool, float64:
			return string(bytes.TrimSpace(r)), nil
		}
		return "", errors.New("not a scalar")
	}
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '[' {
		var rs []json.RawMessage
		if err := json.Unmarshal(raw, &rs); err != nil || len(rs) == 0 {
			return nil, errors.New("bad list")
		}
		out := make([]string, len(rs))
		for i, r := range rs {
			s, err := scalar(r)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	s, err := scalar(raw)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

// object decodes a JSON object into its members.
func object(raw []byte, what string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' || json.Unmarshal(raw, &m) != nil {
		return nil, malformed("%s must be a JSON object.", what)
	}
	return m, nil
}

// onlyElements refuses members of m not named in allowed.
func onlyElements(m map[string]json.RawMessage, allowed []string, what string) error {
	for _, k := range sortedKeys(m) {
		if !slices.Contains(allowed, k) {
			return malformed("%s has an unknown element %q; allowed: %s.", what, k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkJSON accepts exactly one JSON value with no object holding the
// same key twice (encoding/json would silently keep the last one, so a
// reviewer and the server could read different policies).
func checkJSON(doc string) error {
	dec := json.NewDecoder(strings.NewReader(doc))
	if err := checkValue(dec); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return malformed("The policy contains invalid JSON.")
	}
	return nil
}

// checkValue consumes one JSON value from dec, checking its objects for
// duplicate keys.
func checkValue(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return malformed("The policy contains invalid JSON.")
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return malformed("The policy contains invalid JSON.")
			}
			key, _ := k.(string)
			if seen[key] {
				return malformed("The policy contains the key %q twice in one object.", key)
			}
			seen[key] = true
			if err := checkValue(dec); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return malformed("The policy contains invalid JSON.")
		}
	case json.Delim('['):
		for dec.More() {
			if err := checkValue(dec); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return malformed("The policy contains invalid JSON.")
		}
	}
	return nil
}
