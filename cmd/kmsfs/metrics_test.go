package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	kfs "github.com/kmsfs/kmsfs/fs"
	"github.com/kmsfs/kmsfs/keysvc"
)

// nopKeys answers every key service call with ErrDisabled.
type nopKeys struct{}

func (nopKeys) GenerateDataKey(context.Context, string, keysvc.EncryptionContext) (keysvc.DataKey, error) {
	return keysvc.DataKey{}, keysvc.ErrDisabled
}
func (nopKeys) Decrypt(context.Context, []byte, string, keysvc.EncryptionContext) (keysvc.Unwrapped, error) {
	return keysvc.Unwrapped{}, keysvc.ErrDisabled
}
func (nopKeys) ReEncrypt(context.Context, []byte, string, keysvc.EncryptionContext, string) (keysvc.WrappedKey, error) {
	return keysvc.WrappedKey{}, keysvc.ErrDisabled
}
func (nopKeys) DescribeKey(context.Context, string) (keysvc.KeyInfo, error) {
	return keysvc.KeyInfo{}, nil
}

func TestMetricsEndpoint(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	metered := keysvc.NewMetered(nopKeys{})
	cache := keysvc.NewCache(metered, keysvc.CacheOptions{})
	defer cache.Close()
	m := &mountMetrics{kms: metered, cache: cache, fs: &kfs.Metrics{}}
	if _, err := cache.Decrypt(context.Background(), []byte("blob"), "", nil); !errors.Is(err, keysvc.ErrDisabled) {
		t.Fatalf("decrypt: %v", err)
	}

	if _, err := startMetrics("0.0.0.0:0", false, false, m, log); !errors.Is(err, errUsage) {
		t.Errorf("a non-loopback address without --metrics-any-address: %v, want a usage error", err)
	}
	// Find a free loopback port, then serve on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	stop, err := startMetrics(addr, false, false, m, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	get := func(path string) (int, string, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	code, ctype, body := get("/metrics")
	if code != 200 || !strings.HasPrefix(ctype, "text/plain; version=0.0.4") {
		t.Fatalf("/metrics: %d %q", code, ctype)
	}
	for _, want := range []string{
		`kmsfs_kms_calls_total{op="Decrypt",result="disabled"} 1` + "\n",
		`kmsfs_kms_calls_total{op="GenerateDataKey",result="ok"} 0` + "\n",
		`kmsfs_dek_cache_requests_total{result="miss"} 1` + "\n",
		"kmsfs_plaintext_bytes_decrypted_total 0\n",
		"# TYPE kmsfs_authentication_failures_total counter\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	// The profiler only with --pprof (issue 10, item 10).
	if code, _, _ := get("/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --pprof: %d, want 404", code)
	}
	stop()
	stop, err = startMetrics(addr, false, true, m, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if code, _, _ := get("/debug/pprof/"); code != 200 {
		t.Errorf("/debug/pprof/ on loopback with --pprof: %d", code)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9101": true, "[::1]:9101": true, "localhost:1": true,
		"0.0.0.0:9101": false, ":9101": false, "10.1.2.3:80": false, "127.0.0.1": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v", addr, got)
		}
	}
}
