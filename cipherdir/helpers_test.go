package cipherdir

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// testTree is a CIPHERDIR on a local keystore whose backing files are
// written through this package's own create path (no FUSE).
type testTree struct {
	dir   string
	cfg   Config
	store *local.Store
}

// newTestTree makes a tree keyed by a new local key.
func newTestTree(t *testing.T) *testTree {
	t.Helper()
	store, err := local.Open(filepath.Join(t.TempDir(), "keystore"), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	arn := newLocalKey(t, store)
	cfg, err := NewConfig(KMSLocal, arn, 4096)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "c")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	return &testTree{dir: dir, cfg: cfg, store: store}
}

// newLocalKey creates a key in store and returns its ARN.
func newLocalKey(t *testing.T, store *local.Store) string {
	t.Helper()
	md, err := store.CreateKey(context.Background(), local.CreateKeyInput{Description: "cipherdir test"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := store.DescribeKey(context.Background(), md.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	return info.ARN
}

func (tt *testTree) path(rel string) string { return filepath.Join(tt.dir, rel) }

// write makes the backing file rel holding data, as the mount would: a
// new header, data key and key record (StartFile), then the chunks.
func (tt *testTree) write(t *testing.T, rel string, data []byte) {
	t.Helper()
	tt.writeWith(t, tt.cfg, rel, data)
}

// writeWith is write with another config (a foreign key, say).
func (tt *testTree) writeWith(t *testing.T, cfg Config, rel string, data []byte) {
	t.Helper()
	ctx := context.Background()
	h, err := NewHeader(cfg, chunk.CompressionNone)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := GenerateFileKey(ctx, tt.store, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	c, rec, err := FileCipher(dk, h, nil)
	keysvc.Zero(dk.Plaintext)
	if err != nil {
		t.Fatal(err)
	}
	p := tt.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := StartFile(int(f.Fd()), c, rec, cfg.KeyRecordMode()); err != nil {
		t.Fatal(err)
	}
	if _, err := chunk.NewFile(f, c).WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
}

// read decrypts the backing file rel.
func (tt *testTree) read(t *testing.T, rel string) []byte {
	t.Helper()
	f, err := os.Open(tt.path(rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := LoadKey(context.Background(), tt.store, NewTrust(context.Background(), tt.store, tt.cfg, nil), tt.cfg, nil, int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	cf := chunk.NewFile(f, k.Cipher)
	size, err := cf.Size()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, size)
	if _, err := cf.ReadAt(buf, 0); err != nil && size > 0 {
		t.Fatal(err)
	}
	return buf
}

// snapshot returns every name under dir with its size and content hash
// (for "nothing outside changed" checks).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
			buf := make([]byte, 8192)
			if n, err := unix.Lgetxattr(p, KeyXattr, buf); err == nil {
				v += " xattr:" + string(buf[:n])
			}
		}
		out[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal([]byte(v), []byte(w)) {
			return false
		}
	}
	return true
}
