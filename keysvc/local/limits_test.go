package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

// readKeystoreFile returns the bytes of dir's keystore.kms.
func readKeystoreFile(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, KeystoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeyQuota checks the keystore-wide quota on keys: CreateKey past it
// fails with ErrLimitExceeded and leaves the keystore file as it was.
func TestKeyQuota(t *testing.T) {
	dir := privateDir(t)
	s := openStore(t, dir, newTestClock(), func(o *Options) { o.MaxKeys = 3 })
	ctx := context.Background()
	for range 3 {
		mustCreateKey(t, s, CreateKeyInput{})
	}
	before := readKeystoreFile(t, dir)
	_, err := s.CreateKey(ctx, CreateKeyInput{})
	wantErr(t, "CreateKey past the quota", err, keysvc.ErrLimitExceeded)
	if !bytes.Equal(before, readKeystoreFile(t, dir)) {
		t.Error("a refused CreateKey changed the keystore file")
	}
	if keys, err := s.ListKeys(ctx); err != nil || len(keys) != 3 {
		t.Errorf("ListKeys = %d keys, %v; want 3", len(keys), err)
	}
	// Keys pending deletion still count, as in AWS.
	k, err := s.ScheduleKeyDeletion(ctx, func() string { l, _ := s.ListKeys(ctx); return l[0].KeyID }(), 7)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateKey(ctx, CreateKeyInput{})
	wantErr(t, "CreateKey with one key pending deletion "+k.KeyID, err, keysvc.ErrLimitExceeded)
}

// TestFieldLimits checks AWS's limits on every field a caller can grow a
// key with: at the limit it is accepted, one past it is refused.
func TestFieldLimits(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	// Descriptions and tags are counted in characters, as AWS counts them.
	if _, err := s.CreateKey(ctx, CreateKeyInput{Description: strings.Repeat("é", MaxDescriptionSize)}); err != nil {
		t.Errorf("description of %d two-byte characters: %v", MaxDescriptionSize, err)
	}
	_, err := s.CreateKey(ctx, CreateKeyInput{Description: strings.Repeat("é", MaxDescriptionSize+1)})
	wantErr(t, "description over the limit", err, keysvc.ErrInvalidArgument)
	tags := map[string]string{strings.Repeat("ü", MaxTagKeySize): strings.Repeat("ü", MaxTagValueSize)}
	if _, err := s.CreateKey(ctx, CreateKeyInput{Tags: tags}); err != nil {
		t.Errorf("tag key and value at the limit in characters: %v", err)
	}
	_, err = s.CreateKey(ctx, CreateKeyInput{Tags: map[string]string{strings.Repeat("k", MaxTagKeySize+1): ""}})
	wantErr(t, "tag key over the limit", err, keysvc.ErrInvalidArgument)
	_, err = s.CreateKey(ctx, CreateKeyInput{Policy: `{"a":"` + strings.Repeat("p", MaxPolicySize) + `"}`})
	wantErr(t, "policy over the limit", err, keysvc.ErrInvalidArgument)

	k := mustCreateKey(t, s, CreateKeyInput{})
	many := map[string]string{}
	for i := range MaxTags + 1 {
		many[fmt.Sprint("t", i)] = ""
	}
	wantErr(t, "TagResource with 51 tags", s.TagResource(ctx, k.KeyID, many), keysvc.ErrInvalidArgument)
	delete(many, "t0")
	if err := s.TagResource(ctx, k.KeyID, many); err != nil {
		t.Fatalf("TagResource with 50 tags: %v", err)
	}
	wantErr(t, "TagResource to 51 tags", s.TagResource(ctx, k.KeyID, map[string]string{"t0": ""}), keysvc.ErrLimitExceeded)
}

// TestAliasesPerKey checks AWS's quota of 50 aliases per key, for
// CreateAlias and for UpdateAlias moving an alias onto a full key.
func TestAliasesPerKey(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	for i := range MaxAliasesPerKey {
		if err := s.CreateAlias(ctx, fmt.Sprint("alias/a", i), k.KeyID); err != nil {
			t.Fatalf("alias %d: %v", i, err)
		}
	}
	wantErr(t, "51st alias of a key", s.CreateAlias(ctx, "alias/one-too-many", k.KeyID), keysvc.ErrLimitExceeded)
	other := mustCreateKey(t, s, CreateKeyInput{})
	if err := s.CreateAlias(ctx, "alias/other", other.KeyID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "UpdateAlias to a key with 50 aliases", s.UpdateAlias(ctx, "alias/other", k.KeyID), keysvc.ErrLimitExceeded)
}

// TestKeystoreNeverOutgrowsTheLoader checks that no write makes a
// keystore the loader would refuse: the write fails with ErrLimitExceeded,
// the file is unchanged and still opens.
func TestKeystoreNeverOutgrowsTheLoader(t *testing.T) {
	dir := privateDir(t)
	clk := newTestClock()
	s := openStore(t, dir, clk)
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	// The Store's own API cannot make a key this large; write the record
	// directly, as the sum of many keys at their limits would. Each
	// control character takes 6 bytes of JSON.
	before := readKeystoreFile(t, dir)
	err := s.update(ctx, func(d *keystoreData, _ time.Time) error {
		d.Keys[k.KeyID].Description = strings.Repeat("\x01", maxKeystoreSize/6+1)
		return nil
	})
	wantErr(t, "write past the loader's limit", err, keysvc.ErrLimitExceeded)
	if !bytes.Equal(before, readKeystoreFile(t, dir)) {
		t.Fatal("a refused write changed the keystore file")
	}
	if m, err := s.DescribeKeyMetadata(ctx, k.KeyID); err != nil || m.Description != "" {
		t.Fatalf("after a refused write: %q, %v; want the key unchanged", m.Description, err)
	}
	s2 := openStore(t, dir, clk)
	if _, err := s2.DescribeKey(ctx, k.KeyID); err != nil {
		t.Fatalf("the keystore does not load after a refused write: %v", err)
	}
}

// TestCheckKeystoreSize checks the size rule save applies: never past the
// loader's limit; past keystoreBudget only when the keystore does not
// grow, so an administrator can always make room.
func TestCheckKeystoreSize(t *testing.T) {
	for _, tc := range []struct {
		size, old int64
		ok        bool
	}{
		{keystoreBudget, 0, true},
		{keystoreBudget + 1, keystoreBudget, false},
		{keystoreBudget + 1, keystoreBudget + 1, true},
		{keystoreBudget + 1, keystoreBudget + 2, true},
		{maxKeystoreSize, maxKeystoreSize, true},
		{maxKeystoreSize + 1, maxKeystoreSize + 2, false},
	} {
		err := checkKeystoreSize(tc.size, tc.old)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, keysvc.ErrLimitExceeded)) {
			t.Errorf("checkKeystoreSize(%d, %d) = %v, want ok = %v", tc.size, tc.old, err, tc.ok)
		}
	}
}

