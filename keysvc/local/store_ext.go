package local

import (
	"context"
	"time"
)

// Store helpers the key server needs, kept apart from the Store's own
// files. They use the Store's unexported API read-only.

// keyAndPolicy returns the metadata and policy of the key ref names, in one
// consistent read of the keystore, for authorisation.
func (s *Store) keyAndPolicy(ctx context.Context, ref string) (KeyMetadata, string, error) {
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

// blobKeyID returns the ID of the key a ciphertext blob names, without
// decrypting it, so the server can check that key's policy before
// anything else. ok is false for anything that is not a blob of this
// keystore's format.
func blobKeyID(blob []byte) (id string, ok bool) {
	p, err := parseBlob(blob)
	if err != nil {
		return "", false
	}
	return p.keyID, true
}

// updateKeyDescription replaces a key's description (UpdateKeyDescription),
// which the Store's exported API does not offer.
func (s *Store) updateKeyDescription(ctx context.Context, ref, desc string) error {
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
