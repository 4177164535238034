package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/kmsfs/kmsfs/cipherdir"
)

// fileInfo is what `kmsfs info` reports about one encrypted file. The JSON
// names are part of the user-facing contract.
type fileInfo struct {
	Path           string `json:"path"`
	PlainPath      string `json:"plain_path"` // relative to the mount's root; "" when unknown (a backing file outside a CIPHERDIR, or a name that does not decrypt)
	BackingPath    string `json:"backing_path"`
	KeyID          string `json:"key_id"`
	KeyMaterialID  string `json:"key_material_id"`
	FileID         string `json:"file_id"` // empty while the file has no header
	FormatVersion  int    `json:"format_version"`
	Algorithm      string `json:"algorithm"`
	Compression    string `json:"compression"` // none, s2 or zstd; empty while the file has no header
	ChunkSize      int    `json:"chunk_size"`
	PlaintextSize  int64  `json:"plaintext_size"`
	CiphertextSize int64  `json:"ciphertext_size"`
	// Names is how the file's tree stores names: "encrypted" (format 2)
	// or "plaintext" (format 1); absent when no readable kmsfs.conf is
	// above the backing file.
	Names string `json:"names,omitempty"`
	// Shared is true when the file's tree is mounted in shared mode
	// (kmsfs init --shared: several hosts on shared storage); absent
	// otherwise.
	Shared bool `json:"shared,omitempty"`
}

// runInfo implements `kmsfs info [--json] PATH`. It reads the backing
// file's header and key xattr only: no content is decrypted, so what it
// prints is what the file claims. The key service is contacted only in a
// tree with encrypted names (v2), for the names key that maps a path in
// the mount to its backing file and back.
func runInfo(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("info")
	asJSON := fset.Bool("json", false, "print JSON")
	endpoint := fset.String("kms-endpoint", "", "AWS KMS endpoint URL (aws file systems with encrypted names)")
	var ks keystoreFlags
	ks.register(fset)
	pos, err := parseArgs(fset, "info", args, env, 1, 1)
	if err != nil {
		return err
	}
	path, err := filepath.Abs(pos[0])
	if err != nil {
		return withKind(errUsage, err)
	}
	ts := newTrees(ctx, &ks, *endpoint, env, false)
	defer ts.closeAll()
	loc, err := ts.locate(path)
	if err != nil {
		return withKind(errCipherDir, fmt.Errorf("info: %w", err))
	}
	info, err := readFileInfo(loc.backing)
	if err != nil {
		return err
	}
	info.Path = path
	info.PlainPath = loc.plain
	if loc.tree != nil {
		info.Names = namesWord(loc.tree.cfg)
		info.Shared = loc.tree.cfg.Shared
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	_, err = fmt.Fprintf(env.Stdout, "path:            %s\nplain_path:      %s\nbacking_path:    %s\nkey_id:          %s\nkey_material_id: %s\nfile_id:         %s\nformat_version:  %d\nalgorithm:       %s\ncompression:     %s\nchunk_size:      %d\nplaintext_size:  %d\nciphertext_size: %d\n",
		info.Path, info.PlainPath, info.BackingPath, info.KeyID, info.KeyMaterialID, info.FileID, info.FormatVersion, info.Algorithm, info.Compression, info.ChunkSize, info.PlaintextSize, info.CiphertextSize)
	if err == nil && info.Names != "" {
		_, err = fmt.Fprintf(env.Stdout, "names:           %s\n", info.Names)
	}
	if err == nil && info.Shared {
		_, err = fmt.Fprintf(env.Stdout, "shared:          true\n")
	}
	return err
}

// namesWord says how the tree of cfg stores names, for info: "encrypted"
// (format 2) or "plaintext" (format 1).
func namesWord(cfg cipherdir.Config) string {
	if cfg.EncryptedNames() {
		return "encrypted"
	}
	return "plaintext"
}

// kmsfsFSType is the file system type of a kmsfs mount in the mount table.
const kmsfsFSType = "fuse.kmsfs"

// readFileInfo reads the header and key record of one backing file.
func readFileInfo(backing string) (fileInfo, error) {
	fi, err := cipherdir.FileInfo(backing)
	if err != nil {
		return fileInfo{}, withHint(withKind(errCipherDir, fmt.Errorf("info: %w", err)),
			"PATH must be a file in a kmsfs mount or a backing file in a CIPHERDIR")
	}
	return fileInfo{
		BackingPath:    backing,
		KeyID:          fi.KeyID,
		KeyMaterialID:  fi.KeyMaterialID,
		FileID:         fi.FileID,
		FormatVersion:  fi.FormatVersion,
		Algorithm:      fi.Algorithm,
		Compression:    fi.Compression,
		ChunkSize:      fi.ChunkSize,
		PlaintextSize:  fi.PlaintextSize,
		CiphertextSize: fi.BackingSize,
	}, nil
}
