package cipherdir

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/names"
)

// The tree-level checks of format v2 (encrypted names, names/FORMAT.md):
// directory ID files, entry names, long-name sidecars, symlink targets
// and kmsfs's temporaries. The walk classifies every backing name with
// names.Classify itself (not IsInternalName, whose v2 rule hides
// everything that is not a user entry: fsck must see those entries).

// Problem kinds of v2 trees (stable strings, like the others).
const (
	ProblemDirIDMissing   = "dirid-missing"   // a directory without ID file: its entries cannot be named (a warning when it has none; --repair gives it an ID)
	ProblemDirIDBad       = "dirid-bad"       // an ID file that is malformed, edited or another filesystem's
	ProblemNameBad        = "name-bad"        // a backing name that does not decode or fails authentication (moved, edited)
	ProblemSidecarMissing = "sidecar-missing" // a hashed long-name entry without its sidecar: its name is lost
	ProblemSidecarBad     = "sidecar-bad"     // a sidecar that is malformed or is not its entry's
	ProblemSidecarOrphan  = "sidecar-orphan"  // a sidecar without its entry (a crash; warning; --repair removes it)
	ProblemTempLeftover   = "temp-leftover"   // a kmsfs.tmp.* file or directory left by a crash (warning; --repair removes it)
	ProblemTargetBad      = "target-bad"      // a symlink whose target does not decrypt, or whose long-target file is missing or bad
	ProblemTargetOrphan   = "target-orphan"   // a long-target file no symlink points at (a crash; warning; --repair removes it)
	ProblemForeign        = "foreign"         // a name kmsfs never writes (a file dropped into CIPHERDIR): invisible in the mount; warning, never removed
)

// unknownName stands for a name that cannot be decrypted in a PlainPath.
const unknownName = "?"

// fileJob is a regular file found by the walk, to be checked.
type fileJob struct {
	rel   string    // backing path, relative to CIPHERDIR
	plain string    // plaintext path ("" in a v1 tree)
	pre   []Problem // findings about its name, from the walk
}

// v2Walk walks a v2 tree for Check.
type v2Walk struct {
	c       *checker
	k       *names.Keys
	root    int
	sum     *CheckSummary
	files   []fileJob
	reports []FileReport    // findings about entries other than regular files
	targets map[string]bool // long-target files referred to by a symlink
	hasTgts bool            // the root has a kmsfs.targets directory
}

// newEntryReport returns a new report for the entry rel (plaintext path
// plain, "" when it has none: kmsfs's own entries).
func newEntryReport(rel, plain string) FileReport {
	return FileReport{Path: rel, PlainPath: plain}
}

// walkV2 walks the v2 tree below root: it counts directories and other
// entries into sum, collects the regular files to check and the findings
// about everything else.
func (c *checker) walkV2(root int, k *names.Keys, sum *CheckSummary) ([]fileJob, []FileReport, error) {
	w := &v2Walk{c: c, k: k, root: root, sum: sum, targets: map[string]bool{}}
	if err := w.dir(root, "", ""); err != nil {
		return nil, nil, err
	}
	if w.hasTgts {
		if err := w.targetFiles(); err != nil {
			return nil, nil, err
		}
	}
	return w.files, w.reports, nil
}

// remove removes the crash remnant of p with rm, with Repair and no mount
// running (a mount's temporaries, sidecars and target files in flight look
// the same as a crash's), and records the outcome in p.
func (w *v2Walk) remove(p *Problem, rm func() error, what string) {
	switch {
	case !w.c.opts.Repair:
	case w.c.opts.Mounted:
		p.Repair = "skipped: CIPHERDIR is mounted (it may be in use)"
	default:
		repaired(p, rm(), what)
	}
}

