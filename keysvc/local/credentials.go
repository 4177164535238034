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

// Credential is an access key the server accepts SigV4 signatures from.
// Name is the principal; policies name it arn:aws:iam::000000000000:user/Name.
type Credential struct {
	Name            string
	AccessKeyID     string // "AKIA" and 16 of [A-Z2-7]
	SecretAccessKey string // 40 characters; empty in ListCredentials
	Created         time.Time
}

var credentialNameRE = regexp.MustCompile(`^[A-Za-z0-9+=,.@_-]{1,64}$`)

// CreateCredential makes a new access key for principal name (1..64 of
// [A-Za-z0-9+=,.@_-], as IAM user names). A name may hold several keys.
func (s *Store) CreateCredential(ctx context.Context, name string) (Credential, error) {
	if !credentialNameRE.MatchString(name) {
		return Credential{}, fmt.Errorf("credential name %q: want 1..64 of [A-Za-z0-9+=,.@_-]: %w", name, keysvc.ErrInvalidArgument)
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
		c = Credential{Name: name, AccessKeyID: id, SecretAccessKey: base64.StdEncoding.EncodeToString(secretRaw), Created: now.UTC()}
		keysvc.Zero(secretRaw)
		d.Credentials[id] = &credentialRecord{Name: c.Name, AccessKeyID: id, SecretAccessKey: c.SecretAccessKey, Created: c.Created}
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
		c = Credential{Name: r.Name, AccessKeyID: r.AccessKeyID, SecretAccessKey: r.SecretAccessKey, Created: r.Created}
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
			out = append(out, Credential{Name: r.Name, AccessKeyID: r.AccessKeyID, Created: r.Created})
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
