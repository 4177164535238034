package local

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kmsfs/kmsfs/keysvc"
)

// RootPrincipal is the account principal, the creator recorded when
// CreateKeyInput.Creator is empty (keys made through the CLI).
const RootPrincipal = "arn:aws:iam::" + AccountID + ":root"

// principalOf returns name when it is already an ARN, else the IAM-style
// ARN of the keystore credential called name
// (arn:aws:iam::000000000000:user/NAME).
func principalOf(name string) string {
	if strings.HasPrefix(name, "arn:") {
		return name
	}
	return "arn:aws:iam::" + AccountID + ":user/" + name
}

// DefaultKeyPolicy returns the policy a key gets when created without one,
// AWS's default: the account statement, which lets identity policies grant
// rights on the key (it grants nothing by itself). A creator other than
// the account also gets every right on the key directly.
func DefaultKeyPolicy(creator string) string {
	stmts := []any{map[string]any{
		"Sid":       "Enable IAM User Permissions",
		"Effect":    "Allow",
		"Principal": map[string]any{"AWS": RootPrincipal},
		"Action":    "kms:*",
		"Resource":  "*",
	}}
	if creator != RootPrincipal {
		stmts = append(stmts, map[string]any{
			"Sid":       "Enable creator permissions",
			"Effect":    "Allow",
			"Principal": map[string]any{"AWS": creator},
			"Action":    "kms:*",
			"Resource":  "*",
		})
	}
	p := map[string]any{
		"Version":   "2012-10-17",
		"Id":        "key-default-1",
		"Statement": stmts,
	}
	b, _ := json.Marshal(p)
	return string(b)
}

// CreateKeyInput describes a key to create.
type CreateKeyInput struct {
	Description string // at most 8192 bytes
	// RotationPeriodDays enables automatic rotation with this period
	// (90..2560 days); 0 leaves rotation off.
	RotationPeriodDays int
	// Creator is the principal creating the key (an ARN or a credential
	// name); empty means RootPrincipal. The default policy allows it all.
	Creator string
	// Policy is the key policy JSON; empty means DefaultKeyPolicy(Creator).
	Policy string
	Tags   map[string]string
}

// KeyMetadata describes a key, as DescribeKey does in AWS KMS.
type KeyMetadata struct {
	KeyID                string // UUID
	ARN                  string
	Description          string
	Creator              string // principal ARN
	Created              time.Time
	State                KeyState
	Enabled              bool
	DeletionDate         time.Time // zero unless PendingDeletion
	PendingWindowDays    int       // set while PendingDeletion
	RotationEnabled      bool
	RotationPeriodDays   int       // set while rotation is enabled
	NextRotationDate     time.Time // zero unless rotation is enabled
	CurrentKeyMaterialID string
	KeyMaterialCount     int
}

// KeyMaterial describes one version of a key's material.
type KeyMaterial struct {
	KeyMaterialID string
	Created       time.Time // for rotations, the rotation date
	Kind          MaterialKind
	Current       bool
}

// RotationStatus is GetKeyRotationStatus's answer.
type RotationStatus struct {
	KeyID            string // ARN
	Enabled          bool
	PeriodDays       int       // set while enabled
	NextRotationDate time.Time // zero unless enabled
}

func metadataOf(k *keyRecord) KeyMetadata {
	m := KeyMetadata{
		KeyID:                k.ID,
		ARN:                  k.ARN,
		Description:          k.Description,
		Creator:              k.Creator,
		Created:              k.Created,
		State:                k.State,
		Enabled:              k.State == KeyStateEnabled,
		RotationEnabled:      k.RotationEnabled,
		CurrentKeyMaterialID: k.current().ID,
		KeyMaterialCount:     len(k.Versions),
	}
	if k.DeletionDate != nil {
		m.DeletionDate = *k.DeletionDate
		m.PendingWindowDays = k.PendingWindowDays
	}
	if k.RotationEnabled {
		m.RotationPeriodDays = k.RotationPeriodDays
		m.NextRotationDate = *k.NextRotation
	}
	return m
}

// isDeleted reports whether k's deletion date has passed (it is gone even
// if the keystore could not be rewritten yet).
func isDeleted(k *keyRecord, now time.Time) bool {
	return k.State == KeyStatePendingDeletion && !now.Before(*k.DeletionDate)
}

