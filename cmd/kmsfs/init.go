package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/cipherdir"
	kfs "github.com/kmsfs/kmsfs/fs"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
	"github.com/kmsfs/kmsfs/names"
)

// defaultKeyAlias is the local KMS key `kmsfs init` uses (and creates when
// missing) when no --key is given.
const defaultKeyAlias = "alias/kmsfs-default"

// initCheckTimeout bounds the key checks of `kmsfs init` as a whole.
const initCheckTimeout = 60 * time.Second

// runInit implements `kmsfs init`: check CIPHERDIR, resolve and test the
// key, make the names key (unless --plaintext-names), write the root's
// directory ID file, then kmsfs.conf and its copy. Nothing is written to
// CIPHERDIR before the key has proved it can make and unwrap a data key.
// With --recover it restores kmsfs.conf from its copy instead (runRecover).
func runInit(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("init")
	kms := fset.String("kms", cipherdir.KMSLocal, "key service: local or aws")
	keyRef := fset.String("key", "", "key ID, ARN or alias")
	chunkSize := cipherdir.DefaultChunkSize
	fset.Var(sizeFlag{&chunkSize}, "chunk-size", "plaintext bytes per chunk")
	endpoint := fset.String("kms-endpoint", "", "AWS KMS endpoint URL")
	compress := fset.String("compress", "none", "compression of new files: none, s2 or zstd")
	plainNames := fset.Bool("plaintext-names", false, "keep file names in plaintext (format 1)")
	shared := fset.Bool("shared", false, "several hosts mount the tree at once on shared storage: every mount runs in shared mode")
	recoverConf := fset.Bool("recover", false, "restore kmsfs.conf of an existing v2 CIPHERDIR from its copy kmsfs.conf.copy")
	var ks keystoreFlags
	ks.register(fset)
	pos, err := parseArgs(fset, "init", args, env, 1, 1)
	if err != nil {
		return err
	}
	if *recoverConf {
		var other []string
		fset.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "recover", "keystore", "passphrase-file", "kms-endpoint":
			default:
				other = append(other, "--"+f.Name)
			}
		})
		if len(other) > 0 {
			return usageErrorf("init: --recover takes everything from the copy; it cannot be combined with %s", strings.Join(other, ", "))
		}
		return runRecover(ctx, pos[0], &ks, *endpoint, env)
	}
	comp, err := cipherdir.ParseCompress(*compress)
	if err != nil {
		return usageErrorf("init: --compress must be none, s2 or zstd, got %q", *compress)
	}
	chunkSizeSet := false
	fset.Visit(func(f *flag.Flag) { chunkSizeSet = chunkSizeSet || f.Name == "chunk-size" })
	if comp != "none" && !chunkSizeSet {
		// A compressed chunk frees only the whole blocks of its slot's
		// tail: 64 KiB chunks of text free most of 16 blocks, 4 KiB ones at
		// most part of one (doc/OPERATIONS.md, "Compression").
		chunkSize = kfs.DefaultCompressedChunkSize
	}
	switch *kms {
	case cipherdir.KMSLocal:
		if *endpoint != "" {
			return usageErrorf("init: --kms-endpoint applies to --kms aws only")
		}
	case cipherdir.KMSAWS:
		if *keyRef == "" {
			return usageErrorf("init: --kms aws needs --key KEY (an ID, ARN or alias of a symmetric KMS key)")
		}
	default:
		return usageErrorf("init: --kms must be local or aws, got %q", *kms)
	}
	ref := *keyRef
	if ref == "" {
		ref = defaultKeyAlias
	}
	// NewConfig validates the chunk size and the key reference before any
	// key service or disk is touched; KeyID becomes the ARN below.
	cfg, err := cipherdir.NewConfig(*kms, ref, chunkSize)
	if err != nil {
		return withKind(errUsage, fmt.Errorf("init: %w", err))
	}
	cfg.Compress = comp
	cfg.Shared = *shared
	dir, err := filepath.Abs(pos[0])
	if err != nil {
		return withKind(errUsage, err)
	}
	created, err := prepareCipherDir(dir)
	if err != nil {
		return err
	}
	// Leave no half-made CIPHERDIR behind.
	ok := false
	defer func() {
		if created && !ok {
			_ = os.Remove(dir)
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, initCheckTimeout)
	defer cancel()
	svc, closeSvc, err := openKeyService(ctx, *kms, &ks, *endpoint, env, nil)
	if err != nil {
		if *kms == cipherdir.KMSAWS {
			return fmt.Errorf("init: %w", err)
		}
		return err
	}
	defer closeSvc()
	if store, ok := svc.(*local.Store); ok && *keyRef == "" {
		if err := ensureDefaultKey(ctx, store, env.Stderr); err != nil {
			return err
		}
	}
	arn, err := checkKey(ctx, svc, ref, cfg.FilesystemID)
	if err != nil {
		return err
	}
	cfg.KeyID = arn
	hasXattrs, err := cipherdir.ProbeUserXattrs(dir)
	if err != nil {
		return withKind(errCipherDir, err)
	}
	if !hasXattrs {
		// Key records then live in each file's key-record slot only.
		cfg.KeyRecord = cipherdir.KeyRecordSlot
	}
	if !*plainNames {
		if cfg, err = initNames(ctx, svc, cfg, dir); err != nil {
			return err
		}
	}
	if err := cipherdir.WriteConfig(dir, cfg); err != nil {
		if !*plainNames {
			_ = os.Remove(filepath.Join(dir, names.DirIDFileName))
			_ = os.Remove(filepath.Join(dir, cipherdir.ConfigCopyName))
		}
		return withKind(errCipherDir, err)
	}
	ok = true
	fmt.Fprintf(env.Stdout, "initialised %s\n  kms:           %s\n  key:           %s\n  chunk size:    %d\n  compression:   %s\n  file names:    %s\n  filesystem ID: %s\n  key records:   %s\n  shared:        %t\nmount it with: kmsfs mount %s MOUNTPOINT\n",
		dir, cfg.KMS, cfg.KeyID, cfg.ChunkSize, cfg.Compression(), namesMode(cfg), cfg.FilesystemID, cfg.KeyRecordMode(), cfg.Shared, dir)
	if cfg.EncryptedNames() {
		fmt.Fprintf(env.Stdout, "the names key is in %s and its copy %s: keep them with every backup of the tree (without both, no name can be read)\n",
			filepath.Join(dir, cipherdir.ConfigName), filepath.Join(dir, cipherdir.ConfigCopyName))
	}
	return nil
}

