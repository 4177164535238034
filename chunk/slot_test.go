package chunk

import (
	"bytes"
	"errors"
	"testing"
)

func TestSlotRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 100, MaxSlotRecord - 1, MaxSlotRecord} {
		rec := pattern(n, 9)
		b, err := MarshalSlot(rec)
		if err != nil || len(b) != SlotSize {
			t.Fatalf("MarshalSlot(%d bytes) = %d bytes, %v", n, len(b), err)
		}
		got, err := ParseSlot(append(b, 0xff)) // bytes after the slot are ignored
		if err != nil || !bytes.Equal(got, rec) {
			t.Fatalf("ParseSlot of a %d-byte record = %d bytes, %v", n, len(got), err)
		}
	}
}

func TestSlotEmpty(t *testing.T) {
	b, err := MarshalSlot(nil)
	if err != nil || len(b) != SlotSize || !allZero(b) {
		t.Fatalf("MarshalSlot(nil) = %x, %v; want %d zero bytes", b, err, SlotSize)
	}
	if _, err := ParseSlot(b); !errors.Is(err, ErrSlotEmpty) {
		t.Fatalf("ParseSlot(empty) = %v, want ErrSlotEmpty", err)
	}
}

func TestSlotInvalid(t *testing.T) {
	if _, err := MarshalSlot(make([]byte, MaxSlotRecord+1)); !errors.Is(err, ErrRecordTooLarge) {
		t.Errorf("MarshalSlot(too large) = %v", err)
	}
	good, _ := MarshalSlot([]byte("record"))
	tests := []struct {
		name string
		b    []byte
	}{
		{"short", good[:SlotSize-1]},
		{"length beyond the slot", append([]byte{0x01, 0xc7}, good[2:]...)}, // 455
		{"length 0xffff", append([]byte{0xff, 0xff}, good[2:]...)},
		{"byte in the padding", func() []byte { b := bytes.Clone(good); b[SlotSize-1] = 1; return b }()},
		{"padding of an empty slot", func() []byte { b := make([]byte, SlotSize); b[100] = 1; return b }()},
		{"length shorter than the record", func() []byte { b := bytes.Clone(good); b[1]--; return b }()},
	}
	for _, tt := range tests {
		if _, err := ParseSlot(tt.b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: ParseSlot = %v, want ErrCorrupt", tt.name, err)
		}
	}
}

// FuzzParseSlot: ParseSlot never panics, fails only with ErrCorrupt or
// ErrSlotEmpty, and what it accepts is canonical: MarshalSlot of the
// record gives back the slot bytes.
func FuzzParseSlot(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := ParseSlot(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSlotEmpty) {
				t.Fatalf("error %v is neither ErrCorrupt nor ErrSlotEmpty", err)
			}
			if errors.Is(err, ErrSlotEmpty) && !allZero(b[:SlotSize]) {
				t.Fatal("a slot with data reported empty")
			}
			return
		}
		if len(rec) == 0 || len(rec) > MaxSlotRecord {
			t.Fatalf("record of %d bytes", len(rec))
		}
		again, err := MarshalSlot(rec)
		if err != nil || !bytes.Equal(again, b[:SlotSize]) {
			t.Fatalf("slot does not round trip: %v", err)
		}
	})
}