func joinPlain(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// dir checks the directory dirfd (backing path rel, plaintext path plain;
// both "" for the root) and everything below it.
func (w *v2Walk) dir(dirfd int, rel, plain string) error {
	atRoot := rel == ""
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("walk %s: %w", orDot(rel), err)
	}
	f := os.NewFile(uintptr(fd), orDot(rel))
	list, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("walk %s: %w", orDot(rel), err)
	}
	slices.Sort(list)
	present := map[string]bool{}
	users := 0
	for _, n := range list {
		present[n] = true
		if kd := names.Classify(n); kd == names.KindName || kd == names.KindLongName {
			users++
		}
	}

	// The directory's ID.
	dirRep := newEntryReport(orDot(rel), orDot(plain))
	id, err := ReadDirID(dirfd, w.k)
	idOK := err == nil
	switch {
	case err == nil:
	case errors.Is(err, ErrNoDirID) && users == 0:
		p := dirRep.add(ProblemDirIDMissing, NoChunk, "an empty directory without ID file (a crash in rmdir)")
		p.Warning = true
		if w.c.opts.Repair {
			_, rerr := RepairDirID(dirfd, w.k)
			repaired(p, rerr, "given a fresh ID")
		}
	case errors.Is(err, ErrNoDirID):
		dirRep.add(ProblemDirIDMissing, NoChunk, "no ID file: the names of its %d entries cannot be decrypted (restore %s from a backup)", users, names.DirIDFileName)
	default:
		dirRep.add(ProblemDirIDBad, NoChunk, "%v: the names of its %d entries cannot be decrypted", err, users)
	}
	if len(dirRep.Problems) > 0 {
		w.reports = append(w.reports, dirRep)
	}

	for _, name := range list {
		erel := path.Join(rel, name)
		kind := names.Classify(name)
		switch kind {
		case names.KindDirID:
			continue
		case names.KindTargets:
			if atRoot {
				w.hasTgts = true
				continue
			}
		case names.KindTemp:
			r := newEntryReport(erel, "")
			p := r.add(ProblemTempLeftover, NoChunk, "a temporary left by an interrupted operation")
			p.Warning = true
			w.remove(p, func() error { return removeTemp(dirfd, name) }, "removed")
			w.reports = append(w.reports, r)
			continue
		case names.KindSidecar:
			if !present[name[:len(name)-len(names.SidecarSuffix)]] {
				r := newEntryReport(erel, "")
				p := r.add(ProblemSidecarOrphan, NoChunk, "a sidecar without its entry (an interrupted create or remove)")
				p.Warning = true
				w.remove(p, func() error { return unix.Unlinkat(dirfd, name, 0) }, "removed")
				w.reports = append(w.reports, r)
			}
			continue // a sidecar with its entry is checked with the entry
		}
		if kind != names.KindName && kind != names.KindLongName {
			if IsInternalName(atRoot, name) {
				continue // the config and its temporaries, rekey's temporaries
			}
			r := newEntryReport(erel, "")
			r.add(ProblemForeign, NoChunk, "a name kmsfs never writes: invisible in the mount (left as it is)").Warning = true
			w.reports = append(w.reports, r)
			continue
		}

		// A user entry: its name, then what it is.
		var pre []Problem
		pname := unknownName
		if idOK {
			if n, err := w.entryName(dirfd, id, name, &pre); err == nil {
				pname = n
			}
		} else if kind == names.KindLongName {
			w.sidecarOnly(dirfd, name, &pre)
		}
		eplain := joinPlain(plain, pname)
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue // removed since the listing
			}
			return fmt.Errorf("walk %s: %w", erel, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			w.files = append(w.files, fileJob{rel: erel, plain: eplain, pre: pre})
			continue
		case unix.S_IFDIR:
			w.sum.Directories++
			w.flush(erel, eplain, pre)
			sub, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("walk %s: %w", erel, err)
			}
			err = w.dir(sub, erel, eplain)
			unix.Close(sub)
			if err != nil {
				return err
			}
			continue
		case unix.S_IFLNK:
			w.symlink(dirfd, name, &pre)
		}
		w.sum.Other++
		w.flush(erel, eplain, pre)
	}
	return nil
}

// flush records the findings pre about the entry rel, when there are any.
func (w *v2Walk) flush(rel, plain string, pre []Problem) {
	if len(pre) > 0 {
		w.reports = append(w.reports, FileReport{Path: rel, PlainPath: plain, Problems: pre})
	}
}

