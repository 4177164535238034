package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// keyCommandTimeout bounds one `kmsfs key` command (it waits for the
// keystore lock when another process is writing).
const keyCommandTimeout = 60 * time.Second

// runKey implements `kmsfs key SUBCOMMAND …` on the local keystore.
func runKey(ctx context.Context, args []string, env *Env) error {
	if len(args) == 0 {
		return usageErrorf("key: missing subcommand (create, list, describe, rotate, enable, disable, schedule-deletion, cancel-deletion, alias, policy)")
	}
	sub, rest := args[0], args[1:]
	if sub == "-h" || sub == "--help" || sub == "help" {
		fmt.Fprint(env.Stdout, commandHelp("key"))
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, keyCommandTimeout)
	defer cancel()
	switch sub {
	case "create":
		return keyCreate(ctx, rest, env)
	case "list":
		return withStore(ctx, "key list", rest, env, 0, 0, func(s *local.Store, _ []string) error {
			return keyList(ctx, s, env.Stdout)
		})
	case "describe":
		return withStore(ctx, "key describe", rest, env, 1, 1, func(s *local.Store, pos []string) error {
			return keyDescribe(ctx, s, pos[0], env.Stdout)
		})
	case "rotate":
		if slices.Contains(rest, "--kms") || slices.Contains(rest, "-kms") || hasFlagPrefix(rest, "--kms=") {
			return keyRotateAWS(ctx, rest, env)
		}
		return withStore(ctx, "key rotate", rest, env, 1, 1, func(s *local.Store, pos []string) error {
			m, err := s.RotateKey(ctx, pos[0])
			if err != nil {
				return fmt.Errorf("rotate %s: %w", pos[0], err)
			}
			fmt.Fprintf(env.Stdout, "rotated %s: key material %s is now current (%d versions)\n", m.KeyID, m.CurrentKeyMaterialID, m.KeyMaterialCount)
			return nil
		})
	case "enable", "disable":
		return withStore(ctx, "key "+sub, rest, env, 1, 1, func(s *local.Store, pos []string) error {
			op := s.EnableKey
			if sub == "disable" {
				op = s.DisableKey
			}
			if err := op(ctx, pos[0]); err != nil {
				return fmt.Errorf("%s %s: %w", sub, pos[0], err)
			}
			return nil
		})
	case "alias":
		return keyAlias(ctx, rest, env)
	case "policy":
		return keyPolicy(ctx, rest, env)
	case "schedule-deletion":
		return keyScheduleDeletion(ctx, rest, env)
	case "cancel-deletion":
		return withStore(ctx, "key cancel-deletion", rest, env, 1, 1, func(s *local.Store, pos []string) error {
			m, err := s.CancelKeyDeletion(ctx, pos[0])
			if err != nil {
				return fmt.Errorf("cancel deletion of %s: %w", pos[0], err)
			}
			fmt.Fprintf(env.Stdout, "deletion of %s cancelled; the key is %s (enable it to use it again)\n", m.KeyID, m.State)
			return nil
		})
	}
	return usageErrorf("key: unknown subcommand %q", sub)
}

