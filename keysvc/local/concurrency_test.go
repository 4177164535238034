package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/kmsfs/kmsfs/internal/testlog"
)

// createKeysWithAliases creates n keys, each with alias alias/<tag>-<i>,
// and checks a data key round trip through each.
func createKeysWithAliases(s *Store, tag string, n int) error {
	ctx := context.Background()
	for i := range n {
		k, err := s.CreateKey(ctx, CreateKeyInput{Description: fmt.Sprintf("%s #%d", tag, i)})
		if err != nil {
			return err
		}
		name := fmt.Sprintf("alias/%s-%d", tag, i)
		if err := s.CreateAlias(ctx, name, k.KeyID); err != nil {
			return err
		}
		dk, err := s.GenerateDataKey(ctx, name, nil)
		if err != nil {
			return err
		}
		if _, err := s.Decrypt(ctx, dk.Wrapped.Blob, k.ARN, nil); err != nil {
			return err
		}
	}
	return nil
}

// checkAll opens dir afresh and checks it holds want keys and as many
// aliases, each resolving.
func checkAll(t *testing.T, dir string, want int) {
	t.Helper()
	s := openStore(t, dir, newTestClock())
	ctx := context.Background()
	keys, err := s.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	aliases, err := s.ListAliases(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != want || len(aliases) != want {
		t.Fatalf("%d keys and %d aliases, want %d of each", len(keys), len(aliases), want)
	}
	for _, a := range aliases {
		if _, err := s.GenerateDataKey(ctx, a.Name, nil); err != nil {
			t.Fatalf("alias %s: %v", a.Name, err)
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, KeystoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := parseKeystoreFile(raw); err != nil {
		t.Fatalf("keystore.kms does not parse: %v", err)
	}
}

func TestTwoStoresInParallel(t *testing.T) {
	dir := privateDir(t)
	const perWriter = 15
	stores := []*Store{openStore(t, dir, newTestClock()), openStore(t, dir, newTestClock())}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i, s := range stores {
		for g := range 2 {
			wg.Go(func() {
				if err := createKeysWithAliases(s, fmt.Sprintf("s%d-g%d", i, g), perWriter); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Each Store sees the other's writes.
	for i, s := range stores {
		keys, err := s.ListKeys(context.Background())
		if err != nil || len(keys) != 4*perWriter {
			t.Fatalf("store %d sees %d keys (%v)", i, len(keys), err)
		}
	}
	checkAll(t, dir, 4*perWriter)
}

const childEnv = "KMSFS_LOCAL_TEST_CHILD_DIR"

// TestChildProcessCreateKeys is the body of the child processes of
// TestTwoProcesses; it does nothing when run directly.
func TestChildProcessCreateKeys(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("runs only as a child of TestTwoProcesses")
	}
	n, _ := strconv.Atoi(os.Getenv(childEnv + "_N"))
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := createKeysWithAliases(s, fmt.Sprintf("pid%d", os.Getpid()), n); err != nil {
		t.Fatal(err)
	}
}

func TestTwoProcesses(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("child")
	}
	dir := privateDir(t) // empty: the children also race to create root.key and the keystore
	const procs, perProc = 2, 20
	var cmds []*exec.Cmd
	outs := make([]*testlog.Buffer, procs)
	for i := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcessCreateKeys$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+dir, fmt.Sprintf("%s_N=%d", childEnv, perProc))
		outs[i] = &testlog.Buffer{}
		cmd.Stdout, cmd.Stderr = outs[i], outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v\n%s", i, err, outs[i].String())
		}
	}
	checkAll(t, dir, procs*perProc)
}
