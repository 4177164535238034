package cipherdir

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
	"github.com/kmsfs/kmsfs/names"
)

// newKeyedV2Tree makes a v2 tree on the local KMS: a names key from InitNames, the config and
// its copy from WriteConfig, the root's ID file.
func newKeyedV2Tree(t *testing.T) (*testTree, *names.Keys) {
	t.Helper()
	tt := newTestTree(t) // a v1 config in tt.dir: replaced below
	if err := os.Remove(tt.path(ConfigName)); err != nil {
		t.Fatal(err)
	}
	cfg, k, err := InitNames(context.Background(), tt.store, tt.cfg)
	if err != nil {
		t.Fatal(err)
	}
	root := mustRoot(t, tt.dir)
	if err := WriteRootDirID(root, k); err != nil {
		t.Fatal(err)
	}
	if err := WriteConfig(tt.dir, cfg); err != nil {
		t.Fatal(err)
	}
	tt.cfg = cfg
	return tt, k
}

// v2Name returns the backing name of the entry plain in the root of the
// v2 tree tt with names keys k.
func (tt *testTree) v2Name(t *testing.T, k *names.Keys, plain string) string {
	t.Helper()
	id, err := ReadDirID(mustRoot(t, tt.dir), k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.EncryptName(id, plain)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameNamesKey reports whether a and b were derived from one names key:
// the MAC of a directory ID file is a function of the key.
func sameNamesKey(a, b *names.Keys) bool {
	var id names.DirID
	return bytes.Equal(a.MarshalDirID(id), b.MarshalDirID(id))
}

// openNames is OpenNames of the tree with config cfg.
func (tt *testTree) openNames(t *testing.T, cfg Config) (*names.Keys, error) {
	t.Helper()
	return OpenNames(context.Background(), tt.store, NewTrust(context.Background(), tt.store, cfg, nil), cfg, mustRoot(t, tt.dir))
}

func TestInitNamesConfig(t *testing.T) {
	tt, k := newKeyedV2Tree(t)
	if !tt.cfg.EncryptedNames() {
		t.Fatal("InitNames did not make a v2 config")
	}
	wk, err := tt.cfg.NamesKeyRecord()
	if err != nil {
		t.Fatal(err)
	}
	if wk.KeyID != tt.cfg.KeyID {
		t.Fatalf("names key under %s, want the tree's key %s", wk.KeyID, tt.cfg.KeyID)
	}
	// Made with the names context: it unwraps with it, and with nothing
	// else (a file's context, another filesystem's).
	ctx := context.Background()
	if _, err := tt.store.Decrypt(ctx, wk.Blob, wk.KeyID, keysvc.NamesContext(tt.cfg.FilesystemID)); err != nil {
		t.Fatalf("names key does not unwrap with NamesContext: %v", err)
	}
	for _, ec := range []keysvc.EncryptionContext{
		keysvc.FileContext(tt.cfg.FilesystemID, "00000000000000000000000000000000"),
		keysvc.NamesContext("ffffffffffffffffffffffffffffffff"),
	} {
		if _, err := tt.store.Decrypt(ctx, wk.Blob, wk.KeyID, ec); !errors.Is(err, keysvc.ErrInvalidCiphertext) {
			t.Fatalf("names key unwrapped with %v: %v", ec, err)
		}
	}
	// kmsfs.conf and its copy are the same bytes; the root has its ID.
	conf, err := os.ReadFile(tt.path(ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := os.ReadFile(tt.path(ConfigCopyName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(conf, cp) {
		t.Fatalf("%s differs from %s", ConfigCopyName, ConfigName)
	}
	idFile, err := os.ReadFile(tt.path(names.DirIDFileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.ParseDirID(idFile); err != nil {
		t.Fatalf("root ID file: %v", err)
	}
	got, err := tt.openNames(t, tt.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !sameNamesKey(got, k) {
		t.Fatal("OpenNames derived other keys than InitNames")
	}
	// Only the ID file is in the root besides the two configs, and Walk
	// of the v2 tree shows none of them.
	entries, _ := os.ReadDir(tt.dir)
	if len(entries) != 3 {
		t.Fatalf("root holds %v, want %s, %s and %s", entries, ConfigName, ConfigCopyName, names.DirIDFileName)
	}
	err = Walk(mustRoot(t, tt.dir), true, func(e Entry) error {
		t.Errorf("Walk of a new v2 tree met %s", e.Rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestV1ConfigUnchanged: a v1 config (init --plaintext-names) has no
// names key, no copy, and the bytes of before format 2.
func TestV1ConfigUnchanged(t *testing.T) {
	tt := newTestTree(t)
	b, err := os.ReadFile(tt.path(ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("{\n  \"format_version\": 1,\n")) || bytes.Contains(b, []byte("names_key")) {
		t.Fatalf("v1 config:\n%s", b)
	}
	if _, err := os.Lstat(tt.path(ConfigCopyName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a v1 tree has %s: %v", ConfigCopyName, err)
	}
	k, err := tt.openNames(t, tt.cfg)
	if k != nil || err != nil {
		t.Fatalf("OpenNames of a v1 tree = %v, %v, want nil, nil", k, err)
	}
}

// TestOpenNamesFromCopy: a names key in kmsfs.conf that is lost or
// damaged is taken from kmsfs.conf.copy.
func TestOpenNamesFromCopy(t *testing.T) {
	tt, k := newKeyedV2Tree(t)
	wk, _ := tt.cfg.NamesKeyRecord()
	flipped := wk
	flipped.Blob = bytes.Clone(wk.Blob)
	flipped.Blob[len(flipped.Blob)/2] ^= 1
	for name, rec := range map[string]string{
		"lost":    "",
		"damaged": base64.StdEncoding.EncodeToString(flipped.MarshalRecord()),
		"garbage": "AAAA",
	} {
		t.Run(name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.NamesKey = rec
			got, err := tt.openNames(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !sameNamesKey(got, k) {
				t.Fatal("the copy gave another key")
			}
		})
	}
	// Without a usable copy, the first error is returned, and the copy's
	// trouble is named.
	cfg := tt.cfg
	cfg.NamesKey = base64.StdEncoding.EncodeToString(flipped.MarshalRecord())
	if err := os.Remove(tt.path(ConfigCopyName)); err != nil {
		t.Fatal(err)
	}
	_, err := tt.openNames(t, cfg)
	if !errors.Is(err, keysvc.ErrInvalidCiphertext) || !strings.Contains(err.Error(), ConfigCopyName) {
		t.Fatalf("OpenNames without config key or copy: %v, want ErrInvalidCiphertext naming %s", err, ConfigCopyName)
	}
	// A copy of another filesystem is not used.
	other := tt.cfg
	other.FilesystemID = strings.Repeat("ab", 16)
	b, err := other.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tt.path(ConfigCopyName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tt.openNames(t, cfg); !errors.Is(err, keysvc.ErrInvalidCiphertext) || !strings.Contains(err.Error(), "not of filesystem") {
		t.Fatalf("OpenNames with a foreign copy: %v", err)
	}
}

// TestOpenNamesRefuses: a names key wrapped with another context (another
// filesystem's, a file's), under a key the tree does not trust, or under
// a disabled key does not open.
func TestOpenNamesRefuses(t *testing.T) {
	ctx := context.Background()
	tt, _ := newKeyedV2Tree(t)
	wrap := func(keyID string, ec keysvc.EncryptionContext) string {
		dk, err := tt.store.GenerateDataKey(ctx, keyID, ec)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := encodeNamesKey(dk.Wrapped)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	// Both copies hold the planted record: nothing to fall back to.
	plant := func(rec string) Config {
		cfg := tt.cfg
		cfg.NamesKey = rec
		b, err := cfg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tt.path(ConfigCopyName), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	for name, ec := range map[string]keysvc.EncryptionContext{
		"other filesystem": keysvc.NamesContext(strings.Repeat("ab", 16)),
		"file context":     keysvc.FileContext(tt.cfg.FilesystemID, strings.Repeat("00", 16)),
		"no purpose":       {keysvc.ContextFilesystemID: tt.cfg.FilesystemID},
	} {
		cfg := plant(wrap(tt.cfg.KeyID, ec))
		if _, err := tt.openNames(t, cfg); !errors.Is(err, keysvc.ErrInvalidCiphertext) {
			t.Errorf("%s: OpenNames = %v, want ErrInvalidCiphertext", name, err)
		}
	}
	foreign := newLocalKey(t, tt.store)
	cfg := plant(wrap(foreign, keysvc.NamesContext(tt.cfg.FilesystemID)))
	if _, err := tt.openNames(t, cfg); !errors.Is(err, ErrUntrustedKey) || !strings.Contains(err.Error(), foreign) {
		t.Errorf("untrusted key: OpenNames = %v, want ErrUntrustedKey naming %s", err, foreign)
	}
	plant(tt.cfg.NamesKey)
	if err := tt.store.DisableKey(ctx, tt.cfg.KeyID); err != nil {
		t.Fatal(err)
	}
	_, err := tt.openNames(t, tt.cfg)
	if !errors.Is(err, keysvc.ErrDisabled) || !strings.Contains(err.Error(), tt.cfg.KeyID) || strings.Contains(err.Error(), ConfigCopyName) {
		t.Fatalf("disabled key: OpenNames = %v, want ErrDisabled naming the key (and no copy fallback)", err)
	}
	if err := tt.store.EnableKey(ctx, tt.cfg.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := tt.openNames(t, tt.cfg); err != nil {
		t.Fatalf("enabled again: %v", err)
	}
}

func TestRecoverConfig(t *testing.T) {
	tt, k := newKeyedV2Tree(t)
	want, _ := os.ReadFile(tt.path(ConfigName))
	if _, err := RecoverConfig(tt.dir); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("RecoverConfig with kmsfs.conf present: %v", err)
	}
	if err := os.Remove(tt.path(ConfigName)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(tt.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadConfig: %v", err)
	}
	cfg, err := RecoverConfig(tt.dir)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(tt.path(ConfigName))
	if !bytes.Equal(got, want) {
		t.Fatalf("recovered config:\n%s\nwant:\n%s", got, want)
	}
	nk, err := tt.openNames(t, cfg)
	if err != nil || !sameNamesKey(nk, k) {
		t.Fatalf("names key after recovery: %v", err)
	}
	// A v1 tree has no copy to recover from.
	v1 := newTestTree(t)
	os.Remove(v1.path(ConfigName))
	if _, err := RecoverConfig(v1.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("RecoverConfig of a v1 tree: %v", err)
	}
}

// rewrapTree runs a Rewrapper over tt with opts (CipherDir, Config and
// Source filled in) and returns its summary.
func rewrapTree(t *testing.T, tt *testTree, opts RewrapOptions) RewrapSummary {
	t.Helper()
	opts.CipherDir, opts.Config, opts.Source = tt.dir, tt.cfg, tt.store
	rw, err := NewRewrapper(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := rw.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failed != 0 {
		t.Fatalf("rewrap: %+v", sum)
	}
	return sum
}

// checkBothCopies checks that kmsfs.conf and its copy hold the same
// config, that its names key is under keyID and that the tree's names
// key is still k.
func (tt *testTree) checkBothCopies(t *testing.T, keyID string, k *names.Keys) {
	t.Helper()
	conf, _ := os.ReadFile(tt.path(ConfigName))
	cp, _ := os.ReadFile(tt.path(ConfigCopyName))
	if !bytes.Equal(conf, cp) {
		t.Fatalf("%s and %s differ:\n%s\n%s", ConfigName, ConfigCopyName, conf, cp)
	}
	cfg, err := LoadConfig(tt.dir)
	if err != nil {
		t.Fatal(err)
	}
	wk, _ := cfg.NamesKeyRecord()
	if wk.KeyID != keyID {
		t.Fatalf("names key under %s, want %s", wk.KeyID, keyID)
	}
	tt.cfg = cfg
	got, err := tt.openNames(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !sameNamesKey(got, k) {
		t.Fatal("the names key changed")
	}
}

// TestRewrapNamesKey: rewrap re-wraps the names key with the files' keys,
// in kmsfs.conf and its copy: under the key's new material after a
// rotation, under --key in a migration, and not at all when current.
func TestRewrapNamesKey(t *testing.T) {
	ctx := context.Background()
	tt, k := newKeyedV2Tree(t)
	f := tt.v2Name(t, k, "f")
	tt.write(t, f, []byte("hello"))
	old := tt.cfg.KeyID
	wk0, _ := tt.cfg.NamesKeyRecord()

	sum := rewrapTree(t, tt, RewrapOptions{})
	if sum.NamesKey != NamesCurrent || sum.ConfigChanged {
		t.Fatalf("rewrap of a current tree: %+v", sum)
	}

	if _, err := tt.store.RotateKey(ctx, old); err != nil {
		t.Fatal(err)
	}
	sum = rewrapTree(t, tt, RewrapOptions{DryRun: true})
	if sum.NamesKey != NamesRewrapped || sum.ConfigChanged {
		t.Fatalf("dry run: %+v", sum)
	}
	if cfg, _ := LoadConfig(tt.dir); cfg.NamesKey != tt.cfg.NamesKey {
		t.Fatal("a dry run changed the names key")
	}
	sum = rewrapTree(t, tt, RewrapOptions{})
	if sum.NamesKey != NamesRewrapped || !sum.ConfigChanged || sum.Rewrapped != 1 {
		t.Fatalf("rewrap after rotation: %+v", sum)
	}
	tt.checkBothCopies(t, old, k)
	wk1, _ := tt.cfg.NamesKeyRecord()
	if wk1.KeyMaterialID == wk0.KeyMaterialID || bytes.Equal(wk1.Blob, wk0.Blob) {
		t.Fatal("the names key is still under the old key material")
	}

	// A migration to another key: the names key goes under it at the
	// start (with previous_keys), and previous_keys goes at the end.
	next := newLocalKey(t, tt.store)
	sum = rewrapTree(t, tt, RewrapOptions{DestKey: next})
	if sum.NamesKey != NamesRewrapped || sum.Config.KeyID != next || sum.Config.PreviousKeys != nil {
		t.Fatalf("migration: %+v", sum)
	}
	tt.checkBothCopies(t, next, k)
	if got := tt.read(t, f); string(got) != "hello" {
		t.Fatalf("f = %q", got)
	}
	// The old key is no longer needed: disabling it does not stop the
	// names key.
	if err := tt.store.DisableKey(ctx, old); err != nil {
		t.Fatal(err)
	}
	tt.checkBothCopies(t, next, k)
}

// TestRewrapNamesKeyMigrationKeepsPrevious: a migration that keeps the
// previous keys (a mount is running) has the names key under the new key
// and the old key still trusted; OpenNames works with either config.
func TestRewrapNamesKeyMigrationKeepsPrevious(t *testing.T) {
	tt, k := newKeyedV2Tree(t)
	old := tt.cfg.KeyID
	next := newLocalKey(t, tt.store)
	sum := rewrapTree(t, tt, RewrapOptions{DestKey: next, KeepPrevious: true})
	if sum.Config.KeyID != next || len(sum.Config.PreviousKeys) != 1 || sum.Config.PreviousKeys[0] != old {
		t.Fatalf("migration: %+v", sum.Config)
	}
	tt.checkBothCopies(t, next, k)
	// A tree whose names key is still under a previous key (a migration
	// interrupted before its first config write is the other way round)
	// opens: the previous key is trusted.
	cfg := tt.cfg
	cfg.KeyID, cfg.PreviousKeys = next, []string{old}
	wkOld := func() string {
		dk, err := tt.store.GenerateDataKey(context.Background(), old, keysvc.NamesContext(cfg.FilesystemID))
		if err != nil {
			t.Fatal(err)
		}
		s, _ := encodeNamesKey(dk.Wrapped)
		return s
	}()
	cfg.NamesKey = wkOld
	if _, err := tt.openNames(t, cfg); err != nil {
		t.Fatalf("names key under a previous key: %v", err)
	}
	// Once the old key is no longer trusted, the record under it is
	// refused; the copy (under the new key) then serves, and without it
	// nothing does.
	cfg.PreviousKeys = nil
	if got, err := tt.openNames(t, cfg); err != nil || !sameNamesKey(got, k) {
		t.Fatalf("names key under an untrusted key, copy under the trusted one: %v", err)
	}
	if err := os.Remove(tt.path(ConfigCopyName)); err != nil {
		t.Fatal(err)
	}
	if _, err := tt.openNames(t, cfg); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("names key under a key no longer trusted: %v", err)
	}
}

// TestRewrapNamesKeyMove: a move to another key service re-wraps the
// names key under the destination's key, written with the config's end.
func TestRewrapNamesKeyMove(t *testing.T) {
	tt, k := newKeyedV2Tree(t)
	f := tt.v2Name(t, k, "f")
	tt.write(t, f, []byte("moved"))
	dst, err := local.Open(filepath.Join(t.TempDir(), "keystore2"), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	destKey := newLocalKey(t, dst)
	sum := rewrapTree(t, tt, RewrapOptions{Dest: dst, DestKey: destKey, DestKMS: KMSAWS})
	if sum.NamesKey != NamesRewrapped || sum.Config.KMS != KMSAWS || sum.Config.KeyID != destKey {
		t.Fatalf("move: %+v", sum)
	}
	tt.store = dst // the tree's keys are in the destination now
	tt.checkBothCopies(t, destKey, k)
	if sum.Rewrapped != 1 {
		t.Fatalf("move: %+v", sum)
	}
	if got := tt.read(t, f); string(got) != "moved" {
		t.Fatalf("f = %q", got)
	}
}

// TestRewrapNamesKeyUntrusted: a names key record under a key the tree
// does not trust is not re-wrapped (that would adopt a planted key), and
// the run stops before any file.
func TestRewrapNamesKeyUntrusted(t *testing.T) {
	tt, k := newKeyedV2Tree(t)
	tt.write(t, tt.v2Name(t, k, "f"), []byte("x"))
	foreign := newLocalKey(t, tt.store)
	dk, err := tt.store.GenerateDataKey(context.Background(), foreign, keysvc.NamesContext(tt.cfg.FilesystemID))
	if err != nil {
		t.Fatal(err)
	}
	cfg := tt.cfg
	if cfg.NamesKey, err = encodeNamesKey(dk.Wrapped); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, tt.dir)
	rw, err := NewRewrapper(context.Background(), RewrapOptions{CipherDir: tt.dir, Config: cfg, Source: tt.store, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := rw.Run(context.Background())
	if !errors.Is(err, ErrUntrustedKey) || sum.Seen != 0 {
		t.Fatalf("Run = %+v, %v; want ErrUntrustedKey before any file", sum, err)
	}
	after := snapshot(t, tt.dir)
	if len(before) != len(after) {
		t.Fatal("the tree changed")
	}
	for p, v := range before {
		if after[p] != v {
			t.Fatalf("%s changed", p)
		}
	}
}
