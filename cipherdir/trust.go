package cipherdir

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

// Which KMS keys a tree trusts.
//
// A key record names the KMS key that wrapped the file's data key, and
// whoever can write CIPHERDIR can write a record. Were the named key used
// as it stands, someone holding any key the victim's credential may
// Decrypt under could plant a file the victim then reads (and appends
// to) as if it were theirs. So a record must name a key the tree trusts:
// the config's KeyID, plus its PreviousKeys while a `kmsfs rewrap --key`
// migration runs. Keys are compared as ARNs (a config may name a key by
// alias, ARN or ID: each is resolved once with DescribeKey), and the
// trusted ARN is then passed to Decrypt and ReEncrypt as the expected key,
// so the KMS itself refuses a blob of another key hidden behind a record
// that names a trusted one. A record naming any other key fails with
// ErrUntrustedKey before the key service is asked.

// ErrUntrustedKey: a key record names a KMS key this tree does not trust.
var ErrUntrustedKey = errors.New("key record names a KMS key this filesystem does not trust")

// trustReloadEvery bounds how often a Trust with a reload function reads
// the config again for a key it does not know (a migration that started
// after the mount): planted records cannot make it read more often.
const trustReloadEvery = time.Second

// Trust is the set of KMS keys (ARNs) whose key records a tree accepts.
// It is safe for concurrent use.
type Trust struct {
	keys   keysvc.Service
	reload func() (Config, error) // nil: the set is fixed

	mu       sync.Mutex
	arns     map[string]bool
	reloaded time.Time
}

// NewTrust returns the keys cfg trusts, each resolved to its ARN with
// keys.DescribeKey (bounded by ctx). A key that cannot be described (a
// least-privilege credential may not DescribeKey) is trusted under the
// name the config gives, which is an ARN in every config kmsfs writes.
// reload, when not nil, re-reads the config: a key not in the set makes
// Allow read it again (at most once a second), so a mount learns the keys
// of a rewrap --key migration that started after it.
func NewTrust(ctx context.Context, keys keysvc.Service, cfg Config, reload func() (Config, error)) *Trust {
	t := &Trust{keys: keys, reload: reload, reloaded: time.Now()}
	t.arns = t.resolve(ctx, cfg)
	return t
}

// resolve returns the ARNs of the keys cfg trusts.
func (t *Trust) resolve(ctx context.Context, cfg Config) map[string]bool {
	arns := map[string]bool{}
	for _, ref := range append([]string{cfg.KeyID}, cfg.PreviousKeys...) {
		arns[ref] = true
		if strings.HasPrefix(ref, "arn:") && !strings.Contains(ref, ":alias/") {
			continue // a key ARN already
		}
		if info, err := t.keys.DescribeKey(ctx, ref); err == nil && info.ARN != "" {
			arns[info.ARN] = true
		}
	}
	return arns
}

// Allow returns nil when keyID (a record's key ARN) is trusted, else an
// error wrapping ErrUntrustedKey that names the key (key IDs are not
// secret).
func (t *Trust) Allow(ctx context.Context, keyID string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.arns[keyID] {
		return nil
	}
	if t.reload != nil && time.Since(t.reloaded) >= trustReloadEvery {
		t.reloaded = time.Now()
		if cfg, err := t.reload(); err == nil {
			t.arns = t.resolve(ctx, cfg)
			if t.arns[keyID] {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s", ErrUntrustedKey, keyID)
}