// entryName decrypts the user entry name of the directory dirfd (ID id),
// adding a finding to pre when it cannot.
func (w *v2Walk) entryName(dirfd int, id names.DirID, name string, pre *[]Problem) (string, error) {
	add := func(kind, format string, args ...any) {
		*pre = append(*pre, Problem{Kind: kind, Chunk: NoChunk, Detail: fmt.Sprintf(format, args...)})
	}
	enc := name
	if names.Classify(name) == names.KindLongName {
		var err error
		enc, err = ReadSidecar(dirfd, name)
		switch {
		case errors.Is(err, unix.ENOENT):
			add(ProblemSidecarMissing, "the sidecar %s is missing: the entry's name is lost", names.SidecarName(name))
			return "", err
		case err != nil:
			add(ProblemSidecarBad, "%v", err)
			return "", err
		}
	}
	plain, err := w.k.DecryptName(id, enc)
	if err != nil {
		add(ProblemNameBad, "the name does not decrypt in this directory (edited, or moved here from another directory): %v", err)
		return "", err
	}
	return plain, nil
}

// sidecarOnly checks the sidecar of a hashed entry in a directory whose ID
// is unusable (the name itself cannot be checked).
func (w *v2Walk) sidecarOnly(dirfd int, name string, pre *[]Problem) {
	_, err := ReadSidecar(dirfd, name)
	switch {
	case errors.Is(err, unix.ENOENT):
		*pre = append(*pre, Problem{Kind: ProblemSidecarMissing, Chunk: NoChunk, Detail: fmt.Sprintf("the sidecar %s is missing: the entry's name is lost", names.SidecarName(name))})
	case err != nil:
		*pre = append(*pre, Problem{Kind: ProblemSidecarBad, Chunk: NoChunk, Detail: err.Error()})
	}
}

// symlink checks that the backing symlink name in dirfd has a target that
// decrypts, and notes the long-target file it refers to.
func (w *v2Walk) symlink(dirfd int, name string, pre *[]Problem) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		*pre = append(*pre, Problem{Kind: ProblemTargetBad, Chunk: NoChunk, Detail: fmt.Sprintf("readlink: %v", err)})
		return
	}
	link := string(buf[:n])
	if file, long := names.TargetFileName(link); long {
		w.targets[file] = true
	}
	if _, err := ReadTarget(w.root, w.k, link); err != nil {
		*pre = append(*pre, Problem{Kind: ProblemTargetBad, Chunk: NoChunk, Detail: fmt.Sprintf("the target does not decrypt: %v", err)})
	}
}

// targetFiles checks kmsfs.targets: every file must be referred to by a
// symlink (else it is an orphan of an interrupted symlink or unlink).
func (w *v2Walk) targetFiles() error {
	dfd, err := unix.Openat(w.root, names.TargetsDirName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		r := newEntryReport(names.TargetsDirName, "")
		r.add(ProblemForeign, NoChunk, "not a directory: %v", err).Warning = true
		w.reports = append(w.reports, r)
		return nil
	}
	f := os.NewFile(uintptr(dfd), names.TargetsDirName)
	defer f.Close()
	list, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("walk %s: %w", names.TargetsDirName, err)
	}
	slices.Sort(list)
	for _, name := range list {
		rel := names.TargetsDirName + "/" + name
		_, isTarget := names.TargetFileName(names.LongTargetPrefix + name)
		switch {
		case isTarget && w.targets[name]:
		case isTarget:
			r := newEntryReport(rel, "")
			p := r.add(ProblemTargetOrphan, NoChunk, "a long-target file no symlink points at (an interrupted symlink or unlink)")
			p.Warning = true
			w.remove(p, func() error { return unix.Unlinkat(dfd, name, 0) }, "removed")
			w.reports = append(w.reports, r)
		case names.Classify(name) == names.KindTemp:
			r := newEntryReport(rel, "")
			p := r.add(ProblemTempLeftover, NoChunk, "a temporary left by an interrupted operation")
			p.Warning = true
			w.remove(p, func() error { return removeTemp(dfd, name) }, "removed")
			w.reports = append(w.reports, r)
		default:
			r := newEntryReport(rel, "")
			r.add(ProblemForeign, NoChunk, "a name kmsfs never writes (left as it is)").Warning = true
			w.reports = append(w.reports, r)
		}
	}
	return nil
}

// removeTemp removes a temporary file, or a temporary directory of an
// interrupted mkdir (which holds at most an ID file).
func removeTemp(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if errors.Is(err, unix.EISDIR) {
		err = RemoveTempDir(dirfd, name)
	}
	return err
}
