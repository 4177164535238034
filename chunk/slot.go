package chunk

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The key-record slot (FORMAT.md, "Key-record slot") holds a copy of the
// file's wrapped data key in the backing file itself, so that a copy of the
// tree that drops extended attributes (cp -r, rsync without -X, tar
// without --xattrs) or a backing file system without user xattrs keeps
// every file readable. This package only frames the record: what it holds
// is the caller's business, and it is authenticated by the key service when
// the caller unwraps it (the encryption context names the file), not by
// the header or chunk tags.

// MaxSlotRecord is the largest key record the slot holds: SlotSize less
// the 2-byte length.
const MaxSlotRecord = SlotSize - 2

var (
	// ErrSlotEmpty reports a slot that holds no record (length 0 and zero
	// padding): the record lives only in the extended attribute.
	ErrSlotEmpty = errors.New("chunk: key-record slot is empty")
	// ErrRecordTooLarge reports a record longer than MaxSlotRecord.
	ErrRecordTooLarge = errors.New("chunk: key record does not fit the slot")
)

// MarshalSlot returns the SlotSize-byte slot holding rec: uint16
// big-endian length ‖ rec ‖ zero padding. An empty rec gives an empty
// slot (all zeros). A rec longer than MaxSlotRecord gives an error
// wrapping ErrRecordTooLarge.
func MarshalSlot(rec []byte) ([]byte, error) {
	if len(rec) > MaxSlotRecord {
		return nil, fmt.Errorf("chunk: key record of %d bytes, the slot holds %d: %w", len(rec), MaxSlotRecord, ErrRecordTooLarge)
	}
	b := make([]byte, SlotSize)
	binary.BigEndian.PutUint16(b, uint16(len(rec)))
	copy(b[2:], rec)
	return b, nil
}

// ParseSlot returns the record in the slot at the start of b, which must
// hold at least SlotSize bytes; bytes after the slot are ignored. The
// returned slice aliases b. An empty slot gives ErrSlotEmpty; a length
// beyond MaxSlotRecord, or a non-zero byte in the padding, an error
// wrapping ErrCorrupt (the encoding is canonical: one record, one slot).
func ParseSlot(b []byte) ([]byte, error) {
	if len(b) < SlotSize {
		return nil, fmt.Errorf("chunk: key-record slot is %d bytes, want %d: %w", len(b), SlotSize, ErrCorrupt)
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > MaxSlotRecord {
		return nil, fmt.Errorf("chunk: key-record slot says %d bytes, at most %d fit: %w", n, MaxSlotRecord, ErrCorrupt)
	}
	if !allZero(b[2+n : SlotSize]) {
		return nil, fmt.Errorf("chunk: key-record slot has data after its %d-byte record: %w", n, ErrCorrupt)
	}
	if n == 0 {
		return nil, ErrSlotEmpty
	}
	return b[2 : 2+n], nil
}
