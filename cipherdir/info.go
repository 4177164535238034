package cipherdir

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/keysvc"
)

// Info describes one backing regular file, for `kmsfs info`. It is read
// from the header and the key record without any key service call, so it
// is not authenticated.
type Info struct {
	KeyID         string `json:"key_id"`
	KeyMaterialID string `json:"key_material_id"`
	FileID        string `json:"file_id"` // empty while the file has no header
	FormatVersion int    `json:"format_version"`
	Algorithm     string `json:"algorithm"`
	Compression   string `json:"compression"` // none, s2 or zstd; empty while the file has no header
	ChunkSize     int    `json:"chunk_size"`
	PlaintextSize int64  `json:"plaintext_size"`
	BackingSize   int64  `json:"backing_size"`
}

// FileInfo reads the header and the key record of the backing file at
// backingPath (a path in CIPHERDIR, not in the mount).
func FileInfo(backingPath string) (Info, error) {
	f, err := os.OpenFile(backingPath, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Info{}, err
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("%s: not a regular file", backingPath)
	}
	info := Info{BackingSize: fi.Size()}
	if fi.Size() == 0 {
		// No header yet; a key xattr may be left from an interrupted start.
		if raw, err := readKeyXattr(int(f.Fd())); err == nil {
			if wk, err := keysvc.ParseRecord(raw); err == nil {
				info.KeyID, info.KeyMaterialID = wk.KeyID, wk.KeyMaterialID
			}
		}
		return info, nil
	}
	// The xattr when present, else the slot: which tree mode applies is
	// not known here, and reading both is harmless.
	wk, _, err := ReadKeyRecord(int(f.Fd()), KeyRecordXattrSlot)
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", backingPath, err)
	}
	info.KeyID, info.KeyMaterialID = wk.KeyID, wk.KeyMaterialID
	var hb [chunk.HeaderSize]byte
	if _, err := f.ReadAt(hb[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return Info{}, fmt.Errorf("%s: %w: shorter than the header", backingPath, ErrBadHeader)
		}
		return Info{}, err
	}
	h, err := chunk.ParseHeader(hb[:])
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", backingPath, err)
	}
	info.FileID = h.FileID.String()
	info.FormatVersion = int(h.Version)
	info.Algorithm = h.Algorithm.String()
	info.Compression = h.Compression().String()
	info.ChunkSize = int(h.ChunkSize)
	info.PlaintextSize, err = chunk.PlaintextSize(fi.Size(), int(h.ChunkSize))
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", backingPath, err)
	}
	return info, nil
}
