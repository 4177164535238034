package local

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

// Alias is a name for a key.
type Alias struct {
	Name        string // "alias/…"
	ARN         string
	TargetKeyID string // key UUID
	Created     time.Time
	Updated     time.Time
}

// validateAliasName applies AWS's rules: "alias/" then 1 or more of
// [a-zA-Z0-9:/_-], at most 256 bytes in all, and not "alias/aws/…"
// (reserved for AWS managed keys).
func validateAliasName(name string) error {
	if len(name) > MaxAliasNameSize || !aliasNameRE.MatchString(name) {
		return fmt.Errorf("alias name %q: want alias/ and 1..%d of [a-zA-Z0-9:/_-]: %w", name, MaxAliasNameSize-len("alias/"), keysvc.ErrInvalidArgument)
	}
	if strings.HasPrefix(name, "alias/aws/") {
		return fmt.Errorf("alias name %q: alias/aws/ is reserved: %w", name, keysvc.ErrInvalidArgument)
	}
	return nil
}

// aliasTarget resolves the target of CreateAlias/UpdateAlias: a key ID or
// key ARN (not an alias), not pending deletion.
func aliasTarget(d *keystoreData, ref string, now time.Time) (*keyRecord, error) {
	if strings.HasPrefix(ref, "alias/") || strings.HasPrefix(ref, ARNPrefix+"alias/") {
		return nil, fmt.Errorf("alias target %q must be a key ID or key ARN: %w", ref, keysvc.ErrInvalidArgument)
	}
	k, err := resolve(d, ref, now)
	if err != nil {
		return nil, err
	}
	return k, notPendingDeletion(k)
}

// checkAliasCount refuses another alias for k when it has
// MaxAliasesPerKey (50, as AWS allows) already.
func checkAliasCount(d *keystoreData, k *keyRecord) error {
	n := 0
	for _, a := range d.Aliases {
		if a.KeyID == k.ID {
			n++
		}
	}
	if n >= MaxAliasesPerKey {
		return fmt.Errorf("key %s has %d aliases, the maximum: %w", k.ARN, n, keysvc.ErrLimitExceeded)
	}
	return nil
}

// CreateAlias names key targetKeyID (a key ID or ARN) name. An existing
// alias is ErrAlreadyExists.
func (s *Store) CreateAlias(ctx context.Context, name, targetKeyID string) error {
	if err := validateAliasName(name); err != nil {
		return err
	}
	return s.update(ctx, func(d *keystoreData, now time.Time) error {
		if d.Aliases[name] != nil {
			return fmt.Errorf("alias %s: %w", name, keysvc.ErrAlreadyExists)
		}
		k, err := aliasTarget(d, targetKeyID, now)
		if err != nil {
			return err
		}
		if err := checkAliasCount(d, k); err != nil {
			return err
		}
		d.Aliases[name] = &aliasRecord{KeyID: k.ID, Created: now.UTC(), Updated: now.UTC()}
		return nil
	})
}

// UpdateAlias points an existing alias at another key.
func (s *Store) UpdateAlias(ctx context.Context, name, targetKeyID string) error {
	if err := validateAliasName(name); err != nil {
		return err
	}
	return s.update(ctx, func(d *keystoreData, now time.Time) error {
		a := d.Aliases[name]
		if a == nil {
			return fmt.Errorf("alias %s: %w", name, keysvc.ErrNotFound)
		}
		k, err := aliasTarget(d, targetKeyID, now)
		if err != nil {
			return err
		}
		if a.KeyID != k.ID {
			if err := checkAliasCount(d, k); err != nil {
				return err
			}
		}
		a.KeyID, a.Updated = k.ID, now.UTC()
		return nil
	})
}

// DeleteAlias removes an alias; the key is untouched.
func (s *Store) DeleteAlias(ctx context.Context, name string) error {
	if err := validateAliasName(name); err != nil {
		return err
	}
	return s.update(ctx, func(d *keystoreData, now time.Time) error {
		if d.Aliases[name] == nil {
			return fmt.Errorf("alias %s: %w", name, keysvc.ErrNotFound)
		}
		delete(d.Aliases, name)
		return nil
	})
}

// ListAliases returns the aliases, sorted by name: all of them when keyID
// is empty, else those of that key.
func (s *Store) ListAliases(ctx context.Context, keyID string) ([]Alias, error) {
	var out []Alias
	err := s.view(ctx, func(d *keystoreData, now time.Time) error {
		target := ""
		if keyID != "" {
			k, err := resolve(d, keyID, now)
			if err != nil {
				return err
			}
			target = k.ID
		}
		for name, a := range d.Aliases {
			if target != "" && a.KeyID != target {
				continue
			}
			if isDeleted(d.Keys[a.KeyID], now) {
				continue
			}
			out = append(out, Alias{Name: name, ARN: AliasARN(name), TargetKeyID: a.KeyID, Created: a.Created, Updated: a.Updated})
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Alias) int { return cmp.Compare(a.Name, b.Name) })
	return out, err
}
