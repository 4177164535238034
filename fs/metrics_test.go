package fs

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestMetrics checks the counters a mount keeps and their exposition:
// FUSE requests by operation with a latency histogram, plaintext bytes
// each way, and authentication failures.
func TestMetrics(t *testing.T) {
	var m Metrics
	tf := mountFS(t, func(o *Options) { o.Metrics = &m })
	data := bytes.Repeat([]byte("m"), 10000)
	if err := os.WriteFile(tf.path("f"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, tf.path("f")); !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	if got := m.bytesEncrypted.Load(); got != uint64(len(data)) {
		t.Errorf("bytes encrypted %d, want %d", got, len(data))
	}
	if got := m.bytesDecrypted.Load(); got < uint64(len(data)) {
		t.Errorf("bytes decrypted %d, want at least %d", got, len(data))
	}
	if m.ops[opCreate].count.Load() != 1 || m.ops[opWrite].count.Load() == 0 || m.ops[opRead].count.Load() == 0 {
		t.Errorf("create %d, write %d, read %d requests counted", m.ops[opCreate].count.Load(),
			m.ops[opWrite].count.Load(), m.ops[opRead].count.Load())
	}

	// A flipped bit in the first chunk: the read fails and is counted.
	tf.waitReleased(t)
	b, err := os.ReadFile(tf.backing("f"))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-100] ^= 1
	if err := os.WriteFile(tf.backing("f"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	tf.dropCaches(t)
	if _, err := os.ReadFile(tf.path("f")); err == nil {
		t.Fatal("a tampered file read fine")
	}
	if m.authFailures.Load() == 0 {
		t.Error("an authentication failure was not counted")
	}

	var out strings.Builder
	if err := m.WritePrometheus(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"# TYPE kmsfs_fuse_request_duration_seconds histogram\n",
		`kmsfs_fuse_requests_total{op="create"} 1` + "\n",
		`kmsfs_fuse_request_duration_seconds_bucket{op="write",le="+Inf"} `,
		`kmsfs_fuse_request_duration_seconds_count{op="read"} `,
		"kmsfs_plaintext_bytes_encrypted_total 10000\n",
		`kmsfs_dek_pool_total{result="miss"} 1` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "kmsfs_authentication_failures_total 0\n") {
		t.Error("exposition shows no authentication failure")
	}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(line, "# ") && len(strings.Fields(line)) != 2 {
			t.Errorf("malformed sample line %q", line)
		}
	}
}

// dropCaches empties the kernel's page cache, so the next read of a
// file reaches the daemon.
func (tf *testFS) dropCaches(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}

// BenchmarkMetricsRecord is the cost metrics add to every FUSE request:
// two clock reads and the atomic adds of record.
func BenchmarkMetricsRecord(b *testing.B) {
	var m Metrics
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t := time.Now()
			m.record(opWrite, t, fuse.OK)
		}
	})
}
