package kmsserver

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/kmsfs/kmsfs/keysvc/local"
)

// Condition evaluation (see the policy language in policy.go). The result
// is three-valued: a condition the server cannot evaluate is condUnknown,
// which the caller turns into a denial.

type condResult int

const (
	condFalse condResult = iota
	condTrue
	condUnknown
)

// allConditions is the AND of every condition: false if one is false,
// else unknown if one is unknown, else true.
func allConditions(conds []local.PolicyCondition, req *authRequest) condResult {
	r := condTrue
	for _, c := range conds {
		switch evalCondition(c, req) {
		case condFalse:
			return condFalse
		case condUnknown:
			r = condUnknown
		}
	}
	return r
}

// contextValues are the values of one condition key in a request.
type contextValues struct {
	known  bool     // the server knows this key
	multi  bool     // a multivalued key (a set)
	values []string // empty: the key is absent from the request
}

// lookupKey returns the request's values for a condition key. Key names
// are case-insensitive, as AWS's; so is KEY in kms:EncryptionContext:KEY
// (use kms:EncryptionContextKeys to test keys case-sensitively).
func lookupKey(key string, req *authRequest) contextValues {
	lk := strings.ToLower(key)
	const ecPrefix = "kms:encryptioncontext:"
	switch {
	case len(key) > len(ecPrefix) && strings.EqualFold(key[:len(ecPrefix)], ecPrefix):
		want := key[len(ecPrefix):]
		var vals []string
		for _, k := range slices.Sorted(maps.Keys(req.encryptionContext)) {
			if strings.EqualFold(k, want) {
				vals = append(vals, req.encryptionContext[k])
			}
		}
		// Two context keys differing only in case make the key
		// multivalued, which a single-valued test cannot decide.
		return contextValues{known: true, multi: len(vals) > 1, values: vals}
	case lk == "kms:encryptioncontextkeys":
		return contextValues{known: true, multi: true, values: slices.Sorted(maps.Keys(req.encryptionContext))}
	case lk == "kms:calleraccount":
		return contextValues{known: true, values: []string{local.AccountID}}
	case lk == "kms:viaservice":
		return contextValues{known: true} // no AWS service calls this server
	case lk == "aws:principalarn":
		return contextValues{known: true, values: []string{req.principal}}
	case lk == "aws:securetransport":
		return contextValues{known: true, values: []string{strconv.FormatBool(req.secureTransport)}}
	}
	return contextValues{}
}

// stringMatchers are the string operators by base name: how one policy
// value matches one request value, and whether the operator is negated.
var stringMatchers = map[string]struct {
	match   func(policy, value string) bool
	negated bool
}{
	"StringEquals":              {func(p, v string) bool { return p == v }, false},
	"StringNotEquals":           {func(p, v string) bool { return p == v }, true},
	"StringEqualsIgnoreCase":    {strings.EqualFold, false},
	"StringNotEqualsIgnoreCase": {strings.EqualFold, true},
	"StringLike":                {wildcardMatch, false},
	"StringNotLike":             {wildcardMatch, true},
	"Bool":                      {func(p, v string) bool { return strings.EqualFold(p, v) }, false},
}

// evalCondition evaluates one condition with AWS's rules: a positive
// operator is true when a policy value matches the request's value, a
// negated one when none does; a key absent from the request makes a
// positive operator false and a negated one true, and any operator with
// IfExists true. ForAnyValue: is true when some request value passes
// (false for an absent key); ForAllValues: when every one does (true for
// an absent key).
func evalCondition(c local.PolicyCondition, req *authRequest) condResult {
	for _, v := range c.Values {
		if strings.Contains(v, "${") {
			return condUnknown // policy variables are not supported
		}
	}
	op, set := c.Op, ""
	for _, prefix := range []string{"ForAllValues:", "ForAnyValue:"} {
		if rest, ok := strings.CutPrefix(op, prefix); ok {
			op, set = rest, prefix
		}
	}
	op, ifExists := strings.CutSuffix(op, "IfExists")
	cv := lookupKey(c.Key, req)
	if !cv.known {
		return condUnknown
	}
	present := len(cv.values) > 0
	if op == "Null" {
		if set != "" || ifExists {
			return condUnknown
		}
		for _, v := range c.Values {
			switch v {
			case "true":
				if !present {
					return condTrue
				}
			case "false":
				if present {
					return condTrue
				}
			default:
				return condUnknown
			}
		}
		return condFalse
	}
	m, ok := stringMatchers[op]
	if !ok || op == "Bool" && set != "" {
		return condUnknown
	}
	// passes reports whether one request value satisfies the operator.
	passes := func(v string) bool {
		hit := slices.ContainsFunc(c.Values, func(p string) bool { return m.match(p, v) })
		return hit != m.negated
	}
	switch {
	case set == "" && cv.multi:
		return condUnknown // a set needs ForAllValues: or ForAnyValue:
	case !present && (ifExists || set == "ForAllValues:" || set == "" && m.negated):
		return condTrue
	case !present:
		return condFalse
	case set == "ForAllValues:":
		return boolResult(!slices.ContainsFunc(cv.values, func(v string) bool { return !passes(v) }))
	default: // one value, or ForAnyValue:
		return boolResult(slices.ContainsFunc(cv.values, passes))
	}
}

func boolResult(b bool) condResult {
	if b {
		return condTrue
	}
	return condFalse
}
