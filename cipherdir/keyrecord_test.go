package cipherdir

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/kmsfs/kmsfs/chunk"
)

func TestWriteKeyRecordTooLarge(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	big := bytes.Repeat([]byte{1}, chunk.MaxSlotRecord+1)
	hb := make([]byte, chunk.HeaderSize)
	place, err := WriteKeyRecord(fd, hb, big, KeyRecordXattrSlot)
	if err != nil || place != PlaceXattr {
		t.Fatalf("too large for the slot: %v, %v; want the xattr only", place, err)
	}
	if _, err := readKeySlot(fd); err == nil {
		t.Error("slot not left empty")
	}
	if _, err := WriteKeyRecord(fd, nil, big, KeyRecordSlot); err == nil {
		t.Error("slot mode stored a record nowhere without an error")
	}
	if place, err := WriteKeyRecord(fd, nil, []byte("small"), KeyRecordSlot); err != nil || place != PlaceSlot {
		t.Errorf("slot mode: %v, %v", place, err)
	}
}

// TestProbeUserXattrs: the test's temporary directory (ext4 or tmpfs here)
// keeps user xattrs, and the probe leaves nothing behind.
func TestProbeUserXattrs(t *testing.T) {
	dir := t.TempDir()
	ok, err := ProbeUserXattrs(dir)
	if err != nil || !ok {
		t.Fatalf("ProbeUserXattrs(%s) = %v, %v", dir, ok, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the probe left %d entries", len(entries))
	}
	if _, err := ProbeUserXattrs(filepath.Join(dir, "missing")); err == nil {
		t.Error("probe of a missing directory: no error")
	}
}
