package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/codec"
	kfs "github.com/kmsfs/kmsfs/fs"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// keystoreEnv returns an environment whose local keystore is a fresh
// temporary directory (no passphrase: a random root.key).
func keystoreEnv(t *testing.T) (*testEnv, string) {
	t.Helper()
	ks := filepath.Join(t.TempDir(), "keystore")
	return newTestEnv(map[string]string{"KMSFS_KEYSTORE": ks, "HOME": "/nonexistent"}), ks
}

func TestInitRefusesNonEmptyDir(t *testing.T) {
	te, ks := keystoreEnv(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := runCmd(t, te, "init", dir); code != ExitCipherDir {
		t.Fatalf("init of a non-empty dir: exit %d, want %d", code, ExitCipherDir)
	}
	if !strings.Contains(te.stderr.String(), "kmsfs: error: CIPHERDIR "+dir+" is not empty") {
		t.Errorf("stderr = %q", te.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, cipherdir.ConfigName)); err == nil {
		t.Error("config written into a non-empty dir")
	}
	if _, err := os.Stat(ks); err == nil {
		t.Error("the keystore was touched although CIPHERDIR was refused first")
	}
	// A file that is not a directory is refused too.
	if code := runCmd(t, te, "init", filepath.Join(dir, "precious")); code != ExitCipherDir {
		t.Errorf("init of a regular file: exit %d, want %d", code, ExitCipherDir)
	}
}

func TestInitRefusesExistingConfig(t *testing.T) {
	te, _ := keystoreEnv(t)
	dir := filepath.Join(t.TempDir(), "c")
	if code := runCmd(t, te, "init", dir); code != ExitOK {
		t.Fatalf("first init: exit %d", code)
	}
	before, err := os.ReadFile(filepath.Join(dir, cipherdir.ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if code := runCmd(t, te, "init", dir); code != ExitCipherDir || !strings.Contains(te.stderr.String(), "already a kmsfs CIPHERDIR") {
		t.Fatalf("second init: exit %d, stderr %q", code, te.stderr.String())
	}
	after, _ := os.ReadFile(filepath.Join(dir, cipherdir.ConfigName))
	if string(before) != string(after) {
		t.Error("second init changed the config")
	}
}

func TestInitUsageErrors(t *testing.T) {
	te, _ := keystoreEnv(t)
	dir := filepath.Join(t.TempDir(), "c")
	for _, args := range [][]string{
		{"init"},
		{"init", "--kms", "aws", dir},
		{"init", "--kms", "gcp", dir},
		{"init", "--chunk-size", "1000", dir},
		{"init", "--chunk-size", "2M", dir},
		{"init", "--kms-endpoint", "http://127.0.0.1:1", dir},
		{"init", "--compress", "gzip", dir},
		{"init", dir, "extra"},
	} {
		if code := runCmd(t, te, args...); code != ExitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, ExitUsage)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("a refused init created CIPHERDIR")
	}
}

// TestInitCompress checks --compress: recorded in the config, 64 KiB chunks
// unless --chunk-size says otherwise, none by default.
func TestInitCompress(t *testing.T) {
	te, _ := keystoreEnv(t)
	for _, tc := range []struct {
		args      []string
		compress  string
		chunkSize int
	}{
		{nil, "none", 4096},
		{[]string{"--compress", "none"}, "none", 4096},
		{[]string{"--compress", "zstd"}, "zstd", 65536},
		{[]string{"--compress", "s2", "--chunk-size", "16k"}, "s2", 16384},
	} {
		_, cfg := initWith(t, te, tc.args...)
		if cfg.Compression().String() != tc.compress || cfg.ChunkSize != tc.chunkSize {
			t.Errorf("%q: compress %q, chunk size %d; want %q, %d", tc.args, cfg.Compress, cfg.ChunkSize, tc.compress, tc.chunkSize)
		}
	}
}

// initWith runs `kmsfs init FLAGS... DIR` on a new DIR and returns DIR and
// its config.
func initWith(t *testing.T, te *testEnv, flags ...string) (string, cipherdir.Config) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "c")
	args := append(append([]string{"init"}, flags...), dir)
	if code := runCmd(t, te, args...); code != ExitOK {
		t.Fatalf("%q: exit %d", args, code)
	}
	cfg, err := cipherdir.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// TestInfoCompression checks that info reports each file's compression
// and chunk size, in text and JSON: a file keeps what its header says
// whatever the tree's config says now, and a file without a header yet
// reports no compression.
func TestInfoCompression(t *testing.T) {
	te, ks := keystoreEnv(t)
	plain := []byte(strings.Repeat("kmsfs info compression ", 10000)) // 230 000 bytes
	for _, tc := range []struct {
		args      []string
		compress  string
		chunkSize int
	}{
		{nil, "none", 4096},
		{[]string{"--compress", "zstd"}, "zstd", 65536},
		{[]string{"--compress", "s2", "--chunk-size", "16k"}, "s2", 16384},
	} {
		dir, cfg := initWith(t, te, tc.args...)
		backing := filepath.Join(dir, "file.txt")
		writeBackingFile(t, ks, cfg, backing, plain)
		if code := runCmd(t, te, "info", "--json", backing); code != ExitOK {
			t.Fatalf("info --json: exit %d", code)
		}
		var got struct {
			Compression   *string `json:"compression"`
			ChunkSize     int     `json:"chunk_size"`
			PlaintextSize int64   `json:"plaintext_size"`
		}
		if err := json.Unmarshal(te.stdout.Bytes(), &got); err != nil {
			t.Fatalf("info --json output %q: %v", te.stdout.String(), err)
		}
		if got.Compression == nil || *got.Compression != tc.compress || got.ChunkSize != tc.chunkSize || got.PlaintextSize != int64(len(plain)) {
			t.Errorf("%q: info --json says %s", tc.args, te.stdout.String())
		}
		if code := runCmd(t, te, "info", backing); code != ExitOK {
			t.Fatalf("info: exit %d", code)
		}
		for _, line := range []string{"compression:     " + tc.compress + "\n", fmt.Sprintf("chunk_size:      %d\n", tc.chunkSize)} {
			if !strings.Contains(te.stdout.String(), line) {
				t.Errorf("%q: info lacks %q:\n%s", tc.args, line, te.stdout.String())
			}
		}
	}

	// A file without a header yet (its key record written, no data) has no
	// compression to report.
	te2, _ := keystoreEnv(t)
	dir := filepath.Join(t.TempDir(), "c")
	if code := runCmd(t, te2, "init", "--compress", "zstd", dir); code != ExitOK {
		t.Fatalf("init: exit %d", code)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rec := keysvc.WrappedKey{KeyID: "arn:aws:kms:local:000000000000:key/x", KeyMaterialID: strings.Repeat("0", 64), Blob: []byte{1}}
	if err := unix.Setxattr(empty, cipherdir.KeyXattr, rec.MarshalRecord(), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	if code := runCmd(t, te2, "info", "--json", empty); code != ExitOK {
		t.Fatalf("info --json: exit %d", code)
	}
	var got map[string]any
	if err := json.Unmarshal(te2.stdout.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if c, ok := got["compression"]; !ok || c != "" {
		t.Errorf("info of a file without header: compression %v (present %v), want \"\"", c, ok)
	}
}

func TestInitUnknownKeyLeavesNothing(t *testing.T) {
	te, _ := keystoreEnv(t)
	dir := filepath.Join(t.TempDir(), "c")
	if code := runCmd(t, te, "init", "--key", "alias/missing", dir); code != ExitKeyService {
		t.Fatalf("exit %d, want %d", code, ExitKeyService)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("a failed init left the CIPHERDIR it created")
	}
}

// TestInitAndInfo runs init on a temporary keystore, writes one backing
// file the way the filesystem does (data key from the keystore bound to the
// filesystem and file IDs, chunk format, key record xattr) and checks what
// info reports, without FUSE.
func TestInitAndInfo(t *testing.T) {
	te, ks := keystoreEnv(t)
	dir := filepath.Join(t.TempDir(), "cipher")
	if code := runCmd(t, te, "init", "--chunk-size", "1k", dir); code != ExitOK {
		t.Fatalf("init: exit %d", code)
	}
	if !strings.Contains(te.stderr.String(), "created local key") {
		t.Errorf("init did not say it created the default key: %q", te.stderr.String())
	}
	cfg, err := cipherdir.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KMS != cipherdir.KMSLocal || cfg.ChunkSize != 1024 || !strings.HasPrefix(cfg.KeyID, "arn:aws:kms:local:") {
		t.Fatalf("config = %+v", cfg)
	}

	// A second tree reuses alias/kmsfs-default.
	dir2 := filepath.Join(t.TempDir(), "cipher2")
	if code := runCmd(t, te, "init", dir2); code != ExitOK || strings.Contains(te.stderr.String(), "created") {
		t.Fatalf("second init: exit %d, stderr %q", code, te.stderr.String())
	}
	if cfg2, err := cipherdir.LoadConfig(dir2); err != nil || cfg2.KeyID != cfg.KeyID || cfg2.FilesystemID == cfg.FilesystemID {
		t.Fatalf("second config = %+v, %v", cfg2, err)
	}

	plain := []byte(strings.Repeat("kmsfs info test ", 200)) // 3200 bytes: 4 chunks of 1 KiB
	backing := filepath.Join(dir, "file.txt")
	wrapped, fileID := writeBackingFile(t, ks, cfg, backing, plain)

	if code := runCmd(t, te, "info", "--json", backing); code != ExitOK {
		t.Fatalf("info: exit %d", code)
	}
	var got map[string]any
	if err := json.Unmarshal(te.stdout.Bytes(), &got); err != nil {
		t.Fatalf("info --json output %q: %v", te.stdout.String(), err)
	}
	want := map[string]any{
		"path":            backing,
		"backing_path":    backing,
		"plain_path":      "file.txt",
		"key_id":          wrapped.KeyID,
		"key_material_id": wrapped.KeyMaterialID,
		"file_id":         fileID.String(),
		"format_version":  float64(chunk.FormatVersion),
		"algorithm":       chunk.AES256GCM.String(),
		"compression":     "none",
		"chunk_size":      float64(1024),
		"plaintext_size":  float64(len(plain)),
		"ciphertext_size": float64(chunk.CiphertextSize(int64(len(plain)), 1024)),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("info %s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("info printed keys %v, want exactly %v", got, want)
	}
	if wrapped.KeyID != cfg.KeyID || len(wrapped.KeyMaterialID) != 64 {
		t.Errorf("wrapped key names %q / %q", wrapped.KeyID, wrapped.KeyMaterialID)
	}

	if code := runCmd(t, te, "info", backing); code != ExitOK {
		t.Fatalf("info (text): exit %d", code)
	}
	for _, k := range []string{"key_id:", "key_material_id:", "file_id:", "compression:", "chunk_size:", "plaintext_size:", "ciphertext_size:"} {
		if !strings.Contains(te.stdout.String(), k) {
			t.Errorf("info text lacks %q:\n%s", k, te.stdout.String())
		}
	}

	// The config file and a file without the key xattr are not kmsfs files.
	for _, p := range []string{filepath.Join(dir, cipherdir.ConfigName), filepath.Join(dir, "missing")} {
		if code := runCmd(t, te, "info", p); code != ExitCipherDir {
			t.Errorf("info %s: exit %d, want %d", p, code, ExitCipherDir)
		}
	}
}

// writeBackingFile stores plain in a new backing file as package fs does,
// with the chunk size and compression of cfg.
func writeBackingFile(t *testing.T, keystore string, cfg cipherdir.Config, path string, plain []byte) (keysvc.WrappedKey, chunk.FileID) {
	t.Helper()
	ctx := context.Background()
	store, err := local.Open(keystore, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h, err := chunk.NewHeader(cfg.ChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	h = h.WithCompression(cfg.Compression())
	dk, err := store.GenerateDataKey(ctx, cfg.KeyID, keysvc.EncryptionContext{
		keysvc.ContextFilesystemID: cfg.FilesystemID,
		keysvc.ContextFileID:       h.FileID.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := chunk.NewCipher(dk.Plaintext, h, codec.All())
	keysvc.Zero(dk.Plaintext)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fsetxattr(int(f.Fd()), cipherdir.KeyXattr, dk.Wrapped.MarshalRecord(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := chunk.NewFile(kfs.PunchBacking(f), c).WriteAt(plain, 0); err != nil {
		t.Fatal(err)
	}
	return dk.Wrapped, h.FileID
}