// resolve finds the key ref names: a key ID, key ARN, alias name
// ("alias/…") or alias ARN.
func resolve(d *keystoreData, ref string, now time.Time) (*keyRecord, error) {
	if ref == "" {
		return nil, fmt.Errorf("key ID is required: %w", keysvc.ErrInvalidArgument)
	}
	id := ref
	switch {
	case strings.HasPrefix(ref, "alias/") || strings.HasPrefix(ref, ARNPrefix+"alias/"):
		name := strings.TrimPrefix(ref, ARNPrefix)
		a := d.Aliases[name]
		if a == nil {
			return nil, fmt.Errorf("alias %s: %w", name, keysvc.ErrNotFound)
		}
		id = a.KeyID
	case strings.HasPrefix(ref, ARNPrefix+"key/"):
		id = strings.TrimPrefix(ref, ARNPrefix+"key/")
	case strings.HasPrefix(ref, "arn:"):
		return nil, fmt.Errorf("key %s is not in this keystore (%s): %w", ref, ARNPrefix, keysvc.ErrNotFound)
	}
	k := d.Keys[id]
	if k == nil || isDeleted(k, now) {
		return nil, fmt.Errorf("key %s: %w", ref, keysvc.ErrNotFound)
	}
	return k, nil
}

// notPendingDeletion rejects keys scheduled for deletion.
func notPendingDeletion(k *keyRecord) error {
	if k.State == KeyStatePendingDeletion {
		return fmt.Errorf("key %s is PendingDeletion: %w", k.ARN, keysvc.ErrInvalidState)
	}
	return nil
}

func validateRotationPeriod(days int) error {
	if days < MinRotationPeriodDays || days > MaxRotationPeriodDays {
		return fmt.Errorf("rotation period of %d days, want %d..%d: %w", days, MinRotationPeriodDays, MaxRotationPeriodDays, keysvc.ErrInvalidArgument)
	}
	return nil
}

// validateDescription checks a key description against AWS's limit of
// 8,192 characters.
func validateDescription(desc string) error {
	if !utf8.ValidString(desc) {
		return fmt.Errorf("description is not UTF-8: %w", keysvc.ErrInvalidArgument)
	}
	if n := utf8.RuneCountInString(desc); n > MaxDescriptionSize {
		return fmt.Errorf("description of %d characters, want at most %d: %w", n, MaxDescriptionSize, keysvc.ErrInvalidArgument)
	}
	return nil
}

func validatePolicy(p string) error {
	if len(p) == 0 || len(p) > MaxPolicySize {
		return fmt.Errorf("key policy of %d bytes, want 1..%d: %w", len(p), MaxPolicySize, keysvc.ErrInvalidArgument)
	}
	// The server would deny everything under a policy it cannot parse.
	if _, err := ParseKeyPolicy(p); err != nil {
		return fmt.Errorf("key policy: %w: %w", err, keysvc.ErrInvalidArgument)
	}
	return nil
}

// ValidateTags checks a key's tag set against the keystore's limits
// (MaxTags, MaxTagKeySize, MaxTagValueSize; no "aws:" key). The key server
// checks CreateKey's tags with it before it creates anything.
func ValidateTags(tags map[string]string) error {
	if len(tags) > MaxTags {
		return fmt.Errorf("%d tags, at most %d: %w", len(tags), MaxTags, keysvc.ErrInvalidArgument)
	}
	for k, v := range tags {
		if !utf8.ValidString(k) || k == "" || utf8.RuneCountInString(k) > MaxTagKeySize {
			return fmt.Errorf("tag key of %d bytes: want 1..%d characters of UTF-8: %w", len(k), MaxTagKeySize, keysvc.ErrInvalidArgument)
		}
		if strings.HasPrefix(k, "aws:") {
			return fmt.Errorf("tag key %q: the aws: prefix is reserved: %w", k, keysvc.ErrInvalidArgument)
		}
		if !utf8.ValidString(v) || utf8.RuneCountInString(v) > MaxTagValueSize {
			return fmt.Errorf("value of tag %q: want at most %d characters of UTF-8: %w", k, MaxTagValueSize, keysvc.ErrInvalidArgument)
		}
	}
	return nil
}

