package main

// The listing jobs (lsl, find) measure what encrypted names cost on every
// readdir and lookup (issue 12). Each walks a tree of empty files built
// once per target, through the mount, before the first round: building
// 100,000 files through FUSE takes far longer than listing them, and the
// jobs only read, so every round lists the same tree, from cold caches
// (runOne drops them before each run).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Directories (under a target's Dir) of the listing jobs' trees.
const (
	lslDir  = "lsl"
	findDir = "find"
)

// treeFilesPerDir is how many files each leaf directory of the find tree
// holds, and treeLevels how deep the leaves are below the tree's root: with
// 100,000 files, 10 × 10 × 10 leaf directories of 100 files each — a
// source tree's shape rather than one flat directory.
const (
	treeFilesPerDir = 100
	treeLevels      = 3
)

// treeDir is one directory of a listing tree and the empty files it holds.
type treeDir struct {
	Path  string // relative to the tree's root; "" is the root itself
	Files int
	First int // index of its first file: names are unique over the tree
}

// A tree is the layout a listing job walks.
type tree struct {
	Root string // relative to the target's Dir
	// Dirs are parents before children; the root is not listed unless it
	// holds files.
	Dirs []treeDir
}

// files is the number of files in t.
func (t tree) files() int {
	n := 0
	for _, d := range t.Dirs {
		n += d.Files
	}
	return n
}

// subdirs is the number of directories below t's root.
func (t tree) subdirs() int {
	n := 0
	for _, d := range t.Dirs {
		if d.Path != "" {
			n++
		}
	}
	return n
}

// entries is what a walk of t sees besides the root: files and directories.
func (t tree) entries() int { return t.files() + t.subdirs() }

// flatTree is one directory of n files: the lsl job's.
func flatTree(root string, n int) tree {
	return tree{Root: root, Dirs: []treeDir{{Path: "", Files: n}}}
}

// fanoutTree spreads n files over leaf directories of at most perDir files,
// levels deep below root, every level with the same fan-out: the smallest
// f with f^levels ≥ the number of leaves. The leaves are filled in order,
// so with n = 10,000 (100 leaves, f = 5) the tree has 4 top directories,
// 20 in the middle and 100 leaves.
func fanoutTree(root string, n, perDir, levels int) tree {
	t := tree{Root: root}
	if n <= 0 {
		return t
	}
	leaves := (n + perDir - 1) / perDir
	f := 1
	for pow(f, levels) < leaves {
		f++
	}
	seen := map[string]bool{}
	first := 0
	for leaf := 0; leaf < leaves; leaf++ {
		// The leaf's path is its index in base f, one digit per level.
		parts := make([]string, levels)
		for l, rest := levels-1, leaf; l >= 0; l, rest = l-1, rest/f {
			parts[l] = fmt.Sprintf("d%02d", rest%f)
		}
		for l := 1; l < levels; l++ {
			p := strings.Join(parts[:l], "/")
			if !seen[p] {
				seen[p] = true
				t.Dirs = append(t.Dirs, treeDir{Path: p})
			}
		}
		files := min(perDir, n-first)
		t.Dirs = append(t.Dirs, treeDir{Path: strings.Join(parts, "/"), Files: files, First: first})
		first += files
	}
	return t
}

func pow(b, e int) int {
	r := 1
	for ; e > 0; e-- {
		r *= b
	}
	return r
}

// treeFileName is the name of file i of a tree: 15 bytes, about what a
// source or document file's name has, so that name encryption does real
// work (a one-block name for gocryptfs' EME, a padded block and a SIV tag
// for kmsfs).
func treeFileName(i int) string { return fmt.Sprintf("file-%06d.txt", i) }

// treeWorkers is how many goroutines create a tree's files. Creates in one
// directory are serialised by its lock, so the find tree's leaf
// directories go to different workers; 8 keeps both CPUs and the daemon's
// request queue busy.
const treeWorkers = 8

