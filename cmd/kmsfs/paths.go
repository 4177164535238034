package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/names"
)

// pathResult is one mapped path of `kmsfs paths --json`.
type pathResult struct {
	Input  string `json:"input"`
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
}

// pathsReport is the --json document of `kmsfs paths`.
type pathsReport struct {
	CipherDir string       `json:"cipherdir"`
	Mode      string       `json:"mode"` // "decrypt" or "encrypt"
	Paths     []pathResult `json:"paths"`
}

// runPaths implements `kmsfs paths CIPHERDIR --decrypt|--encrypt PATH...`:
// it maps backing paths to paths in the mount and back, as
// gocryptfs-xray's -decryptpaths and -encryptpaths do, without mounting.
// A tree with encrypted names (v2) needs its names key, from the key
// service; in a v1 tree names map to themselves and no key service is
// asked.
func runPaths(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("paths")
	decrypt := fset.Bool("decrypt", false, "map backing paths to paths in the mount")
	encrypt := fset.Bool("encrypt", false, "map paths in the mount to backing paths")
	asJSON := fset.Bool("json", false, "print one JSON document instead of lines")
	endpoint := fset.String("kms-endpoint", "", "AWS KMS endpoint URL (aws file systems)")
	var ks keystoreFlags
	ks.register(fset)
	pos, err := parseArgs(fset, "paths", args, env, 2, -1)
	if err != nil {
		return err
	}
	if *decrypt == *encrypt {
		return usageErrorf("paths: give exactly one of --decrypt and --encrypt")
	}
	given := pos[0]
	dir, err := resolveDir(given, "CIPHERDIR")
	if err != nil {
		return withKind(errCipherDir, fmt.Errorf("paths: %w", err))
	}
	inputs, err := pathInputs(pos[1:], env)
	if err != nil {
		return err
	}
	ts := newTrees(ctx, &ks, *endpoint, env, false)
	defer ts.closeAll()
	t, err := ts.get(dir)
	if err != nil {
		return err
	}
	m := pathMapper{root: t.root, names: t.names, decrypt: *decrypt, dirs: []string{dir}}
	if abs, err := filepath.Abs(given); err == nil && abs != dir {
		m.dirs = append(m.dirs, abs) // the CIPHERDIR as named, before symlinks were resolved
	}
	if mp, ok := mountOf(dir); ok {
		m.mounts = append(m.mounts, mp)
	}
	doc := pathsReport{CipherDir: dir, Mode: "encrypt", Paths: []pathResult{}}
	if *decrypt {
		doc.Mode = "decrypt"
	}
	failed := 0
	for _, in := range inputs {
		out, err := m.mapPath(in)
		r := pathResult{Input: in, Output: out}
		if err != nil {
			failed++
			r.Error = err.Error()
			if !*asJSON {
				fmt.Fprintf(env.Stderr, "kmsfs: paths: %s: %v\n", in, err)
			}
		} else if !*asJSON {
			fmt.Fprintln(env.Stdout, out)
		}
		doc.Paths = append(doc.Paths, r)
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			return err
		}
	}
	if failed > 0 {
		return withKind(errCipherDir, fmt.Errorf("paths: %d of %d paths could not be mapped", failed, len(inputs)))
	}
	return nil
}

// pathInputs returns the paths to map: the arguments, with "-" standing
// for the lines of standard input (empty lines skipped).
func pathInputs(args []string, env *Env) ([]string, error) {
	var out []string
	for _, a := range args {
		if a != "-" {
			out = append(out, a)
			continue
		}
		if env.Stdin == nil {
			return nil, usageErrorf("paths: '-' reads paths from standard input, which there is none of")
		}
		sc := bufio.NewScanner(env.Stdin)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			if line := strings.TrimSuffix(sc.Text(), "\r"); line != "" {
				out = append(out, line)
			}
		}
		if err := sc.Err(); err != nil && err != io.EOF {
			return nil, fmt.Errorf("paths: read standard input: %w", err)
		}
	}
	return out, nil
}

// pathMapper maps the paths of one tree.
type pathMapper struct {
	root    int         // descriptor of CIPHERDIR
	names   *names.Keys // nil for a v1 tree
	decrypt bool
	dirs    []string // the CIPHERDIR's absolute paths (resolved, and as given)
	mounts  []string // mount points of the CIPHERDIR
}

// mapPath maps one input. A relative path is relative to CIPHERDIR
// (--decrypt) or to the root of the mount (--encrypt); an absolute one
// must be inside CIPHERDIR (--decrypt) or inside a mount of it
// (--encrypt). The result is relative, like a relative input.
func (m pathMapper) mapPath(in string) (string, error) {
	rel := in
	if filepath.IsAbs(in) {
		bases, what := m.dirs, "CIPHERDIR"
		if !m.decrypt {
			bases, what = m.mounts, "a mount of CIPHERDIR"
		}
		rel = ""
		for _, b := range bases {
			if r, err := filepath.Rel(b, filepath.Clean(in)); err == nil && r != ".." && !strings.HasPrefix(r, "../") {
				rel = r
				break
			}
		}
		if rel == "" {
			return "", fmt.Errorf("not inside %s", what)
		}
	}
	if m.decrypt {
		return cipherdir.DecryptPath(m.root, m.names, rel)
	}
	return cipherdir.EncryptPath(m.root, m.names, rel)
}
