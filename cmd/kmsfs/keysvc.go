package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kmsfs/kmsfs/keysvc/kmsserver"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// defaultListen is where `kmsfs keysvc serve` listens without --listen.
const defaultListen = "127.0.0.1:4599"

const keysvcServeHelp = `Usage: kmsfs keysvc serve [flags]

Serve the local keystore over HTTP as the AWS KMS JSON 1.1 protocol, so that
aws-sdk-go-v2 (kmsfs --kms aws), the AWS CLI and boto3 use it as they would
AWS KMS. Every request must be SigV4-signed (service "kms", any region) with
a credential from 'kmsfs keysvc credentials'; key policies and the
credential's identity policy decide what it may do. Once listening, it prints one line
"kmsfs keysvc: serving the AWS KMS API on URL" on stdout. SIGINT or SIGTERM
shut it down gracefully.

Flags:
  --listen ADDR          address to listen on (default ` + defaultListen + `;
                         port 0 picks a free port)
  --listen-any-address   allow a non-loopback --listen address (needs
                         --tls-cert/--tls-key or --insecure-plaintext)
  --insecure-plaintext   allow --listen-any-address without TLS: data keys
                         and plaintexts cross the network in clear text
  --tls-cert FILE        serve HTTPS with this certificate (PEM) ...
  --tls-key FILE         ... and this private key (PEM)
  --max-connections N    serve at most N connections at once (default 256)
  --audit-log FILE       append one JSON line per request (time, caller,
                         operation, key, encryption context, result); created
                         0600, a symbolic link is refused. A request whose
                         line cannot be written is refused (fails closed)
  --audit-fail-open      answer requests even when the audit log cannot be
                         written
  --latency D            delay every answer by D (e.g. 20ms), to test clients
  --keystore DIR, --passphrase-file FILE   the local keystore

Examples:
  kmsfs keysvc serve --listen 127.0.0.1:4599 --audit-log ~/kms-audit.jsonl
  eval "$(kmsfs keysvc credentials --admin alice | sed 's/^/export /')"
  aws kms create-key --endpoint-url http://127.0.0.1:4599 --region local
`

const keysvcCredentialsHelp = `Usage: kmsfs keysvc credentials (--policy FILE | --admin) [--keystore DIR] NAME
       kmsfs keysvc credentials list [--keystore DIR]
       kmsfs keysvc credentials revoke [--keystore DIR] NAME|ACCESS_KEY_ID

Create an access key for the principal NAME (arn:aws:iam::000000000000:user/NAME)
in the local keystore and print exactly two lines:
  AWS_ACCESS_KEY_ID=…
  AWS_SECRET_ACCESS_KEY=…
NAME gets an identity policy (IAM JSON): the one in FILE, or with --admin
one allowing kms:* on every resource. A key policy's account statement
(arn:aws:iam::000000000000:root, the only statement of keys made by
'kmsfs key create') grants a credential exactly what its identity policy
allows; keys NAME creates through the server also name NAME in their
policy. The policy belongs to NAME: it replaces the policy of NAME's other
access keys.

'list' prints every access key (never a secret) with its policy: admin,
custom, or none (a credential from before identity policies, which has
only what key policies grant it by name). 'revoke' deletes every access
key of NAME, or the one given; a running server refuses it from its next
request on.

Flags:
  --policy FILE   the identity policy (least privilege; see doc/SECURITY.md)
  --admin         full rights on every key and alias

Example identity policy for one mount (fill in KEY_ID and the
filesystem_id of CIPHERDIR/kmsfs.conf):
  {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
    "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
    "Resource": "arn:aws:kms:local:000000000000:key/KEY_ID",
    "Condition": {"StringEquals": {"kms:EncryptionContext:kmsfs:fs": "FS_ID"}}}]}

Examples:
  kmsfs keysvc credentials --policy host-a.json host-a
  kmsfs keysvc credentials --admin ops
  kmsfs keysvc credentials list
  kmsfs keysvc credentials revoke host-a
`

