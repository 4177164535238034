package cipherdir

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// plantForeign writes the backing file rel as an attacker would: under a
// second key of the same key service (one the victim's credential may
// decrypt under), with the victim's filesystem ID in the context, so the
// KMS would unwrap it for the victim. It returns the second key's ARN.
func plantForeign(t *testing.T, tt *testTree, rel string, data []byte) string {
	t.Helper()
	foreign := tt.cfg
	foreign.KeyID = newLocalKey(t, tt.store)
	tt.writeWith(t, foreign, rel, data)
	return foreign.KeyID
}

func loadKeyOf(t *testing.T, tt *testTree, trust *Trust, rel string) (FileKey, error) {
	t.Helper()
	fd, err := OpenFile(mustRoot(t, tt.dir), rel, false)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	return LoadKey(context.Background(), tt.store, trust, tt.cfg, nil, fd)
}

// TestPlantedForeignKeyRefused: a file whose key record names a key the
// tree does not trust is refused when opened (LoadKey: the mount and
// rekey), reported by fsck as untrusted-key (which --repair does not
// "fix"), and failed by rewrap, which must not adopt it under the tree's
// key.
func TestPlantedForeignKeyRefused(t *testing.T) {
	tt := newTestTree(t)
	tt.write(t, "mine", []byte("the victim's file"))
	foreign := plantForeign(t, tt, "planted", []byte("attacker content"))
	ctx := context.Background()
	trust := NewTrust(ctx, tt.store, tt.cfg, nil)

	if _, err := loadKeyOf(t, tt, trust, "mine"); err != nil {
		t.Fatalf("own file: %v", err)
	}
	if _, err := loadKeyOf(t, tt, trust, "planted"); !errors.Is(err, ErrUntrustedKey) {
		t.Errorf("open of the planted file: %v, want ErrUntrustedKey", err)
	}

	for _, repair := range []bool{false, true} {
		var reports []FileReport
		sum, err := Check(ctx, CheckOptions{CipherDir: tt.dir, Config: tt.cfg, Keys: tt.store, Repair: repair,
			Report: func(r FileReport) { reports = append(reports, r) }})
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, r := range reports {
			for _, p := range r.Problems {
				kinds = append(kinds, r.Path+":"+p.Kind)
			}
		}
		if !slices.Equal(kinds, []string{"planted:" + ProblemUntrustedKey}) || sum.Damaged != 1 || sum.Repaired != 0 || sum.Remaining != 1 {
			t.Errorf("check (repair %v): findings %v, summary %+v; want planted: untrusted-key, unrepaired", repair, kinds, sum)
		}
	}

	for _, dest := range []string{"", tt.cfg.KeyID} {
		var failed []string
		rw, err := NewRewrapper(ctx, RewrapOptions{CipherDir: tt.dir, Config: tt.cfg, Source: tt.store, DestKey: dest, Force: true,
			Done: func(rel string, err error) {
				if errors.Is(err, ErrUntrustedKey) {
					failed = append(failed, rel)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		sum, err := rw.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Failed != 1 || !slices.Equal(failed, []string{"planted"}) {
			t.Errorf("rewrap --key %q: %+v, untrusted %v; want planted failed", dest, sum, failed)
		}
		info, err := FileInfo(tt.path("planted"))
		if err != nil || info.KeyID != foreign {
			t.Errorf("rewrap --key %q re-wrapped the planted file: key %s, %v", dest, info.KeyID, err)
		}
	}
}

// TestRecordLyingAboutItsKey: a record that names the trusted key but
// holds a blob of another key is refused by the key service itself (the
// expected key is passed to Decrypt and ReEncrypt).
func TestRecordLyingAboutItsKey(t *testing.T) {
	tt := newTestTree(t)
	plantForeign(t, tt, "planted", []byte("attacker content"))
	fd, err := OpenFile(mustRoot(t, tt.dir), "planted", true)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	wk, _, err := ReadKeyRecord(fd, tt.cfg.KeyRecordMode())
	if err != nil {
		t.Fatal(err)
	}
	wk.KeyID = tt.cfg.KeyID // the lie
	if _, err := WriteKeyRecord(fd, nil, wk.MarshalRecord(), tt.cfg.KeyRecordMode()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := LoadKey(ctx, tt.store, NewTrust(ctx, tt.store, tt.cfg, nil), tt.cfg, nil, fd); err == nil {
		t.Error("open of a record lying about its key succeeded")
	}
	rw, err := NewRewrapper(ctx, RewrapOptions{CipherDir: tt.dir, Config: tt.cfg, Source: tt.store, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := rw.Run(ctx); err != nil || sum.Failed != 1 {
		t.Errorf("rewrap of a record lying about its key: %+v, %v; want it failed", sum, err)
	}
}

// TestRewrapMigration: rewrap --key NEW names NEW in the config and keeps
// trusting the old key while it runs, so files under either key open
// (through a Trust that re-reads the config, as a mount's does), and
// drops the old key when every file has moved.
func TestRewrapMigration(t *testing.T) {
	tt := newTestTree(t)
	for _, name := range []string{"a", "b", "c"} {
		tt.write(t, name, []byte("content of "+name))
	}
	old := tt.cfg.KeyID
	second := newLocalKey(t, tt.store)
	ctx := context.Background()
	root := mustRoot(t, tt.dir)
	// A mount from before the migration: it trusts the old key only and
	// re-reads the config for a key it does not know.
	mount := NewTrust(ctx, tt.store, tt.cfg, func() (Config, error) { return LoadConfigAt(root) })
	mount.reloaded = mount.reloaded.Add(-trustReloadEvery) // no wait in the test
	var during []string
	rw, err := NewRewrapper(ctx, RewrapOptions{CipherDir: tt.dir, Config: tt.cfg, Source: tt.store, DestKey: second, Jobs: 1,
		Done: func(rel string, err error) {
			if err != nil {
				t.Errorf("rewrap %s: %v", rel, err)
			}
			if rel != "a" {
				return
			}
			// "a" has moved, "b" and "c" have not.
			cfg, err := LoadConfigAt(root)
			if err != nil || cfg.KeyID != second || !slices.Equal(cfg.PreviousKeys, []string{old}) {
				t.Errorf("config during the migration: %+v, %v", cfg, err)
			}
			for _, name := range []string{"a", "b"} {
				if _, err := loadKeyOf(t, tt, mount, name); err != nil {
					during = append(during, name+": "+err.Error())
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := rw.Run(ctx)
	if err != nil || sum.Rewrapped != 3 || sum.Failed != 0 {
		t.Fatalf("rewrap --key: %+v, %v", sum, err)
	}
	if len(during) > 0 {
		t.Errorf("files that did not open during the migration: %v", during)
	}
	cfg, err := LoadConfig(tt.dir)
	if err != nil || cfg.KeyID != second || cfg.PreviousKeys != nil || !sum.ConfigChanged {
		t.Errorf("config after the migration: %+v, %v; want key %s and no previous keys", cfg, err, second)
	}
	tt.cfg = cfg
	for _, name := range []string{"a", "b", "c"} {
		if got := tt.read(t, name); !bytes.Equal(got, []byte("content of "+name)) {
			t.Errorf("%s after the migration: %q", name, got)
		}
	}
	// The old key is no longer trusted: a file still under it (planted,
	// or made by a mount that was never remounted) is refused.
	stale := tt.cfg
	stale.KeyID = old
	tt.writeWith(t, stale, "stale", []byte("x"))
	if _, err := loadKeyOf(t, tt, NewTrust(ctx, tt.store, cfg, nil), "stale"); !errors.Is(err, ErrUntrustedKey) {
		t.Errorf("a file under the old key after the migration: %v, want ErrUntrustedKey", err)
	}
}
