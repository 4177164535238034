package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	kfs "github.com/kmsfs/kmsfs/fs"
	"github.com/kmsfs/kmsfs/keysvc"
)

// mountMetrics is what `kmsfs mount --metrics` exposes: the key service
// calls (counted in front of the backend), the DEK cache (nil when
// --cache-max-age is 0) and the filesystem's own counters.
type mountMetrics struct {
	kms   *keysvc.Metered
	cache *keysvc.Cache
	fs    *kfs.Metrics
}

// writePrometheus writes every metric in the Prometheus text format.
func (m *mountMetrics) writePrometheus(w io.Writer) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("# HELP kmsfs_kms_calls_total Calls to the key management service, by operation and result.\n# TYPE kmsfs_kms_calls_total counter\n")
	for _, c := range m.kms.Calls() {
		fmt.Fprintf(bw, "kmsfs_kms_calls_total{op=%q,result=%q} %d\n", c.Op, c.Result, c.N)
	}
	var st keysvc.CacheStats
	if m.cache != nil {
		st = m.cache.Stats()
	}
	bw.WriteString("# HELP kmsfs_dek_cache_requests_total Data key unwraps answered from the DEK cache (hit) or needing the KMS (miss).\n# TYPE kmsfs_dek_cache_requests_total counter\n")
	fmt.Fprintf(bw, "kmsfs_dek_cache_requests_total{result=\"hit\"} %d\nkmsfs_dek_cache_requests_total{result=\"miss\"} %d\n", st.Hits, st.Misses)
	fmt.Fprintf(bw, "# HELP kmsfs_dek_cache_evictions_total Cached data keys dropped (and zeroed) for size or age.\n# TYPE kmsfs_dek_cache_evictions_total counter\nkmsfs_dek_cache_evictions_total %d\n", st.Evictions)
	fmt.Fprintf(bw, "# HELP kmsfs_dek_cache_entries Data keys cached now.\n# TYPE kmsfs_dek_cache_entries gauge\nkmsfs_dek_cache_entries %d\n", st.Entries)
	if err := bw.Flush(); err != nil {
		return err
	}
	return m.fs.WritePrometheus(w)
}

// isLoopback reports whether the host part of a listen address is a
// loopback address (or "localhost").
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// startMetrics listens on addr and serves /metrics (and, with withPprof
// on a loopback address only, Go's profiler under /debug/pprof/) until
// stop is called. A non-loopback address needs anyAddress: the counters
// say what files are used how much, and the profiler must never leave the
// host. The profiler is off unless asked for (--pprof): any local user
// can reach a loopback port, and a heap profile or trace reveals much.
func startMetrics(addr string, anyAddress, withPprof bool, m *mountMetrics, log *slog.Logger) (stop func(), err error) {
	loopback := isLoopback(addr)
	if !loopback && !anyAddress {
		return nil, usageErrorf("mount: --metrics %s is not a loopback address; add --metrics-any-address to serve it anyway", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, withKind(errMountFailed, fmt.Errorf("metrics listener: %w", err))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := m.writePrometheus(w); err != nil {
			log.Debug("metrics: write", "err", err.Error())
		}
	})
	if loopback && withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics listener stopped", "err", err.Error())
		}
	}()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