// runKeysvc implements `kmsfs keysvc serve|credentials`. It prints its own
// error and returns an exit code.
func runKeysvc(ctx context.Context, args []string, env *Env) int {
	if len(args) == 0 {
		return report(env, usageErrorf("keysvc: missing subcommand: serve or credentials"))
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(env.Stdout, commandHelp("keysvc"))
		return ExitOK
	case "serve":
		return report(env, keysvcServe(ctx, args[1:], env))
	case "credentials":
		return report(env, keysvcCredentials(ctx, args[1:], env))
	default:
		return report(env, usageErrorf("keysvc: unknown subcommand %q: want serve or credentials", args[0]))
	}
}

// wantsHelp reports whether args ask for help, printing text if so.
func wantsHelp(args []string, env *Env, text string) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Fprint(env.Stdout, text)
			return true
		}
	}
	return false
}

// checkListenAddress refuses addresses other than loopback unless any is
// set: the server hands out data keys to whoever holds a credential, and
// plain HTTP exposes them on the wire.
func checkListenAddress(addr string, anyAddr bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usageErrorf("keysvc serve: --listen %q: want HOST:PORT", addr)
	}
	if anyAddr {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return withHint(usageErrorf("keysvc serve: --listen %q is not a loopback address", addr),
			"add --listen-any-address to serve other hosts (and use --tls-cert/--tls-key)")
	}
	return nil
}

func keysvcServe(ctx context.Context, args []string, env *Env) error {
	if wantsHelp(args, env, keysvcServeHelp) {
		return nil
	}
	fset := newFlagSet("keysvc serve")
	var ks keystoreFlags
	ks.register(fset)
	listen := fset.String("listen", defaultListen, "address to listen on")
	anyAddr := fset.Bool("listen-any-address", false, "allow a non-loopback listen address")
	tlsCert := fset.String("tls-cert", "", "TLS certificate file (PEM)")
	tlsKey := fset.String("tls-key", "", "TLS private key file (PEM)")
	auditPath := fset.String("audit-log", "", "audit log file (JSON lines)")
	latency := fset.Duration("latency", 0, "delay every answer by this much")
	insecure := fset.Bool("insecure-plaintext", false, "allow --listen-any-address without TLS")
	maxConns := fset.Int("max-connections", kmsserver.DefaultMaxConnections, "serve at most this many connections at once")
	auditFailOpen := fset.Bool("audit-fail-open", false, "answer requests even when the audit log cannot be written")
	if _, err := parseArgs(fset, "keysvc", args, env, 0, 0); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := checkListenAddress(*listen, *anyAddr); err != nil {
		return err
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usageErrorf("keysvc serve: --tls-cert and --tls-key go together")
	}
	if *anyAddr && *tlsCert == "" && !*insecure {
		return withHint(usageErrorf("keysvc serve: --listen-any-address without TLS would send data keys and plaintexts to other hosts in clear text"),
			"add --tls-cert FILE --tls-key FILE, or --insecure-plaintext if the network is trusted")
	}
	if *latency < 0 {
		return usageErrorf("keysvc serve: --latency must not be negative")
	}
	if *maxConns < 1 {
		return usageErrorf("keysvc serve: --max-connections must be at least 1")
	}
	logger := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := kmsserver.Options{Logger: logger, Latency: *latency, MaxConnections: *maxConns, AuditFailOpen: *auditFailOpen}
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fmt.Errorf("keysvc serve: load TLS certificate: %w", err)
		}
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if *auditPath != "" {
		f, err := openLogFile(*auditPath)
		if err != nil {
			return fmt.Errorf("keysvc serve: open audit log: %w", err)
		}
		defer f.Close()
		opts.AuditLog = f
	}
	store, err := ks.open(env, logger)
	if err != nil {
		return err
	}
	defer store.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("keysvc serve: %w", err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	scheme := "http"
	if opts.TLSConfig != nil {
		scheme = "https"
	}
	fmt.Fprintf(env.Stdout, "kmsfs keysvc: serving the AWS KMS API on %s://%s\n", scheme, ln.Addr())
	if f, ok := env.Stdout.(*os.File); ok {
		_ = f.Sync()
	}
	start := time.Now()
	err = kmsserver.New(store, opts).Serve(ctx, ln)
	logger.Info("keysvc serve: stopped", "uptime", time.Since(start))
	return err
}

