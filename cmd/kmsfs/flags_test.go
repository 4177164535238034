package main

import (
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
)

func TestParseArgsInterleaved(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		min, max int
		wantPos  []string
		wantBool bool
		wantStr  string
		wantErr  error
	}{
		{name: "flags first", args: []string{"--b", "--s", "x", "C", "M"}, min: 2, max: 2, wantPos: []string{"C", "M"}, wantBool: true, wantStr: "x"},
		{name: "flags after positionals", args: []string{"C", "M", "--b", "--s=y"}, min: 2, max: 2, wantPos: []string{"C", "M"}, wantBool: true, wantStr: "y"},
		{name: "flags between", args: []string{"C", "-b", "M"}, min: 2, max: 2, wantPos: []string{"C", "M"}, wantBool: true},
		{name: "double dash ends flags", args: []string{"--", "--b", "M"}, min: 2, max: 2, wantPos: []string{"--b", "M"}},
		{name: "missing argument", args: []string{"C"}, min: 2, max: 2, wantErr: errUsage},
		{name: "extra argument", args: []string{"C", "M", "X"}, min: 2, max: 2, wantErr: errUsage},
		{name: "no limit", args: []string{"a", "b", "c"}, min: 0, max: -1, wantPos: []string{"a", "b", "c"}},
		{name: "unknown flag", args: []string{"--nope", "C"}, min: 1, max: 1, wantErr: errUsage},
		{name: "help", args: []string{"-h"}, min: 1, max: 1, wantErr: flag.ErrHelp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			te := newTestEnv(nil)
			fs := newFlagSet("mount")
			b := fs.Bool("b", false, "")
			s := fs.String("s", "", "")
			pos, err := parseArgs(fs, "mount", tt.args, &te.Env, tt.min, tt.max)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(pos, tt.wantPos) || *b != tt.wantBool || *s != tt.wantStr {
				t.Errorf("got pos=%q b=%v s=%q, want pos=%q b=%v s=%q", pos, *b, *s, tt.wantPos, tt.wantBool, tt.wantStr)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"4096", 4096, true},
		{"4k", 4096, true},
		{"64K", 65536, true},
		{"64KiB", 65536, true},
		{"1M", 1 << 20, true},
		{"1MiB", 1 << 20, true},
		{"0", 0, false},
		{"-4096", 0, false},
		{"4kb", 0, false},
		{"", 0, false},
		{"99999999M", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestHelpForEveryCommand(t *testing.T) {
	// Every command run dispatches has a help text.
	for _, name := range []string{"init", "mount", "unmount", "info", "key", "keysvc", "fsck", "rewrap", "rekey", "version", "help"} {
		if _, ok := commandHelps[name]; !ok {
			t.Errorf("no help for %s", name)
		}
	}
	for name := range commandHelps {
		te := newTestEnv(nil)
		if code := runCmd(t, te, "help", name); code != ExitOK {
			t.Errorf("help %s: exit %d", name, code)
		}
		if !strings.Contains(te.stdout.String(), "Usage: kmsfs "+name) || !strings.Contains(te.stdout.String(), "Example") {
			t.Errorf("help %s lacks usage line or examples:\n%s", name, te.stdout.String())
		}
	}
	// -h on the commands that parse flags prints the same text and exits 0.
	for _, name := range []string{"init", "mount", "unmount", "info", "fsck", "rewrap"} {
		te := newTestEnv(nil)
		if code := runCmd(t, te, name, "-h"); code != ExitOK {
			t.Errorf("%s -h: exit %d", name, code)
		}
		if te.stdout.String() != commandHelps[name] {
			t.Errorf("%s -h printed %q", name, te.stdout.String())
		}
	}
	te := newTestEnv(nil)
	if code := runCmd(t, te); code != ExitUsage || !strings.Contains(te.stderr.String(), "Usage:") {
		t.Errorf("no arguments: exit %d, stderr %q", code, te.stderr.String())
	}
}
