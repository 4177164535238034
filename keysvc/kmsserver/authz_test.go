package kmsserver

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// addCredential makes one more credential on the running test server and
// returns a client signing with it.
func (ts *testServer) addCredential(t *testing.T, name, policy string) *kms.Client {
	t.Helper()
	c, err := ts.store.CreateCredential(context.Background(), name, policy)
	if err != nil {
		t.Fatal(err)
	}
	ts.creds[name] = c
	return ts.client(name)
}

// cliKey creates a key as `kmsfs key create` does: no creator, so the
// default policy holds only the account statement.
func (ts *testServer) cliKey(t *testing.T) string {
	t.Helper()
	m, err := ts.store.CreateKey(context.Background(), local.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	return m.ARN
}

// examplePolicy reads a policy of testdata/policies (the examples the
// user documentation (doc/SECURITY.md) shows) with KEY_ID and FS_ID filled in.
func examplePolicy(t *testing.T, name, keyID, fsID string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "policies", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("KEY_ID", keyID, "FS_ID", fsID).Replace(string(b))
}

// TestServerAccountStatementDelegates is the regression test for the
// account statement granting everything: on main, bob (a credential with
// no rights of its own) could disable, schedule the deletion of and
// decrypt under a key made by the CLI (alias/kmsfs-default) and read
// another credential's data keys under it. Now the account statement
// delegates to identity policies, which bob's does not grant, while an
// admin credential keeps every right.
func TestServerAccountStatementDelegates(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	admin := ts.addCredential(t, "root-ops", local.AdminPolicy)
	bob := ts.client("bob")
	arn := ts.cliKey(t)
	ec := map[string]string{"kmsfs:fs": "0123"}
	dk, err := admin.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(arn), NumberOfBytes: aws.Int32(32), EncryptionContext: ec})
	if err != nil {
		t.Fatalf("admin GenerateDataKey: %v", err)
	}
	_, err = bob.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec})
	wantAPIError(t, err, "AccessDeniedException")
	if !strings.Contains(err.Error(), "no identity-based policy allows") {
		t.Errorf("denial does not name the identity policy: %v", err)
	}
	_, err = bob.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(arn), NumberOfBytes: aws.Int32(32), EncryptionContext: ec})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = bob.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(arn)})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = bob.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(arn), PendingWindowInDays: aws.Int32(7)})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = bob.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(arn), Policy: aws.String(local.AdminPolicy)})
	wantAPIError(t, err, "AccessDeniedException")

	// Nor under a key another credential created through the server,
	// whose default policy names its creator and the account.
	alice := ts.client("alice")
	ak, err := alice.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	adk, err := alice.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: ak.KeyMetadata.Arn, NumberOfBytes: aws.Int32(32)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: adk.CiphertextBlob})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = bob.DisableKey(ctx, &kms.DisableKeyInput{KeyId: ak.KeyMetadata.Arn})
	wantAPIError(t, err, "AccessDeniedException")

	// The admin has every right on both keys, through the account
	// statement.
	if dec, err := admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: adk.CiphertextBlob}); err != nil || !bytes.Equal(dec.Plaintext, adk.Plaintext) {
		t.Fatalf("admin Decrypt under alice's key: %v", err)
	}
	for _, k := range []string{arn, aws.ToString(ak.KeyMetadata.Arn)} {
		if _, err := admin.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(k)}); err != nil {
			t.Fatalf("admin DisableKey %s: %v", k, err)
		}
	}
	// An explicit Deny in the identity policy wins over the key policy's
	// direct grant.
	ts.addCredential(t, "alice", `{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"},
	  {"Effect":"Deny","Action":"kms:EnableKey","Resource":"*"}]}`)
	_, err = alice.EnableKey(ctx, &kms.EnableKeyInput{KeyId: ak.KeyMetadata.Arn})
	wantAPIError(t, err, "AccessDeniedException")
	if !strings.Contains(err.Error(), "explicit deny in an identity-based policy") {
		t.Errorf("denial does not name the identity policy: %v", err)
	}
}