// namesMode says how a tree stores file names, for init and info.
func namesMode(cfg cipherdir.Config) string {
	if cfg.EncryptedNames() {
		return "encrypted (format 2)"
	}
	return "plaintext (format 1)"
}

// initNames makes the names key of the new tree dir (cipherdir.InitNames)
// and writes the root's directory ID file, before any config: a failed
// init leaves no kmsfs.conf. It returns the format 2 config.
func initNames(ctx context.Context, svc keysvc.Service, cfg cipherdir.Config, dir string) (cipherdir.Config, error) {
	cfg, k, err := cipherdir.InitNames(ctx, svc, cfg)
	if err != nil {
		return cfg, fmt.Errorf("init: %w", err)
	}
	root, err := cipherdir.OpenRoot(dir)
	if err != nil {
		return cfg, withKind(errCipherDir, err)
	}
	defer unix.Close(root)
	if err := cipherdir.WriteRootDirID(root, k); err != nil {
		return cfg, withKind(errCipherDir, fmt.Errorf("init: root directory ID: %w", err))
	}
	return cfg, nil
}

// runRecover implements `kmsfs init --recover CIPHERDIR`: kmsfs.conf of
// a v2 tree is restored from its copy kmsfs.conf.copy, after checking
// that the copy's names key unwraps and is the key of the root's
// directory ID file (so a copy from another tree is never installed). It
// makes no key and changes nothing but kmsfs.conf.
func runRecover(ctx context.Context, arg string, ks *keystoreFlags, endpoint string, env *Env) error {
	dir, err := resolveDir(arg, "CIPHERDIR")
	if err != nil {
		return withKind(errCipherDir, fmt.Errorf("init --recover: %w", err))
	}
	conf := filepath.Join(dir, cipherdir.ConfigName)
	if _, err := os.Lstat(conf); err == nil {
		if _, lerr := cipherdir.LoadConfig(dir); lerr == nil {
			return withKind(errCipherDir, fmt.Errorf("init --recover: %s is there and valid; nothing to recover", conf))
		}
		return withHint(withKind(errCipherDir, fmt.Errorf("init --recover: %s exists; refusing to replace it", conf)),
			"if it is damaged, move it aside (mv "+conf+" "+conf+".damaged) and run the same command again")
	}
	cfg, err := cipherdir.LoadConfigCopy(dir)
	if err != nil {
		return withKind(errCipherDir, fmt.Errorf("init --recover: %w", err))
	}
	if !cfg.EncryptedNames() {
		return withKind(errCipherDir, fmt.Errorf("init --recover: %s is not a v2 config", filepath.Join(dir, cipherdir.ConfigCopyName)))
	}
	ctx, cancel := context.WithTimeout(ctx, initCheckTimeout)
	defer cancel()
	svc, closeSvc, err := openKeyService(ctx, cfg.KMS, ks, endpoint, env, nil)
	if err != nil {
		return err
	}
	defer closeSvc()
	k, err := openNames(ctx, svc, dir, cfg)
	if err != nil {
		return fmt.Errorf("init --recover: %w", err)
	}
	root, err := cipherdir.OpenRoot(dir)
	if err != nil {
		return withKind(errCipherDir, err)
	}
	defer unix.Close(root)
	if _, err := cipherdir.ReadDirID(root, k); err != nil {
		return withKind(errCipherDir, fmt.Errorf("init --recover: the names key of %s does not open the root's %s: %w",
			cipherdir.ConfigCopyName, names.DirIDFileName, err))
	}
	if _, err := cipherdir.RecoverConfig(dir); err != nil {
		return withKind(errCipherDir, fmt.Errorf("init --recover: %w", err))
	}
	fmt.Fprintf(env.Stdout, "recovered %s from %s\n  kms:           %s\n  key:           %s\n  filesystem ID: %s\nmount it with: kmsfs mount %s MOUNTPOINT\n",
		conf, cipherdir.ConfigCopyName, cfg.KMS, cfg.KeyID, cfg.FilesystemID, dir)
	return nil
}

