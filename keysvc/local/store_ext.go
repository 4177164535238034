package local

import (
	"context"
	"time"
)

// Store methods that exist for the key server (keysvc/kmsserver): what it
// needs beyond the keysvc.Service and admin API to authorise a request
// before running it, and the one KMS operation the admin API lacks.

// KeyAndPolicy returns the metadata and the policy document of the key ref
// names (a key ID, key ARN, alias name or alias ARN), read in one
// consistent view of the keystore, so that the key the server authorises
// is the key whose policy it evaluates.
func (s *Store) KeyAndPolicy(ctx context.Context, ref string) (KeyMetadata, string, error) {
	var (
		m      KeyMetadata
		policy string
	)
	err := s.readKey(ctx, ref, func(k *keyRecord) error {
		m, policy = metadataOf(k), k.Policy
		return nil
	})
	return m, policy, err
}

// BlobKeyID returns the ID of the key a ciphertext blob names, without
// decrypting it, so that the server can check that key's policy before
// anything else (Decrypt and ReEncrypt may omit the key). ok is false for
// anything that is not a blob of this keystore's format.
func BlobKeyID(blob []byte) (id string, ok bool) {
	p, err := parseBlob(blob)
	if err != nil {
		return "", false
	}
	return p.keyID, true
}

// UpdateKeyDescription replaces the description of the key ref names
// (KMS's UpdateKeyDescription). It fails for a key pending deletion and
// for a description longer than MaxDescriptionSize characters.
func (s *Store) UpdateKeyDescription(ctx context.Context, ref, desc string) error {
	if err := validateDescription(desc); err != nil {
		return err
	}
	return s.changeKey(ctx, ref, func(_ *keystoreData, k *keyRecord, _ time.Time) error {
		if err := notPendingDeletion(k); err != nil {
			return err
		}
		k.Description = desc
		return nil
	})
}