// TestServerMountPolicyExample checks the least-privilege identity policy
// doc/SECURITY.md shows for a mount (testdata/policies/mount.json): it lets
// the mount generate and unwrap data keys of its own filesystem, and
// nothing else: not another filesystem's data keys on the same key, not
// another key, not key administration.
func TestServerMountPolicyExample(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	keyARN := ts.cliKey(t)
	otherKey := ts.cliKey(t)
	keyID := keyARN[strings.LastIndex(keyARN, "/")+1:]
	const fsID, otherFS = "3f1c0e5a9b7d4e2f8a6c1b0d9e8f7a6b", "00000000000000000000000000000000"
	mount := ts.addCredential(t, "host-a", examplePolicy(t, "mount.json", keyID, fsID))
	admin := ts.addCredential(t, "ops", examplePolicy(t, "admin.json", "", ""))

	mine := map[string]string{"kmsfs:fs": fsID, "kmsfs:file": "0a1b2c3d4e5f60718293a4b5c6d7e8f9"}
	dk, err := mount.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(keyARN), KeySpec: types.DataKeySpecAes256, EncryptionContext: mine})
	if err != nil {
		t.Fatalf("mount GenerateDataKey with its filesystem ID: %v", err)
	}
	dec, err := mount.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: mine, KeyId: aws.String(keyARN)})
	if err != nil || !bytes.Equal(dec.Plaintext, dk.Plaintext) {
		t.Fatalf("mount Decrypt with its filesystem ID: %v", err)
	}
	if _, err := mount.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatalf("mount DescribeKey: %v", err)
	}

	// Another filesystem on the same key: the admin makes its data key,
	// the mount may not unwrap it, nor make one.
	theirs := map[string]string{"kmsfs:fs": otherFS, "kmsfs:file": "0a1b2c3d4e5f60718293a4b5c6d7e8f9"}
	odk, err := admin.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(keyARN), KeySpec: types.DataKeySpecAes256, EncryptionContext: theirs})
	if err != nil {
		t.Fatal(err)
	}
	_, err = mount.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: odk.CiphertextBlob, EncryptionContext: theirs})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = mount.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(keyARN), KeySpec: types.DataKeySpecAes256, EncryptionContext: theirs})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = mount.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(keyARN), KeySpec: types.DataKeySpecAes256})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = mount.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(otherKey), KeySpec: types.DataKeySpecAes256, EncryptionContext: mine})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = mount.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(keyARN), Plaintext: []byte("x"), EncryptionContext: mine})
	wantAPIError(t, err, "AccessDeniedException")

	// No key administration.
	_, err = mount.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(keyARN)})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = mount.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(keyARN), PendingWindowInDays: aws.Int32(7)})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = mount.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(keyARN), Policy: aws.String(local.DefaultKeyPolicy(local.PrincipalARN("host-a")))})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = mount.CreateKey(ctx, &kms.CreateKeyInput{})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = mount.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/x"), TargetKeyId: aws.String(keyARN)})
	wantAPIError(t, err, "AccessDeniedException")

	// The admin example can.
	if _, err := admin.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(otherKey), PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatalf("admin ScheduleKeyDeletion: %v", err)
	}
	if _, err := admin.CreateKey(ctx, &kms.CreateKeyInput{}); err != nil {
		t.Fatalf("admin CreateKey: %v", err)
	}
}

// TestPolicyExamplesInDocs fails when the user documentation stops showing
// the example policies the tests check: README.md or a Markdown file
// under doc/ must hold each of testdata/policies verbatim.
func TestPolicyExamplesInDocs(t *testing.T) {
	docs := []string{filepath.Join("..", "..", "README.md")}
	_ = filepath.WalkDir(filepath.Join("..", "..", "doc"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			docs = append(docs, path)
		}
		return nil
	})
	var all strings.Builder
	for _, d := range docs {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	for _, name := range []string{"mount.json", "admin.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", "policies", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(all.String(), string(b)) {
			t.Errorf("no document among %v shows testdata/policies/%s verbatim", docs, name)
		}
	}
}

// TestServerRevokedCredential: a credential revoked through another Store
// on the keystore (as `kmsfs keysvc credentials revoke` does from another
// process) fails on the running server's next request, even on a kept-
// alive connection.
func TestServerRevokedCredential(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	alice, bob := ts.client("alice"), ts.client("bob")
	if _, err := alice.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Fatal(err)
	}
	cli, err := local.Open(ts.store.Dir(), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if gone, err := cli.RevokeCredentials(ctx, "alice"); err != nil || len(gone) != 1 {
		t.Fatalf("RevokeCredentials = %v, %v", gone, err)
	}
	_, err = alice.ListKeys(ctx, &kms.ListKeysInput{})
	wantAPIError(t, err, "UnrecognizedClientException")
	if _, err := bob.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		t.Fatalf("bob after alice's revocation: %v", err)
	}
}

