package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestKeystoreDir(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]string{"KMSFS_KEYSTORE": "/ks/env", "XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}
	tests := []struct {
		name string
		flag string
		vars map[string]string
		want string
	}{
		{"flag wins", "/ks/flag", all, "/ks/flag"},
		{"relative flag made absolute", "ks", all, filepath.Join(wd, "ks")},
		{"KMSFS_KEYSTORE", "", all, "/ks/env"},
		{"XDG_DATA_HOME", "", map[string]string{"XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/kmsfs"},
		{"HOME", "", map[string]string{"HOME": "/home/u"}, "/home/u/.local/share/kmsfs"},
		{"empty values are unset", "", map[string]string{"KMSFS_KEYSTORE": "", "XDG_DATA_HOME": "", "HOME": "/h"}, "/h/.local/share/kmsfs"},
	}
	for _, tt := range tests {
		te := newTestEnv(tt.vars)
		got, err := keystoreDir(tt.flag, &te.Env)
		if err != nil || got != tt.want {
			t.Errorf("%s: keystoreDir = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	te := newTestEnv(nil)
	if _, err := keystoreDir("", &te.Env); err == nil || hintFor(err) == "" {
		t.Errorf("no HOME: err = %v, want an error with a hint", err)
	}
}

func TestPassphraseFile(t *testing.T) {
	te := newTestEnv(map[string]string{"KMSFS_PASSPHRASE_FILE": "/env/pass"})
	if p, _ := passphraseFile("/flag/pass", &te.Env); p != "/flag/pass" {
		t.Errorf("flag: got %q", p)
	}
	if p, _ := passphraseFile("", &te.Env); p != "/env/pass" {
		t.Errorf("env: got %q", p)
	}
	if p, _ := passphraseFile("", &newTestEnv(nil).Env); p != "" {
		t.Errorf("none: got %q", p)
	}
}

func TestReadPassphrase(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		content string
		want    string
		ok      bool
	}{
		{"correct horse\n", "correct horse", true},
		{"correct horse\r\n", "correct horse", true},
		{"no newline", "no newline", true},
		{"two\n\n", "two\n", true}, // only one trailing newline is dropped
		{" spaces kept ", " spaces kept ", true},
		{"\n", "", false},
		{"", "", false},
	}
	for i, tt := range tests {
		p := filepath.Join(dir, "pass"+string(rune('a'+i)))
		if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readPassphrase(p)
		if (err == nil) != tt.ok || string(got) != tt.want {
			t.Errorf("readPassphrase(%q) = %q, %v; want %q ok=%v", tt.content, got, err, tt.want, tt.ok)
		}
	}
	if _, err := readPassphrase(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}