// CreateKey creates an enabled symmetric key with fresh key material.
func (s *Store) CreateKey(ctx context.Context, in CreateKeyInput) (KeyMetadata, error) {
	if err := validateDescription(in.Description); err != nil {
		return KeyMetadata{}, err
	}
	if in.RotationPeriodDays != 0 {
		if err := validateRotationPeriod(in.RotationPeriodDays); err != nil {
			return KeyMetadata{}, err
		}
	}
	creator := RootPrincipal
	if in.Creator != "" {
		creator = principalOf(in.Creator)
	}
	policy := in.Policy
	if policy == "" {
		policy = DefaultKeyPolicy(creator)
	}
	if err := validatePolicy(policy); err != nil {
		return KeyMetadata{}, err
	}
	if err := ValidateTags(in.Tags); err != nil {
		return KeyMetadata{}, err
	}
	var m KeyMetadata
	err := s.update(ctx, func(d *keystoreData, now time.Time) error {
		if len(d.Keys) >= s.maxKeys {
			return fmt.Errorf("the keystore has %d keys, its quota: %w", len(d.Keys), keysvc.ErrLimitExceeded)
		}
		raw, err := randomBytes(16)
		if err != nil {
			return err
		}
		raw[6] = raw[6]&0x0f | 0x40 // UUID version 4
		raw[8] = raw[8]&0x3f | 0x80 // RFC 4122 variant
		id := formatUUID(raw)
		if d.Keys[id] != nil {
			return fmt.Errorf("key ID collision: %w", keysvc.ErrAlreadyExists)
		}
		v, err := newKeyVersion(now, MaterialInitial)
		if err != nil {
			return err
		}
		k := &keyRecord{
			ID: id, ARN: KeyARN(id), Description: in.Description, Created: now.UTC(),
			Creator: creator, State: KeyStateEnabled, Versions: []*keyVersion{v},
			Policy: policy, Tags: maps.Clone(in.Tags),
		}
		if in.RotationPeriodDays != 0 {
			next := now.UTC().AddDate(0, 0, in.RotationPeriodDays)
			k.RotationEnabled, k.RotationPeriodDays, k.NextRotation = true, in.RotationPeriodDays, &next
		}
		d.Keys[id] = k
		m = metadataOf(k)
		return nil
	})
	if err == nil {
		s.log.Info("keystore: key created", "key_id", m.KeyID)
	}
	return m, err
}

// readKey runs fn on the key ref names, read-only.
func (s *Store) readKey(ctx context.Context, ref string, fn func(k *keyRecord) error) error {
	return s.view(ctx, func(d *keystoreData, now time.Time) error {
		k, err := resolve(d, ref, now)
		if err != nil {
			return err
		}
		return fn(k)
	})
}

// changeKey runs fn on the key ref names under the write lock and saves.
func (s *Store) changeKey(ctx context.Context, ref string, fn func(d *keystoreData, k *keyRecord, now time.Time) error) error {
	return s.update(ctx, func(d *keystoreData, now time.Time) error {
		k, err := resolve(d, ref, now)
		if err != nil {
			return err
		}
		return fn(d, k, now)
	})
}

// DescribeKey implements keysvc.Service.
func (s *Store) DescribeKey(ctx context.Context, keyID string) (keysvc.KeyInfo, error) {
	m, err := s.DescribeKeyMetadata(ctx, keyID)
	if err != nil {
		return keysvc.KeyInfo{}, err
	}
	return keysvc.KeyInfo{KeyID: m.KeyID, ARN: m.ARN, Enabled: m.Enabled, State: string(m.State), CurrentKeyMaterialID: m.CurrentKeyMaterialID}, nil
}

// DescribeKeyMetadata returns everything known about a key.
func (s *Store) DescribeKeyMetadata(ctx context.Context, keyID string) (KeyMetadata, error) {
	var m KeyMetadata
	err := s.readKey(ctx, keyID, func(k *keyRecord) error { m = metadataOf(k); return nil })
	return m, err
}

// ListKeys returns every key, oldest first.
func (s *Store) ListKeys(ctx context.Context) ([]KeyMetadata, error) {
	var out []KeyMetadata
	err := s.view(ctx, func(d *keystoreData, now time.Time) error {
		for _, k := range d.Keys {
			if !isDeleted(k, now) {
				out = append(out, metadataOf(k))
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b KeyMetadata) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.KeyID, b.KeyID))
	})
	return out, err
}

