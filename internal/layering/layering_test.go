package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is the module path; patterns without a dot in their first element
// are relative to it.
const module = "github.com/kmsfs/kmsfs"

// rule is one line the imports must not cross. pkg, never and only are
// patterns: an import path relative to the module ("fs", "keysvc/awskms"),
// a full one ("github.com/aws/aws-sdk-go-v2") or a standard library one
// marked "std:" ("std:net/http"), where a trailing "/..." matches the path
// and every path below it and "..." alone the whole module. Imports of a package's own subtree (chunk_test importing chunk,
// cmd/kmsfs importing cmd/kmsfs/internal/x) never break a rule. Test files
// are held to the same rules as the code they test.
type rule struct {
	// pkg is the packages the rule is about.
	pkg string
	// never lists what they must not depend on, directly or through any
	// chain of imports.
	never []string
	// only, when set, is everything outside the standard library they may
	// import directly.
	only []string
	// pending marks a rule whose pkg does not exist yet; every other
	// rule's pkg must match a package, so that a renamed package cannot
	// leave its rule silently checking nothing.
	pending bool
	// why is the architecture's reason, printed with every violation.
	why string
}

// rules are the nevers of doc/ARCHITECTURE.md. Add a line here when a new
// package gets a place in the layering.
var rules = []rule{
	{
		pkg:   "chunk/...",
		never: []string{"..."},
		only:  []string{"golang.org/x/crypto/..."},
		why:   "chunk is the content format: standard library and golang.org/x/crypto only, nothing of the project",
	},
	{
		pkg:   "names/...",
		never: []string{"..."},
		only:  []string{"golang.org/x/crypto/...", "github.com/tink-crypto/tink-go/v2/daead/subtle"},
		why:   "names is the v2 names format: standard library, golang.org/x/crypto and tink's AES-SIV only, nothing of the project",
	},
	{
		pkg:   "codec/...",
		never: []string{"fs/...", "keysvc/...", "cipherdir/...", "cmd/...", "github.com/hanwen/go-fuse/..."},
		why:   "codec only adapts compression libraries to chunk.Compressor: it imports chunk and nothing above it",
	},
	{
		pkg:   "keysvc/...",
		never: []string{"fs/...", "chunk/...", "codec/...", "cipherdir/...", "github.com/hanwen/go-fuse/..."},
		why:   "keysvc is about keys: it knows neither the content format, nor the CIPHERDIR, nor FUSE",
	},
	{
		pkg:   "keysvc/local/...",
		never: []string{"keysvc/kmsserver/...", "std:net/http/..."},
		why:   "keysvc/local is the keystore; the KMS wire server is keysvc/kmsserver, on top of it: the keystore serves nothing",
	},
	{
		pkg:   "cipherdir/...",
		never: []string{"fs/...", "github.com/hanwen/go-fuse/...", "github.com/aws/..."},
		why:   "cipherdir is the CIPHERDIR library under fs and the offline tools: no FUSE, and (as fs imports it) no AWS SDK",
	},
	{
		pkg:   "fs/...",
		never: []string{"github.com/aws/..."},
		why:   "fs reaches keys through the keysvc interface only; the AWS SDK is wired in by cmd",
	},
	{
		pkg:   "...",
		never: []string{"cmd/..."},
		why:   "cmd only wires: nothing imports it",
	},
	{
		pkg:   "internal/mountinfo",
		never: []string{"..."},
		only:  []string{},
		why:   "mountinfo is a leaf helper shared by cmd and bench: standard library only",
	},
	{
		pkg:   "internal/testlog",
		never: []string{"..."},
		only:  []string{},
		why:   "testlog is a leaf test helper any package's tests may import: standard library only",
	},
	{
		pkg:   "integration/...",
		never: []string{"..."},
		why:   "integration tests the built binary from outside: it imports nothing of the project",
	},
}

// goPackage is the part of `go list -json` output used here.
type goPackage struct {
	ImportPath string
	Standard   bool
	ForTest    string
	Imports    []string
	Error      *struct{ Err string }
}

