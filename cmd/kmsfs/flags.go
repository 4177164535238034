package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// newFlagSet returns a flag set for the command whose help text is
// commandHelp[name]. Parse errors are returned, not printed: report prints
// them once, in the usual "kmsfs: error:" form.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("kmsfs "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseArgs parses args with fs, allowing flags after positional arguments
// (`kmsfs mount C M --foreground`); "--" ends flag parsing. It checks the
// number of positional arguments against min and max (max < 0: no limit).
// On -h it prints the command's help to env.Stdout and returns flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, name string, args []string, env *Env, minArgs, maxArgs int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(env.Stdout, commandHelp(name))
				return nil, err
			}
			return nil, withKind(errUsage, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// fs.Parse stops at the first non-flag argument, or after "--".
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case len(pos) < minArgs:
		return nil, usageErrorf("%s: missing argument (see 'kmsfs %s -h')", name, name)
	case maxArgs >= 0 && len(pos) > maxArgs:
		return nil, usageErrorf("%s: unexpected argument %q", name, pos[maxArgs])
	}
	return pos, nil
}

// parseSize parses a byte count: a plain integer, or one with a binary
// suffix k/K/KiB (×1024) or m/M/MiB (×1048576).
func parseSize(s string) (int, error) {
	mult := 1
	t := s
	for _, suf := range []struct {
		s string
		m int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"k", 1 << 10}, {"K", 1 << 10}, {"m", 1 << 20}, {"M", 1 << 20}} {
		if strings.HasSuffix(t, suf.s) {
			t, mult = strings.TrimSuffix(t, suf.s), suf.m
			break
		}
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 || n > (1<<30)/mult {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}

// sizeFlag is a flag.Value for parseSize.
type sizeFlag struct{ n *int }

func (f sizeFlag) String() string {
	if f.n == nil {
		return "0"
	}
	return strconv.Itoa(*f.n)
}

func (f sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f.n = n
	return nil
}
