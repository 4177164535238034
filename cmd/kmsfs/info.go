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
}

// runInfo implements `kmsfs info [--json] PATH`. It reads the backing
// file's header and key xattr only: no key service is contacted and no
// content is decrypted, so what it prints is what the file claims.
func runInfo(_ context.Context, args []string, env *Env) error {
	fset := newFlagSet("info")
	asJSON := fset.Bool("json", false, "print JSON")
	pos, err := parseArgs(fset, "info", args, env, 1, 1)
	if err != nil {
		return err
	}
	path, err := filepath.Abs(pos[0])
	if err != nil {
		return withKind(errUsage, err)
	}
	backing, err := backingPath(path)
	if err != nil {
		return err
	}
	info, err := readFileInfo(backing)
	if err != nil {
		return err
	}
	info.Path = path
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	_, err = fmt.Fprintf(env.Stdout, "path:            %s\nbacking_path:    %s\nkey_id:          %s\nkey_material_id: %s\nfile_id:         %s\nformat_version:  %d\nalgorithm:       %s\ncompression:     %s\nchunk_size:      %d\nplaintext_size:  %d\nciphertext_size: %d\n",
		info.Path, info.BackingPath, info.KeyID, info.KeyMaterialID, info.FileID, info.FormatVersion, info.Algorithm, info.Compression, info.ChunkSize, info.PlaintextSize, info.CiphertextSize)
	return err
}

// backingPath maps path to the backing file that stores it. A path inside
// a kmsfs mount is mapped through the mount table: the mount's source is
// its CIPHERDIR (package fs mounts with FsName = CIPHERDIR), and names map
// one to one in format v1 (fs translates names in one function; when file
// names get encrypted, this must ask fs). Any other path is taken to be a
// backing file already.
func backingPath(path string) (string, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", withKind(errCipherDir, fmt.Errorf("info: %w", err))
	}
	entries, err := readMountinfo()
	if err != nil {
		return "", err
	}
	m, ok := enclosingFUSEMount(entries, resolved)
	if !ok || m.FSType != kmsfsFSType {
		return resolved, nil
	}
	rel, err := filepath.Rel(m.Mountpoint, resolved)
	if err != nil || rel == "." {
		return "", withKind(errCipherDir, fmt.Errorf("info: %s is the root of a kmsfs mount, not a file", resolved))
	}
	if !filepath.IsAbs(m.Source) {
		return "", withKind(errCipherDir, fmt.Errorf("info: the mount table names no CIPHERDIR for %s", m.Mountpoint))
	}
	return filepath.Join(m.Source, rel), nil
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
