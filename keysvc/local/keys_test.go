package local

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keysvc"
)

func TestCreateDescribeList(t *testing.T) {
	clk := newTestClock()
	s := openStore(t, privateDir(t), clk)
	ctx := context.Background()
	a := mustCreateKey(t, s, CreateKeyInput{Description: "first"})
	clk.Advance(time.Second)
	b := mustCreateKey(t, s, CreateKeyInput{Description: "second", RotationPeriodDays: 180, Creator: "alice"})
	if !uuidRE.MatchString(a.KeyID) || a.ARN != "arn:aws:kms:local:000000000000:key/"+a.KeyID {
		t.Fatalf("bad ID/ARN %q %q", a.KeyID, a.ARN)
	}
	if a.State != KeyStateEnabled || !a.Enabled || a.KeyMaterialCount != 1 || !materialIDRE.MatchString(a.CurrentKeyMaterialID) {
		t.Fatalf("new key metadata %+v", a)
	}
	if a.RotationEnabled || !b.RotationEnabled || b.RotationPeriodDays != 180 || !b.NextRotationDate.Equal(clk.Now().AddDate(0, 0, 180)) {
		t.Fatalf("rotation metadata %+v / %+v", a, b)
	}
	if a.Creator != RootPrincipal || b.Creator != "arn:aws:iam::000000000000:user/alice" {
		t.Fatalf("creators %q %q", a.Creator, b.Creator)
	}
	for _, ref := range []string{a.KeyID, a.ARN} {
		info, err := s.DescribeKey(ctx, ref)
		if err != nil || info.KeyID != a.KeyID || info.ARN != a.ARN || !info.Enabled || info.State != "Enabled" || info.CurrentKeyMaterialID != a.CurrentKeyMaterialID {
			t.Fatalf("DescribeKey(%s) = %+v, %v", ref, info, err)
		}
	}
	keys, err := s.ListKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].KeyID != a.KeyID || keys[1].KeyID != b.KeyID {
		t.Fatalf("ListKeys = %+v, %v", keys, err)
	}
	for _, ref := range []string{"", "nope", "alias/none", "arn:aws:kms:us-east-1:111111111111:key/" + a.KeyID, "12345678-1234-4123-8123-123456789012"} {
		_, err := s.DescribeKey(ctx, ref)
		if ref == "" {
			wantErr(t, "DescribeKey(\"\")", err, keysvc.ErrInvalidArgument)
		} else {
			wantErr(t, "DescribeKey("+ref+")", err, keysvc.ErrNotFound)
		}
	}
}

func TestCreateKeyValidation(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	bad := []CreateKeyInput{
		{Description: strings.Repeat("d", MaxDescriptionSize+1)},
		{RotationPeriodDays: 89},
		{RotationPeriodDays: 2561},
		{Policy: "not json"},
		{Tags: map[string]string{"aws:x": "v"}},
		{Tags: map[string]string{"": "v"}},
		{Tags: map[string]string{"k": strings.Repeat("v", MaxTagValueSize+1)}},
	}
	for _, in := range bad {
		_, err := s.CreateKey(ctx, in)
		wantErr(t, "CreateKey", err, keysvc.ErrInvalidArgument)
	}
	for _, days := range []int{90, 2560} {
		if _, err := s.CreateKey(ctx, CreateKeyInput{RotationPeriodDays: days}); err != nil {
			t.Fatalf("period %d: %v", days, err)
		}
	}
}

