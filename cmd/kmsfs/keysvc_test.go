package main

import (
	"regexp"
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
	te := newTestEnv(map[string]string{envKeystore: t.TempDir()})
	if code := runCmd(t, te, "keysvc", "credentials", "alice"); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	re := regexp.MustCompile(`^AWS_ACCESS_KEY_ID=AKIA[A-Z2-7]{16}\nAWS_SECRET_ACCESS_KEY=[A-Za-z0-9+/]{40}\n$`)
	if !re.MatchString(te.stdout.String()) {
		t.Fatalf("output %q is not exactly the two AWS_ lines", te.stdout.String())
	}
	if code := runCmd(t, te, "keysvc", "credentials", "bad name!"); code != ExitKeyService && code != ExitUsage {
		t.Fatalf("bad name: exit %d", code)
	}
	if code := runCmd(t, te, "keysvc", "serve", "--listen", "0.0.0.0:0"); code != ExitUsage {
		t.Fatalf("non-loopback listen: exit %d, want %d", code, ExitUsage)
	}
	if code := runCmd(t, te, "keysvc", "frobnicate"); code != ExitUsage {
		t.Fatalf("unknown subcommand: exit %d", code)
	}
}