// TestServerAliasNeedsIdentityPermission is the regression test for alias
// squatting: on main, alice, allowed only her own key, could point
// alias/team-prod at it before the team created it. Now every alias
// operation also needs the identity policy to allow it on the alias ARN.
func TestServerAliasNeedsIdentityPermission(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	alice, bob := ts.client("alice"), ts.client("bob")
	admin := ts.addCredential(t, "ops", local.AdminPolicy)
	ak, err := alice.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/team-prod"), TargetKeyId: ak.KeyMetadata.KeyId})
	wantAPIError(t, err, "AccessDeniedException")
	if !strings.Contains(err.Error(), local.AliasARN("alias/team-prod")) {
		t.Errorf("denial does not name the alias: %v", err)
	}
	// Her own alias namespace (selfServicePolicy) is fine.
	if _, err := alice.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/alice-db"), TargetKeyId: ak.KeyMetadata.KeyId}); err != nil {
		t.Fatalf("alice CreateAlias alias/alice-db: %v", err)
	}
	// The team's key (admin) gets the name.
	tk, err := admin.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/team-prod"), TargetKeyId: tk.KeyMetadata.KeyId}); err != nil {
		t.Fatalf("admin CreateAlias: %v", err)
	}
	// alice may not move the team's alias to her key, nor delete it.
	_, err = alice.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/team-prod"), TargetKeyId: ak.KeyMetadata.KeyId})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = alice.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/team-prod")})
	wantAPIError(t, err, "AccessDeniedException")
	// bob, whose alias namespace would allow alias/bob-x, may not point it
	// at alice's key (no right on the key), nor take over alice's alias.
	_, err = bob.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/bob-x"), TargetKeyId: ak.KeyMetadata.KeyId})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = bob.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/alice-db")})
	wantAPIError(t, err, "AccessDeniedException")
	// Even with rights on the key, an alias named outside the identity
	// policy is refused: a key policy alone does not grant alias names.
	grant := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"` + local.PrincipalARN("alice") + `"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"` + local.PrincipalARN("bob") + `"},"Action":"kms:CreateAlias","Resource":"*"}]}`
	if _, err := alice.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: ak.KeyMetadata.KeyId, Policy: aws.String(grant)}); err != nil {
		t.Fatal(err)
	}
	_, err = bob.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/team-dev"), TargetKeyId: ak.KeyMetadata.KeyId})
	wantAPIError(t, err, "AccessDeniedException")
	if _, err := bob.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/bob-x"), TargetKeyId: ak.KeyMetadata.KeyId}); err != nil {
		t.Fatalf("bob CreateAlias with rights on both: %v", err)
	}
	la, err := admin.ListAliases(ctx, &kms.ListAliasesInput{})
	if err != nil || len(la.Aliases) != 3 {
		t.Fatalf("ListAliases = %+v, %v", la, err)
	}
}

// TestServerRejectsMalformedPolicies: PutKeyPolicy and CreateKey refuse
// what AWS refuses (on main, these were accepted and stored).
func TestServerRejectsMalformedPolicies(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	alice := ts.client("alice")
	ak, err := alice.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	me := `{"Effect":"Allow","Principal":{"AWS":"` + local.PrincipalARN("alice") + `"},"Action":"kms:*","Resource":"*"}`
	for name, doc := range map[string]string{
		"partial wildcard principal": `{"Statement":[` + me + `,{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::*:role/x"},"Action":"kms:Decrypt"}]}`,
		"account wildcard":           `{"Statement":[` + me + `,{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:*"},"Action":"kms:Decrypt"}]}`,
		"duplicate key":              `{"Statement":[` + me + `],"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*"}]}`,
		"unknown top-level key":      `{"Statement":[` + me + `],"Owner":"alice"}`,
		"unknown statement key":      `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"` + local.PrincipalARN("alice") + `"},"Action":"kms:*","Resorce":"*"}]}`,
	} {
		_, err := alice.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: ak.KeyMetadata.KeyId, Policy: aws.String(doc)})
		wantAPIError(t, err, "MalformedPolicyDocumentException")
		_, err = alice.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(doc)})
		wantAPIError(t, err, "MalformedPolicyDocumentException")
		t.Logf("%s: %v", name, err)
	}
}

// TestServerLegacyCredential: a credential from a keystore written before
// identity policies (no policy recorded) keeps what key policies grant it
// directly (the keys it created through the server) and nothing through
// the account statement.
func TestServerLegacyCredential(t *testing.T) {
	// The credential "old" as an old keystore holds it: no policy. (The
	// store's loading of such a record is tested in keysvc/local.)
	ts := startTestServer(t, func(srv *Server) {
		lookup := srv.lookupCredential
		srv.lookupCredential = func(ctx context.Context, id string) (local.Credential, error) {
			c, err := lookup(ctx, id)
			if c.Name == "old" {
				c.Policy = ""
			}
			return c, err
		}
	})
	ctx := context.Background()
	legacy := ts.addCredential(t, "old", local.AdminPolicy)
	own, err := ts.store.CreateKey(ctx, local.CreateKeyInput{Creator: "old"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := legacy.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(own.ARN), NumberOfBytes: aws.Int32(32)}); err != nil {
		t.Fatalf("legacy credential on the key it created: %v", err)
	}
	_, err = legacy.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(ts.cliKey(t)), NumberOfBytes: aws.Int32(32)})
	wantAPIError(t, err, "AccessDeniedException")
	_, err = legacy.CreateKey(ctx, &kms.CreateKeyInput{})
	wantAPIError(t, err, "AccessDeniedException")
}