func TestKeyStates(t *testing.T) {
	clk := newTestClock()
	s := openStore(t, privateDir(t), clk)
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	dk, err := s.GenerateDataKey(ctx, k.KeyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	crypto := func(want error) {
		t.Helper()
		_, err := s.GenerateDataKey(ctx, k.KeyID, nil)
		wantErr(t, "GenerateDataKey", err, want)
		_, err = s.Encrypt(ctx, k.KeyID, []byte("x"), nil)
		wantErr(t, "Encrypt", err, want)
		_, err = s.Decrypt(ctx, dk.Wrapped.Blob, "", nil)
		wantErr(t, "Decrypt", err, want)
		_, err = s.ReEncrypt(ctx, dk.Wrapped.Blob, "", nil, k.KeyID)
		wantErr(t, "ReEncrypt", err, want)
	}
	if err := s.DisableKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	crypto(keysvc.ErrDisabled)
	_, err = s.RotateKey(ctx, k.KeyID)
	wantErr(t, "RotateKey on Disabled", err, keysvc.ErrDisabled)
	wantErr(t, "EnableKeyRotation on Disabled", s.EnableKeyRotation(ctx, k.KeyID, 0), keysvc.ErrDisabled)
	info, _ := s.DescribeKey(ctx, k.KeyID)
	if info.Enabled || info.State != "Disabled" {
		t.Fatalf("disabled key described as %+v", info)
	}
	if err := s.EnableKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	crypto(nil)

	for _, days := range []int{6, 31, -1} {
		_, err := s.ScheduleKeyDeletion(ctx, k.KeyID, days)
		wantErr(t, "ScheduleKeyDeletion window", err, keysvc.ErrInvalidArgument)
	}
	_, err = s.CancelKeyDeletion(ctx, k.KeyID)
	wantErr(t, "CancelKeyDeletion of an enabled key", err, keysvc.ErrInvalidState)
	m, err := s.ScheduleKeyDeletion(ctx, k.KeyID, 7)
	if err != nil || m.State != KeyStatePendingDeletion || !m.DeletionDate.Equal(clk.Now().AddDate(0, 0, 7)) || m.PendingWindowDays != 7 {
		t.Fatalf("ScheduleKeyDeletion = %+v, %v", m, err)
	}
	crypto(keysvc.ErrInvalidState)
	wantErr(t, "EnableKey pending deletion", s.EnableKey(ctx, k.KeyID), keysvc.ErrInvalidState)
	wantErr(t, "DisableKey pending deletion", s.DisableKey(ctx, k.KeyID), keysvc.ErrInvalidState)
	_, err = s.ScheduleKeyDeletion(ctx, k.KeyID, 10)
	wantErr(t, "ScheduleKeyDeletion twice", err, keysvc.ErrInvalidState)
	m, err = s.CancelKeyDeletion(ctx, k.KeyID)
	if err != nil || m.State != KeyStateDisabled || !m.DeletionDate.IsZero() {
		t.Fatalf("CancelKeyDeletion = %+v, %v", m, err)
	}
	crypto(keysvc.ErrDisabled)
}

func TestScheduledDeletionHappens(t *testing.T) {
	clk := newTestClock()
	dir := privateDir(t)
	s := openStore(t, dir, clk)
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	keep := mustCreateKey(t, s, CreateKeyInput{})
	if err := s.CreateAlias(ctx, "alias/doomed", k.KeyID); err != nil {
		t.Fatal(err)
	}
	dk, err := s.GenerateDataKey(ctx, k.KeyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ScheduleKeyDeletion(ctx, k.KeyID, 7); err != nil {
		t.Fatal(err)
	}
	clk.Advance(7*day - time.Second)
	if _, err := s.DescribeKey(ctx, k.KeyID); err != nil {
		t.Fatalf("deleted a second early: %v", err)
	}
	clk.Advance(time.Second)
	_, err = s.DescribeKey(ctx, k.KeyID)
	wantErr(t, "DescribeKey after deletion", err, keysvc.ErrNotFound)
	_, err = s.Decrypt(ctx, dk.Wrapped.Blob, "", nil)
	wantErr(t, "Decrypt after deletion", err, keysvc.ErrInvalidCiphertext)
	aliases, _ := s.ListAliases(ctx, "")
	keys, _ := s.ListKeys(ctx)
	if len(aliases) != 0 || len(keys) != 1 || keys[0].KeyID != keep.KeyID {
		t.Fatalf("after deletion: aliases %v keys %v", aliases, keys)
	}
	s.Close()
	// The deletion was written: the file no longer holds the key.
	s2 := openStore(t, dir, clk)
	s2.mu.RLock()
	_, present := s2.data.Keys[k.KeyID]
	s2.mu.RUnlock()
	if present {
		t.Fatal("deleted key still in keystore.kms")
	}
}

func TestDeletionAppliedOnOpen(t *testing.T) {
	clk := newTestClock()
	dir := privateDir(t)
	s := openStore(t, dir, clk)
	k := mustCreateKey(t, s, CreateKeyInput{})
	if _, err := s.ScheduleKeyDeletion(context.Background(), k.KeyID, 30); err != nil {
		t.Fatal(err)
	}
	s.Close()
	clk.Advance(31 * day)
	s2 := openStore(t, dir, clk)
	s2.mu.RLock()
	n := len(s2.data.Keys)
	s2.mu.RUnlock()
	if n != 0 {
		t.Fatal("Open did not delete a key past its deletion date")
	}
}

func TestRotationKeepsOldMaterial(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock(), func(o *Options) { o.MaxOnDemandRotations = -1 })
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	ec := keysvc.EncryptionContext{keysvc.ContextFilesystemID: "fs", keysvc.ContextFileID: "f"}
	type made struct {
		dk  keysvc.DataKey
		mat string
	}
	var blobs []made
	current := k.CurrentKeyMaterialID
	const rotations = 40
	for i := 0; i <= rotations; i++ {
		dk, err := s.GenerateDataKey(ctx, k.KeyID, ec)
		if err != nil {
			t.Fatal(err)
		}
		if dk.Wrapped.KeyMaterialID != current {
			t.Fatalf("rotation %d: new blob uses %s, want newest %s", i, dk.Wrapped.KeyMaterialID, current)
		}
		blobs = append(blobs, made{dk, current})
		if i < rotations {
			m, err := s.RotateKey(ctx, k.ARN)
			if err != nil {
				t.Fatal(err)
			}
			if m.CurrentKeyMaterialID == current || m.KeyMaterialCount != i+2 {
				t.Fatalf("RotateKey did not add material: %+v", m)
			}
			current = m.CurrentKeyMaterialID
		}
	}
	for i, b := range blobs {
		u, err := s.Decrypt(ctx, b.dk.Wrapped.Blob, k.KeyID, ec)
		if err != nil || !bytes.Equal(u.Plaintext, b.dk.Plaintext) || u.KeyMaterialID != b.mat {
			t.Fatalf("blob %d: %v", i, err)
		}
	}
	rot, err := s.ListKeyRotations(ctx, k.KeyID)
	if err != nil || len(rot) != rotations || rot[0].Kind != MaterialOnDemand || !rot[len(rot)-1].Current {
		t.Fatalf("ListKeyRotations: %d entries, %v", len(rot), err)
	}
	all, _ := s.ListKeyMaterials(ctx, k.KeyID)
	if len(all) != rotations+1 || all[0].Kind != MaterialInitial || all[0].KeyMaterialID != k.CurrentKeyMaterialID {
		t.Fatalf("ListKeyMaterials: %+v", all[0])
	}
	// Re-encrypting the oldest blob moves it to the newest material.
	w, err := s.ReEncrypt(ctx, blobs[0].dk.Wrapped.Blob, "", ec, k.KeyID)
	if err != nil || w.KeyMaterialID != current {
		t.Fatalf("ReEncrypt: %+v, %v", w, err)
	}
	u, err := s.Decrypt(ctx, w.Blob, "", ec)
	if err != nil || !bytes.Equal(u.Plaintext, blobs[0].dk.Plaintext) {
		t.Fatalf("Decrypt re-encrypted: %v", err)
	}
}

func TestOnDemandRotationCap(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock(), func(o *Options) { o.MaxOnDemandRotations = 3 })
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	for range 3 {
		if _, err := s.RotateKey(ctx, k.KeyID); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.RotateKey(ctx, k.KeyID)
	wantErr(t, "fourth RotateKey", err, keysvc.ErrLimitExceeded)
}

func TestAutomaticRotation(t *testing.T) {
	clk := newTestClock()
	dir := privateDir(t)
	s := openStore(t, dir, clk)
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{})
	for _, p := range []int{89, 2561, -5} {
		wantErr(t, "EnableKeyRotation period", s.EnableKeyRotation(ctx, k.KeyID, p), keysvc.ErrInvalidArgument)
	}
	if err := s.EnableKeyRotation(ctx, k.KeyID, 90); err != nil {
		t.Fatal(err)
	}
	st, err := s.GetKeyRotationStatus(ctx, k.KeyID)
	if err != nil || !st.Enabled || st.PeriodDays != 90 || !st.NextRotationDate.Equal(clk.Now().AddDate(0, 0, 90)) {
		t.Fatalf("GetKeyRotationStatus = %+v, %v", st, err)
	}
	old, err := s.GenerateDataKey(ctx, k.KeyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(90 * day)
	// The hot path notices the due rotation.
	dk, err := s.GenerateDataKey(ctx, k.KeyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dk.Wrapped.KeyMaterialID == old.Wrapped.KeyMaterialID {
		t.Fatal("no automatic rotation when due")
	}
	rot, _ := s.ListKeyRotations(ctx, k.KeyID)
	if len(rot) != 1 || rot[0].Kind != MaterialAutomatic {
		t.Fatalf("rotations %+v", rot)
	}
	st, _ = s.GetKeyRotationStatus(ctx, k.KeyID)
	if !st.NextRotationDate.Equal(clk.Now().AddDate(0, 0, 90)) {
		t.Fatalf("next rotation %v", st.NextRotationDate)
	}
	if _, err := s.Decrypt(ctx, old.Wrapped.Blob, "", nil); err != nil {
		t.Fatalf("old blob after automatic rotation: %v", err)
	}
	// Due while closed: applied at Open.
	s.Close()
	clk.Advance(91 * day)
	s2 := openStore(t, dir, clk)
	s2.mu.RLock()
	n := len(s2.data.Keys[k.KeyID].Versions)
	s2.mu.RUnlock()
	if n != 3 {
		t.Fatalf("after Open past due: %d versions, want 3", n)
	}
	if err := s2.DisableKeyRotation(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	st, _ = s2.GetKeyRotationStatus(ctx, k.KeyID)
	if st.Enabled || !st.NextRotationDate.IsZero() {
		t.Fatalf("after DisableKeyRotation: %+v", st)
	}
	if err := s2.EnableKeyRotation(ctx, k.KeyID, 0); err != nil {
		t.Fatal(err)
	}
	if st, _ = s2.GetKeyRotationStatus(ctx, k.KeyID); st.PeriodDays != DefaultRotationPeriodDays {
		t.Fatalf("default period %d", st.PeriodDays)
	}
}

func TestAliases(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	a := mustCreateKey(t, s, CreateKeyInput{})
	b := mustCreateKey(t, s, CreateKeyInput{})
	if err := s.CreateAlias(ctx, "alias/app", a.KeyID); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAlias(ctx, "alias/other:x/y_z-1", b.ARN); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "duplicate alias", s.CreateAlias(ctx, "alias/app", b.KeyID), keysvc.ErrAlreadyExists)
	for _, name := range []string{"app", "alias/", "alias/aws/x", "alias/sp ace", "alias/" + strings.Repeat("n", 251)} {
		wantErr(t, "CreateAlias("+name+")", s.CreateAlias(ctx, name, a.KeyID), keysvc.ErrInvalidArgument)
	}
	wantErr(t, "alias of alias", s.CreateAlias(ctx, "alias/x", "alias/app"), keysvc.ErrInvalidArgument)
	wantErr(t, "alias of missing key", s.CreateAlias(ctx, "alias/x", "12345678-1234-4123-8123-123456789012"), keysvc.ErrNotFound)
	for _, ref := range []string{"alias/app", "arn:aws:kms:local:000000000000:alias/app"} {
		info, err := s.DescribeKey(ctx, ref)
		if err != nil || info.KeyID != a.KeyID {
			t.Fatalf("DescribeKey(%s) = %+v, %v", ref, info, err)
		}
	}
	if err := s.UpdateAlias(ctx, "alias/app", b.KeyID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "UpdateAlias missing", s.UpdateAlias(ctx, "alias/none", b.KeyID), keysvc.ErrNotFound)
	if info, _ := s.DescribeKey(ctx, "alias/app"); info.KeyID != b.KeyID {
		t.Fatal("UpdateAlias did not retarget")
	}
	all, err := s.ListAliases(ctx, "")
	if err != nil || len(all) != 2 || all[0].Name != "alias/app" || all[0].ARN != "arn:aws:kms:local:000000000000:alias/app" || all[0].TargetKeyID != b.KeyID {
		t.Fatalf("ListAliases = %+v, %v", all, err)
	}
	ofA, _ := s.ListAliases(ctx, a.KeyID)
	if len(ofA) != 0 {
		t.Fatalf("aliases of a: %+v", ofA)
	}
	if _, err := s.ScheduleKeyDeletion(ctx, a.KeyID, 7); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "alias to pending-deletion key", s.CreateAlias(ctx, "alias/late", a.KeyID), keysvc.ErrInvalidState)
	if err := s.DeleteAlias(ctx, "alias/app"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "DeleteAlias twice", s.DeleteAlias(ctx, "alias/app"), keysvc.ErrNotFound)
	_, err = s.DescribeKey(ctx, "alias/app")
	wantErr(t, "deleted alias", err, keysvc.ErrNotFound)
}

func TestPolicyAndTags(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	k := mustCreateKey(t, s, CreateKeyInput{Creator: "bob", Tags: map[string]string{"a": "1"}})
	p, err := s.GetKeyPolicy(ctx, k.KeyID)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Statement []struct {
			Effect    string
			Principal map[string]string
			Action    string
		}
	}
	// The account statement (delegating to identity policies), then the
	// creator's own.
	if err := json.Unmarshal([]byte(p), &doc); err != nil || len(doc.Statement) != 2 ||
		doc.Statement[0].Principal["AWS"] != RootPrincipal ||
		doc.Statement[1].Principal["AWS"] != "arn:aws:iam::000000000000:user/bob" || doc.Statement[1].Action != "kms:*" || doc.Statement[1].Effect != "Allow" {
		t.Fatalf("default policy %s (%v)", p, err)
	}
	np := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:Describe*"}]}`
	if err := s.PutKeyPolicy(ctx, k.KeyID, np); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetKeyPolicy(ctx, k.KeyID); got != np {
		t.Fatalf("policy %s", got)
	}
	for _, bad := range []string{"", "[]", "{", strings.Repeat(" ", MaxPolicySize+1), `{"Version":"2012-10-17","Statement":[]}`} {
		wantErr(t, "PutKeyPolicy", s.PutKeyPolicy(ctx, k.KeyID, bad), keysvc.ErrInvalidArgument)
	}
	if err := s.TagResource(ctx, k.KeyID, map[string]string{"b": "2", "a": "3"}); err != nil {
		t.Fatal(err)
	}
	if err := s.UntagResource(ctx, k.KeyID, []string{"b", "missing"}); err != nil {
		t.Fatal(err)
	}
	tags, err := s.ListResourceTags(ctx, k.KeyID)
	if err != nil || len(tags) != 1 || tags["a"] != "3" {
		t.Fatalf("tags %v, %v", tags, err)
	}
	many := map[string]string{}
	for i := range MaxTags {
		many[strings.Repeat("t", i+1)] = ""
	}
	wantErr(t, "too many tags", s.TagResource(ctx, k.KeyID, many), keysvc.ErrLimitExceeded)
	wantErr(t, "reserved tag", s.TagResource(ctx, k.KeyID, map[string]string{"aws:x": ""}), keysvc.ErrInvalidArgument)
}

