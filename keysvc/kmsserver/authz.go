package kmsserver

import (
	"fmt"

	"github.com/kmsfs/kmsfs/keysvc/local"
)

// Authorization: how a key's policy and the caller's identity policy
// decide a request, as AWS KMS decides it for a caller of the key's own
// account.
//
//   - An explicit Deny that applies, in the key policy or in the caller's
//     identity policy, refuses the request.
//   - Otherwise a request on a key is allowed when the key policy allows
//     it to the caller directly (the caller's ARN, or "*"), or when the key
//     policy allows it to the account (arn:aws:iam::000000000000:root) and
//     the caller's identity policy allows it on the key's ARN. The account
//     statement only delegates: it grants nothing by itself.
//   - Requests on no key (CreateKey, ListKeys, ListAliases, GenerateRandom)
//     are allowed when the identity policy allows them on Resource "*".
//   - Alias operations (CreateAlias, UpdateAlias, DeleteAlias) need the
//     action allowed on each key involved, as above, and also by the
//     identity policy on the alias's ARN
//     (arn:aws:kms:local:000000000000:alias/NAME).
//   - A credential without an identity policy (made before identity
//     policies existed) has only what key policies grant it directly.
//
// Conditions are evaluated against the request (policy.go, conditions.go);
// one that cannot be evaluated makes its Allow grant nothing and its Deny
// deny.

// authRequestFor returns the request the caller makes for action on
// resource, with the operation's encryption context (nil if none).
func (c *call) authRequestFor(action, resource string, ec map[string]string) *authRequest {
	return &authRequest{principal: c.principal, action: action, resource: resource, encryptionContext: ec, secureTransport: c.secure}
}

// identityDecision evaluates the caller's identity policy.
func (c *call) identityDecision(req *authRequest) decision {
	if c.identity == nil {
		return implicitDeny
	}
	return evaluate(c.identity, req)
}

// decide combines a key policy (nil when the resource has none) and the
// caller's identity policy for req, and names the policy that refused.
func (c *call) decide(keyPol *local.Policy, req *authRequest) *apiError {
	id := c.identityDecision(req)
	kd := implicitDeny
	if keyPol != nil {
		kd = evaluate(keyPol, req)
	}
	deny := func(why string) *apiError {
		return newAPIError(400, "AccessDeniedException", fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s %s", c.principal, req.action, req.resource, why))
	}
	switch {
	case kd == explicitDeny:
		return deny("with an explicit deny in a resource-based policy")
	case id == explicitDeny:
		return deny("with an explicit deny in an identity-based policy")
	case keyPol == nil && id == allowed, kd == allowed, kd == allowedForAccount && id == allowed:
		return nil
	case keyPol == nil || kd == allowedForAccount:
		return deny("because no identity-based policy allows the " + req.action + " action")
	}
	return deny("because no resource-based policy allows the " + req.action + " action")
}

// checkPolicy decides action on the key keyARN, whose policy is policy. A
// policy that does not parse (set outside the server, or before the
// parser became strict) grants nothing.
func (c *call) checkPolicy(keyARN, policy, action string, ec map[string]string) *apiError {
	p, err := local.ParseKeyPolicy(policy)
	if err != nil {
		c.s.log.Warn("key server: key has an unparsable policy; denying", "key_id", keyARN)
		p = &local.Policy{}
	}
	return c.decide(p, c.authRequestFor(action, keyARN, ec))
}

// authorizeAccount decides an action on no key (Resource "*"): only the
// identity policy can allow it.
func (c *call) authorizeAccount(action string) *apiError {
	return c.decide(nil, c.authRequestFor(action, "*", nil))
}

// authorizeAlias decides an alias operation on the alias itself: only the
// identity policy can allow it, on the alias's ARN. Without this, any
// credential could claim an alias name before its rightful owner.
func (c *call) authorizeAlias(name, action string) *apiError {
	return c.decide(nil, c.authRequestFor(action, local.AliasARN(name), nil))
}
