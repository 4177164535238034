package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/codec"
	"github.com/kmsfs/kmsfs/names"
)

// Errors that carry fsck's outcome to exitCode. Their messages are the
// last line of the report.
var (
	errFsckProblems    = errors.New("fsck: problems found")
	errFsckRemain      = errors.New("fsck: problems remain after repair")
	errFsckUnavailable = errors.New("fsck: key service unavailable")
	errFsckRepaired    = errors.New("fsck: every problem was repaired")
	errFsckBusy        = errors.New("fsck: files busy")
)

// fsckReport is the --json document.
type fsckReport struct {
	CipherDir string                 `json:"cipherdir"`
	Repair    bool                   `json:"repair"`
	Files     []cipherdir.FileReport `json:"files"` // files with findings only
	Summary   cipherdir.CheckSummary `json:"summary"`
	ExitCode  int                    `json:"exit_code"`
}

// runFsck implements `kmsfs fsck`: every backing regular file's header,
// key records (both copies, unwrapped by the key service) and chunks are
// checked with the rules of chunk/FORMAT.md; findings go to stdout one
// line each (or as one JSON document), progress to stderr. See
// cipherdir.Check for what --repair and --zero-unreadable change.
func runFsck(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("fsck")
	repair := fset.Bool("repair", false, "fix what is safe: key record copies, crash remnants, HAS_DATA")
	zero := fset.Bool("zero-unreadable", false, "with --repair: replace unreadable chunks by zeros (data loss; each is listed)")
	keys := fset.Bool("keys", false, "also count files per key and key material")
	asJSON := fset.Bool("json", false, "print one JSON document instead of lines")
	jobs := fset.Int("jobs", 2, "files checked at once")
	force := fset.Bool("force", false, "repair even though CIPHERDIR is mounted")
	wait := fset.Bool("wait", false, "wait for files a shared-mode mount is writing, instead of reporting them busy")
	endpoint := fset.String("kms-endpoint", "", "AWS KMS endpoint URL (aws file systems)")
	var ks keystoreFlags
	ks.register(fset)
	pos, err := parseArgs(fset, "fsck", args, env, 1, 1)
	if err != nil {
		return err
	}
	if *zero && !*repair {
		return usageErrorf("fsck: --zero-unreadable needs --repair")
	}
	if *jobs < 1 || *jobs > maxRewrapJobs {
		return usageErrorf("fsck: --jobs must be 1..%d", maxRewrapJobs)
	}
	dir, err := resolveDir(pos[0], "CIPHERDIR")
	if err != nil {
		return withKind(errCipherDir, fmt.Errorf("fsck: %w", err))
	}
	cfg, err := cipherdir.LoadConfig(dir)
	if err != nil {
		return withHint(withKind(errCipherDir, err), "CIPHERDIR must be a directory made by 'kmsfs init'")
	}
	mountpoint, mounted := mountOf(dir)
	if *repair && !*force && mounted {
		return withHint(withKind(errCipherDir, fmt.Errorf("fsck: %s is mounted at %s; --repair needs it unmounted", dir, mountpoint)),
			"run 'kmsfs unmount "+mountpoint+"' first, or check without --repair")
	}
	svc, closeSvc, err := openKeyService(ctx, cfg.KMS, &ks, *endpoint, env, nil)
	if err != nil {
		return err
	}
	defer closeSvc()
	var nk *names.Keys
	if hasEncryptedNames(cfg) {
		root, err := cipherdir.OpenRoot(dir)
		if err != nil {
			return withKind(errCipherDir, err)
		}
		nk, err = openNamesKey(ctx, svc, cfg, root)
		unix.Close(root)
		if err != nil {
			return fmt.Errorf("fsck: names key: %w", err)
		}
	}

	var prog *progress
	var found []cipherdir.FileReport
	out := env.Stdout
	opts := cipherdir.CheckOptions{
		CipherDir:      dir,
		Config:         cfg,
		Keys:           svc,
		Names:          nk,
		Mounted:        mounted,
		Codecs:         codec.All(),
		Repair:         *repair,
		ZeroUnreadable: *zero,
		Jobs:           *jobs,
		Wait:           *wait,
		Files:          func(n int) { prog = newProgress(env.Stderr, "fsck", int64(n)) },
		Report: func(r cipherdir.FileReport) {
			if !r.NotFile {
				prog.add(1)
			}
			if len(r.Problems) == 0 {
				return
			}
			found = append(found, r)
			if !*asJSON {
				prog.above(func() { printFileReport(out, r) })
			}
		},
	}
	sum, err := cipherdir.Check(ctx, opts)
	if prog != nil {
		prog.stop()
	}
	if err != nil {
		return withKind(errCipherDir, err)
	}
	result := fsckResult(sum, *repair)
	code := exitCode(result)
	if *asJSON {
		sort.Slice(found, func(i, j int) bool { return found[i].Path < found[j].Path })
		if !*keys {
			sum.Keys = nil
		}
		doc := fsckReport{CipherDir: dir, Repair: *repair, Files: found, Summary: sum, ExitCode: code}
		if doc.Files == nil {
			doc.Files = []cipherdir.FileReport{}
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			return err
		}
		return result
	}
	if *keys {
		printKeyUsage(out, sum.Keys)
	}
	fmt.Fprintf(out, "fsck: %d files (%d empty), %d directories, %d chunks, %d plaintext bytes checked\n",
		sum.Files, sum.Empty, sum.Directories, sum.Chunks, sum.Bytes)
	fmt.Fprintf(out, "fsck: %d problems in %d files", sum.Found, countFiles(found))
	if *repair {
		fmt.Fprintf(out, ", %d repaired, %d remain", sum.Repaired, sum.Remaining)
	}
	fmt.Fprintf(out, "; %d warnings", sum.Warnings)
	if sum.Unavailable > 0 {
		fmt.Fprintf(out, "; %d files not checked (key service unavailable)", sum.Unavailable)
	}
	if sum.Busy > 0 {
		fmt.Fprintf(out, "; %d files not checked (busy: a mount in shared mode was writing them)", sum.Busy)
	}
	fmt.Fprintln(out)
	if sum.Freed > 0 {
		fmt.Fprintf(out, "fsck: freed %d bytes: punched the zero tails of compressed chunks that were allocated\n", sum.Freed)
	}
	if sum.XattrsOff && cfg.KeyRecordMode() == cipherdir.KeyRecordXattrSlot {
		fmt.Fprintln(out, "fsck: note: the backing filesystem keeps no user xattrs; key records were read from the key-record slots")
	}
	if result == nil {
		fmt.Fprintln(out, "fsck: no problems found")
	}
	return result
}

