package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A kmsfs build whose key server is not implemented yet makes kmsfs-aws a
// skipped target, not a failed run.
func TestKmsfsAWSSkipsWithoutKeyServer(t *testing.T) {
	dir := t.TempDir()
	e := env{work: dir, bin: filepath.Join(dir, "bin"), logDir: dir}
	if err := os.Mkdir(e.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := "#!/bin/sh\necho 'kmsfs: keysvc serve: not implemented yet' >&2\nexit 6\n"
	if err := os.WriteFile(filepath.Join(e.bin, "kmsfs"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	tg := &target{Name: "kmsfs-aws"}
	err := setupTarget(context.Background(), e, tg)
	if !errors.Is(err, errSkip) {
		t.Fatalf("setup error = %v, want a skip", err)
	}
	if err := tg.teardown(); err != nil {
		t.Fatalf("teardown: %v", err)
	}
}
