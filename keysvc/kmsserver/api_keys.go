package kmsserver

import (
	"encoding/base64"
	"errors"
	"maps"
	"slices"
	"strconv"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// Key management operations: CreateKey, DescribeKey, ListKeys, key state,
// deletion and rotation.

type emptyOutput struct{}

// keyInput is the input of every operation that takes only a KeyId.
type keyInput struct {
	KeyID       *string  `json:"KeyId"`
	GrantTokens []string `json:"GrantTokens"`
}

func (in *keyInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	v.grantTokens(in.GrantTokens)
}

type createKeyInput struct {
	Policy                         *string `json:"Policy"`
	Description                    *string `json:"Description"`
	KeyUsage                       string  `json:"KeyUsage"`
	CustomerMasterKeySpec          string  `json:"CustomerMasterKeySpec"`
	KeySpec                        string  `json:"KeySpec"`
	Origin                         string  `json:"Origin"`
	CustomKeyStoreID               *string `json:"CustomKeyStoreId"`
	XksKeyID                       *string `json:"XksKeyId"`
	BypassPolicyLockoutSafetyCheck bool    `json:"BypassPolicyLockoutSafetyCheck"`
	Tags                           []tag   `json:"Tags"`
	MultiRegion                    bool    `json:"MultiRegion"`
}

var keySpecs = []string{"RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521",
	"ECC_SECG_P256K1", "SYMMETRIC_DEFAULT", "HMAC_224", "HMAC_256", "HMAC_384", "HMAC_512", "SM2"}

func (in *createKeyInput) validate(v *validator) {
	if in.Policy != nil {
		v.length("policy", len(*in.Policy), 1, local.MaxPolicySize)
	}
	if in.Description != nil {
		v.length("description", len(*in.Description), 0, local.MaxDescriptionSize)
	}
	v.enum("keyUsage", in.KeyUsage, "SIGN_VERIFY", "ENCRYPT_DECRYPT", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT")
	v.enum("customerMasterKeySpec", in.CustomerMasterKeySpec, keySpecs...)
	v.enum("keySpec", in.KeySpec, keySpecs...)
	v.enum("origin", in.Origin, "AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE")
}

// tagsMap checks tags as TagResource and CreateKey do (TagException) and
// returns them as a map.
func tagsMap(tags []tag) (map[string]string, *apiError) {
	if len(tags) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		if _, dup := m[t.TagKey]; dup {
			return nil, newAPIError(400, "TagException", "Duplicate tag keys.")
		}
		m[t.TagKey] = t.TagValue
	}
	if err := local.ValidateTags(m); err != nil {
		return nil, newAPIError(400, "TagException", storeMessage(err, keysvc.ErrInvalidArgument))
	}
	if len(m) > local.MaxTags {
		return nil, newAPIError(400, "TagException", "A key can have at most "+strconv.Itoa(local.MaxTags)+" tags.")
	}
	return m, nil
}

func (c *call) createKey(in *createKeyInput) (any, *apiError) {
	switch {
	case in.KeyUsage != "" && in.KeyUsage != "ENCRYPT_DECRYPT",
		in.KeySpec != "" && in.KeySpec != symmetricDefault,
		in.CustomerMasterKeySpec != "" && in.CustomerMasterKeySpec != symmetricDefault:
		return nil, newAPIError(400, "UnsupportedOperationException", "This key service supports only symmetric encryption keys (KeySpec SYMMETRIC_DEFAULT, KeyUsage ENCRYPT_DECRYPT).")
	case in.Origin != "" && in.Origin != "AWS_KMS":
		return nil, newAPIError(400, "UnsupportedOperationException", "This key service supports only Origin AWS_KMS.")
	case in.MultiRegion:
		return nil, newAPIError(400, "UnsupportedOperationException", "This key service does not support multi-Region keys.")
	case in.CustomKeyStoreID != nil || in.XksKeyID != nil:
		return nil, newAPIError(400, "CustomKeyStoreNotFoundException", "This key service has no custom key stores.")
	}
	if aerr := c.authorizeAccount("kms:CreateKey"); aerr != nil {
		return nil, aerr
	}
	policy := ""
	if in.Policy != nil {
		policy = *in.Policy
		// The key's ARN is not known yet: an identity policy must allow
		// every key (arn:aws:kms:local:000000000000:key/* or "*").
		if aerr := c.checkNewPolicy(policy, local.ARNPrefix+"key/*", in.BypassPolicyLockoutSafetyCheck); aerr != nil {
			return nil, aerr
		}
	}
	tags, aerr := tagsMap(in.Tags)
	if aerr != nil {
		return nil, aerr
	}
	desc := ""
	if in.Description != nil {
		desc = *in.Description
	}
	m, err := c.s.store.CreateKey(c.ctx, local.CreateKeyInput{Description: desc, Creator: c.principal, Policy: policy, Tags: tags})
	if err != nil {
		return nil, storeError(err, "")
	}
	c.audit.KeyID = m.ARN
	return struct {
		KeyMetadata keyMetadataJSON `json:"KeyMetadata"`
	}{keyMetadataOf(m)}, nil
}

// checkNewPolicy validates a policy about to be set on the key keyARN and,
// unless bypassed, applies AWS's lockout safety check: the caller must
// still be allowed to change the policy afterwards (directly, or through
// the account statement and its identity policy).
func (c *call) checkNewPolicy(doc, keyARN string, bypass bool) *apiError {
	p, err := local.ParseKeyPolicy(doc)
	if err != nil {
		var pe *local.PolicyError
		if errors.As(err, &pe) {
			return newAPIError(400, "MalformedPolicyDocumentException", pe.ClientMessage())
		}
		return newAPIError(400, "MalformedPolicyDocumentException", "The key policy is malformed.")
	}
	if !bypass && c.decide(p, c.authRequestFor("kms:PutKeyPolicy", keyARN, nil)) != nil {
		return newAPIError(400, "MalformedPolicyDocumentException",
			"The new key policy will not allow you to update the key policy in the future.")
	}
	return nil
}

func (c *call) describeKey(in *keyInput) (any, *apiError) {
	m, aerr := c.authorize(*in.KeyID, "kms:DescribeKey", nil)
	if aerr != nil {
		return nil, aerr
	}
	return struct {
		KeyMetadata keyMetadataJSON `json:"KeyMetadata"`
	}{keyMetadataOf(m)}, nil
}

type listInput struct {
	Limit  *int    `json:"Limit"`
	Marker *string `json:"Marker"`
}

func (in *listInput) validate(v *validator) {
	v.limit(in.Limit)
	v.marker(in.Marker)
}

// page returns the bounds of the page of n items that limit and marker
// select, and the marker of the next page ("" when this one is the last).
// Markers are opaque to clients: base64 of the next offset.
func page(n int, limit *int, marker *string) (start, end int, next string, aerr *apiError) {
	size := defaultListLimit
	if limit != nil {
		size = *limit
	}
	if marker != nil {
		b, err := base64.RawURLEncoding.DecodeString(*marker)
		off, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || off < 0 || off > n {
			return 0, 0, "", newAPIError(400, "InvalidMarkerException", "The marker is invalid.")
		}
		start = off
	}
	end = min(start+size, n)
	if end < n {
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
	}
	return start, end, next, nil
}

type listOutput struct {
	NextMarker string `json:"NextMarker,omitempty"`
	Truncated  bool   `json:"Truncated"`
}

func (c *call) listKeys(in *listInput) (any, *apiError) {
	if aerr := c.authorizeAccount("kms:ListKeys"); aerr != nil {
		return nil, aerr
	}
	keys, err := c.s.store.ListKeys(c.ctx)
	if err != nil {
		return nil, storeError(err, "")
	}
	start, end, next, aerr := page(len(keys), in.Limit, in.Marker)
	if aerr != nil {
		return nil, aerr
	}
	type entry struct {
		KeyID  string `json:"KeyId"`
		KeyArn string `json:"KeyArn"`
	}
	out := struct {
		Keys []entry `json:"Keys"`
		listOutput
	}{Keys: []entry{}, listOutput: listOutput{NextMarker: next, Truncated: next != ""}}
	for _, k := range keys[start:end] {
		out.Keys = append(out.Keys, entry{k.KeyID, k.ARN})
	}
	return out, nil
}

// keyOp authorises action on the request's key, then runs fn with the key's
// ARN.
func (c *call) keyOp(ref, action string, fn func(arn string) error) *apiError {
	m, aerr := c.authorize(ref, action, nil)
	if aerr != nil {
		return aerr
	}
	if err := fn(m.ARN); err != nil {
		return storeError(err, ref)
	}
	return nil
}

func (c *call) enableKey(in *keyInput) (any, *apiError) {
	if aerr := c.keyOp(*in.KeyID, "kms:EnableKey", func(arn string) error { return c.s.store.EnableKey(c.ctx, arn) }); aerr != nil {
		return nil, aerr
	}
	return emptyOutput{}, nil
}

func (c *call) disableKey(in *keyInput) (any, *apiError) {
	if aerr := c.keyOp(*in.KeyID, "kms:DisableKey", func(arn string) error { return c.s.store.DisableKey(c.ctx, arn) }); aerr != nil {
		return nil, aerr
	}
	return emptyOutput{}, nil
}

type scheduleKeyDeletionInput struct {
	KeyID               *string `json:"KeyId"`
	PendingWindowInDays *int    `json:"PendingWindowInDays"`
}

func (in *scheduleKeyDeletionInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	if in.PendingWindowInDays != nil {
		v.rangeInt("pendingWindowInDays", *in.PendingWindowInDays, local.MinPendingWindowDays, local.MaxPendingWindowDays)
	}
}

func (c *call) scheduleKeyDeletion(in *scheduleKeyDeletionInput) (any, *apiError) {
	days := local.DefaultPendingWindowDays
	if in.PendingWindowInDays != nil {
		days = *in.PendingWindowInDays
	}
	var m local.KeyMetadata
	if aerr := c.keyOp(*in.KeyID, "kms:ScheduleKeyDeletion", func(arn string) (err error) {
		m, err = c.s.store.ScheduleKeyDeletion(c.ctx, arn, days)
		return err
	}); aerr != nil {
		return nil, aerr
	}
	return struct {
		KeyID               string     `json:"KeyId"`
		DeletionDate        *epochTime `json:"DeletionDate,omitempty"`
		KeyState            string     `json:"KeyState"`
		PendingWindowInDays int        `json:"PendingWindowInDays"`
	}{m.ARN, epoch(m.DeletionDate), string(m.State), m.PendingWindowDays}, nil
}

func (c *call) cancelKeyDeletion(in *keyInput) (any, *apiError) {
	var m local.KeyMetadata
	if aerr := c.keyOp(*in.KeyID, "kms:CancelKeyDeletion", func(arn string) (err error) {
		m, err = c.s.store.CancelKeyDeletion(c.ctx, arn)
		return err
	}); aerr != nil {
		return nil, aerr
	}
	return struct {
		KeyID string `json:"KeyId"`
	}{m.ARN}, nil
}

type enableKeyRotationInput struct {
	KeyID                *string `json:"KeyId"`
	RotationPeriodInDays *int    `json:"RotationPeriodInDays"`
}

func (in *enableKeyRotationInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	if in.RotationPeriodInDays != nil {
		v.rangeInt("rotationPeriodInDays", *in.RotationPeriodInDays, local.MinRotationPeriodDays, local.MaxRotationPeriodDays)
	}
}

func (c *call) enableKeyRotation(in *enableKeyRotationInput) (any, *apiError) {
	days := local.DefaultRotationPeriodDays
	if in.RotationPeriodInDays != nil {
		days = *in.RotationPeriodInDays
	}
	if aerr := c.keyOp(*in.KeyID, "kms:EnableKeyRotation", func(arn string) error {
		return c.s.store.EnableKeyRotation(c.ctx, arn, days)
	}); aerr != nil {
		return nil, aerr
	}
	return emptyOutput{}, nil
}

func (c *call) disableKeyRotation(in *keyInput) (any, *apiError) {
	if aerr := c.keyOp(*in.KeyID, "kms:DisableKeyRotation", func(arn string) error {
		return c.s.store.DisableKeyRotation(c.ctx, arn)
	}); aerr != nil {
		return nil, aerr
	}
	return emptyOutput{}, nil
}

func (c *call) getKeyRotationStatus(in *keyInput) (any, *apiError) {
	var st local.RotationStatus
	if aerr := c.keyOp(*in.KeyID, "kms:GetKeyRotationStatus", func(arn string) (err error) {
		st, err = c.s.store.GetKeyRotationStatus(c.ctx, arn)
		return err
	}); aerr != nil {
		return nil, aerr
	}
	out := struct {
		KeyID                string     `json:"KeyId"`
		KeyRotationEnabled   bool       `json:"KeyRotationEnabled"`
		RotationPeriodInDays *int       `json:"RotationPeriodInDays,omitempty"`
		NextRotationDate     *epochTime `json:"NextRotationDate,omitempty"`
	}{KeyID: st.KeyID, KeyRotationEnabled: st.Enabled, NextRotationDate: epoch(st.NextRotationDate)}
	if st.Enabled {
		out.RotationPeriodInDays = &st.PeriodDays
	}
	return out, nil
}

func (c *call) rotateKeyOnDemand(in *keyInput) (any, *apiError) {
	var m local.KeyMetadata
	if aerr := c.keyOp(*in.KeyID, "kms:RotateKeyOnDemand", func(arn string) (err error) {
		m, err = c.s.store.RotateKey(c.ctx, arn)
		return err
	}); aerr != nil {
		return nil, aerr
	}
	c.audit.KeyMaterialID = m.CurrentKeyMaterialID
	return struct {
		KeyID string `json:"KeyId"`
	}{m.ARN}, nil
}

type listKeyRotationsInput struct {
	KeyID              *string `json:"KeyId"`
	IncludeKeyMaterial string  `json:"IncludeKeyMaterial"`
	listInput
}

func (in *listKeyRotationsInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	v.enum("includeKeyMaterial", in.IncludeKeyMaterial, "ALL_KEY_MATERIAL", "ROTATIONS_ONLY")
	in.listInput.validate(v)
}

func (c *call) listKeyRotations(in *listKeyRotationsInput) (any, *apiError) {
	var mats []local.KeyMaterial
	var arn string
	if aerr := c.keyOp(*in.KeyID, "kms:ListKeyRotations", func(a string) (err error) {
		arn = a
		mats, err = c.s.store.ListKeyMaterials(c.ctx, a)
		return err
	}); aerr != nil {
		return nil, aerr
	}
	if in.IncludeKeyMaterial != "ALL_KEY_MATERIAL" {
		mats = slices.DeleteFunc(mats, func(m local.KeyMaterial) bool { return m.Kind == local.MaterialInitial })
	}
	start, end, next, aerr := page(len(mats), in.Limit, in.Marker)
	if aerr != nil {
		return nil, aerr
	}
	type entry struct {
		KeyID            string     `json:"KeyId"`
		KeyMaterialID    string     `json:"KeyMaterialId"`
		KeyMaterialState string     `json:"KeyMaterialState"`
		RotationDate     *epochTime `json:"RotationDate,omitempty"`
		RotationType     string     `json:"RotationType,omitempty"`
	}
	out := struct {
		Rotations []entry `json:"Rotations"`
		listOutput
	}{Rotations: []entry{}, listOutput: listOutput{NextMarker: next, Truncated: next != ""}}
	for _, m := range mats[start:end] {
		e := entry{KeyID: arn, KeyMaterialID: m.KeyMaterialID, KeyMaterialState: "NON_CURRENT"}
		if m.Current {
			e.KeyMaterialState = "CURRENT"
		}
		if m.Kind != local.MaterialInitial {
			e.RotationDate, e.RotationType = epoch(m.Created), string(m.Kind)
		}
		out.Rotations = append(out.Rotations, e)
	}
	return out, nil
}

// Key policies and tags.

type getKeyPolicyInput struct {
	KeyID      *string `json:"KeyId"`
	PolicyName *string `json:"PolicyName"`
}

func (in *getKeyPolicyInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	if in.PolicyName != nil {
		v.length("policyName", len(*in.PolicyName), 1, 128)
	}
}

// checkPolicyName accepts only "default", the one policy a key has.
func checkPolicyName(name *string) *apiError {
	if name != nil && *name != "default" {
		return newAPIError(400, "NotFoundException", "No such policy exists: only the \"default\" key policy is supported.")
	}
	return nil
}

func (c *call) getKeyPolicy(in *getKeyPolicyInput) (any, *apiError) {
	if aerr := checkPolicyName(in.PolicyName); aerr != nil {
		return nil, aerr
	}
	var policy string
	if aerr := c.keyOp(*in.KeyID, "kms:GetKeyPolicy", func(arn string) (err error) {
		policy, err = c.s.store.GetKeyPolicy(c.ctx, arn)
		return err
	}); aerr != nil {
		return nil, aerr
	}
	return struct {
		Policy     string `json:"Policy"`
		PolicyName string `json:"PolicyName"`
	}{policy, "default"}, nil
}

type putKeyPolicyInput struct {
	KeyID                          *string `json:"KeyId"`
	PolicyName                     *string `json:"PolicyName"`
	Policy                         *string `json:"Policy"`
	BypassPolicyLockoutSafetyCheck bool    `json:"BypassPolicyLockoutSafetyCheck"`
}

func (in *putKeyPolicyInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	if v.required("policy", in.Policy != nil) {
		v.length("policy", len(*in.Policy), 1, local.MaxPolicySize)
	}
}

func (c *call) putKeyPolicy(in *putKeyPolicyInput) (any, *apiError) {
	if aerr := checkPolicyName(in.PolicyName); aerr != nil {
		return nil, aerr
	}
	if aerr := c.keyOp(*in.KeyID, "kms:PutKeyPolicy", func(arn string) error {
		if aerr := c.checkNewPolicy(*in.Policy, arn, in.BypassPolicyLockoutSafetyCheck); aerr != nil {
			return aerr
		}
		return c.s.store.PutKeyPolicy(c.ctx, arn, *in.Policy)
	}); aerr != nil {
		return nil, aerr
	}
	return emptyOutput{}, nil
}

type listKeyPoliciesInput struct {
	KeyID *string `json:"KeyId"`
	listInput
}

func (in *listKeyPoliciesInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	in.listInput.validate(v)
}

func (c *call) listKeyPolicies(in *listKeyPoliciesInput) (any, *apiError) {
	if _, aerr := c.authorize(*in.KeyID, "kms:ListKeyPolicies", nil); aerr != nil {
		return nil, aerr
	}
	return struct {
		PolicyNames []string `json:"PolicyNames"`
		Truncated   bool     `json:"Truncated"`
	}{[]string{"default"}, false}, nil
}

type tagResourceInput struct {
	KeyID *string `json:"KeyId"`
	Tags  []tag   `json:"Tags"`
}

func (in *tagResourceInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	v.required("tags", in.Tags != nil)
}

func (c *call) tagResource(in *tagResourceInput) (any, *apiError) {
	tags, aerr := tagsMap(in.Tags)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := c.keyOp(*in.KeyID, "kms:TagResource", func(arn string) error {
		return c.s.store.TagResource(c.ctx, arn, tags)
	}); aerr != nil {
		return nil, aerr
	}
	return emptyOutput{}, nil
}

type untagResourceInput struct {
	KeyID   *string  `json:"KeyId"`
	TagKeys []string `json:"TagKeys"`
}

func (in *untagResourceInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	v.required("tagKeys", in.TagKeys != nil)
}

func (c *call) untagResource(in *untagResourceInput) (any, *apiError) {
	if aerr := c.keyOp(*in.KeyID, "kms:UntagResource", func(arn string) error {
		return c.s.store.UntagResource(c.ctx, arn, in.TagKeys)
	}); aerr != nil {
		return nil, aerr
	}
	return emptyOutput{}, nil
}

type listResourceTagsInput struct {
	KeyID *string `json:"KeyId"`
	listInput
}

func (in *listResourceTagsInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	in.listInput.validate(v)
}

func (c *call) listResourceTags(in *listResourceTagsInput) (any, *apiError) {
	var tags map[string]string
	if aerr := c.keyOp(*in.KeyID, "kms:ListResourceTags", func(arn string) (err error) {
		tags, err = c.s.store.ListResourceTags(c.ctx, arn)
		return err
	}); aerr != nil {
		return nil, aerr
	}
	keys := slices.Sorted(maps.Keys(tags))
	start, end, next, aerr := page(len(keys), in.Limit, in.Marker)
	if aerr != nil {
		return nil, aerr
	}
	out := struct {
		Tags []tag `json:"Tags"`
		listOutput
	}{Tags: []tag{}, listOutput: listOutput{NextMarker: next, Truncated: next != ""}}
	for _, k := range keys[start:end] {
		out.Tags = append(out.Tags, tag{k, tags[k]})
	}
	return out, nil
}

type updateKeyDescriptionInput struct {
	KeyID       *string `json:"KeyId"`
	Description *string `json:"Description"`
}

func (in *updateKeyDescriptionInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	if v.required("description", in.Description != nil) {
		v.length("description", len(*in.Description), 0, local.MaxDescriptionSize)
	}
}

func (c *call) updateKeyDescription(in *updateKeyDescriptionInput) (any, *apiError) {
	if aerr := c.keyOp(*in.KeyID, "kms:UpdateKeyDescription", func(arn string) error {
		return c.s.store.UpdateKeyDescription(c.ctx, arn, *in.Description)
	}); aerr != nil {
		return nil, aerr
	}
	return emptyOutput{}, nil
}
