package local

import (
	"encoding/hex"
	"fmt"
	"regexp"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

// Identity of the local KMS in ARNs. Clients see the region "local" and the
// account 000000000000.
const (
	Region    = "local"
	AccountID = "000000000000"
	// ARNPrefix begins the ARN of every key ("key/ID" follows) and alias
	// ("alias/NAME" follows) of a keystore.
	ARNPrefix = "arn:aws:kms:" + Region + ":" + AccountID + ":"
)

// KeyState is the lifecycle state of a key, spelled as AWS KMS spells it.
type KeyState string

// Key states.
const (
	KeyStateEnabled         KeyState = "Enabled"
	KeyStateDisabled        KeyState = "Disabled"
	KeyStatePendingDeletion KeyState = "PendingDeletion"
)

// MaterialKind says how a key-material version came to be, spelled as
// ListKeyRotations spells RotationType (INITIAL is ours: the material a key
// was created with).
type MaterialKind string

// Material kinds.
const (
	MaterialInitial   MaterialKind = "INITIAL"
	MaterialOnDemand  MaterialKind = "ON_DEMAND"
	MaterialAutomatic MaterialKind = "AUTOMATIC"
)

// Limits, as AWS KMS applies them.
const (
	MinRotationPeriodDays     = 90
	MaxRotationPeriodDays     = 2560
	DefaultRotationPeriodDays = 365
	MinPendingWindowDays      = 7
	MaxPendingWindowDays      = 30
	DefaultPendingWindowDays  = 30
	MaxPlaintextSize          = 4096  // Encrypt
	MaxDataKeyBytes           = 1024  // GenerateDataKey NumberOfBytes, GenerateRandom
	MaxDescriptionSize        = 8192  // characters (Unicode code points)
	MaxPolicySize             = 32768 // bytes
	MaxTags                   = 50    // per key
	MaxTagKeySize             = 128   // characters
	MaxTagValueSize           = 256   // characters
	MaxAliasNameSize          = 256   // bytes, "alias/" included
	MaxAliasesPerKey          = 50
	// DefaultMaxOnDemandRotations is the per-key cap on RotateKey.
	DefaultMaxOnDemandRotations = 25
	// DefaultMaxKeys is the keystore-wide quota on keys (Options.MaxKeys),
	// in every state. AWS allows 100,000 per account and region; a local
	// keystore is one file rewritten on every change, so the quota is
	// lower: 1,000 keys of the usual size (about 1.5 KiB each with the
	// default policy) make a keystore of about 1.5 MiB. Keys with every
	// field at its maximum are much larger (see maxKeyRecordSize); for
	// them keystoreBudget is the binding limit.
	DefaultMaxKeys = 1000

	materialSize = 32 // AES-256 backing key

	// maxKeyRecordSize bounds what one key adds to the keystore file with
	// every field at its limit in characters JSON escapes to 6 bytes
	// (control characters, "<"), its 26 material versions (initial and
	// every on-demand rotation) and its 50 aliases: about 380 KB. Each
	// automatic rotation (at most one per 90 days) adds maxVersionSize.
	maxKeyRecordSize = 6*(MaxDescriptionSize+MaxPolicySize+MaxTags*(MaxTagKeySize+MaxTagValueSize)) +
		MaxTags*8 + (1+DefaultMaxOnDemandRotations)*maxVersionSize +
		MaxAliasesPerKey*(MaxAliasNameSize+maxAliasOverhead) + 2048
	maxVersionSize   = 240 // one keyVersion in JSON
	maxAliasOverhead = 160 // an aliasRecord's JSON besides its name
)

// keystoreData is the plaintext content of keystore.kms (JSON).
type keystoreData struct {
	Version     int                          `json:"version"`
	Keys        map[string]*keyRecord        `json:"keys"`        // by key UUID
	Aliases     map[string]*aliasRecord      `json:"aliases"`     // by full alias name ("alias/…")
	Credentials map[string]*credentialRecord `json:"credentials"` // by access key ID
}

const dataVersion = 1

type keyRecord struct {
	ID                 string            `json:"id"`
	ARN                string            `json:"arn"`
	Description        string            `json:"description"`
	Created            time.Time         `json:"created"`
	Creator            string            `json:"creator"`
	State              KeyState          `json:"state"`
	DeletionDate       *time.Time        `json:"deletion_date,omitempty"`
	PendingWindowDays  int               `json:"pending_window_days,omitempty"`
	RotationEnabled    bool              `json:"rotation_enabled"`
	RotationPeriodDays int               `json:"rotation_period_days,omitempty"`
	NextRotation       *time.Time        `json:"next_rotation,omitempty"`
	OnDemandRotations  int               `json:"on_demand_rotations"`
	Versions           []*keyVersion     `json:"versions"`
	Policy             string            `json:"policy"`
	Tags               map[string]string `json:"tags,omitempty"`
}

type keyVersion struct {
	ID       string       `json:"id"`       // 64 hex digits
	Material []byte       `json:"material"` // materialSize bytes
	Created  time.Time    `json:"created"`
	Kind     MaterialKind `json:"kind"`
}

type aliasRecord struct {
	KeyID   string    `json:"key_id"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

type credentialRecord struct {
	Name            string    `json:"name"`
	AccessKeyID     string    `json:"access_key_id"`
	SecretAccessKey string    `json:"secret_access_key"`
	Created         time.Time `json:"created"`
	// Policy is the identity policy of the credential's name (the same on
	// every access key of that name). Empty in keystores written before
	// identity policies existed: such a credential has only what key
	// policies grant it directly.
	Policy string `json:"policy,omitempty"`
}

func newKeystoreData() *keystoreData {
	return &keystoreData{
		Version:     dataVersion,
		Keys:        map[string]*keyRecord{},
		Aliases:     map[string]*aliasRecord{},
		Credentials: map[string]*credentialRecord{},
	}
}

// zero overwrites every key material and secret held by d.
func (d *keystoreData) zero() {
	if d == nil {
		return
	}
	for _, k := range d.Keys {
		if k == nil {
			continue
		}
		for _, v := range k.Versions {
			if v != nil {
				keysvc.Zero(v.Material)
			}
		}
	}
}

var (
	uuidRE        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	materialIDRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	aliasNameRE   = regexp.MustCompile(`^alias/[a-zA-Z0-9:/_-]+$`)
	accessKeyIDRE = regexp.MustCompile(`^AKIA[A-Z2-7]{16}$`)
)

// validate checks the invariants every loaded keystore must hold, so code
// using the data can rely on them (and a fuzzed file can never panic it).
func (d *keystoreData) validate() error {
	if d.Version != dataVersion {
		return fmt.Errorf("keystore data version %d, want %d", d.Version, dataVersion)
	}
	if d.Keys == nil || d.Aliases == nil || d.Credentials == nil {
		return fmt.Errorf("keystore data lacks keys, aliases or credentials")
	}
	for id, k := range d.Keys {
		if k == nil || k.ID != id || !uuidRE.MatchString(id) || k.ARN != KeyARN(id) {
			return fmt.Errorf("keystore key %q: bad ID or ARN", id)
		}
		switch k.State {
		case KeyStateEnabled, KeyStateDisabled:
			if k.DeletionDate != nil {
				return fmt.Errorf("keystore key %s: deletion date on a %s key", id, k.State)
			}
		case KeyStatePendingDeletion:
			if k.DeletionDate == nil {
				return fmt.Errorf("keystore key %s: pending deletion without a date", id)
			}
		default:
			return fmt.Errorf("keystore key %s: unknown state %q", id, k.State)
		}
		if k.RotationEnabled && (k.NextRotation == nil ||
			k.RotationPeriodDays < MinRotationPeriodDays || k.RotationPeriodDays > MaxRotationPeriodDays) {
			return fmt.Errorf("keystore key %s: bad rotation schedule", id)
		}
		if len(k.Versions) == 0 {
			return fmt.Errorf("keystore key %s: no key material", id)
		}
		seen := map[string]bool{}
		for _, v := range k.Versions {
			if v == nil || !materialIDRE.MatchString(v.ID) || len(v.Material) != materialSize || seen[v.ID] {
				return fmt.Errorf("keystore key %s: bad key material version", id)
			}
			seen[v.ID] = true
			switch v.Kind {
			case MaterialInitial, MaterialOnDemand, MaterialAutomatic:
			default:
				return fmt.Errorf("keystore key %s: unknown material kind %q", id, v.Kind)
			}
		}
	}
	for name, a := range d.Aliases {
		if a == nil || validateAliasName(name) != nil {
			return fmt.Errorf("keystore alias %q: bad name", name)
		}
		if _, ok := d.Keys[a.KeyID]; !ok {
			return fmt.Errorf("keystore alias %q: target key %q does not exist", name, a.KeyID)
		}
	}
	for id, c := range d.Credentials {
		if c == nil || c.AccessKeyID != id || !accessKeyIDRE.MatchString(id) || len(c.SecretAccessKey) != secretSize {
			return fmt.Errorf("keystore credential %q: bad access key", id)
		}
	}
	return nil
}

// KeyARN returns the ARN of the key with the given ID.
func KeyARN(id string) string { return ARNPrefix + "key/" + id }

// AliasARN returns the ARN of the alias with the given name ("alias/…").
func AliasARN(name string) string { return ARNPrefix + name }

// IsKeyID reports whether s has the form of a key ID (a lower-case UUID),
// whether or not such a key exists.
func IsKeyID(s string) bool { return uuidRE.MatchString(s) }

// newMaterialID returns a fresh random key material ID: 64 hex digits, as
// AWS KMS shows KeyMaterialId. It is random, so it says nothing about the
// material.
func newMaterialID() (string, error) {
	b, err := randomBytes(32)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