// RotateKey adds new key material to the key (AWS RotateKeyOnDemand). New
// blobs use it; blobs under older material still decrypt. The key must be
// Enabled, and at most MaxOnDemandRotations rotations are allowed per key.
func (s *Store) RotateKey(ctx context.Context, keyID string) (KeyMetadata, error) {
	var m KeyMetadata
	err := s.changeKey(ctx, keyID, func(d *keystoreData, k *keyRecord, now time.Time) error {
		if err := usable(k); err != nil {
			return err
		}
		if s.maxOnDmd > 0 && k.OnDemandRotations >= s.maxOnDmd {
			return fmt.Errorf("key %s has had %d on-demand rotations, the maximum: %w", k.ARN, k.OnDemandRotations, keysvc.ErrLimitExceeded)
		}
		v, err := newKeyVersion(now, MaterialOnDemand)
		if err != nil {
			return err
		}
		k.Versions = append(k.Versions, v)
		k.OnDemandRotations++
		m = metadataOf(k)
		return nil
	})
	if err == nil {
		s.log.Info("keystore: key rotated on demand", "key_id", m.KeyID, "key_material_id", m.CurrentKeyMaterialID)
	}
	return m, err
}

// EnableKey sets a Disabled key Enabled (no-op when already Enabled).
func (s *Store) EnableKey(ctx context.Context, keyID string) error {
	return s.setEnabled(ctx, keyID, KeyStateEnabled)
}

// DisableKey sets a key Disabled: cryptographic operations then fail with
// ErrDisabled.
func (s *Store) DisableKey(ctx context.Context, keyID string) error {
	return s.setEnabled(ctx, keyID, KeyStateDisabled)
}

func (s *Store) setEnabled(ctx context.Context, keyID string, st KeyState) error {
	return s.changeKey(ctx, keyID, func(d *keystoreData, k *keyRecord, now time.Time) error {
		if err := notPendingDeletion(k); err != nil {
			return err
		}
		k.State = st
		s.log.Info("keystore: key state changed", "key_id", k.ID, "state", st)
		return nil
	})
}

// ScheduleKeyDeletion puts the key in PendingDeletion; it is deleted, with
// all its material and aliases, after days (7..30; 0 means 30) days.
// Blobs under it can then never be decrypted again.
func (s *Store) ScheduleKeyDeletion(ctx context.Context, keyID string, days int) (KeyMetadata, error) {
	if days == 0 {
		days = DefaultPendingWindowDays
	}
	if days < MinPendingWindowDays || days > MaxPendingWindowDays {
		return KeyMetadata{}, fmt.Errorf("pending window of %d days, want %d..%d: %w", days, MinPendingWindowDays, MaxPendingWindowDays, keysvc.ErrInvalidArgument)
	}
	var m KeyMetadata
	err := s.changeKey(ctx, keyID, func(d *keystoreData, k *keyRecord, now time.Time) error {
		if err := notPendingDeletion(k); err != nil {
			return err
		}
		when := now.UTC().AddDate(0, 0, days)
		k.State, k.DeletionDate, k.PendingWindowDays = KeyStatePendingDeletion, &when, days
		m = metadataOf(k)
		return nil
	})
	if err == nil {
		s.log.Info("keystore: key deletion scheduled", "key_id", m.KeyID, "deletion_date", m.DeletionDate)
	}
	return m, err
}

// CancelKeyDeletion takes a key out of PendingDeletion; it is left
// Disabled, as in AWS KMS.
func (s *Store) CancelKeyDeletion(ctx context.Context, keyID string) (KeyMetadata, error) {
	var m KeyMetadata
	err := s.changeKey(ctx, keyID, func(d *keystoreData, k *keyRecord, now time.Time) error {
		if k.State != KeyStatePendingDeletion {
			return fmt.Errorf("key %s is %s, not PendingDeletion: %w", k.ARN, k.State, keysvc.ErrInvalidState)
		}
		k.State, k.DeletionDate, k.PendingWindowDays = KeyStateDisabled, nil, 0
		m = metadataOf(k)
		return nil
	})
	return m, err
}

// EnableKeyRotation turns on automatic rotation every periodDays
// (90..2560; 0 means 365) days, the first one periodDays from now. Calling
// it again changes the period and restarts the schedule.
func (s *Store) EnableKeyRotation(ctx context.Context, keyID string, periodDays int) error {
	if periodDays == 0 {
		periodDays = DefaultRotationPeriodDays
	}
	if err := validateRotationPeriod(periodDays); err != nil {
		return err
	}
	return s.changeKey(ctx, keyID, func(d *keystoreData, k *keyRecord, now time.Time) error {
		if err := usable(k); err != nil {
			return err
		}
		next := now.UTC().AddDate(0, 0, periodDays)
		k.RotationEnabled, k.RotationPeriodDays, k.NextRotation = true, periodDays, &next
		return nil
	})
}