// TestWorstCaseKeySize builds a key with every field at its limit, in the
// characters JSON escapes most (6 bytes each), with every on-demand
// rotation and every alias, and checks that it adds no more than
// maxKeyRecordSize to the keystore: the bound the quota and budget
// documentation relies on.
func TestWorstCaseKeySize(t *testing.T) {
	dir := privateDir(t)
	s := openStore(t, dir, newTestClock())
	ctx := context.Background()
	empty := len(readKeystoreFile(t, dir))
	tags := map[string]string{}
	for i := range MaxTags {
		key := fmt.Sprintf("%03d", i) + strings.Repeat("<", MaxTagKeySize-3)
		tags[key] = strings.Repeat("\x01", MaxTagValueSize)
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}],"Id":"` +
		strings.Repeat("<", MaxPolicySize-200) + `"}`
	k := mustCreateKey(t, s, CreateKeyInput{
		Description:        strings.Repeat("\x01", MaxDescriptionSize),
		Policy:             policy,
		Tags:               tags,
		RotationPeriodDays: MaxRotationPeriodDays,
		Creator:            strings.Repeat("c", 64),
	})
	for range DefaultMaxOnDemandRotations {
		if _, err := s.RotateKey(ctx, k.KeyID); err != nil {
			t.Fatal(err)
		}
	}
	for i := range MaxAliasesPerKey {
		name := fmt.Sprintf("alias/%02d", i) + strings.Repeat("a", MaxAliasNameSize-len("alias/")-2)
		if err := s.CreateAlias(ctx, name, k.KeyID); err != nil {
			t.Fatal(err)
		}
	}
	got := len(readKeystoreFile(t, dir)) - empty
	t.Logf("worst-case key: %d bytes of keystore (bound %d)", got, maxKeyRecordSize)
	if got > maxKeyRecordSize {
		t.Errorf("a worst-case key takes %d bytes, more than maxKeyRecordSize = %d", got, maxKeyRecordSize)
	}
}