// buildTree makes t under dir through the filesystem under test: its
// directories, then its empty files (open O_CREAT|O_EXCL and close, what
// touch does), from treeWorkers goroutines in batches of at most 100 files,
// and syncs the filesystem.
func buildTree(ctx context.Context, dir string, t tree) error {
	root := filepath.Join(dir, t.Root)
	if err := os.Mkdir(root, 0o755); err != nil {
		return fmt.Errorf("build %s: %w", t.Root, err)
	}
	type batch struct{ dir, first, n int }
	var batches []batch
	for i, d := range t.Dirs {
		if d.Path != "" {
			if err := os.Mkdir(filepath.Join(root, d.Path), 0o755); err != nil {
				return fmt.Errorf("build %s: %w", t.Root, err)
			}
		}
		for k := 0; k < d.Files; k += 100 {
			batches = append(batches, batch{i, d.First + k, min(100, d.Files-k)})
		}
	}
	work := make(chan batch)
	errs := make(chan error, treeWorkers)
	var wg sync.WaitGroup
	for w := 0; w < treeWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				d := filepath.Join(root, t.Dirs[b.dir].Path)
				for i := b.first; i < b.first+b.n; i++ {
					f, err := os.OpenFile(filepath.Join(d, treeFileName(i)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
					if err == nil {
						err = f.Close()
					}
					if err != nil {
						errs <- fmt.Errorf("build %s: %w", t.Root, err)
						return
					}
				}
			}
		}()
	}
	var err error
feed:
	for _, b := range batches {
		if err = ctx.Err(); err != nil {
			break
		}
		select {
		case work <- b:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err != nil {
		return err
	}
	return syncfs(root)
}

// runListing runs the listing job name over t under dir and returns the
// entries it listed. It runs the real tools, as a user would:
//
//	lsl:  LC_ALL=C ls -l --color=never ROOT   (getdents64, then statx and two
//	      getxattr per entry: security.selinux and the ACL)
//	find: LC_ALL=C find ROOT -printf .        (getdents64 of every directory,
//	      fstatat of directories only: find takes file types from d_type)
//
// and counts their output (a line per entry after "total"; a byte per
// entry, the root's included) to check that every entry was listed.
func runListing(ctx context.Context, name, dir string, t tree) (int, error) {
	var args []string
	want := t.entries()
	switch name {
	case "lsl":
		args = []string{"ls", "-l", "--color=never", t.Root}
	case "find":
		args = []string{"find", t.Root, "-printf", "."}
	default:
		panic("bench: internal error: not a listing job: " + name)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(childEnv(nil), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, lastLine(stderr.String()))
	}
	got, err := listedEntries(name, stdout.Bytes())
	if err != nil {
		return 0, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	if got != want {
		return 0, fmt.Errorf("%s listed %d entries, want %d", strings.Join(args, " "), got, want)
	}
	return got, nil
}

// listedEntries counts the entries in the output of a listing job's tool,
// the listed directory itself not counted.
func listedEntries(name string, out []byte) (int, error) {
	switch name {
	case "lsl":
		if !bytes.HasPrefix(out, []byte("total ")) {
			return 0, fmt.Errorf("output does not start with \"total \": %.40q", out)
		}
		return bytes.Count(out, []byte("\n")) - 1, nil
	case "find":
		if len(out) == 0 || bytes.Count(out, []byte(".")) != len(out) {
			return 0, fmt.Errorf("output is not one dot per entry: %.40q", out)
		}
		return len(out) - 1, nil
	}
	return 0, fmt.Errorf("not a listing job: %s", name)
}

// listingTree is the tree the listing job name walks with settings s.
func listingTree(name string, s settings) tree {
	if name == "lsl" {
		return flatTree(lslDir, s.LsFiles)
	}
	return fanoutTree(findDir, s.TreeFiles, treeFilesPerDir, treeLevels)
}

// prepareListing builds the tree of listing job name on a target, once,
// and returns how long it took.
func prepareListing(ctx context.Context, name, dir string, s settings) (time.Duration, error) {
	start := time.Now()
	if err := buildTree(ctx, dir, listingTree(name, s)); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// describeTree says what a listing job walks, for the progress lines.
func describeTree(t tree) string {
	if t.subdirs() == 0 {
		return strconv.Itoa(t.files()) + " files in one directory"
	}
	return fmt.Sprintf("%d files in %d directories", t.files(), t.subdirs())
}