func TestCredentials(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	c1, err := s.CreateCredential(ctx, "alice", AdminPolicy)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.CreateCredential(ctx, "alice", AdminPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^AKIA[A-Z2-7]{16}$`).MatchString(c1.AccessKeyID) || len(c1.SecretAccessKey) != 40 || c1.AccessKeyID == c2.AccessKeyID || c1.SecretAccessKey == c2.SecretAccessKey {
		t.Fatalf("credentials %q/%d %q", c1.AccessKeyID, len(c1.SecretAccessKey), c2.AccessKeyID)
	}
	for _, bad := range []string{"", "a b", strings.Repeat("x", 65), "ü"} {
		_, err := s.CreateCredential(ctx, bad, AdminPolicy)
		wantErr(t, "CreateCredential("+bad+")", err, keysvc.ErrInvalidArgument)
	}
	// An identity policy is required and must be one (no Principal).
	for _, bad := range []string{"", "{}", `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}`} {
		_, err := s.CreateCredential(ctx, "carol", bad)
		wantErr(t, "CreateCredential(policy "+bad+")", err, keysvc.ErrInvalidArgument)
	}
	got, err := s.LookupCredential(ctx, c1.AccessKeyID)
	if err != nil || got != c1 {
		t.Fatalf("LookupCredential = %+v, %v", got, err)
	}
	_, err = s.LookupCredential(ctx, "AKIAAAAAAAAAAAAAAAAA")
	wantErr(t, "LookupCredential unknown", err, keysvc.ErrNotFound)
	list, err := s.ListCredentials(ctx)
	if err != nil || len(list) != 2 || list[0].SecretAccessKey != "" {
		t.Fatalf("ListCredentials = %+v, %v", list, err)
	}
	if err := s.DeleteCredential(ctx, c1.AccessKeyID); err != nil {
		t.Fatal(err)
	}
	_, err = s.LookupCredential(ctx, c1.AccessKeyID)
	wantErr(t, "deleted credential", err, keysvc.ErrNotFound)
	wantErr(t, "DeleteCredential twice", s.DeleteCredential(ctx, c1.AccessKeyID), keysvc.ErrNotFound)
}

// TestCredentialPolicyAndRevoke: the identity policy belongs to the name
// (a new access key's policy replaces it on the name's other keys), and
// RevokeCredentials removes every key of a name, or one access key.
func TestCredentialPolicyAndRevoke(t *testing.T) {
	s := openStore(t, privateDir(t), newTestClock())
	ctx := context.Background()
	const narrow = `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}}`
	a1, err := s.CreateCredential(ctx, "alice", AdminPolicy)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := s.CreateCredential(ctx, "alice", narrow)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateCredential(ctx, "bob", AdminPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.LookupCredential(ctx, a1.AccessKeyID); err != nil || got.Policy != narrow {
		t.Fatalf("alice's first key has policy %q (%v), want the name's newest", got.Policy, err)
	}
	gone, err := s.RevokeCredentials(ctx, "alice")
	if err != nil || len(gone) != 2 {
		t.Fatalf("RevokeCredentials(alice) = %v, %v", gone, err)
	}
	for _, id := range []string{a1.AccessKeyID, a2.AccessKeyID} {
		_, err := s.LookupCredential(ctx, id)
		wantErr(t, "revoked credential", err, keysvc.ErrNotFound)
	}
	if _, err := s.LookupCredential(ctx, b.AccessKeyID); err != nil {
		t.Fatalf("bob after revoking alice: %v", err)
	}
	if gone, err := s.RevokeCredentials(ctx, b.AccessKeyID); err != nil || len(gone) != 1 || gone[0] != b.AccessKeyID {
		t.Fatalf("RevokeCredentials(bob's key) = %v, %v", gone, err)
	}
	_, err = s.RevokeCredentials(ctx, "alice")
	wantErr(t, "RevokeCredentials twice", err, keysvc.ErrNotFound)
}

// TestLegacyCredentialWithoutPolicy: a credential record written before
// identity policies existed (no policy) still loads and is looked up with
// an empty Policy, which the key server (keysvc/kmsserver,
// TestServerLegacyCredential) reads as "no identity policy".
func TestLegacyCredentialWithoutPolicy(t *testing.T) {
	dir, clk := privateDir(t), newTestClock()
	s := openStore(t, dir, clk)
	ctx := context.Background()
	c, err := s.CreateCredential(ctx, "old", AdminPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.update(ctx, func(d *keystoreData, _ time.Time) error {
		d.Credentials[c.AccessKeyID].Policy = ""
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reopened := openStore(t, dir, clk)
	got, err := reopened.LookupCredential(ctx, c.AccessKeyID)
	if err != nil || got.Name != "old" || got.Policy != "" || got.SecretAccessKey != c.SecretAccessKey {
		t.Fatalf("LookupCredential of the legacy record = %+v, %v; want old with no policy", got, err)
	}
}
