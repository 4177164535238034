package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/kmsfs/kmsfs/keysvc/local"
)

// Environment variables read by kmsfs.
const (
	envKeystore       = "KMSFS_KEYSTORE"
	envPassphraseFile = "KMSFS_PASSPHRASE_FILE"
)

// keystoreFlags are the flags of every command that opens the local
// keystore: where it is and where its passphrase is.
type keystoreFlags struct {
	dir            string
	passphraseFile string
}

func (k *keystoreFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.dir, "keystore", "", "local keystore directory (default $"+envKeystore+", $XDG_DATA_HOME/kmsfs, ~/.local/share/kmsfs)")
	fs.StringVar(&k.passphraseFile, "passphrase-file", "", "file holding the keystore passphrase (default $"+envPassphraseFile+"; none: a random root.key beside the keystore)")
}

// keystoreDir resolves the local keystore directory: --keystore, else
// $KMSFS_KEYSTORE, else $XDG_DATA_HOME/kmsfs, else $HOME/.local/share/kmsfs.
// The result is absolute, so a daemon started in "/" finds the same one.
func keystoreDir(flagValue string, env *Env) (string, error) {
	dir := flagValue
	switch {
	case dir != "":
	case env.Getenv(envKeystore) != "":
		dir = env.Getenv(envKeystore)
	case env.Getenv("XDG_DATA_HOME") != "":
		dir = filepath.Join(env.Getenv("XDG_DATA_HOME"), "kmsfs")
	case env.Getenv("HOME") != "":
		dir = filepath.Join(env.Getenv("HOME"), ".local", "share", "kmsfs")
	default:
		return "", withHint(errors.New("cannot locate the local keystore: $HOME is not set"),
			"pass --keystore DIR or set $"+envKeystore)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("keystore path %q: %w", dir, err)
	}
	return abs, nil
}

// passphraseFile resolves the passphrase file: --passphrase-file, else
// $KMSFS_PASSPHRASE_FILE, else "" (no passphrase). Absolute when set.
func passphraseFile(flagValue string, env *Env) (string, error) {
	p := flagValue
	if p == "" {
		p = env.Getenv(envPassphraseFile)
	}
	if p == "" {
		return "", nil
	}
	return filepath.Abs(p)
}

// readPassphrase reads a passphrase file. One trailing newline (LF or CRLF)
// is not part of the passphrase; an empty passphrase is refused. The caller
// zeroes the result.
func readPassphrase(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read passphrase file: %w", err)
	}
	p := bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(p) == 0 {
		clear(b)
		return nil, fmt.Errorf("passphrase file %s is empty", path)
	}
	out := bytes.Clone(p)
	clear(b)
	return out, nil
}

// resolve turns the flags and environment into absolute paths.
func (k *keystoreFlags) resolve(env *Env) (dir, passFile string, err error) {
	if dir, err = keystoreDir(k.dir, env); err != nil {
		return "", "", withKind(errUsage, err)
	}
	if passFile, err = passphraseFile(k.passphraseFile, env); err != nil {
		return "", "", withKind(errUsage, err)
	}
	return dir, passFile, nil
}

// open opens (creating it on first use) the local keystore.
func (k *keystoreFlags) open(env *Env, logger *slog.Logger) (*local.Store, error) {
	dir, passFile, err := k.resolve(env)
	if err != nil {
		return nil, err
	}
	opts := local.Options{Logger: logger}
	if passFile != "" {
		if opts.Passphrase, err = readPassphrase(passFile); err != nil {
			return nil, withKind(errKeystore, err)
		}
		defer clear(opts.Passphrase)
	}
	store, err := local.Open(dir, opts)
	if err != nil {
		return nil, withKind(errKeystore, fmt.Errorf("open keystore %s: %w", dir, err))
	}
	return store, nil
}
