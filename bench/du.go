package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
)

// diskSpace is `go run ./bench -du` (make bench-du): the disk space (du,
// allocated blocks) that a text corpus, Go's own source tree
// ($(go env GOROOT)/src), and a file of random data take in a CIPHERDIR,
// for each compression (none, s2, zstd) and chunk size (4, 16, 64 KiB),
// written through a mount with cp and compared with the same data on the
// plain backing file system. The random file is BENCH_SIZE bytes (64 MiB
// with -quick).
func diskSpace(ctx context.Context, s settings) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(s.WorkDir, "kmsfs-du-")
	if err != nil {
		return err
	}
	if !s.Keep {
		defer os.RemoveAll(work)
	}
	bin := filepath.Join(work, "bin")
	if errs := build(ctx, root, bin, []string{"kmsfs"}); errs["kmsfs"] != nil {
		return errs["kmsfs"]
	}
	kmsfs := filepath.Join(bin, "kmsfs")
	goroot, err := runCmd(ctx, nil, "go", "env", "GOROOT")
	if err != nil {
		return fmt.Errorf("go env GOROOT: %w", err)
	}
	corpus := filepath.Join(goroot, "src")

	// The inputs on the plain file system: the reference.
	plain := filepath.Join(work, "plain")
	if err := os.MkdirAll(plain, 0o755); err != nil {
		return err
	}
	if out, err := runCmd(ctx, nil, "cp", "-r", corpus, filepath.Join(plain, "text")); err != nil {
		return fmt.Errorf("cp: %w: %s", err, out)
	}
	randomPath := filepath.Join(plain, "random")
	if err := writeRandom(randomPath, s.Size); err != nil {
		return err
	}
	type row struct {
		name         string
		text, random int64
	}
	apparentText, err := duBytes(ctx, filepath.Join(plain, "text"), true)
	if err != nil {
		return err
	}
	var rows []row
	add := func(name, dir string) error {
		t, err := duBytes(ctx, filepath.Join(dir, "text"), false)
		if err != nil {
			return err
		}
		r, err := duBytes(ctx, filepath.Join(dir, "random"), false)
		if err != nil {
			return err
		}
		rows = append(rows, row{name, t, r})
		return nil
	}
	if err := add("plain", plain); err != nil {
		return err
	}
	type variant struct {
		alg, cs  string
		slotOnly bool // key records in the slot only: no xattr block per file
	}
	var variants []variant
	for _, alg := range []string{"none", "s2", "zstd"} {
		for _, cs := range []string{"4k", "16k", "64k"} {
			variants = append(variants, variant{alg, cs, false})
		}
	}
	// On ext4 with 256-byte inodes a key record of 150-350 bytes does not
	// fit in the inode: the user.kmsfs.key xattr costs a 4 KiB block per
	// file, which dominates a tree of small files. These rows show the
	// same trees with "key_record": "slot" (as init sets up on backing
	// file systems without user xattrs).
	variants = append(variants, variant{"none", "64k", true}, variant{"zstd", "64k", true})
	for _, v := range variants {
		alg, cs := v.alg, v.cs
		{
			name := "kmsfs " + alg + " " + cs
			if v.slotOnly {
				name += " slot-only"
			}
			base := filepath.Join(work, strings.ReplaceAll(name, " ", "-"))
			backing, mnt := filepath.Join(base, "backing"), filepath.Join(base, "mnt")
			for _, d := range []string{backing, mnt} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			kenv := []string{"KMSFS_KEYSTORE=" + filepath.Join(base, "keystore")}
			if out, err := runCmd(ctx, kenv, kmsfs, "init", "--compress", alg, "--chunk-size", cs, backing); err != nil {
				return fmt.Errorf("%s: kmsfs init: %w: %s", name, err, out)
			}
			if v.slotOnly {
				if err := setSlotOnly(filepath.Join(backing, "kmsfs.conf")); err != nil {
					return err
				}
			}
			steps := [][]string{
				{kmsfs, "mount", backing, mnt},
				{"cp", "-r", filepath.Join(plain, "text"), filepath.Join(mnt, "text")},
				{"cp", randomPath, filepath.Join(mnt, "random")},
				{kmsfs, "unmount", mnt},
			}
			for _, st := range steps {
				if out, err := runCmd(ctx, kenv, st[0], st[1:]...); err != nil {
					_ = forceUnmount(mnt)
					return fmt.Errorf("%s: %s: %w: %s", name, strings.Join(st, " "), err, out)
				}
			}
			if err := add(name, backing); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "bench: %s done\n", name)
		}
	}

	fmt.Printf("disk space (du --block-size=1, allocated blocks) of %s (%.1f MiB of files) and %.0f MiB of random data\n\n",
		corpus, float64(apparentText)/(1<<20), float64(s.Size)/(1<<20))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\ttext MiB\ttext / plain du\ttext / file bytes\trandom MiB\trandom / plain du\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.1f\t%.3f\t%.3f\t%.1f\t%.3f\t\n", r.name,
			float64(r.text)/(1<<20), float64(r.text)/float64(rows[0].text), float64(r.text)/float64(apparentText),
			float64(r.random)/(1<<20), float64(r.random)/float64(rows[0].random))
	}
	return tw.Flush()
}

// setSlotOnly sets "key_record": "slot" in the config at path.
func setSlotOnly(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	m["key_record"] = "slot"
	if b, err = json.MarshalIndent(m, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// duBytes runs du -s on path: allocated bytes, or with apparent the sum of
// file sizes.
func duBytes(ctx context.Context, path string, apparent bool) (int64, error) {
	args := []string{"-s", "--block-size=1"}
	if apparent {
		args = append(args, "--apparent-size")
	}
	out, err := runCmd(ctx, nil, "du", append(args, path)...)
	if err != nil {
		return 0, fmt.Errorf("du %s: %w: %s", path, err, out)
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return 0, fmt.Errorf("du %s: no output", path)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

// writeRandom writes n random bytes to path.
func writeRandom(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
