package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/codec"
)

// compressibleText returns n bytes of text that compresses well (and
// not trivially: the line numbers change).
func compressibleText(n int) []byte {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%06d the quick brown fox jumps over the lazy dog; %d\n", i, i*i%9973)
	}
	return []byte(b.String()[:n])
}

// allocated returns the bytes the file system allocated for path.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestCodecsFromCaller: the codecs are the caller's (Options.Codecs). A
// mount whose config compresses new files with a codec it was not given
// fails at once; a file whose header names such a codec fails to open
// with chunk.ErrNoCodec (EIO), naming the compression; with the codec
// given it opens.
func TestCodecsFromCaller(t *testing.T) {
	ct := newCheckTreeWith(t, 64<<10, func(c *cipherdir.Config) { c.Compress = "zstd" },
		map[string][]byte{"z": compressibleText(100 << 10)})
	cfg := ct.r.cfg
	_, err := newRoot(Options{CipherDir: ct.dir, Config: cfg, Keys: ct.keys, Codecs: chunk.Codecs{codec.S2()}})
	if !errors.Is(err, chunk.ErrNoCodec) {
		t.Fatalf("newRoot(compress zstd, s2 codec only) = %v, want ErrNoCodec", err)
	}

	cfg.Compress = "none"
	for _, tc := range []struct {
		name   string
		codecs chunk.Codecs
		ok     bool
	}{
		{"no codecs", nil, false},
		{"s2 only", chunk.Codecs{codec.S2()}, false},
		{"zstd", chunk.Codecs{codec.Zstd()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rn, err := newRoot(Options{CipherDir: ct.dir, Config: cfg, Keys: ct.keys, Codecs: tc.codecs})
			if err != nil {
				t.Fatal(err)
			}
			defer rn.r.close()
			f, err := os.Open(filepath.Join(ct.dir, "z"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			c, err := rn.r.loadKey(context.Background(), f)
			if tc.ok {
				if err != nil || c.Header().Compression() != chunk.CompressionZstd {
					t.Fatalf("loadKey = %v", err)
				}
				return
			}
			if !errors.Is(err, chunk.ErrNoCodec) || !strings.Contains(err.Error(), "zstd") || errnoOf(err) != syscall.EIO {
				t.Fatalf("loadKey = %v (errno %v), want ErrNoCodec naming zstd, EIO", err, errnoOf(err))
			}
		})
	}
}