// withStore parses the flags of a key subcommand that takes only the
// keystore flags, opens the keystore and runs fn.
func withStore(ctx context.Context, name string, args []string, env *Env, minArgs, maxArgs int, fn func(*local.Store, []string) error) error {
	fset := newFlagSet(name)
	var ks keystoreFlags
	ks.register(fset)
	pos, err := parseArgs(fset, "key", args, env, minArgs, maxArgs)
	if err != nil {
		return err
	}
	store, err := ks.open(env, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer store.Close()
	return fn(store, pos)
}

// keyCreate implements `kmsfs key create`; it prints the new key's ID.
func keyCreate(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("key create")
	desc := fset.String("description", "", "what the key is for")
	period := fset.Int("rotation-period-days", 0, "rotate automatically every N days (90..2560; 0: off)")
	alias := fset.String("alias", "", "also name the key alias/NAME")
	var ks keystoreFlags
	ks.register(fset)
	if _, err := parseArgs(fset, "key", args, env, 0, 0); err != nil {
		return err
	}
	if *period != 0 && (*period < local.MinRotationPeriodDays || *period > local.MaxRotationPeriodDays) {
		return usageErrorf("key create: --rotation-period-days must be %d..%d", local.MinRotationPeriodDays, local.MaxRotationPeriodDays)
	}
	if *alias != "" && !strings.HasPrefix(*alias, "alias/") {
		return usageErrorf("key create: --alias must start with alias/")
	}
	store, err := ks.open(env, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer store.Close()
	m, err := store.CreateKey(ctx, local.CreateKeyInput{Description: *desc, RotationPeriodDays: *period})
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	fmt.Fprintln(env.Stdout, m.KeyID)
	if *alias != "" {
		if err := store.CreateAlias(ctx, *alias, m.KeyID); err != nil {
			return fmt.Errorf("key %s was created, but alias %s was not: %w", m.KeyID, *alias, err)
		}
	}
	return nil
}

// hasFlagPrefix reports whether an argument starts with prefix.
func hasFlagPrefix(args []string, prefix string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, prefix) {
			return true
		}
	}
	return false
}

// keyRotateAWS implements `kmsfs key rotate --kms aws [--kms-endpoint URL]
// KEY`: an on-demand rotation through the AWS KMS API (AWS KMS or `kmsfs
// keysvc serve`), then the key's new current key material.
func keyRotateAWS(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("key rotate")
	kms := fset.String("kms", cipherdir.KMSLocal, "key service: local or aws")
	endpoint := fset.String("kms-endpoint", "", "AWS KMS endpoint URL")
	var ks keystoreFlags
	ks.register(fset)
	pos, err := parseArgs(fset, "key", args, env, 1, 1)
	if err != nil {
		return err
	}
	if *kms == cipherdir.KMSLocal {
		return runKey(ctx, append([]string{"rotate"}, withoutKMSFlag(args)...), env)
	}
	if *kms != cipherdir.KMSAWS {
		return usageErrorf("key rotate: --kms must be local or aws, got %q", *kms)
	}
	svc, closeSvc, err := openKeyService(ctx, cipherdir.KMSAWS, &ks, *endpoint, env, nil)
	if err != nil {
		return err
	}
	defer closeSvc()
	client, ok := svc.(interface {
		RotateKeyOnDemand(ctx context.Context, keyID string) error
	})
	if !ok {
		return fmt.Errorf("rotate %s: the aws key service cannot rotate on demand", pos[0])
	}
	if err := client.RotateKeyOnDemand(ctx, pos[0]); err != nil {
		return fmt.Errorf("rotate %s: %w", pos[0], err)
	}
	info, err := svc.DescribeKey(ctx, pos[0])
	if err != nil {
		return fmt.Errorf("rotate %s: the rotation was started, but: %w", pos[0], err)
	}
	fmt.Fprintf(env.Stdout, "rotated %s: key material %s is now current\n", info.ARN, orDash(info.CurrentKeyMaterialID))
	return nil
}

// withoutKMSFlag drops --kms and its value from args.
func withoutKMSFlag(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--kms" || args[i] == "-kms":
			i++
		case strings.HasPrefix(args[i], "--kms=") || strings.HasPrefix(args[i], "-kms="):
		default:
			out = append(out, args[i])
		}
	}
	return out
}