// prepareCipherDir makes sure dir is an empty directory, creating it (mode
// 0755 less the umask) when it does not exist. created reports whether it
// did, so a failed init can remove it again.
func prepareCipherDir(dir string) (created bool, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return false, withKind(errCipherDir, fmt.Errorf("create CIPHERDIR: %w", err))
		}
		return true, nil
	}
	if err != nil {
		return false, withKind(errCipherDir, fmt.Errorf("CIPHERDIR: %w", err))
	}
	if !fi.IsDir() {
		return false, withKind(errCipherDir, fmt.Errorf("CIPHERDIR %s is not a directory", dir))
	}
	if _, err := os.Lstat(filepath.Join(dir, cipherdir.ConfigName)); err == nil {
		return false, withHint(withKind(errCipherDir, fmt.Errorf("%s is already a kmsfs CIPHERDIR (it has %s)", dir, cipherdir.ConfigName)),
			"mount it with 'kmsfs mount "+dir+" MOUNTPOINT'")
	}
	f, err := os.Open(dir)
	if err != nil {
		return false, withKind(errCipherDir, fmt.Errorf("CIPHERDIR: %w", err))
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err != io.EOF {
		if err != nil {
			return false, withKind(errCipherDir, fmt.Errorf("CIPHERDIR: %w", err))
		}
		return false, withHint(withKind(errCipherDir, fmt.Errorf("CIPHERDIR %s is not empty", dir)),
			"kmsfs init only takes an empty or new directory")
	}
	return false, nil
}

// ensureDefaultKey creates the local key alias/kmsfs-default when it does
// not exist yet, and says so on w.
func ensureDefaultKey(ctx context.Context, store *local.Store, w io.Writer) error {
	_, err := store.DescribeKey(ctx, defaultKeyAlias)
	if err == nil || !errors.Is(err, keysvc.ErrNotFound) {
		return err
	}
	md, err := store.CreateKey(ctx, local.CreateKeyInput{Description: "kmsfs default key (created by kmsfs init)"})
	if err != nil {
		return fmt.Errorf("create the default key: %w", err)
	}
	if err := store.CreateAlias(ctx, defaultKeyAlias, md.KeyID); err != nil {
		return fmt.Errorf("create alias %s: %w", defaultKeyAlias, err)
	}
	fmt.Fprintf(w, "kmsfs: created local key %s (%s)\n", md.KeyID, defaultKeyAlias)
	return nil
}

// checkKey proves that ref can serve this filesystem: DescribeKey says it
// is enabled, and one data key generated under it unwraps to the same
// bytes. It returns the key's ARN, which the config records (an alias may
// later point elsewhere; the config must not follow it silently).
func checkKey(ctx context.Context, svc keysvc.Service, ref, fsID string) (string, error) {
	info, err := cipherdir.DescribeEnabled(ctx, svc, ref)
	if err != nil {
		return "", err
	}
	ec := keysvc.EncryptionContext{keysvc.ContextFilesystemID: fsID, keysvc.ContextPurpose: "init-check"}
	dk, err := svc.GenerateDataKey(ctx, info.ARN, ec)
	if err != nil {
		return "", fmt.Errorf("key %s: generate a test data key: %w", ref, err)
	}
	defer keysvc.Zero(dk.Plaintext)
	u, err := svc.Decrypt(ctx, dk.Wrapped.Blob, info.ARN, ec)
	if err != nil {
		return "", fmt.Errorf("key %s: unwrap the test data key: %w", ref, err)
	}
	defer keysvc.Zero(u.Plaintext)
	if len(dk.Plaintext) != keysvc.DataKeySize || subtle.ConstantTimeCompare(dk.Plaintext, u.Plaintext) != 1 {
		return "", fmt.Errorf("key %s: the test data key did not unwrap to itself: %w", ref, keysvc.ErrInvalidCiphertext)
	}
	return info.ARN, nil
}
