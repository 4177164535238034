package integration

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"testing"
)

// fileInfo is the JSON printed by `kmsfs info --json PATH`.
type fileInfo struct {
	KeyID         string `json:"key_id"`
	KeyMaterialID string `json:"key_material_id"`
	FileID        string `json:"file_id"`
	Compression   string `json:"compression"`
	ChunkSize     int    `json:"chunk_size"`
	PlaintextSize int64  `json:"plaintext_size"`
	BackingPath   string `json:"backing_path"`
}

var (
	hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// info runs `kmsfs info --json [extra...] path` and decodes the output,
// failing on fields that are missing. extra carries what info needs to
// reach the key service of a tree with encrypted names (--kms-endpoint).
func (fs *testFS) info(path string, extra ...string) fileInfo {
	fs.t.Helper()
	if !slices.Contains(extra, "--kms-endpoint") {
		// info asks the key service for the names key of a tree with
		// encrypted names: the same endpoint as the mount's.
		if i := slices.Index(fs.mountArgs, "--kms-endpoint"); i >= 0 && i+1 < len(fs.mountArgs) {
			extra = append(extra, fs.mountArgs[i:i+2]...)
		}
	}
	out := fs.Run(append(append([]string{"info", "--json"}, extra...), path)...)
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		fs.t.Fatalf("kmsfs info --json %s: %v\n%s", path, err, out)
	}
	for _, k := range []string{"key_id", "key_material_id", "file_id", "compression", "chunk_size", "plaintext_size"} {
		if _, ok := raw[k]; !ok {
			fs.t.Errorf("kmsfs info --json %s: no %q in %s", path, k, out)
		}
	}
	var fi fileInfo
	if err := json.Unmarshal([]byte(out), &fi); err != nil {
		fs.t.Fatalf("kmsfs info --json %s: %v\n%s", path, err, out)
	}
	return fi
}

// TestInfo checks `kmsfs info --json` on files in the mount and on their
// backing files: the key from the config, a key material ID, the file ID in
// the header, the chunk size and the plaintext size; two files have
// different file IDs.
func TestInfo(t *testing.T) {
	t.Parallel()
	fs := newFS(t, WithChunkSize(1024))
	cfg := fs.Config()
	sizes := map[string]int{"a": 5000, "b": 1024, "empty": 0}
	for name, n := range sizes {
		mustWrite(t, fs.Path(name), randomBytes(newRand(uint64(n)), n))
	}
	ids := map[string]string{}
	for name, n := range sizes {
		for _, path := range []string{fs.Path(name), fs.Backing(name)} {
			fi := fs.info(path)
			if fi.KeyID != cfg.KeyID {
				t.Errorf("info %s: key_id %q, want the config's %q", path, fi.KeyID, cfg.KeyID)
			}
			if !hex64.MatchString(fi.KeyMaterialID) {
				t.Errorf("info %s: key_material_id %q, want 64 hex digits", path, fi.KeyMaterialID)
			}
			if !hex32.MatchString(fi.FileID) {
				t.Errorf("info %s: file_id %q, want 32 hex digits", path, fi.FileID)
			}
			if fi.ChunkSize != 1024 {
				t.Errorf("info %s: chunk_size %d, want 1024", path, fi.ChunkSize)
			}
			if fi.Compression != "none" {
				t.Errorf("info %s: compression %q, want none", path, fi.Compression)
			}
			if fi.PlaintextSize != int64(n) {
				t.Errorf("info %s: plaintext_size %d, want %d", path, fi.PlaintextSize, n)
			}
			if n > 0 {
				if want := fileIDOf(t, fs.Backing(name)); fi.FileID != want {
					t.Errorf("info %s: file_id %s, header says %s", path, fi.FileID, want)
				}
			}
			if prev, ok := ids[name]; ok && prev != fi.FileID {
				t.Errorf("info of %s through the mount and the backing file disagree: %s vs %s", name, prev, fi.FileID)
			}
			ids[name] = fi.FileID
		}
	}
	if ids["a"] == ids["b"] || ids["a"] == ids["empty"] || ids["b"] == ids["empty"] {
		t.Errorf("files share a file ID: %v", ids)
	}
	// A hard link is the same file: same file ID and key.
	if err := os.Link(fs.Path("a"), fs.Path("a-link")); err != nil {
		t.Fatal(err)
	}
	if fi := fs.info(fs.Path("a-link")); fi.FileID != ids["a"] {
		t.Errorf("hard link: file_id %s, want %s", fi.FileID, ids["a"])
	}
	// After remount nothing changes.
	fs.Remount()
	if fi := fs.info(fs.Path("a")); fi.FileID != ids["a"] || fi.PlaintextSize != 5000 {
		t.Errorf("after remount: %+v, want file_id %s size 5000", fi, ids["a"])
	}
	// A directory is not an encrypted file.
	if res := fs.Exec("info", "--json", fs.Mnt); res.Err == nil {
		t.Errorf("kmsfs info on the mount point succeeded: %s", res.Stdout)
	}
}

// TestInfoCompressed checks that info names the compression and chunk
// size of a file in a mount made with init --compress, through the mount
// and on the backing file.
func TestInfoCompressed(t *testing.T) {
	t.Parallel()
	fs := newFS(t, compressOpt("zstd"))
	mustWrite(t, fs.Path("text"), textBytes(newRand(5), 100_000))
	for _, path := range []string{fs.Path("text"), fs.Backing("text")} {
		if fi := fs.info(path); fi.Compression != "zstd" || fi.ChunkSize != 65536 || fi.PlaintextSize != 100_000 {
			t.Errorf("info %s: %+v, want zstd, 64 KiB chunks, 100000 bytes", path, fi)
		}
	}
}

// TestKeyRotation rotates the filesystem's key while mounted: files created
// afterwards name the new key material, older files keep theirs and still
// read, before and after remount.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	cfg := fs.Config()
	old := randomBytes(newRand(3), 10000)
	mustWrite(t, fs.Path("old"), old)
	before := fs.info(fs.Path("old"))
	fs.Run("key", "rotate", cfg.KeyID)
	fresh := randomBytes(newRand(4), 10000)
	mustWrite(t, fs.Path("new"), fresh)
	after := fs.info(fs.Path("new"))
	if after.KeyMaterialID == before.KeyMaterialID {
		t.Errorf("a file created after rotation uses the old key material %s", after.KeyMaterialID)
	}
	if fi := fs.info(fs.Path("old")); fi.KeyMaterialID != before.KeyMaterialID {
		t.Errorf("rotation changed the old file's key material: %s → %s", before.KeyMaterialID, fi.KeyMaterialID)
	}
	checkContent(t, fs.Path("old"), old)
	fs.Remount()
	checkContent(t, fs.Path("old"), old)
	checkContent(t, fs.Path("new"), fresh)
}
