// Test data and file content helpers: seeded random data, hashes,
// reading, writing and comparing files, errnos, backing sizes.

package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// testSeed returns the seed for a randomized test: $KMSFS_SEED when set,
// else a fresh one. It is logged so that any failure can be replayed.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("KMSFS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KMSFS_SEED=%q: %v", s, err)
		}
		t.Logf("seed %d (from KMSFS_SEED)", seed)
		return seed
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (replay with KMSFS_SEED=%d)", seed, seed)
	return seed
}

// newRand returns a deterministic generator for seed.
func newRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x6b6d7366735f6974))
}

// randomBytes returns n bytes from r.
func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	fillRandom(r, b)
	return b
}

// fillRandom fills b from r.
func fillRandom(r *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// sha256Hex is the hex SHA-256 of b.
func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sha256File returns the hex SHA-256 and the size of the file at path.
func sha256File(t testing.TB, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// mustWrite writes data to path (0644) and fails the test on error.
func mustWrite(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// mustRead reads path and fails the test on error.
func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkContent fails the test unless path holds exactly want.
func checkContent(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("reading %s: %v", path, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: content differs: got %d bytes (sha256 %.16s), want %d bytes (sha256 %.16s); first difference at %d",
			path, len(got), sha256Hex(got), len(want), sha256Hex(want), firstDiff(got, want))
	}
}

// firstDiff returns the first index where a and b differ.
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// errnoOf extracts the errno from err (0 for nil, -1 when there is none).
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return ^syscall.Errno(0)
}

// backingSize is the backing file size of a plaintext file of n bytes per
// the format contract: header and key-record slot (512 bytes), then per
// chunk nonce and tag around the data.
func backingSize(n int64, chunkSize int) int64 {
	const dataOffset, overhead = 512, 28
	chunks := (n + int64(chunkSize) - 1) / int64(chunkSize)
	return dataOffset + n + chunks*overhead
}

// chunkName names a subtest after a chunk size.
func chunkName(cs int) string { return fmt.Sprintf("chunk%d", cs) }
