package kmsserver

import (
	"strings"

	"github.com/kmsfs/kmsfs/keysvc/local"
)

// Policy evaluation: how one parsed policy (local.Policy, parsed and
// validated by the keystore when it was written) decides one request. The
// language and its subset are described in keysvc/local/policy.go; how a
// key policy and an identity policy combine is in authz.go; conditions are
// in conditions.go.

// principalMatch is how a principal element matches a caller.
type principalMatch int

const (
	noMatch      principalMatch = iota
	accountMatch                // through the account principal
	directMatch                 // "*" or the caller's own ARN
)

// matchPrincipal reports how the principal element p matches the caller
// principal.
func matchPrincipal(p *local.PrincipalSet, principal string) principalMatch {
	if p.Any {
		return directMatch
	}
	best := noMatch
	for _, a := range p.AWS {
		switch a {
		case "*", principal:
			return directMatch
		case local.AccountID, local.RootPrincipal:
			if strings.HasPrefix(principal, "arn:aws:iam::"+local.AccountID+":") {
				best = accountMatch
			}
		}
	}
	return best
}

// authRequest is what a policy is evaluated against.
type authRequest struct {
	principal string // the caller's ARN
	action    string // e.g. "kms:Decrypt"
	resource  string // key or alias ARN; "*" for actions on no resource
	// encryptionContext is the request's encryption context (nil when the
	// operation takes none).
	encryptionContext map[string]string
	secureTransport   bool // the request came over TLS
}

// decision is the outcome of evaluating a policy.
type decision int

const (
	implicitDeny decision = iota
	// allowedForAccount: a key policy allows the action to the account,
	// so the caller's identity policy decides.
	allowedForAccount
	allowed
	explicitDeny
)

// evaluate decides req under p: explicitDeny when a Deny statement
// applies, else allowed when an Allow statement names the caller (or "*"),
// else allowedForAccount when one names the account, else implicitDeny.
func evaluate(p *local.Policy, req *authRequest) decision {
	d := implicitDeny
	for i := range p.Statement {
		s := &p.Statement[i]
		m := applies(s, req)
		if m == noMatch {
			continue
		}
		if s.Effect == "Deny" {
			return explicitDeny
		}
		if m == directMatch {
			d = allowed
		} else if d == implicitDeny {
			d = allowedForAccount
		}
	}
	return d
}

// applies reports whether s matches req, and through which principal.
// A condition that cannot be evaluated makes a Deny statement apply and
// an Allow statement not (fail closed).
func applies(s *local.PolicyStatement, req *authRequest) principalMatch {
	m := directMatch // identity policies: the caller is the principal
	switch {
	case s.Principal != nil:
		m = matchPrincipal(s.Principal, req.principal)
	case s.NotPrincipal != nil:
		if matchPrincipal(s.NotPrincipal, req.principal) != noMatch {
			m = noMatch
		}
	}
	if m == noMatch {
		return noMatch
	}
	if s.Effect == "Deny" {
		m = directMatch // a Deny naming the account denies each of its credentials
	}
	if len(s.Action) > 0 && !anyMatch(s.Action, req.action, true) ||
		len(s.NotAction) > 0 && anyMatch(s.NotAction, req.action, true) ||
		len(s.Resource) > 0 && !anyMatch(s.Resource, req.resource, false) ||
		len(s.NotResource) > 0 && anyMatch(s.NotResource, req.resource, false) {
		return noMatch
	}
	switch allConditions(s.Conditions, req) {
	case condTrue:
		return m
	case condUnknown:
		if s.Effect == "Deny" {
			return m
		}
	}
	return noMatch
}

// anyMatch reports whether s matches one of the wildcard patterns; actions
// match case-insensitively.
func anyMatch(patterns []string, s string, fold bool) bool {
	if fold {
		s = strings.ToLower(s)
	}
	for _, p := range patterns {
		if fold {
			p = strings.ToLower(p)
		}
		if wildcardMatch(p, s) {
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
