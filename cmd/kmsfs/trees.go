package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/names"
)

// hasEncryptedNames reports whether the tree of cfg is of format v2
// (encrypted names).
//
// Placeholder until Config.EncryptedNames lands (h1-config): every tree is
// v1 here. The lead replaces the body with `return cfg.EncryptedNames()`.
func hasEncryptedNames(cfg cipherdir.Config) bool { return false }

// openNamesKey returns the names key of the v2 tree cfg (root, a
// descriptor of its CIPHERDIR), unwrapped by svc.
//
// Placeholder until cipherdir.OpenNames lands (h1-config). The lead
// replaces the body with
//
//	return cipherdir.OpenNames(ctx, svc, cipherdir.NewTrust(ctx, svc, cfg, nil), cfg, root)
func openNamesKey(ctx context.Context, svc keysvc.Service, cfg cipherdir.Config, root int) (*names.Keys, error) {
	return nil, errors.New("this build cannot open the names key of a v2 tree")
}

// tree is one CIPHERDIR opened by an offline command: its config, a
// descriptor of its root, and for v2 trees (or when the command asked for
// it) the key service and the names key.
type tree struct {
	dir   string
	cfg   cipherdir.Config
	root  int
	svc   cipherdir.Encrypter // nil for a v1 tree unless trees.service
	names *names.Keys         // nil for a v1 tree
	close func()
}

// trees opens CIPHERDIRs once each for a command that meets several
// paths (info, rekey, paths). The key service is opened only where it is
// needed: for v2 trees (names are encrypted) and when service is set.
type trees struct {
	ctx      context.Context
	ks       *keystoreFlags
	endpoint string
	env      *Env
	service  bool // open the key service for v1 trees too (rekey)
	open     map[string]*tree
}

func newTrees(ctx context.Context, ks *keystoreFlags, endpoint string, env *Env, service bool) *trees {
	return &trees{ctx: ctx, ks: ks, endpoint: endpoint, env: env, service: service, open: map[string]*tree{}}
}

// get returns the tree of the CIPHERDIR dir (absolute, clean).
func (ts *trees) get(dir string) (*tree, error) {
	if t := ts.open[dir]; t != nil {
		return t, nil
	}
	cfg, err := cipherdir.LoadConfig(dir)
	if err != nil {
		return nil, withHint(withKind(errCipherDir, err), "CIPHERDIR must be a directory made by 'kmsfs init'")
	}
	root, err := cipherdir.OpenRoot(dir)
	if err != nil {
		return nil, withKind(errCipherDir, err)
	}
	t := &tree{dir: dir, cfg: cfg, root: root, close: func() { unix.Close(root) }}
	if ts.service || hasEncryptedNames(cfg) {
		svc, closeSvc, err := openKeyService(ts.ctx, cfg.KMS, ts.ks, ts.endpoint, ts.env, nil)
		if err != nil {
			t.close()
			return nil, err
		}
		t.svc = svc
		t.close = func() { closeSvc(); unix.Close(root) }
	}
	if hasEncryptedNames(cfg) {
		k, err := openNamesKey(ts.ctx, t.svc, cfg, root)
		if err != nil {
			t.close()
			return nil, fmt.Errorf("names key of %s: %w", dir, err)
		}
		t.names = k
	}
	ts.open[dir] = t
	return t, nil
}

// closeAll releases every tree.
func (ts *trees) closeAll() {
	for _, t := range ts.open {
		t.close()
	}
}

// located is a path given on the command line, found in its tree.
type located struct {
	backing string // absolute path of the backing file
	tree    *tree  // nil for a backing file outside any CIPHERDIR
	rel     string // backing path relative to tree.dir
	plain   string // path in the mount, relative to its root; "" when unknown
}

// locate maps path (absolute) to its backing file. A path inside a kmsfs
// mount is mapped through the mount table (the mount's source is its
// CIPHERDIR: package fs mounts with FsName = CIPHERDIR) and, name by
// name, through cipherdir.EncryptPath (which needs the names key in a v2
// tree). Any other path is taken to be a backing file already; the
// CIPHERDIR above it, when there is one, gives its plaintext path
// (cipherdir.DecryptPath; "" when it does not decrypt).
func (ts *trees) locate(path string) (located, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return located{}, withKind(errCipherDir, err)
	}
	entries, err := readMountinfo()
	if err != nil {
		return located{}, err
	}
	m, ok := enclosingFUSEMount(entries, resolved)
	if ok && m.FSType == kmsfsFSType {
		rel, err := filepath.Rel(m.Mountpoint, resolved)
		if err != nil || rel == "." {
			return located{}, withKind(errCipherDir, fmt.Errorf("%s is the root of a kmsfs mount, not a file", resolved))
		}
		if !filepath.IsAbs(m.Source) {
			return located{}, withKind(errCipherDir, fmt.Errorf("the mount table names no CIPHERDIR for %s", m.Mountpoint))
		}
		t, err := ts.get(filepath.Clean(m.Source))
		if err != nil {
			return located{}, err
		}
		brel, err := cipherdir.EncryptPath(t.root, t.names, rel)
		if err != nil {
			return located{}, withKind(errCipherDir, err)
		}
		return located{backing: filepath.Join(t.dir, brel), tree: t, rel: brel, plain: rel}, nil
	}
	dir, err := findCipherDir(resolved)
	if err != nil {
		return located{backing: resolved}, nil
	}
	t, err := ts.get(dir)
	if err != nil {
		return located{}, err
	}
	rel, err := filepath.Rel(dir, resolved)
	if err != nil {
		return located{}, withKind(errCipherDir, err)
	}
	plain, err := cipherdir.DecryptPath(t.root, t.names, rel)
	if err != nil {
		plain = ""
	}
	return located{backing: resolved, tree: t, rel: rel, plain: plain}, nil
}
