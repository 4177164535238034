package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkRewrapKeyServer measures `kmsfs rewrap` of many files through
// the AWS backend against `kmsfs keysvc serve` on loopback: each iteration
// rotates the key and re-wraps every file (one ReEncrypt each). It reports
// files/s. The file count is $KMSFS_REWRAP_FILES (default 10000), the
// parallelism $KMSFS_REWRAP_JOBS (default 4):
//
//	go test -run '^$' -bench BenchmarkRewrapKeyServer -benchtime 1x ./integration/
func BenchmarkRewrapKeyServer(b *testing.B) {
	files := envInt(b, "KMSFS_REWRAP_FILES", 10000)
	jobs := envInt(b, "KMSFS_REWRAP_JOBS", 4)
	ks := slowKeyServer(b, 0)
	id := strings.TrimSpace(runKmsfs(b, ks.kmsfsEnv(), "key", "create", "--description", "rewrap benchmark"))
	fs := newFS(b, WithInitArgs("--kms", "aws", "--key", id, "--kms-endpoint", ks.Endpoint),
		WithMountArgs("--kms-endpoint", ks.Endpoint), WithEnv(ks.AWSEnv()...))
	const perDir = 1000
	for d := 0; d*perDir < files; d++ {
		if err := os.Mkdir(fs.Path(fmt.Sprintf("d%03d", d)), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < files; i += 4 {
				p := fs.Path(fmt.Sprintf("d%03d", i/perDir), fmt.Sprintf("f%05d", i))
				if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	fs.Unmount() // measure rewrap alone
	b.ResetTimer()
	var total time.Duration
	for range b.N {
		b.StopTimer()
		runKmsfs(b, ks.kmsfsEnv(), "key", "rotate", id)
		b.StartTimer()
		start := time.Now()
		out := fs.Run("rewrap", "--jobs", strconv.Itoa(jobs), "--kms-endpoint", ks.Endpoint, fs.CipherDir)
		total += time.Since(start)
		if sum := parseRewrapSummary(b, out); sum.rewrapped != files || sum.failed != 0 {
			b.Fatalf("rewrap: %+v, want %d rewrapped", sum, files)
		}
		b.Log(strings.TrimSpace(out))
	}
	b.ReportMetric(float64(files*b.N)/total.Seconds(), "files/s")
}

// envInt reads a positive integer from the environment, def when unset.
func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("$%s=%q: want a positive integer", name, v)
	}
	return n
}
