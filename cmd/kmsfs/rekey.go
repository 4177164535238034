package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/codec"
)

// runRekey implements `kmsfs rekey PATH…`: each file gets a new data key
// and a new file ID, its content re-encrypted into a temporary file beside
// it, which then replaces it with one rename. Mode, owner, times, extended
// attributes and hard links are kept. A file a mount in shared mode is
// writing is left alone (busy, exit 8) unless --wait.
func runRekey(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("rekey")
	endpoint := fset.String("kms-endpoint", "", "AWS KMS endpoint URL (aws file systems)")
	wait := fset.Bool("wait", false, "wait for a file a shared-mode mount is writing, instead of leaving it for later")
	var ks keystoreFlags
	ks.register(fset)
	pos, err := parseArgs(fset, "rekey", args, env, 1, -1)
	if err != nil {
		return err
	}
	ts := newTrees(ctx, &ks, *endpoint, env, true)
	defer ts.closeAll()
	rekeyers := map[string]*cipherdir.Rekeyer{}
	codecs := codec.All()
	defer func() {
		for _, rk := range rekeyers {
			rk.Close()
		}
	}()
	failed, busy := 0, 0
	fail := func(p string, err error) {
		failed++
		if errors.Is(err, cipherdir.ErrBusy) {
			busy++
			err = fmt.Errorf("%w; left as it was, run rekey again (or with --wait)", err)
		}
		fmt.Fprintf(env.Stderr, "kmsfs: rekey: %s: %v\n", p, err)
	}
	for _, p := range pos {
		abs, err := filepath.Abs(p)
		if err != nil {
			fail(p, err)
			continue
		}
		loc, err := ts.locate(abs)
		if exitCode(err) == ExitKeyService {
			return err // the key service or keystore: every file would fail
		}
		if err != nil {
			fail(p, err)
			continue
		}
		if loc.tree == nil {
			_, err := findCipherDir(loc.backing)
			fail(p, err)
			continue
		}
		t := loc.tree
		rk := rekeyers[t.dir]
		if rk == nil {
			rk, err = cipherdir.NewRekeyer(ctx, t.dir, t.cfg, t.svc, codecs, t.names)
			if err != nil {
				fail(p, err)
				continue
			}
			rk.Wait = *wait
			rekeyers[t.dir] = rk
		}
		oldID, newID, err := rk.Rekey(ctx, loc.rel)
		if err != nil {
			fail(p, err)
			continue
		}
		if newID == "" {
			fmt.Fprintf(env.Stdout, "rekey: %s is empty: it has no data key yet\n", p)
			continue
		}
		fmt.Fprintf(env.Stdout, "rekeyed %s: file ID %s -> %s\n", p, oldID, newID)
	}
	if failed > 0 {
		why := ""
		if busy > 0 {
			why = fmt.Sprintf(", %d of them busy", busy)
		}
		return withKind(errIncomplete, fmt.Errorf("rekey: %d of %d files failed (named above)%s", failed, len(pos), why))
	}
	return nil
}

// findCipherDir returns the CIPHERDIR holding the backing file: the
// nearest ancestor directory with a kmsfs.conf.
func findCipherDir(backing string) (string, error) {
	for d := filepath.Dir(backing); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(filepath.Join(d, cipherdir.ConfigName)); err == nil {
			return d, nil
		}
		if d == "/" || d == "." {
			return "", withHint(withKind(errCipherDir, fmt.Errorf("%s is not inside a CIPHERDIR (no %s above it)", backing, cipherdir.ConfigName)),
				"PATH must be a file in a kmsfs mount or a backing file in a CIPHERDIR")
		}
	}
}
