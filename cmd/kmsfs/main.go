// Command kmsfs is a transparent encrypting FUSE filesystem whose per-file
// data keys are wrapped by a key management service: AWS KMS, or the
// embedded local KMS kept in an encrypted keystore.
//
// This package only wires: it parses flags, loads the CIPHERDIR config,
// builds the key service, hands both to package fs, mounts, waits for a
// signal and unmounts. Run `kmsfs help` for the commands.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/kmsfs/kmsfs/internal/secmem"
)

// Env is everything a command takes from the process: where to read and
// print, and how to read the environment. Commands never touch os.Stdin,
// os.Stdout, os.Stderr or os.Getenv directly, so tests run them with buffers and a fake environment.
type Env struct {
	Stdin  io.Reader // nil: no input (commands that read it refuse)
	Stdout io.Writer
	Stderr io.Writer
	// Getenv returns the value of an environment variable, "" when unset.
	Getenv func(key string) string
}

func main() {
	env := &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	// Nearly every command holds keys (data keys, the keystore's root key
	// and backing keys): no core dump, and no ptrace or /proc/PID/mem
	// access by other processes of the user. Here rather than in run, so
	// tests calling run leave their own process as it was.
	if err := secmem.DisableDumps(); err != nil {
		fmt.Fprintf(env.Stderr, "kmsfs: warning: %v\n", err)
	}
	os.Exit(run(context.Background(), os.Args[1:], env))
}

// run dispatches to the subcommand named by args[0] and returns the exit
// code. Errors are printed here, once, by report.
func run(ctx context.Context, args []string, env *Env) int {
	if len(args) == 0 {
		printUsage(env.Stderr)
		return ExitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "help", "-h", "-help", "--help":
		return runHelp(rest, env)
	case "version", "--version":
		_, err = io.WriteString(env.Stdout, "kmsfs "+version()+"\n")
	case "init":
		err = runInit(ctx, rest, env)
	case "mount":
		// A failed mount prints exactly one line (scripts and the
		// architecture rely on it): the hint goes on the same line.
		return reportOneLine(env, runMount(ctx, rest, env))
	case "unmount", "umount":
		err = runUnmount(ctx, rest, env)
	case "key":
		err = runKey(ctx, rest, env)
	case "info":
		err = runInfo(ctx, rest, env)
	case "fsck":
		err = runFsck(ctx, rest, env)
	case "paths":
		err = runPaths(ctx, rest, env)
	case "rewrap":
		err = runRewrap(ctx, rest, env)
	case "rekey":
		err = runRekey(ctx, rest, env)
	case "keysvc":
		// Owned by the key-service work (issue 3); it reports its own errors.
		return runKeysvc(ctx, rest, env)
	default:
		err = usageErrorf("unknown command %q", cmd)
	}
	return report(env, err)
}
