package kmsserver

import (
	"errors"
	"regexp"
	"strings"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// Alias operations: CreateAlias, UpdateAlias, DeleteAlias, ListAliases.

var aliasCharsRE = regexp.MustCompile(`^[a-zA-Z0-9:/_-]+$`)

type aliasInput struct {
	AliasName   *string `json:"AliasName"`
	TargetKeyID *string `json:"TargetKeyId"`
}

// validateName checks the alias name's shape (ValidationException).
func (in *aliasInput) validateName(v *validator) {
	if v.required("aliasName", in.AliasName != nil) {
		v.length("aliasName", len(*in.AliasName), 1, local.MaxAliasNameSize)
		if !aliasCharsRE.MatchString(*in.AliasName) {
			v.add("Value at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$")
		}
	}
}

func (in *aliasInput) validate(v *validator) {
	in.validateName(v)
	v.keyID("targetKeyId", in.TargetKeyID, true)
}

// checkAliasName applies the rules AWS answers with InvalidAliasNameException.
func checkAliasName(name string) *apiError {
	switch {
	case !strings.HasPrefix(name, "alias/") || name == "alias/":
		return newAPIError(400, "InvalidAliasNameException", "Alias must start with the prefix \"alias/\" followed by a name.")
	case strings.HasPrefix(name, "alias/aws/"):
		return newAPIError(400, "InvalidAliasNameException", "Alias names that begin with \"alias/aws/\" are reserved for AWS managed keys.")
	}
	return nil
}

// aliasStoreError maps Store errors of alias operations.
func aliasStoreError(err error, name, target string) *apiError {
	switch {
	case errors.Is(err, keysvc.ErrAlreadyExists):
		return newAPIError(400, "AlreadyExistsException", "An alias with the name "+local.AliasARN(name)+" already exists")
	case errors.Is(err, keysvc.ErrNotFound) && target == "":
		return keyNotFound(name)
	default:
		return storeError(err, target)
	}
}

// aliasTargetRef rejects alias names as targets: an alias must point at a
// key ID or ARN.
func aliasTargetRef(ref string) *apiError {
	if strings.HasPrefix(ref, "alias/") || strings.HasPrefix(ref, local.ARNPrefix+"alias/") {
		return newAPIError(400, "ValidationException", "Aliases must refer to keys. Specify a key ID or key ARN as the target, not an alias.")
	}
	return nil
}

func (c *call) createAlias(in *aliasInput) (any, *apiError) {
	name, target := *in.AliasName, *in.TargetKeyID
	if aerr := checkAliasName(name); aerr != nil {
		return nil, aerr
	}
	if aerr := aliasTargetRef(target); aerr != nil {
		return nil, aerr
	}
	// As AWS: the right to the alias name (identity policy on the alias
	// ARN) and to the key it will name.
	if aerr := c.authorizeAlias(name, "kms:CreateAlias"); aerr != nil {
		return nil, aerr
	}
	m, aerr := c.authorize(target, "kms:CreateAlias", nil)
	if aerr != nil {
		return nil, aerr
	}
	if err := c.s.store.CreateAlias(c.ctx, name, m.KeyID); err != nil {
		return nil, aliasStoreError(err, name, target)
	}
	return emptyOutput{}, nil
}

func (c *call) updateAlias(in *aliasInput) (any, *apiError) {
	name, target := *in.AliasName, *in.TargetKeyID
	if aerr := checkAliasName(name); aerr != nil {
		return nil, aerr
	}
	if aerr := aliasTargetRef(target); aerr != nil {
		return nil, aerr
	}
	// The caller needs kms:UpdateAlias on the alias, on the key the alias
	// leaves and on the key it joins.
	if _, aerr := c.authorize(name, "kms:UpdateAlias", nil); aerr != nil {
		return nil, aerr
	}
	if aerr := c.authorizeAlias(name, "kms:UpdateAlias"); aerr != nil {
		return nil, aerr
	}
	c.audit.KeyID = ""
	m, aerr := c.authorize(target, "kms:UpdateAlias", nil)
	if aerr != nil {
		return nil, aerr
	}
	if err := c.s.store.UpdateAlias(c.ctx, name, m.KeyID); err != nil {
		return nil, aliasStoreError(err, name, target)
	}
	return emptyOutput{}, nil
}

type deleteAliasInput struct {
	aliasInput
}

func (in *deleteAliasInput) validate(v *validator) { in.validateName(v) }

func (c *call) deleteAlias(in *deleteAliasInput) (any, *apiError) {
	name := *in.AliasName
	if aerr := checkAliasName(name); aerr != nil {
		return nil, aerr
	}
	if _, aerr := c.authorize(name, "kms:DeleteAlias", nil); aerr != nil {
		return nil, aerr
	}
	if aerr := c.authorizeAlias(name, "kms:DeleteAlias"); aerr != nil {
		return nil, aerr
	}
	if err := c.s.store.DeleteAlias(c.ctx, name); err != nil {
		return nil, aliasStoreError(err, name, "")
	}
	return emptyOutput{}, nil
}

type listAliasesInput struct {
	KeyID *string `json:"KeyId"`
	listInput
}

func (in *listAliasesInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, false)
	in.listInput.validate(v)
}

func (c *call) listAliases(in *listAliasesInput) (any, *apiError) {
	if aerr := c.authorizeAccount("kms:ListAliases"); aerr != nil {
		return nil, aerr
	}
	ref := ""
	if in.KeyID != nil {
		ref = *in.KeyID
	}
	aliases, err := c.s.store.ListAliases(c.ctx, ref)
	if err != nil {
		return nil, storeError(err, ref)
	}
	start, end, next, aerr := page(len(aliases), in.Limit, in.Marker)
	if aerr != nil {
		return nil, aerr
	}
	type entry struct {
		AliasName       string     `json:"AliasName"`
		AliasArn        string     `json:"AliasArn"`
		TargetKeyID     string     `json:"TargetKeyId"`
		CreationDate    *epochTime `json:"CreationDate,omitempty"`
		LastUpdatedDate *epochTime `json:"LastUpdatedDate,omitempty"`
	}
	out := struct {
		Aliases []entry `json:"Aliases"`
		listOutput
	}{Aliases: []entry{}, listOutput: listOutput{NextMarker: next, Truncated: next != ""}}
	for _, a := range aliases[start:end] {
		out.Aliases = append(out.Aliases, entry{a.Name, a.ARN, a.TargetKeyID, epoch(a.Created), epoch(a.Updated)})
	}
	return out, nil
}
