package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/names"
)

// openNames unwraps the names key of the tree dir whose config is cfg
// (cipherdir.OpenNames, trusting the keys cfg names), or returns nil for
// a v1 tree. A key that is disabled or denied keeps its keysvc sentinel
// (exit code 4); anything else is a CIPHERDIR error.
func openNames(ctx context.Context, svc keysvc.Service, dir string, cfg cipherdir.Config) (*names.Keys, error) {
	if !cfg.EncryptedNames() {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, keyCheckTimeout)
	defer cancel()
	root, err := cipherdir.OpenRoot(dir)
	if err != nil {
		return nil, withKind(errCipherDir, err)
	}
	defer unix.Close(root)
	k, err := cipherdir.OpenNames(ctx, svc, cipherdir.NewTrust(ctx, svc, cfg, nil), cfg, root)
	if err != nil {
		return nil, withKind(errCipherDir, fmt.Errorf("%s: %w", dir, err))
	}
	return k, nil
}

// loadConfig reads dir's kmsfs.conf. When that fails and dir holds a
// valid copy (a v2 tree), the hint says how to restore it; else the
// hint is hint.
func loadConfig(dir, hint string) (cipherdir.Config, error) {
	cfg, err := cipherdir.LoadConfig(dir)
	if err == nil {
		return cfg, nil
	}
	err = withKind(errCipherDir, err)
	if _, cerr := cipherdir.LoadConfigCopy(dir); cerr == nil {
		conf := filepath.Join(dir, cipherdir.ConfigName)
		restore := "'kmsfs init --recover " + dir + "' restores it from its copy " + cipherdir.ConfigCopyName + " (it makes no key and changes no file)"
		if _, serr := os.Lstat(conf); serr == nil {
			restore = "move the damaged " + conf + " aside, then " + restore
		}
		return cfg, withHint(err, restore)
	}
	return cfg, withHint(err, hint)
}