// DisableKeyRotation turns automatic rotation off.
func (s *Store) DisableKeyRotation(ctx context.Context, keyID string) error {
	return s.changeKey(ctx, keyID, func(d *keystoreData, k *keyRecord, now time.Time) error {
		if err := usable(k); err != nil {
			return err
		}
		k.RotationEnabled, k.RotationPeriodDays, k.NextRotation = false, 0, nil
		return nil
	})
}

// GetKeyRotationStatus reports the automatic rotation schedule.
func (s *Store) GetKeyRotationStatus(ctx context.Context, keyID string) (RotationStatus, error) {
	var st RotationStatus
	err := s.readKey(ctx, keyID, func(k *keyRecord) error {
		st = RotationStatus{KeyID: k.ARN, Enabled: k.RotationEnabled}
		if k.RotationEnabled {
			st.PeriodDays, st.NextRotationDate = k.RotationPeriodDays, *k.NextRotation
		}
		return nil
	})
	return st, err
}

// ListKeyMaterials returns every version of the key's material, oldest
// first; the last is current.
func (s *Store) ListKeyMaterials(ctx context.Context, keyID string) ([]KeyMaterial, error) {
	var out []KeyMaterial
	err := s.readKey(ctx, keyID, func(k *keyRecord) error {
		for i, v := range k.Versions {
			out = append(out, KeyMaterial{KeyMaterialID: v.ID, Created: v.Created, Kind: v.Kind, Current: i == len(k.Versions)-1})
		}
		return nil
	})
	return out, err
}

// ListKeyRotations returns the completed rotations of the key (every
// material version but the initial one), oldest first.
func (s *Store) ListKeyRotations(ctx context.Context, keyID string) ([]KeyMaterial, error) {
	all, err := s.ListKeyMaterials(ctx, keyID)
	return slices.DeleteFunc(all, func(m KeyMaterial) bool { return m.Kind == MaterialInitial }), err
}

// GetKeyPolicy returns the key policy JSON.
func (s *Store) GetKeyPolicy(ctx context.Context, keyID string) (string, error) {
	var p string
	err := s.readKey(ctx, keyID, func(k *keyRecord) error { p = k.Policy; return nil })
	return p, err
}

// PutKeyPolicy replaces the key policy (a JSON object of at most 32768
// bytes). The Store only keeps it; the server enforces it.
func (s *Store) PutKeyPolicy(ctx context.Context, keyID, policy string) error {
	if err := validatePolicy(policy); err != nil {
		return err
	}
	return s.changeKey(ctx, keyID, func(d *keystoreData, k *keyRecord, now time.Time) error {
		if err := notPendingDeletion(k); err != nil {
			return err
		}
		k.Policy = policy
		return nil
	})
}

// TagResource adds or replaces tags on the key (at most 50 in all).
func (s *Store) TagResource(ctx context.Context, keyID string, tags map[string]string) error {
	if err := ValidateTags(tags); err != nil {
		return err
	}
	return s.changeKey(ctx, keyID, func(d *keystoreData, k *keyRecord, now time.Time) error {
		if err := notPendingDeletion(k); err != nil {
			return err
		}
		merged := maps.Clone(k.Tags)
		if merged == nil {
			merged = map[string]string{}
		}
		maps.Copy(merged, tags)
		if len(merged) > MaxTags {
			return fmt.Errorf("key %s would have %d tags, at most %d: %w", k.ARN, len(merged), MaxTags, keysvc.ErrLimitExceeded)
		}
		k.Tags = merged
		return nil
	})
}

// UntagResource removes the named tags (missing ones are ignored).
func (s *Store) UntagResource(ctx context.Context, keyID string, tagKeys []string) error {
	return s.changeKey(ctx, keyID, func(d *keystoreData, k *keyRecord, now time.Time) error {
		if err := notPendingDeletion(k); err != nil {
			return err
		}
		for _, t := range tagKeys {
			delete(k.Tags, t)
		}
		return nil
	})
}

// ListResourceTags returns a copy of the key's tags.
func (s *Store) ListResourceTags(ctx context.Context, keyID string) (map[string]string, error) {
	tags := map[string]string{}
	err := s.readKey(ctx, keyID, func(k *keyRecord) error { maps.Copy(tags, k.Tags); return nil })
	return tags, err
}