func keysvcCredentials(ctx context.Context, args []string, env *Env) error {
	if wantsHelp(args, env, keysvcCredentialsHelp) {
		return nil
	}
	if len(args) > 0 && (args[0] == "list" || args[0] == "revoke") {
		return keysvcCredentialsManage(ctx, args[0], args[1:], env)
	}
	fset := newFlagSet("keysvc credentials")
	var ks keystoreFlags
	ks.register(fset)
	policyFile := fset.String("policy", "", "identity policy file (IAM JSON)")
	admin := fset.Bool("admin", false, "full rights on every key and alias")
	pos, err := parseArgs(fset, "keysvc", args, env, 1, 1)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var policy string
	switch {
	case pos[0] == "list" || pos[0] == "revoke":
		return usageErrorf("keysvc credentials: %q is a subcommand: put it first (kmsfs keysvc credentials %s …)", pos[0], pos[0])
	case *admin && *policyFile != "":
		return usageErrorf("keysvc credentials: give --policy FILE or --admin, not both")
	case *admin:
		policy = local.AdminPolicy
	case *policyFile != "":
		b, err := os.ReadFile(*policyFile)
		if err != nil {
			return withKind(errUsage, fmt.Errorf("keysvc credentials: read --policy: %w", err))
		}
		policy = string(b)
		if err := local.ValidateIdentityPolicy(policy); err != nil {
			return withKind(errUsage, fmt.Errorf("keysvc credentials: --policy %s: %w", *policyFile, err))
		}
	default:
		return withHint(usageErrorf("keysvc credentials: give --policy FILE (least privilege) or --admin (full rights)"),
			"a credential's identity policy decides what it may do under keys made by 'kmsfs key create'; see 'kmsfs keysvc credentials -h' for a mount's policy")
	}
	store, err := ks.open(env, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer store.Close()
	c, err := store.CreateCredential(ctx, pos[0], policy)
	if err != nil {
		return fmt.Errorf("keysvc credentials: %w", err)
	}
	fmt.Fprintf(env.Stdout, "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", c.AccessKeyID, c.SecretAccessKey)
	return nil
}

// keysvcCredentialsManage implements `kmsfs keysvc credentials list` and
// `kmsfs keysvc credentials revoke NAME|ACCESS_KEY_ID`.
func keysvcCredentialsManage(ctx context.Context, sub string, args []string, env *Env) error {
	fset := newFlagSet("keysvc credentials " + sub)
	var ks keystoreFlags
	ks.register(fset)
	n := 0
	if sub == "revoke" {
		n = 1
	}
	pos, err := parseArgs(fset, "keysvc", args, env, n, n)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	store, err := ks.open(env, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer store.Close()
	if sub == "revoke" {
		gone, err := store.RevokeCredentials(ctx, pos[0])
		if err != nil {
			return fmt.Errorf("keysvc credentials revoke: %w", err)
		}
		for _, id := range gone {
			fmt.Fprintf(env.Stdout, "revoked %s\n", id)
		}
		return nil
	}
	creds, err := store.ListCredentials(ctx)
	if err != nil {
		return fmt.Errorf("keysvc credentials list: %w", err)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tACCESS KEY ID\tCREATED\tPOLICY")
	for _, c := range creds {
		kind := "custom"
		switch c.Policy {
		case local.AdminPolicy:
			kind = "admin"
		case "":
			kind = "none"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.AccessKeyID, c.Created.UTC().Format(time.RFC3339), kind)
	}
	return tw.Flush()
}