// TestLayering lists every package of the module with its tests and all
// their dependencies (one `go list -deps -test` call) and checks every
// import against rules.
func TestLayering(t *testing.T) {
	pkgs := listPackages(t)
	var own []*goPackage // the module's packages, test variants included
	for _, path := range slices.Sorted(maps.Keys(pkgs)) {
		p := pkgs[path]
		if p.Error != nil {
			t.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		if inModule(p.ImportPath) && !strings.HasSuffix(p.ImportPath, ".test") {
			own = append(own, p)
		}
	}
	// Packages before their test variants, so that a violation of the
	// package is reported once, under its own name.
	slices.SortStableFunc(own, func(a, b *goPackage) int {
		return strings.Compare(a.ForTest, b.ForTest)
	})
	reported := map[[2]string]bool{} // (package without _test, forbidden dep)
	for _, r := range rules {
		matched := false
		for _, p := range own {
			path := plain(p.ImportPath)
			if !match(r.pkg, path) {
				continue
			}
			matched = true
			for _, v := range violations(r, p, pkgs) {
				key := [2]string{strings.TrimSuffix(path, "_test"), v.dep}
				if !reported[key] {
					reported[key] = true
					t.Errorf("%s imports %s%s: %s", describe(p), short(v.dep), v.via, r.why)
				}
			}
		}
		if !matched && !r.pending {
			t.Errorf("rule for %s matches no package: was it renamed? update rules", r.pkg)
		}
	}
}

// violation is one forbidden package a package depends on, and the chain
// of imports that leads there ("" when it is imported directly).
type violation struct {
	dep, via string
}

// violations returns where p breaks r. It walks p's imports breadth first
// and reports each forbidden package at the end of a shortest chain
// without walking on past it (its own imports would only repeat the
// point), and without walking into other packages r is about (they are
// checked, and reported, themselves).
func violations(r rule, p *goPackage, pkgs map[string]*goPackage) []violation {
	self := strings.TrimSuffix(plain(p.ImportPath), "_test")
	ownTree := func(path string) bool { return path == self || strings.HasPrefix(path, self+"/") }
	forbidden := func(path string) bool {
		return slices.ContainsFunc(r.never, func(pat string) bool { return match(pat, path) })
	}
	var out []violation
	prev := map[string]string{p.ImportPath: ""}
	queue := []string{p.ImportPath}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		q := pkgs[cur]
		if q == nil {
			continue
		}
		for _, imp := range q.Imports {
			if _, seen := prev[imp]; seen {
				continue
			}
			prev[imp] = cur
			d := plain(imp)
			switch {
			case ownTree(d):
				queue = append(queue, imp)
			case forbidden(d):
				var chain []string
				for c := cur; c != p.ImportPath; c = prev[c] {
					chain = append(chain, short(plain(c)))
				}
				v := violation{dep: d}
				if len(chain) > 0 {
					slices.Reverse(chain)
					v.via = " (via " + strings.Join(chain, " → ") + ")"
				}
				out = append(out, v)
			case inModule(d) && match(r.pkg, d):
				// Checked on its own.
			default:
				queue = append(queue, imp)
			}
		}
	}
	if r.only != nil {
		for _, imp := range p.Imports {
			d := plain(imp)
			dp := pkgs[imp]
			if ownTree(d) || (dp != nil && dp.Standard) || slices.ContainsFunc(r.only, func(pat string) bool { return match(pat, d) }) {
				continue
			}
			if slices.ContainsFunc(out, func(v violation) bool { return v.dep == d }) {
				continue // already reported by never
			}
			out = append(out, violation{dep: d, via: " (outside the standard library it may import only " + strings.Join(r.only, ", ") + ")"})
		}
	}
	return out
}

// listPackages runs `go list -e -deps -test -json` over the whole module
// and returns every package it prints by its (variant) import path.
func listPackages(t *testing.T) map[string]*goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-deps", "-test", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := map[string]*goPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs[p.ImportPath] = &p
	}
	return pkgs
}

// match reports whether the import path matches the pattern (see rule).
func match(pattern, path string) bool {
	if pattern == "..." {
		return inModule(path)
	}
	first, _, _ := strings.Cut(pattern, "/")
	if std, ok := strings.CutPrefix(pattern, "std:"); ok {
		pattern = std
	} else if !strings.Contains(first, ".") {
		pattern = module + "/" + pattern
	}
	if tree, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == tree || strings.HasPrefix(path, tree+"/")
	}
	return path == pattern
}

// inModule reports whether path is a package of this module.
func inModule(path string) bool {
	return path == module || strings.HasPrefix(path, module+"/")
}

// plain strips the test-variant suffix " [x.test]" from a go list name.
func plain(path string) string {
	p, _, _ := strings.Cut(path, " ")
	return p
}

// short is path relative to the module, for messages.
func short(path string) string {
	if s, ok := strings.CutPrefix(path, module+"/"); ok {
		return s
	}
	return path
}

// describe names a package for a message: "chunk", "chunk (tests)",
// "chunk_test".
func describe(p *goPackage) string {
	s := short(plain(p.ImportPath))
	if p.ForTest != "" && !strings.HasSuffix(s, "_test") {
		s += " (tests)"
	}
	return s
}
