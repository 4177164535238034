package cipherdir

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kmsfs/kmsfs/names"
)

// v2Check runs Check on a v2 tree and returns every report by backing
// path, and the summary.
func v2Check(t *testing.T, tt *testTree, v *v2Tree, repair, mounted bool) (map[string]FileReport, CheckSummary) {
	t.Helper()
	var mu sync.Mutex
	reps := map[string]FileReport{}
	sum, err := Check(context.Background(), CheckOptions{
		CipherDir: tt.dir, Config: tt.cfg, Keys: tt.store, Names: v.k, Repair: repair, Mounted: mounted,
		Report: func(r FileReport) {
			mu.Lock()
			defer mu.Unlock()
			if len(r.Problems) > 0 {
				reps[r.Path] = r
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, r := range reps {
		t.Logf("%s (%s): %+v", p, r.PlainPath, r.Problems)
	}
	return reps, sum
}

// kinds returns the problem kinds of r.
func kinds(r FileReport) []string {
	var out []string
	for _, p := range r.Problems {
		out = append(out, p.Kind)
	}
	return out
}

func TestCheckV2(t *testing.T) {
	tt := newTestTree(t)
	v := newV2Tree(t, tt.dir)
	long := strings.Repeat("L", 200)
	v.mkdir(t, "docs")
	good := v.entry(t, "docs/good.txt")
	tt.write(t, good, []byte("good"))
	longDir := v.mkdir(t, "docs/"+long)
	inLong := v.entry(t, "docs/"+long+"/f")
	tt.write(t, inLong, []byte("in a long-named directory"))
	v.symlink(t, "docs/short-link", "../x")
	longLink := v.symlink(t, "docs/long-link", strings.Repeat("t", 2000))
	v.symlink(t, "docs/bad-link", "y")
	v.mkdir(t, "empty")
	v.mkdir(t, "lost")
	lostFile := v.entry(t, "lost/file")
	tt.write(t, lostFile, []byte("x"))
	v.mkdir(t, "tampered")
	v.empty(t, "tampered/e")
	moved := v.empty(t, "docs/moved")
	hashedNoSidecar := v.empty(t, "docs/"+strings.Repeat("n", 180))
	badSidecar := v.empty(t, "docs/"+strings.Repeat("s", 180))

	// Clean first.
	if reps, sum := v2Check(t, tt, v, false, false); len(reps) != 0 || sum.Found != 0 || sum.Warnings != 0 {
		t.Fatalf("clean v2 tree: %d reports, summary %+v", len(reps), sum)
	} else if sum.Files != 7 || sum.Empty != 4 || sum.Directories != 5 || sum.Other != 3 {
		t.Errorf("summary %+v: want 7 files (4 empty), 5 directories, 3 symlinks", sum)
	}

	// Damage: each one kind.
	p := func(rel string) string { return filepath.Join(tt.dir, rel) }
	docs := filepath.Dir(good)
	emptyBacking, _ := EncryptPath(v.root, v.k, "empty")
	os.Remove(p(filepath.Join(emptyBacking, names.DirIDFileName))) // dirid-missing, warning
	emptyRel := strings.Split(filepath.Dir(lostFile), "/")[0]      // lost's backing name
	os.Remove(p(filepath.Join(emptyRel, names.DirIDFileName)))     // dirid-missing, error
	tamp, _ := EncryptPath(v.root, v.k, "tampered")
	os.Remove(p(filepath.Join(tamp, names.DirIDFileName)))
	os.WriteFile(p(filepath.Join(tamp, names.DirIDFileName)), newNamesKeys(t).MarshalDirID(names.NewDirID()), 0o444) // dirid-bad
	os.Rename(p(moved), p(filepath.Join(longDir, filepath.Base(moved))))                                             // name-bad
	os.Remove(p(names.SidecarName(hashedNoSidecar)))                                                                 // sidecar-missing
	os.Remove(p(names.SidecarName(badSidecar)))
	os.WriteFile(p(names.SidecarName(badSidecar)), []byte("KMSL\x00\x02xx"), 0o444) // sidecar-bad
	orphan := names.SidecarName(names.HashedName(strings.Repeat("A", 300)))
	os.WriteFile(p(filepath.Join(docs, orphan)), nil, 0o444) // sidecar-orphan
	tmpFile, tmpDir := TempName(), TempName()
	os.WriteFile(p(filepath.Join(docs, tmpFile)), nil, 0o600) // temp-leftover (file)
	os.Mkdir(p(tmpDir), 0o700)                                // temp-leftover (directory)
	os.WriteFile(p(filepath.Join(tmpDir, names.DirIDFileName)), v.k.MarshalDirID(names.NewDirID()), 0o444)
	link, _ := os.Readlink(p(longLink))
	tfile, _ := names.TargetFileName(link)
	os.Remove(p(filepath.Join(names.TargetsDirName, tfile))) // target-bad (missing file)
	bad, _ := EncryptPath(v.root, v.k, "docs/bad-link")
	os.Remove(p(bad))
	os.Symlink("AAAA"+strings.Repeat("B", 60), p(bad)) // target-bad
	_, orphanFile, _ := v.k.EncryptTarget(strings.Repeat("o", 1000))
	on, _ := names.TargetFileName(names.LongTargetPrefix + b64sum(orphanFile))
	os.WriteFile(p(filepath.Join(names.TargetsDirName, on)), orphanFile, 0o444) // target-orphan
	os.WriteFile(p(filepath.Join(docs, "README.txt")), []byte("plain"), 0o644)  // foreign
	os.WriteFile(p("lost+found"), nil, 0o644)                                   // foreign

	reps, sum := v2Check(t, tt, v, false, false)
	want := map[string][]string{
		"empty":  {ProblemDirIDMissing},
		emptyRel: {ProblemDirIDMissing},
		tamp:     {ProblemDirIDBad},
		filepath.Join(longDir, filepath.Base(moved)): {ProblemNameBad},
		hashedNoSidecar:                   {ProblemSidecarMissing},
		badSidecar:                        {ProblemSidecarBad},
		filepath.Join(docs, orphan):       {ProblemSidecarOrphan},
		filepath.Join(docs, tmpFile):      {ProblemTempLeftover},
		tmpDir:                            {ProblemTempLeftover},
		longLink:                          {ProblemTargetBad},
		bad:                               {ProblemTargetBad},
		names.TargetsDirName + "/" + on:   {ProblemTargetOrphan},
		filepath.Join(docs, "README.txt"): {ProblemForeign},
		"lost+found":                      {ProblemForeign},
	}
	want[emptyBacking] = want["empty"]
	delete(want, "empty")
	for rel, w := range want {
		if got := kinds(reps[rel]); !slices.Equal(got, w) {
			t.Errorf("%s: problems %q, want %q", rel, got, w)
		}
	}
	for rel := range reps {
		if _, ok := want[rel]; !ok {
			t.Errorf("unexpected report for %s: %q", rel, kinds(reps[rel]))
		}
	}
	// Plaintext paths: decrypted where possible, "?" where not, none for
	// kmsfs's own entries; never a backing name.
	for rel, wantPlain := range map[string]string{
		emptyBacking:    "empty",
		emptyRel:        "lost",
		longLink:        "docs/long-link",
		hashedNoSidecar: "docs/?",
		filepath.Join(longDir, filepath.Base(moved)): "docs/" + long + "/?",
		filepath.Join(docs, tmpFile):                 "",
	} {
		if got := reps[rel].PlainPath; got != wantPlain {
			t.Errorf("%s: plain path %q, want %q", rel, got, wantPlain)
		}
	}
	// Every regular file is still checked, also under "?" names.
	if sum.Files != 7 {
		t.Errorf("%d files checked, want 7", sum.Files)
	}
	// Warnings: the empty directory's ID, the orphans, the temporaries,
	// the foreign names.
	if sum.Warnings != 7 || sum.Remaining != 7 {
		t.Errorf("summary %+v: want 7 warnings, 7 problems", sum)
	}

	// --repair while mounted removes nothing but gives the empty
	// directory its ID (race-safe with a mount).
	reps, _ = v2Check(t, tt, v, true, true)
	if r := reps[emptyBacking]; len(r.Problems) != 1 || !r.Problems[0].Repaired {
		t.Errorf("mounted --repair of the empty directory: %+v", r.Problems)
	}
	if r := reps[tmpDir]; len(r.Problems) != 1 || r.Problems[0].Repaired || !strings.Contains(r.Problems[0].Repair, "mounted") {
		t.Errorf("mounted --repair of a temporary: %+v", r.Problems)
	}
	// --repair removes the remnants, never a foreign file.
	reps, sum = v2Check(t, tt, v, true, false)
	for _, rel := range []string{tmpDir, filepath.Join(docs, tmpFile), filepath.Join(docs, orphan), names.TargetsDirName + "/" + on} {
		if r := reps[rel]; len(r.Problems) != 1 || !r.Problems[0].Repaired {
			t.Errorf("--repair of %s: %+v", rel, r.Problems)
		}
		if _, err := os.Lstat(p(rel)); !os.IsNotExist(err) {
			t.Errorf("--repair left %s: %v", rel, err)
		}
	}
	for _, rel := range []string{filepath.Join(docs, "README.txt"), "lost+found", hashedNoSidecar} {
		if _, err := os.Lstat(p(rel)); err != nil {
			t.Errorf("--repair removed %s: %v", rel, err)
		}
	}
	_, sum = v2Check(t, tt, v, false, false)
	if sum.Warnings != 2 || sum.Remaining != 7 {
		t.Errorf("after repair: summary %+v, want the 2 foreign warnings and 7 problems", sum)
	}
}
