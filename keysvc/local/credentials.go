package local

import (
	"cmp"
	"context"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

// secretSize is the length of a secret access key, as AWS's: 40 characters.
const secretSize = 40

// AdminPolicy is the identity policy of an administrator credential: every
// KMS action on every key and alias (and, through the account statement
// of key policies, on every key whose policy delegates to identity
// policies, such as the keys the CLI creates).
const AdminPolicy = `{"Version":"2012-10-17","Statement":[{"Sid":"KeystoreAdmin","Effect":"Allow","Action":"kms:*","Resource":"*"}]}`

// Credential is an access key the server accepts SigV4 signatures from.
// Name is the principal; policies name it arn:aws:iam::000000000000:user/Name.
type Credential struct {
	Name            string
	AccessKeyID     string // "AKIA" and 16 of [A-Z2-7]
	SecretAccessKey string // 40 characters; empty in ListCredentials
	Created         time.Time
	// Policy is the identity policy of Name (IAM JSON); empty for a
	// credential created before identity policies existed, which gets
	// only what key policies grant it directly.
	Policy string
}

var credentialNameRE = regexp.MustCompile(`^[A-Za-z0-9+=,.@_-]{1,64}$`)

// ValidateIdentityPolicy checks an identity policy as CreateCredential
// does; the error's message says what is wrong.
func ValidateIdentityPolicy(doc string) error {
	if _, err := ParseIdentityPolicy(doc); err != nil {
		return fmt.Errorf("identity policy: %w: %w", err, keysvc.ErrInvalidArgument)
	}
	return nil
}

// CreateCredential makes a new access key for principal name (1..64 of
// [A-Za-z0-9+=,.@_-], as IAM user names) with the identity policy policy
// (IAM JSON, required: AdminPolicy for full rights). A name may hold
// several keys; the policy belongs to the name, as an IAM user's does, so
// it replaces the policy of name's other access keys too.
func (s *Store) CreateCredential(ctx context.Context, name, policy string) (Credential, error) {
	if !credentialNameRE.MatchString(name) {
		return Credential{}, fmt.Errorf("credential name %q: want 1..64 of [A-Za-z0-9+=,.@_-]: %w", name, keysvc.ErrInvalidArgument)
	}
	if err := ValidateIdentityPolicy(policy); err != nil {
		return Credential{}, fmt.Errorf("credential %s: %w", name, err)
	}
	var c Credential
	err := s.update(ctx, func(d *keystoreData, now time.Time) error {
		idRaw, err := randomBytes(10)
		if err != nil {
			return err
		}
		secretRaw, err := randomBytes(30)
		if err != nil {
			return err
		}
		id := "AKIA" + base32.StdEncoding.EncodeToString(idRaw)
		if d.Credentials[id] != nil {
			return fmt.Errorf("access key ID collision: %w", keysvc.ErrAlreadyExists)
		}
		c = Credential{Name: name, AccessKeyID: id, SecretAccessKey: base64.StdEncoding.EncodeToString(secretRaw), Created: now.UTC(), Policy: policy}
		keysvc.Zero(secretRaw)
		for _, r := range d.Credentials {
			if r.Name == name {
				r.Policy = policy
			}
		}
		d.Credentials[id] = &credentialRecord{Name: c.Name, AccessKeyID: id, SecretAccessKey: c.SecretAccessKey, Created: c.Created, Policy: policy}
		return nil
	})
	if err == nil {
		s.log.Info("keystore: credential created", "name", name, "access_key_id", c.AccessKeyID)
	}
	return c, err
}

// LookupCredential returns the credential with this access key ID, secret
// included (the server needs it to check signatures), or ErrNotFound.
func (s *Store) LookupCredential(ctx context.Context, accessKeyID string) (Credential, error) {
	var c Credential
	err := s.view(ctx, func(d *keystoreData, now time.Time) error {
		r := d.Credentials[accessKeyID]
		if r == nil {
			return fmt.Errorf("access key %q: %w", accessKeyID, keysvc.ErrNotFound)
		}
		c = Credential{Name: r.Name, AccessKeyID: r.AccessKeyID, SecretAccessKey: r.SecretAccessKey, Created: r.Created, Policy: r.Policy}
		return nil
	})
	return c, err
}

// ListCredentials returns every credential without its secret, sorted by
// name then creation.
func (s *Store) ListCredentials(ctx context.Context) ([]Credential, error) {
	var out []Credential
	err := s.view(ctx, func(d *keystoreData, now time.Time) error {
		for _, r := range d.Credentials {
			out = append(out, Credential{Name: r.Name, AccessKeyID: r.AccessKeyID, Created: r.Created, Policy: r.Policy})
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Credential) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), a.Created.Compare(b.Created), cmp.Compare(a.AccessKeyID, b.AccessKeyID))
	})
	return out, err
}

// DeleteCredential removes an access key; ErrNotFound when unknown.
func (s *Store) DeleteCredential(ctx context.Context, accessKeyID string) error {
	return s.update(ctx, func(d *keystoreData, now time.Time) error {
		if d.Credentials[accessKeyID] == nil {
			return fmt.Errorf("access key %q: %w", accessKeyID, keysvc.ErrNotFound)
		}
		delete(d.Credentials, accessKeyID)
		return nil
	})
}

// RevokeCredentials removes every access key of the principal name, or
// the one access key ref when ref is an access key ID, and returns the
// access key IDs removed; ErrNotFound when there is none. A server on the
// keystore refuses them from its next request on: it looks credentials up
// for every request and reloads the keystore when the file changed.
func (s *Store) RevokeCredentials(ctx context.Context, ref string) ([]string, error) {
	var gone []string
	err := s.update(ctx, func(d *keystoreData, now time.Time) error {
		for id, r := range d.Credentials {
			if id == ref || r.Name == ref {
				gone = append(gone, id)
			}
		}
		if len(gone) == 0 {
			return fmt.Errorf("credential %q: %w", ref, keysvc.ErrNotFound)
		}
		for _, id := range gone {
			delete(d.Credentials, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(gone)
	s.log.Info("keystore: credentials revoked", "ref", ref, "access_key_ids", gone)
	return gone, nil
}
