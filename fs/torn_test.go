package fs

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/chunk"
)

func TestTornTailSizes(t *testing.T) {
	const cs = 4096
	slot := int64(cs + chunk.Overhead)
	tests := []struct {
		backing, whole int64
		torn           bool
	}{
		{0, 0, false},
		{chunk.DataOffset, chunk.DataOffset, false},
		{chunk.DataOffset + 1, chunk.DataOffset, true},
		{chunk.DataOffset + chunk.Overhead, chunk.DataOffset, true},
		{chunk.DataOffset + chunk.Overhead + 1, chunk.DataOffset + chunk.Overhead + 1, false}, // a 1-byte chunk
		{chunk.DataOffset + slot, chunk.DataOffset + slot, false},
		{chunk.DataOffset + 3*slot + 17, chunk.DataOffset + 3*slot, true},
		{524288, 524288 - 28, true}, // a SIGKILLed pwrite, seen in TestCrash
	}
	for _, tt := range tests {
		whole, torn := tornTail(tt.backing, cs)
		if whole != tt.whole || torn != tt.torn {
			t.Errorf("tornTail(%d) = %d, %v; want %d, %v", tt.backing, whole, torn, tt.whole, tt.torn)
		}
		if torn {
			if _, err := chunk.PlaintextSize(tt.backing, cs); err == nil {
				t.Errorf("backing %d: the format accepts a size tornTail calls torn", tt.backing)
			}
			if _, err := chunk.PlaintextSize(whole, cs); err != nil {
				t.Errorf("backing %d: trimmed size %d is still impossible: %v", tt.backing, whole, err)
			}
		}
	}
}

// TestTornTail: bytes of an unfinished chunk after the last whole one (an
// interrupted extending write) are trimmed at the first open, and the file
// reads back whole.
func TestTornTail(t *testing.T) {
	tf := mountFS(t)
	data := randBytes(t, 3*4096)
	if err := os.WriteFile(tf.path("f"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	tf.waitReleased(t)
	want := chunk.CiphertextSize(int64(len(data)), 4096)
	bf, err := os.OpenFile(tf.backing("f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bf.Write(bytes.Repeat([]byte{0xa5}, 20)); err != nil {
		t.Fatal(err)
	}
	bf.Close()
	if got := readFile(t, tf.path("f")); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes after a torn tail, differ", len(got))
	}
	fi, err := os.Stat(tf.backing("f"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != want {
		t.Errorf("backing size %d after the first open, want %d (torn tail trimmed)", fi.Size(), want)
	}
	if !strings.Contains(tf.log.String(), "trimmed a torn tail") {
		t.Errorf("no log line for the trimmed tail; log:\n%s", tf.log.String())
	}
}
