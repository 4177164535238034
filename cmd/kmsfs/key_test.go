package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyCommands(t *testing.T) {
	te, _ := keystoreEnv(t)
	if code := runCmd(t, te, "key", "create", "--description", "team", "--alias", "alias/team", "--rotation-period-days", "365"); code != ExitOK {
		t.Fatalf("key create: exit %d", code)
	}
	id := strings.TrimSpace(te.stdout.String())
	if len(id) != 36 {
		t.Fatalf("key create printed %q, want a key UUID", id)
	}

	if code := runCmd(t, te, "key", "list"); code != ExitOK {
		t.Fatalf("key list: exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(te.stdout.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "KEY ID") {
		t.Fatalf("key list:\n%s", te.stdout.String())
	}
	for _, want := range []string{id, "Enabled", "alias/team", " 1 ", "every 365d", "never"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("key list line %q lacks %q", lines[1], want)
		}
	}

	if code := runCmd(t, te, "key", "rotate", "alias/team"); code != ExitOK {
		t.Fatalf("key rotate: exit %d", code)
	}
	if code := runCmd(t, te, "key", "describe", id); code != ExitOK {
		t.Fatalf("key describe: exit %d", code)
	}
	for _, want := range []string{"versions:", "2", "version 2:", "ON_DEMAND", "(current)", "alias/team", "description:"} {
		if !strings.Contains(te.stdout.String(), want) {
			t.Errorf("describe lacks %q:\n%s", want, te.stdout.String())
		}
	}
	runCmd(t, te, "key", "list")
	if strings.Contains(te.stdout.String(), "never") {
		t.Errorf("list after rotate still says never:\n%s", te.stdout.String())
	}

	// A disabled key cannot back a new CIPHERDIR: exit 4 with a hint.
	if code := runCmd(t, te, "key", "disable", "alias/team"); code != ExitOK {
		t.Fatalf("key disable: exit %d", code)
	}
	dir := filepath.Join(t.TempDir(), "c")
	if code := runCmd(t, te, "init", "--key", "alias/team", dir); code != ExitKeyService || !strings.Contains(te.stderr.String(), "kmsfs: hint: enable the key") {
		t.Errorf("init on a disabled key: exit %d, stderr %q", code, te.stderr.String())
	}
	if code := runCmd(t, te, "key", "enable", id); code != ExitOK {
		t.Fatalf("key enable: exit %d", code)
	}
	if code := runCmd(t, te, "init", "--key", "alias/team", dir); code != ExitOK {
		t.Errorf("init after enable: exit %d", code)
	}

	// Aliases.
	runCmd(t, te, "key", "create")
	id2 := strings.TrimSpace(te.stdout.String())
	for _, step := range []struct {
		args []string
		code int
	}{
		{[]string{"key", "alias", "create", "alias/other", id2}, ExitOK},
		{[]string{"key", "alias", "create", "alias/other", id}, ExitKeyService}, // exists
		{[]string{"key", "alias", "update", "alias/team", id2}, ExitOK},
		{[]string{"key", "alias", "delete", "alias/other"}, ExitOK},
		{[]string{"key", "alias", "frob"}, ExitUsage},
		{[]string{"key", "frob"}, ExitUsage},
		{[]string{"key", "describe"}, ExitUsage},
		{[]string{"key", "describe", "alias/nope"}, ExitKeyService},
		{[]string{"key", "create", "--rotation-period-days", "7"}, ExitUsage},
	} {
		if code := runCmd(t, te, step.args...); code != step.code {
			t.Errorf("%q: exit %d, want %d", step.args, code, step.code)
		}
	}
	if code := runCmd(t, te, "key", "alias", "list"); code != ExitOK {
		t.Fatal("alias list failed")
	}
	out := te.stdout.String()
	if !strings.Contains(out, "alias/team  "+id2) || strings.Contains(out, "alias/other") {
		t.Errorf("alias list:\n%s", out)
	}
}

// TestKeyPolicyCommands: `key policy get` prints the policy (a CLI key's
// is the account statement alone), `key policy put` replaces it from a
// file or standard input and refuses a malformed one.
func TestKeyPolicyCommands(t *testing.T) {
	te, _ := keystoreEnv(t)
	if code := runCmd(t, te, "key", "create", "--alias", "alias/p"); code != ExitOK {
		t.Fatalf("key create: exit %d", code)
	}
	if code := runCmd(t, te, "key", "policy", "get", "alias/p"); code != ExitOK ||
		!strings.Contains(te.stdout.String(), `"arn:aws:iam::000000000000:root"`) || strings.Contains(te.stdout.String(), ":user/") {
		t.Fatalf("key policy get: exit %d", code)
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/ops"},"Action":"kms:*","Resource":"*"}]}`
	file := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(file, []byte(policy+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := runCmd(t, te, "key", "policy", "put", "alias/p", file); code != ExitOK {
		t.Fatalf("key policy put FILE: exit %d", code)
	}
	if code := runCmd(t, te, "key", "policy", "get", "alias/p"); code != ExitOK || strings.TrimSpace(te.stdout.String()) != policy {
		t.Fatalf("key policy get after put: exit %d", code)
	}
	malformed := `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::*:root"},"Action":"kms:*"}]}`
	te.Stdin = strings.NewReader(malformed)
	if code := runCmd(t, te, "key", "policy", "put", "alias/p"); code != ExitKeyService || !strings.Contains(te.stderr.String(), "wildcard") {
		t.Fatalf("key policy put of a partial-wildcard principal from stdin: exit %d, want %d", code, ExitKeyService)
	}
	te.Stdin = strings.NewReader(strings.Replace(policy, "user/ops", "user/dev", 1))
	if code := runCmd(t, te, "key", "policy", "put", "alias/p", "-"); code != ExitOK {
		t.Fatalf("key policy put -: exit %d", code)
	}
	if code := runCmd(t, te, "key", "policy", "frob", "alias/p"); code != ExitUsage {
		t.Fatalf("key policy frob: exit %d, want %d", code, ExitUsage)
	}
}