// fsckResult classifies a run for exitCode: problems that remain win over
// files left unchecked (the key service's failure first, then busy files),
// which win over repairs done.
func fsckResult(sum cipherdir.CheckSummary, repair bool) error {
	switch {
	case sum.Remaining > 0 && repair:
		return withKind(errFsckRemain, fmt.Errorf("%d problems remain after repair (listed above)", sum.Remaining))
	case sum.Remaining > 0:
		return withHint(withKind(errFsckProblems, fmt.Errorf("%d problems found (listed above)", sum.Remaining)),
			"'kmsfs fsck --repair' fixes what is safe; --repair --zero-unreadable also replaces unreadable chunks by zeros")
	case sum.Unavailable > 0:
		return withKind(errFsckUnavailable, fmt.Errorf("%d files could not be checked: the key service did not answer", sum.Unavailable))
	case sum.Busy > 0:
		return withHint(withKind(errFsckBusy, fmt.Errorf("%d files were not checked: a mount in shared mode kept writing them", sum.Busy)),
			"run fsck again, or with --wait")
	case sum.Repaired > 0:
		return withKind(errFsckRepaired, fmt.Errorf("%d problems found and repaired; the tree is now clean", sum.Repaired))
	}
	return nil
}

func countFiles(found []cipherdir.FileReport) int {
	n := 0
	for _, r := range found {
		for _, p := range r.Problems {
			if !p.Warning {
				n++
				break
			}
		}
	}
	return n
}

// printFileReport prints one line per finding:
// PATH: file ID: chunk N: KIND: detail [repaired: …]. In a tree with
// encrypted names PATH is "PLAIN (backing BACKING)" for user entries
// ("?" for a name that does not decrypt) and the backing path for
// kmsfs's own.
func printFileReport(w io.Writer, r cipherdir.FileReport) {
	path := r.Path
	if r.PlainPath != "" {
		path = r.PlainPath + " (backing " + r.Path + ")"
	}
	id := r.FileID
	if id == "" {
		id = "-"
	}
	for _, p := range r.Problems {
		where := "file"
		if p.Chunk != cipherdir.NoChunk {
			where = fmt.Sprintf("chunk %d", p.Chunk)
		}
		level := ""
		if p.Warning {
			level = "warning: "
		}
		line := fmt.Sprintf("%s: file %s: %s: %s%s: %s", path, id, where, level, p.Kind, p.Detail)
		switch {
		case p.Repaired:
			line += " [repaired: " + p.Repair + "]"
		case p.Repair != "":
			line += " [repair " + p.Repair + "]"
		}
		fmt.Fprintln(w, line)
	}
	if len(r.Zeroed) > 0 {
		s := make([]string, len(r.Zeroed))
		for i, c := range r.Zeroed {
			s[i] = fmt.Sprint(c)
		}
		fmt.Fprintf(w, "%s: file %s: zeroed chunks: %s\n", path, id, strings.Join(s, " "))
	}
}

// printKeyUsage prints the files per key and key material (--keys).
func printKeyUsage(w io.Writer, keys []cipherdir.KeyUsage) {
	fmt.Fprintln(w, "keys:")
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %d files\n", k.KeyID, k.Files)
		mats := make([]string, 0, len(k.Materials))
		for m := range k.Materials {
			mats = append(mats, m)
		}
		sort.Strings(mats)
		for _, m := range mats {
			name := m
			if name == "" {
				name = "(no key material ID)"
			}
			fmt.Fprintf(w, "    material %s: %d files\n", name, k.Materials[m])
		}
	}
}

// above runs print, which writes to another stream than the bar's (the
// findings go to stdout), with the bar cleared first and redrawn after, so
// a terminal shows both intact.
func (p *progress) above(print func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		io.WriteString(p.out, "\r\033[K")
	}
	print()
	if p.tty {
		p.drawLocked()
	}
}
