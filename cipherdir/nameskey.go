package cipherdir

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/names"
)

// The names key of a v2 tree (names/FORMAT.md, "Keys"): 32 bytes made by
// the KMS with GenerateDataKey under the tree's key and the encryption
// context keysvc.NamesContext (the filesystem ID and the purpose
// "names"), stored wrapped in Config.NamesKey, in kmsfs.conf and in its
// copy kmsfs.conf.copy. Its record is checked against Trust like a file's,
// unwrapped with that key as the expected one, and re-wrapped by Rewrap
// with the files' keys.

// InitNames makes the names key of a new tree whose config is cfg (its
// KeyID the ARN of an enabled key): it generates the key, checks that the
// wrapped copy unwraps to the same bytes, and returns cfg as a format 2
// config with NamesKey set, and the names keys derived from it (the
// plaintext is zeroed). It writes nothing: WriteConfig then writes the
// config and its copy, WriteRootDirID the root's directory ID.
func InitNames(ctx context.Context, keys keysvc.Service, cfg Config) (Config, *names.Keys, error) {
	ec := keysvc.NamesContext(cfg.FilesystemID)
	dk, err := keys.GenerateDataKey(ctx, cfg.KeyID, ec)
	if err != nil {
		return Config{}, nil, fmt.Errorf("generate the names key under %s: %w", cfg.KeyID, err)
	}
	defer keysvc.Zero(dk.Plaintext)
	if dk.Wrapped.KeyID == "" {
		dk.Wrapped.KeyID = cfg.KeyID
	}
	u, err := keys.Decrypt(ctx, dk.Wrapped.Blob, dk.Wrapped.KeyID, ec)
	if err != nil {
		return Config{}, nil, fmt.Errorf("unwrap the new names key under %s: %w", dk.Wrapped.KeyID, err)
	}
	defer keysvc.Zero(u.Plaintext)
	if len(dk.Plaintext) != names.KeySize || subtle.ConstantTimeCompare(dk.Plaintext, u.Plaintext) != 1 {
		return Config{}, nil, fmt.Errorf("the new names key under %s did not unwrap to itself: %w", dk.Wrapped.KeyID, keysvc.ErrInvalidCiphertext)
	}
	if cfg.NamesKey, err = encodeNamesKey(dk.Wrapped); err != nil {
		return Config{}, nil, err
	}
	cfg.FormatVersion = ConfigFormatV2
	if err := cfg.Validate(); err != nil {
		return Config{}, nil, err
	}
	k, err := names.New(dk.Plaintext)
	if err != nil {
		return Config{}, nil, err
	}
	return cfg, k, nil
}

// OpenNames returns the names keys of the tree whose config is cfg, or
// (nil, nil) for a v1 tree (plaintext names). It unwraps Config.NamesKey
// after checking that the key it names is one trust allows, with that key
// as the expected one (so the KMS refuses a blob of another key behind a
// record naming a trusted one) and keysvc.NamesContext. When that copy
// cannot serve because it is damaged, names an untrusted or unknown key
// or holds another blob (keysvc.ErrBadRecord, ErrInvalidCiphertext,
// ErrIncorrectKey, ErrNotFound, ErrUntrustedKey), the copy in
// kmsfs.conf.copy (read through root, a descriptor of CIPHERDIR) of the
// same filesystem is tried. A key that is disabled, pending deletion,
// denied or unreachable fails at once, naming the key and wrapping the
// key service's sentinel: a disabled key stops new mounts. The plaintext
// names key is zeroed before OpenNames returns.
func OpenNames(ctx context.Context, keys keysvc.Service, trust *Trust, cfg Config, root int) (*names.Keys, error) {
	if !cfg.EncryptedNames() {
		return nil, nil
	}
	k, err := unwrapNames(ctx, keys, trust, cfg)
	if err == nil || !copyMayHelp(err) {
		return k, err
	}
	cp, cerr := loadConfigAt(root, ConfigCopyName)
	switch {
	case cerr != nil:
	case cp.FilesystemID != cfg.FilesystemID || !cp.EncryptedNames():
		cerr = fmt.Errorf("%s is not of filesystem %s", ConfigCopyName, cfg.FilesystemID)
	case cp.NamesKey == cfg.NamesKey:
		cerr = errors.New("it holds the same record")
	default:
		if k, cerr = unwrapNames(ctx, keys, trust, cp); cerr == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w (and its copy in %s: %v)", err, ConfigCopyName, cerr)
}

// copyMayHelp reports whether the names key in kmsfs.conf failed in a way
// its copy may not: the record, not the key, is at fault.
func copyMayHelp(err error) bool {
	for _, e := range []error{keysvc.ErrBadRecord, keysvc.ErrInvalidCiphertext, keysvc.ErrIncorrectKey, keysvc.ErrNotFound, ErrUntrustedKey} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// unwrapNames unwraps cfg's names key and derives the names keys.
func unwrapNames(ctx context.Context, keys keysvc.Service, trust *Trust, cfg Config) (*names.Keys, error) {
	wk, err := cfg.NamesKeyRecord()
	if err != nil {
		return nil, fmt.Errorf("names key: %w", err)
	}
	if err := trust.Allow(ctx, wk.KeyID); err != nil {
		return nil, fmt.Errorf("names key: %w", err)
	}
	u, err := keys.Decrypt(ctx, wk.Blob, wk.KeyID, keysvc.NamesContext(cfg.FilesystemID))
	if err != nil {
		return nil, fmt.Errorf("unwrap the names key: %w", aboutKey(wk.KeyID, err))
	}
	defer keysvc.Zero(u.Plaintext)
	k, err := names.New(u.Plaintext)
	if err != nil {
		return nil, fmt.Errorf("names key under %s: %w", wk.KeyID, err)
	}
	return k, nil
}
