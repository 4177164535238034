package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCheckListenAddress(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		anyAddr bool
		ok      bool
	}{
		{"127.0.0.1:4599", false, true},
		{"127.0.0.2:0", false, true},
		{"[::1]:4599", false, true},
		{"localhost:4599", false, true},
		{":4599", false, false},
		{"0.0.0.0:4599", false, false},
		{"192.0.2.1:4599", false, false},
		{"example.com:4599", false, false},
		{"0.0.0.0:4599", true, true},
		{"127.0.0.1", false, false},
	} {
		err := checkListenAddress(tc.addr, tc.anyAddr)
		if (err == nil) != tc.ok {
			t.Errorf("checkListenAddress(%q, %v) = %v", tc.addr, tc.anyAddr, err)
		}
	}
}

func TestKeysvcCredentials(t *testing.T) {
	te := newTestEnv(map[string]string{envKeystore: filepath.Join(t.TempDir(), "keystore")})
	if code := runCmd(t, te, "keysvc", "credentials", "--admin", "alice"); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	re := regexp.MustCompile(`^AWS_ACCESS_KEY_ID=AKIA[A-Z2-7]{16}\nAWS_SECRET_ACCESS_KEY=[A-Za-z0-9+/]{40}\n$`)
	if !re.MatchString(te.stdout.String()) {
		t.Fatalf("output %q is not exactly the two AWS_ lines", te.stdout.String())
	}
	if code := runCmd(t, te, "keysvc", "credentials", "--admin", "bad name!"); code != ExitKeyService && code != ExitUsage {
		t.Fatalf("bad name: exit %d", code)
	}
	if code := runCmd(t, te, "keysvc", "serve", "--listen", "0.0.0.0:0"); code != ExitUsage {
		t.Fatalf("non-loopback listen: exit %d, want %d", code, ExitUsage)
	}
	if code := runCmd(t, te, "keysvc", "frobnicate"); code != ExitUsage {
		t.Fatalf("unknown subcommand: exit %d", code)
	}
}

// TestKeysvcServeRefusesInsecureSetups checks what `keysvc serve` refuses
// before it listens (issue 10, item 10): --listen-any-address without TLS
// unless --insecure-plaintext, and an --audit-log that is a symbolic link.
// The port is taken, so a command that gets as far as listening fails
// there instead, with another message.
func TestKeysvcServeRefusesInsecureSetups(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "audit.jsonl")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"any address in plain text", []string{"--listen", addr, "--listen-any-address"}, "--insecure-plaintext"},
		{"audit log through a symlink", []string{"--listen", addr, "--audit-log", link}, "symbolic link"},
		{"any address, plain text allowed", []string{"--listen", addr, "--listen-any-address", "--insecure-plaintext"}, "address already in use"},
	} {
		te := newTestEnv(map[string]string{envKeystore: filepath.Join(dir, "ks")})
		if code := runCmd(t, te, append([]string{"keysvc", "serve"}, tc.args...)...); code == ExitOK {
			t.Errorf("%s: exit 0", tc.name)
		}
		if !strings.Contains(te.stderr.String(), tc.want) {
			t.Errorf("%s: stderr %q lacks %q", tc.name, te.stderr.String(), tc.want)
		}
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("the symlink's target was created: %v", err)
	}
}

// TestKeysvcCredentialsPolicies: a credential needs --policy FILE or
// --admin (on main, a bare NAME made a credential that the account
// statement of every CLI key let do everything); list shows each access
// key with its kind of policy; revoke deletes a name's keys.
func TestKeysvcCredentialsPolicies(t *testing.T) {
	te := newTestEnv(map[string]string{envKeystore: filepath.Join(t.TempDir(), "keystore")})
	if code := runCmd(t, te, "keysvc", "credentials", "bob"); code != ExitUsage || !strings.Contains(te.stderr.String(), "--policy FILE") {
		t.Fatalf("neither --policy nor --admin: exit %d, want %d and a message naming both", code, ExitUsage)
	}
	if code := runCmd(t, te, "keysvc", "credentials", "--admin", "--policy", "x.json", "bob"); code != ExitUsage {
		t.Fatalf("--admin and --policy: exit %d, want %d", code, ExitUsage)
	}
	dir := t.TempDir()
	writeFile := func(t *testing.T, path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := filepath.Join(dir, "mount.json")
	bad := filepath.Join(dir, "bad.json")
	writeFile(t, good, `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["kms:GenerateDataKey","kms:Decrypt"],"Resource":"*",
	  "Condition":{"StringEquals":{"kms:EncryptionContext:kmsfs:fs":"0123"}}}}`)
	writeFile(t, bad, `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}`)
	if code := runCmd(t, te, "keysvc", "credentials", "--policy", bad, "bob"); code != ExitUsage || !strings.Contains(te.stderr.String(), "Principal") {
		t.Fatalf("identity policy with a Principal: exit %d, want %d", code, ExitUsage)
	}
	if code := runCmd(t, te, "keysvc", "credentials", "bob", "--policy", good); code != ExitOK {
		t.Fatalf("--policy: exit %d", code)
	}
	if code := runCmd(t, te, "keysvc", "credentials", "--admin", "ops"); code != ExitOK {
		t.Fatalf("--admin: exit %d", code)
	}
	if code := runCmd(t, te, "keysvc", "credentials", "--admin", "list"); code != ExitUsage {
		t.Fatalf("credential named list: exit %d, want %d", code, ExitUsage)
	}
	if code := runCmd(t, te, "keysvc", "credentials", "list"); code != ExitOK {
		t.Fatalf("list: exit %d", code)
	}
	out := te.stdout.String()
	if !regexp.MustCompile(`(?m)^bob +AKIA[A-Z2-7]{16} +\S+ +custom$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^ops +AKIA[A-Z2-7]{16} +\S+ +admin$`).MatchString(out) || strings.Contains(out, "SECRET") {
		t.Fatalf("list output:\n%s", out)
	}
	if code := runCmd(t, te, "keysvc", "credentials", "revoke", "bob"); code != ExitOK || !strings.HasPrefix(te.stdout.String(), "revoked AKIA") {
		t.Fatalf("revoke: exit %d", code)
	}
	if code := runCmd(t, te, "keysvc", "credentials", "revoke", "bob"); code != ExitKeyService {
		t.Fatalf("revoke twice: exit %d, want %d", code, ExitKeyService)
	}
	if code := runCmd(t, te, "keysvc", "credentials", "list"); code != ExitOK || strings.Contains(te.stdout.String(), "bob") {
		t.Fatalf("list after revoke: exit %d\n%s", code, te.stdout.String())
	}
}
