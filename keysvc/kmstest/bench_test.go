package kmstest_test

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/awskms"
	"github.com/kmsfs/kmsfs/keysvc/kmsserver"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// Benchmarks of the key path kmsfs takes: keysvc/awskms (the SDK client, with
// SigV4 signing) to `kmsfs keysvc serve`'s server on a loopback port, and
// the DEK cache in front of it. Each reports requests/s and the p50 and p99
// latency of single calls.
//
//	go test -run XXX -bench . -benchtime 2s ./keysvc/kmstest

// benchServer serves a fresh keystore on loopback and returns an SDK client
// for it and a key ARN.
func benchServer(b *testing.B) (*awskms.Client, string) {
	b.Helper()
	store, err := local.Open(filepath.Join(b.TempDir(), "keystore"), local.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cred, err := store.CreateCredential(ctx, "bench", local.AdminPolicy)
	if err != nil {
		b.Fatal(err)
	}
	key, err := store.CreateKey(ctx, local.CreateKeyInput{Creator: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- kmsserver.New(store, kmsserver.Options{}).Serve(sctx, ln) }()
	b.Cleanup(func() {
		cancel()
		<-done
		store.Close()
	})
	c, err := awskms.New(ctx, awskms.Options{
		Endpoint:    "http://" + ln.Addr().String(),
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(cred.AccessKeyID, cred.SecretAccessKey, ""),
	})
	if err != nil {
		b.Fatal(err)
	}
	return c, key.ARN
}

// timed runs op b.N times, one at a time, and reports requests/s, p50 and
// p99.
func timed(b *testing.B, op func() error) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
}

var benchContext = keysvc.EncryptionContext{keysvc.ContextFilesystemID: "00112233445566778899aabbccddeeff", keysvc.ContextFileID: "ffeeddccbbaa99887766554433221100"}

func BenchmarkServerGenerateDataKey(b *testing.B) {
	c, arn := benchServer(b)
	ctx := context.Background()
	timed(b, func() error {
		dk, err := c.GenerateDataKey(ctx, arn, benchContext)
		keysvc.Zero(dk.Plaintext)
		return err
	})
}

func BenchmarkServerDecrypt(b *testing.B) {
	c, arn := benchServer(b)
	ctx := context.Background()
	dk, err := c.GenerateDataKey(ctx, arn, benchContext)
	if err != nil {
		b.Fatal(err)
	}
	timed(b, func() error {
		u, err := c.Decrypt(ctx, dk.Wrapped.Blob, "", benchContext)
		keysvc.Zero(u.Plaintext)
		return err
	})
}

// BenchmarkServerDecryptParallel measures throughput with concurrent
// clients (GOMAXPROCS goroutines × 4).
func BenchmarkServerDecryptParallel(b *testing.B) {
	c, arn := benchServer(b)
	ctx := context.Background()
	dk, err := c.GenerateDataKey(ctx, arn, benchContext)
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u, err := c.Decrypt(ctx, dk.Wrapped.Blob, "", benchContext)
			if err != nil {
				b.Error(err)
				return
			}
			keysvc.Zero(u.Plaintext)
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkCacheHitDecrypt is the open path of a file whose data key is
// cached: no KMS call at all. It names the key, as the filesystem does (the
// cache keys entries by the key ID asked for).
func BenchmarkCacheHitDecrypt(b *testing.B) {
	c, arn := benchServer(b)
	ctx := context.Background()
	cache := keysvc.NewCache(c, keysvc.CacheOptions{})
	defer cache.Close()
	dk, err := cache.GenerateDataKey(ctx, arn, benchContext)
	if err != nil {
		b.Fatal(err)
	}
	keysvc.Zero(dk.Plaintext)
	timed(b, func() error {
		u, err := cache.Decrypt(ctx, dk.Wrapped.Blob, arn, benchContext)
		keysvc.Zero(u.Plaintext)
		return err
	})
	if s := cache.Stats(); s.KMSCalls != 1 {
		b.Fatalf("cache hit path made %d KMS calls", s.KMSCalls)
	}
}
