package keysvc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Record format: the wrapped data key as stored beside a file (the
// user.kmsfs.key xattr).
//
//	"KMSK" ‖ version (1 byte, = 1) ‖
//	uvarint len ‖ KeyID ‖ uvarint len ‖ KeyMaterialID ‖ uvarint len ‖ Blob
//
// Lengths are minimal uvarints, nothing may follow the blob, and the whole
// record is at most MaxRecordSize bytes, so every accepted record has exactly
// one encoding.
const (
	RecordMagic   = "KMSK"
	RecordVersion = 1
	// MaxRecordSize is the largest record ParseRecord accepts, in bytes.
	MaxRecordSize = 8192
	// MaxBlobSize is the largest wrapped blob, in bytes (AWS KMS's
	// CiphertextBlob limit).
	MaxBlobSize = 6144
	// MaxKeyIDSize is the longest key reference in a record, in bytes (AWS
	// KMS's KeyId limit).
	MaxKeyIDSize = 2048
	// MaxKeyMaterialIDSize is the longest key material ID in a record.
	MaxKeyMaterialIDSize = 256
)

// ErrBadRecord is wrapped by every ParseRecord and Validate failure.
var ErrBadRecord = errors.New("malformed key record")

// Validate reports whether w can be stored as a record: a non-empty KeyID
// of at most MaxKeyIDSize bytes, a KeyMaterialID of at most
// MaxKeyMaterialIDSize bytes, and a blob of 1 to MaxBlobSize bytes, within
// MaxRecordSize in all. Errors wrap ErrBadRecord.
func (w WrappedKey) Validate() error {
	switch {
	case w.KeyID == "" || len(w.KeyID) > MaxKeyIDSize:
		return fmt.Errorf("key ID of %d bytes, want 1..%d: %w", len(w.KeyID), MaxKeyIDSize, ErrBadRecord)
	case len(w.KeyMaterialID) > MaxKeyMaterialIDSize:
		return fmt.Errorf("key material ID of %d bytes, want at most %d: %w", len(w.KeyMaterialID), MaxKeyMaterialIDSize, ErrBadRecord)
	case len(w.Blob) == 0 || len(w.Blob) > MaxBlobSize:
		return fmt.Errorf("blob of %d bytes, want 1..%d: %w", len(w.Blob), MaxBlobSize, ErrBadRecord)
	}
	if n := w.recordSize(); n > MaxRecordSize {
		return fmt.Errorf("record of %d bytes, more than %d: %w", n, MaxRecordSize, ErrBadRecord)
	}
	return nil
}

// uvarintLen is the length of the minimal uvarint encoding of n.
func uvarintLen(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

func (w WrappedKey) recordSize() int {
	return len(RecordMagic) + 1 +
		uvarintLen(uint64(len(w.KeyID))) + len(w.KeyID) +
		uvarintLen(uint64(len(w.KeyMaterialID))) + len(w.KeyMaterialID) +
		uvarintLen(uint64(len(w.Blob))) + len(w.Blob)
}

// MarshalRecord encodes w as a record. It does not check w: call Validate
// first when w does not come straight from a backend, since ParseRecord
// rejects what Validate rejects.
func (w WrappedKey) MarshalRecord() []byte {
	out := make([]byte, 0, w.recordSize())
	out = append(out, RecordMagic...)
	out = append(out, RecordVersion)
	for _, field := range [][]byte{[]byte(w.KeyID), []byte(w.KeyMaterialID), w.Blob} {
		out = binary.AppendUvarint(out, uint64(len(field)))
		out = append(out, field...)
	}
	return out
}

// ParseRecord decodes a record made by MarshalRecord. The returned blob is
// a copy, so b may be reused. Errors wrap ErrBadRecord; ParseRecord never
// panics, whatever b holds.
func ParseRecord(b []byte) (WrappedKey, error) {
	if len(b) > MaxRecordSize {
		return WrappedKey{}, fmt.Errorf("record of %d bytes, more than %d: %w", len(b), MaxRecordSize, ErrBadRecord)
	}
	if len(b) < len(RecordMagic)+1 || string(b[:len(RecordMagic)]) != RecordMagic {
		return WrappedKey{}, fmt.Errorf("no record magic: %w", ErrBadRecord)
	}
	if v := b[len(RecordMagic)]; v != RecordVersion {
		return WrappedKey{}, fmt.Errorf("record version %d, want %d: %w", v, RecordVersion, ErrBadRecord)
	}
	rest := b[len(RecordMagic)+1:]
	var fields [3][]byte
	names := [3]string{"key ID", "key material ID", "blob"}
	for i := range fields {
		n, used := binary.Uvarint(rest)
		if used <= 0 {
			return WrappedKey{}, fmt.Errorf("bad %s length: %w", names[i], ErrBadRecord)
		}
		if used != uvarintLen(n) {
			return WrappedKey{}, fmt.Errorf("non-minimal %s length: %w", names[i], ErrBadRecord)
		}
		rest = rest[used:]
		if n > uint64(len(rest)) {
			return WrappedKey{}, fmt.Errorf("%s of %d bytes overruns the record: %w", names[i], n, ErrBadRecord)
		}
		fields[i] = rest[:n]
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return WrappedKey{}, fmt.Errorf("%d trailing bytes after the blob: %w", len(rest), ErrBadRecord)
	}
	w := WrappedKey{
		KeyID:         string(fields[0]),
		KeyMaterialID: string(fields[1]),
		Blob:          append([]byte(nil), fields[2]...),
	}
	if err := w.Validate(); err != nil {
		return WrappedKey{}, err
	}
	return w, nil
}
