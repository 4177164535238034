package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
	"github.com/kmsfs/kmsfs/names"
)

// configKeys returns the top-level field names of the config file at dir.
func configKeys(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, cipherdir.ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestInitEncryptsNamesByDefault: a new tree is format 2, with its names
// key in kmsfs.conf and in kmsfs.conf.copy, and the root's ID file.
func TestInitEncryptsNamesByDefault(t *testing.T) {
	te, _ := keystoreEnv(t)
	dir, cfg := initWith(t, te)
	if !cfg.EncryptedNames() || cfg.FormatVersion != cipherdir.ConfigFormatV2 {
		t.Fatalf("init wrote format %d", cfg.FormatVersion)
	}
	if !strings.Contains(te.stdout.String(), "file names:    encrypted (format 2)") || !strings.Contains(te.stdout.String(), cipherdir.ConfigCopyName) {
		t.Errorf("init output:\n%s", te.stdout.String())
	}
	wk, err := cfg.NamesKeyRecord()
	if err != nil || wk.KeyID != cfg.KeyID {
		t.Fatalf("names key %+v, %v; want under %s", wk, err, cfg.KeyID)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, cipherdir.ConfigName))
	cp, err := os.ReadFile(filepath.Join(dir, cipherdir.ConfigCopyName))
	if err != nil || !bytes.Equal(conf, cp) {
		t.Fatalf("%s: %v, or it differs from %s", cipherdir.ConfigCopyName, err, cipherdir.ConfigName)
	}
	if fi, err := os.Stat(filepath.Join(dir, names.DirIDFileName)); err != nil || fi.Size() != names.DirIDFileSize {
		t.Fatalf("root ID file: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("CIPHERDIR holds %v", entries)
	}
	if got, want := configKeys(t, dir), []string{"chunk_size", "compress", "created", "filesystem_id", "format_version", "key_id", "key_record", "kms", "names_key"}; !slices.Equal(got, want) {
		t.Errorf("config fields %v, want %v", got, want)
	}
}

// TestInitPlaintextNames: --plaintext-names writes the v1 config of
// before format 2, field for field, and nothing else.
func TestInitPlaintextNames(t *testing.T) {
	te, _ := keystoreEnv(t)
	dir, cfg := initWith(t, te, "--plaintext-names")
	if cfg.EncryptedNames() || cfg.FormatVersion != cipherdir.ConfigFormatV1 || cfg.NamesKey != "" {
		t.Fatalf("init --plaintext-names wrote %+v", cfg)
	}
	if !strings.Contains(te.stdout.String(), "file names:    plaintext (format 1)") {
		t.Errorf("init output:\n%s", te.stdout.String())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != cipherdir.ConfigName {
		t.Fatalf("CIPHERDIR holds %v, want only %s", entries, cipherdir.ConfigName)
	}
	if got, want := configKeys(t, dir), []string{"chunk_size", "compress", "created", "filesystem_id", "format_version", "key_id", "key_record", "kms"}; !slices.Equal(got, want) {
		t.Errorf("config fields %v, want %v", got, want)
	}
	b, _ := os.ReadFile(filepath.Join(dir, cipherdir.ConfigName))
	if !bytes.HasPrefix(b, []byte("{\n  \"format_version\": 1,\n  \"filesystem_id\": ")) {
		t.Errorf("config:\n%s", b)
	}
}

// TestInitRecover: a v2 tree whose kmsfs.conf is lost gets it back from
// its copy with init --recover, and only a copy of this tree is accepted.
func TestInitRecover(t *testing.T) {
	te, _ := keystoreEnv(t)
	dir, _ := initWith(t, te)
	conf := filepath.Join(dir, cipherdir.ConfigName)
	want, _ := os.ReadFile(conf)

	if code := runCmd(t, te, "init", "--recover", dir); code != ExitCipherDir || !strings.Contains(te.stderr.String(), "nothing to recover") {
		t.Errorf("recover of a sound tree: exit %d", code)
	}
	if code := runCmd(t, te, "init", "--recover", "--key", "alias/x", dir); code != ExitUsage {
		t.Errorf("recover with --key: exit %d, want %d", code, ExitUsage)
	}

	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	// Commands say how to recover, and do not suggest a new init.
	if code := runCmd(t, te, "rewrap", dir); code != ExitCipherDir || !strings.Contains(te.stderr.String(), "hint: 'kmsfs init --recover "+dir+"'") {
		t.Errorf("rewrap without kmsfs.conf: exit %d, stderr %q", code, te.stderr.String())
	}
	if err := os.WriteFile(conf, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := runCmd(t, te, "rewrap", dir); code != ExitCipherDir || !strings.Contains(te.stderr.String(), "move the damaged") {
		t.Errorf("rewrap with a damaged kmsfs.conf: exit %d, stderr %q", code, te.stderr.String())
	}
	if code := runCmd(t, te, "init", "--recover", dir); code != ExitCipherDir || !strings.Contains(te.stderr.String(), "refusing to replace") {
		t.Errorf("recover over a damaged kmsfs.conf: exit %d", code)
	}
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}

	// The copy of another tree (same key, another names key) is refused.
	other, _ := initWith(t, te)
	mine, _ := os.ReadFile(filepath.Join(dir, cipherdir.ConfigCopyName))
	theirs, _ := os.ReadFile(filepath.Join(other, cipherdir.ConfigCopyName))
	if err := os.WriteFile(filepath.Join(dir, cipherdir.ConfigCopyName), theirs, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := runCmd(t, te, "init", "--recover", dir); code != ExitCipherDir || !strings.Contains(te.stderr.String(), "does not open the root") {
		t.Errorf("recover from another tree's copy: exit %d", code)
	}
	if _, err := os.Lstat(conf); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused recover wrote %s", conf)
	}
	if err := os.WriteFile(filepath.Join(dir, cipherdir.ConfigCopyName), mine, 0o644); err != nil {
		t.Fatal(err)
	}

	if code := runCmd(t, te, "init", "--recover", dir); code != ExitOK {
		t.Fatalf("recover: exit %d", code)
	}
	got, _ := os.ReadFile(conf)
	if !bytes.Equal(got, want) {
		t.Fatalf("recovered:\n%s\nwant:\n%s", got, want)
	}
	if code := runCmd(t, te, "rewrap", dir); code != ExitOK {
		t.Fatalf("rewrap after recovery: exit %d", code)
	}
}

// TestRewrapCommandNamesKey: `kmsfs rewrap` re-wraps the names key after
// a rotation and under --key, in kmsfs.conf and its copy.
func TestRewrapCommandNamesKey(t *testing.T) {
	te, ks := keystoreEnv(t)
	dir, cfg := initWith(t, te)
	sameCopies := func() cipherdir.Config {
		t.Helper()
		conf, _ := os.ReadFile(filepath.Join(dir, cipherdir.ConfigName))
		cp, _ := os.ReadFile(filepath.Join(dir, cipherdir.ConfigCopyName))
		if !bytes.Equal(conf, cp) {
			t.Fatalf("%s and its copy differ", cipherdir.ConfigName)
		}
		c, err := cipherdir.LoadConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if code := runCmd(t, te, "rewrap", dir); code != ExitOK || !strings.Contains(te.stdout.String(), "names key already current") {
		t.Fatalf("rewrap: exit %d", code)
	}
	if code := runCmd(t, te, "key", "rotate", cfg.KeyID); code != ExitOK {
		t.Fatal("rotate failed")
	}
	if code := runCmd(t, te, "rewrap", "--dry-run", dir); code != ExitOK || !strings.Contains(te.stdout.String(), "names key would be re-wrapped") {
		t.Fatalf("rewrap --dry-run: exit %d", code)
	}
	if code := runCmd(t, te, "rewrap", dir); code != ExitOK || !strings.Contains(te.stdout.String(), "names key re-wrapped under "+cfg.KeyID) {
		t.Fatalf("rewrap after rotation: exit %d", code)
	}
	c := sameCopies()
	wk0, _ := cfg.NamesKeyRecord()
	wk1, _ := c.NamesKeyRecord()
	if wk1.KeyMaterialID == wk0.KeyMaterialID {
		t.Fatal("names key still under the old material")
	}

	if code := runCmd(t, te, "key", "create", "--alias", "alias/next"); code != ExitOK {
		t.Fatal("key create failed")
	}
	if code := runCmd(t, te, "rewrap", "--key", "alias/next", dir); code != ExitOK {
		t.Fatalf("rewrap --key: exit %d", code)
	}
	c = sameCopies()
	wk2, _ := c.NamesKeyRecord()
	if c.KeyID == cfg.KeyID || wk2.KeyID != c.KeyID || len(c.PreviousKeys) != 0 {
		t.Fatalf("after the migration: config %+v, names key under %s", c, wk2.KeyID)
	}

	// A disabled key stops the names key: a clear error, exit 4.
	store, err := local.Open(ks, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.DisableKey(context.Background(), c.KeyID); err != nil {
		t.Fatal(err)
	}
	_, err = openNames(context.Background(), store, dir, c)
	if !errors.Is(err, keysvc.ErrDisabled) || exitCode(err) != ExitKeyService || !strings.Contains(err.Error(), c.KeyID) {
		t.Fatalf("openNames with the key disabled: %v (exit %d)", err, exitCode(err))
	}
	if k, err := openNames(context.Background(), store, dir, cipherdir.Config{FormatVersion: cipherdir.ConfigFormatV1}); k != nil || err != nil {
		t.Fatalf("openNames of a v1 config: %v, %v", k, err)
	}
}