// keyScheduleDeletion implements `kmsfs key schedule-deletion [--days N]
// KEY`: the key is refused at once (KMSInvalidStateException) and deleted
// with all its key material after N days (7..30, default 30) unless the
// deletion is cancelled.
func keyScheduleDeletion(ctx context.Context, args []string, env *Env) error {
	fset := newFlagSet("key schedule-deletion")
	days := fset.Int("days", local.DefaultPendingWindowDays, "waiting period in days (7..30)")
	var ks keystoreFlags
	ks.register(fset)
	pos, err := parseArgs(fset, "key", args, env, 1, 1)
	if err != nil {
		return err
	}
	if *days < local.MinPendingWindowDays || *days > local.MaxPendingWindowDays {
		return usageErrorf("key schedule-deletion: --days must be %d..%d", local.MinPendingWindowDays, local.MaxPendingWindowDays)
	}
	store, err := ks.open(env, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer store.Close()
	m, err := store.ScheduleKeyDeletion(ctx, pos[0], *days)
	if err != nil {
		return fmt.Errorf("schedule deletion of %s: %w", pos[0], err)
	}
	fmt.Fprintf(env.Stdout, "key %s is pending deletion; it will be deleted on %s\n", m.KeyID, m.DeletionDate.UTC().Format(time.RFC3339))
	return nil
}

// keyList prints one line per key: ID, state, aliases, number of key
// material versions, rotation period and the date of the last rotation.
func keyList(ctx context.Context, s *local.Store, w io.Writer) error {
	keys, err := s.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	aliases, err := s.ListAliases(ctx, "")
	if err != nil {
		return fmt.Errorf("list aliases: %w", err)
	}
	byKey := map[string][]string{}
	for _, a := range aliases {
		byKey[a.TargetKeyID] = append(byKey[a.TargetKeyID], a.Name)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tSTATE\tALIASES\tVERSIONS\tROTATION\tLAST ROTATION")
	for _, k := range keys {
		last, err := lastRotation(ctx, s, k.KeyID)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", k.KeyID, k.State, orDash(strings.Join(byKey[k.KeyID], ",")),
			k.KeyMaterialCount, rotationPeriod(k), last)
	}
	return tw.Flush()
}

// keyDescribe prints everything known about one key, one field a line.
func keyDescribe(ctx context.Context, s *local.Store, ref string, w io.Writer) error {
	k, err := s.DescribeKeyMetadata(ctx, ref)
	if err != nil {
		return fmt.Errorf("describe %s: %w", ref, err)
	}
	aliases, err := s.ListAliases(ctx, k.KeyID)
	if err != nil {
		return fmt.Errorf("describe %s: %w", ref, err)
	}
	materials, err := s.ListKeyMaterials(ctx, k.KeyID)
	if err != nil {
		return fmt.Errorf("describe %s: %w", ref, err)
	}
	names := make([]string, len(aliases))
	for i, a := range aliases {
		names[i] = a.Name
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("key_id", k.KeyID)
	row("arn", k.ARN)
	row("description", orDash(k.Description))
	row("state", string(k.State))
	row("created", k.Created.UTC().Format(time.RFC3339))
	row("creator", orDash(k.Creator))
	row("aliases", orDash(strings.Join(names, ",")))
	row("rotation", rotationPeriod(k))
	if !k.NextRotationDate.IsZero() {
		row("next_rotation", k.NextRotationDate.UTC().Format(time.RFC3339))
	}
	if !k.DeletionDate.IsZero() {
		row("deletion_date", k.DeletionDate.UTC().Format(time.RFC3339))
	}
	row("current_key_material_id", k.CurrentKeyMaterialID)
	row("versions", strconv.Itoa(k.KeyMaterialCount))
	for i, m := range materials {
		cur := ""
		if m.Current {
			cur = " (current)"
		}
		row(fmt.Sprintf("version %d", i+1), fmt.Sprintf("%s %s %s%s", m.KeyMaterialID, m.Kind, m.Created.UTC().Format(time.RFC3339), cur))
	}
	return tw.Flush()
}

// keyAlias implements `kmsfs key alias create|update|delete|list`.
func keyAlias(ctx context.Context, args []string, env *Env) error {
	if len(args) == 0 {
		return usageErrorf("key alias: missing subcommand (create, update, delete, list)")
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "create", "update":
		return withStore(ctx, "key alias "+sub, rest, env, 2, 2, func(s *local.Store, pos []string) error {
			op := s.CreateAlias
			if sub == "update" {
				op = s.UpdateAlias
			}
			if err := op(ctx, pos[0], pos[1]); err != nil {
				return fmt.Errorf("alias %s %s: %w", sub, pos[0], err)
			}
			return nil
		})
	case "delete":
		return withStore(ctx, "key alias delete", rest, env, 1, 1, func(s *local.Store, pos []string) error {
			if err := s.DeleteAlias(ctx, pos[0]); err != nil {
				return fmt.Errorf("alias delete %s: %w", pos[0], err)
			}
			return nil
		})
	case "list":
		return withStore(ctx, "key alias list", rest, env, 0, 1, func(s *local.Store, pos []string) error {
			key := ""
			if len(pos) == 1 {
				key = pos[0]
			}
			aliases, err := s.ListAliases(ctx, key)
			if err != nil {
				return fmt.Errorf("alias list: %w", err)
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ALIAS\tKEY ID")
			for _, a := range aliases {
				fmt.Fprintf(tw, "%s\t%s\n", a.Name, a.TargetKeyID)
			}
			return tw.Flush()
		})
	}
	return usageErrorf("key alias: unknown subcommand %q", sub)
}

// keyPolicy implements `kmsfs key policy get KEY` (prints the key policy)
// and `kmsfs key policy put KEY [FILE]` (replaces it with FILE, or standard
// input when FILE is absent or "-"). The policy is checked as the key
// server's PutKeyPolicy checks it, except for the lockout check: the owner
// of the keystore can always change a policy from here.
func keyPolicy(ctx context.Context, args []string, env *Env) error {
	if len(args) == 0 {
		return usageErrorf("key policy: missing subcommand (get, put)")
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "get":
		return withStore(ctx, "key policy get", rest, env, 1, 1, func(s *local.Store, pos []string) error {
			p, err := s.GetKeyPolicy(ctx, pos[0])
			if err != nil {
				return fmt.Errorf("key policy get %s: %w", pos[0], err)
			}
			_, err = fmt.Fprintln(env.Stdout, p)
			return err
		})
	case "put":
		return withStore(ctx, "key policy put", rest, env, 1, 2, func(s *local.Store, pos []string) error {
			var b []byte
			var err error
			switch {
			case len(pos) == 2 && pos[1] != "-":
				b, err = os.ReadFile(pos[1])
			case env.Stdin == nil:
				err = errors.New("no standard input")
			default:
				b, err = io.ReadAll(io.LimitReader(env.Stdin, local.MaxPolicySize+1))
			}
			if err != nil {
				return withKind(errUsage, fmt.Errorf("key policy put %s: read the policy: %w", pos[0], err))
			}
			if err := s.PutKeyPolicy(ctx, pos[0], strings.TrimSpace(string(b))); err != nil {
				return fmt.Errorf("key policy put %s: %w", pos[0], err)
			}
			return nil
		})
	}
	return usageErrorf("key policy: unknown subcommand %q: want get or put", sub)
}

// lastRotation returns the date of the key's newest rotation, or "never".
func lastRotation(ctx context.Context, s *local.Store, keyID string) (string, error) {
	rots, err := s.ListKeyRotations(ctx, keyID)
	if err != nil {
		return "", fmt.Errorf("rotations of %s: %w", keyID, err)
	}
	if len(rots) == 0 {
		return "never", nil
	}
	return rots[len(rots)-1].Created.UTC().Format(time.RFC3339), nil
}

func rotationPeriod(k local.KeyMetadata) string {
	if !k.RotationEnabled {
		return "off"
	}
	return fmt.Sprintf("every %dd", k.RotationPeriodDays)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
