package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/kmsfs/kmsfs/keysvc"
)

// Exit codes. They are part of the user-facing contract: scripts rely on
// them, so a number is never reused for another meaning. New kinds get new
// numbers; doc/COMMANDS.md lists them.
const (
	// ExitOK: the command did what it was asked.
	ExitOK = 0
	// ExitFailure: any failure not covered by a more specific code.
	ExitFailure = 1
	// ExitUsage: bad command line (unknown command or flag, wrong number
	// of arguments, invalid flag value).
	ExitUsage = 2
	// ExitCipherDir: CIPHERDIR or its config is missing, invalid, already
	// initialised or not empty; or a file is not a kmsfs backing file.
	ExitCipherDir = 3
	// ExitKeyService: the key service or keystore refused or failed: key
	// not found, disabled or pending deletion, access denied, wrong
	// passphrase, service unreachable.
	ExitKeyService = 4
	// ExitMount: the mount itself failed (mountpoint missing or in use,
	// FUSE unavailable, daemon died before it was ready).
	ExitMount = 5
	// ExitNotImplemented: the command exists in the interface but is not
	// implemented yet. Nothing was changed.
	ExitNotImplemented = 6
	// ExitUnmount: unmount failed (not a kmsfs mount, busy), or the daemon
	// did not exit within the wait bound.
	ExitUnmount = 7
	// ExitIncomplete: rewrap or rekey failed for some files (each is
	// named on stderr); the others were done. Running the same command
	// again finishes the job.
	ExitIncomplete = 8
	// Codes 10..19 are reserved for fsck.

	// ExitFsckProblems: fsck found problems (listed on stdout) and was
	// not asked to repair them.
	ExitFsckProblems = 10
	// ExitFsckRemain: fsck --repair left problems it cannot (or, without
	// --zero-unreadable, may not) repair.
	ExitFsckRemain = 11
	// ExitFsckUnavailable: the key service did not answer for some files,
	// which were not checked; no problem was found in the others.
	ExitFsckUnavailable = 12
	// ExitFsckRepaired: fsck --repair found problems and repaired all of
	// them; the tree is now clean.
	ExitFsckRepaired = 13
	// ExitFsckBusy: some files were not checked (or, with --repair, not
	// repaired) because a mount in shared mode kept writing them; no
	// problem was found in the others. Running fsck again checks them.
	ExitFsckBusy = 14
)

// Error classes of cmd/kmsfs itself. They are never printed: kindError
// attaches one to an error so exitCode can classify it with errors.Is while
// the message stays the underlying one.
var (
	errUsage          = errors.New("usage")
	errCipherDir      = errors.New("cipherdir")
	errKeystore       = errors.New("keystore")
	errMountFailed    = errors.New("mount failed")
	errUnmountFailed  = errors.New("unmount failed")
	errNotImplemented = errors.New("not implemented yet")
	errIncomplete     = errors.New("some files failed")
)

// exitCode maps an error to its documented exit code. It is the only place
// that does: every command returns an error and lets this switch decide.
// Key-service errors win over the step that hit them (a mount that fails
// because the key is disabled exits with ExitKeyService), because the
// cause is what the user has to fix.
func exitCode(err error) int {
	if d, ok := errors.AsType[*daemonError](err); ok {
		return d.code // classified by the daemon, with this same switch
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.Is(err, errUsage):
		return ExitUsage
	case errors.Is(err, errNotImplemented):
		return ExitNotImplemented
	case errors.Is(err, errIncomplete):
		return ExitIncomplete
	case errors.Is(err, errFsckProblems):
		return ExitFsckProblems
	case errors.Is(err, errFsckRemain):
		return ExitFsckRemain
	case errors.Is(err, errFsckUnavailable):
		return ExitFsckUnavailable
	case errors.Is(err, errFsckRepaired):
		return ExitFsckRepaired
	case errors.Is(err, errFsckBusy):
		return ExitFsckBusy
	case errors.Is(err, keysvc.ErrNotFound),
		errors.Is(err, keysvc.ErrDisabled),
		errors.Is(err, keysvc.ErrInvalidState),
		errors.Is(err, keysvc.ErrInvalidCiphertext),
		errors.Is(err, keysvc.ErrIncorrectKey),
		errors.Is(err, keysvc.ErrAccessDenied),
		errors.Is(err, keysvc.ErrUnavailable),
		errors.Is(err, keysvc.ErrInvalidArgument),
		errors.Is(err, keysvc.ErrAlreadyExists),
		errors.Is(err, keysvc.ErrLimitExceeded),
		errors.Is(err, errKeystore):
		return ExitKeyService
	case errors.Is(err, errCipherDir):
		return ExitCipherDir
	case errors.Is(err, errMountFailed):
		return ExitMount
	case errors.Is(err, errUnmountFailed):
		return ExitUnmount
	default:
		return ExitFailure
	}
}

// kindError tags err with a class for exitCode. Error() is err's message
// alone: the class is never printed.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }

// Unwrap exposes both the class and the cause to errors.Is and errors.As.
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// withKind classifies err; nil stays nil.
func withKind(kind, err error) error {
	if err == nil {
		return nil
	}
	return &kindError{kind: kind, err: err}
}

// hintError carries a line of advice printed under the error.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// withHint attaches a hint line to err; nil stays nil.
func withHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hint: hint}
}

func usageErrorf(format string, args ...any) error {
	return withKind(errUsage, fmt.Errorf(format, args...))
}

// hintFor returns the hint to print under err: the outermost explicit one,
// else a default for well-known error classes, else "".
func hintFor(err error) string {
	if h, ok := errors.AsType[*hintError](err); ok {
		return h.hint
	}
	switch {
	case errors.Is(err, errUsage):
		return "run 'kmsfs help' for the commands and 'kmsfs CMD -h' for their flags"
	case errors.Is(err, keysvc.ErrDisabled):
		return "enable the key ('kmsfs key enable KEY' for the local KMS)"
	case errors.Is(err, keysvc.ErrInvalidState):
		return "the key may be pending deletion ('kmsfs key describe KEY' for the local KMS)"
	case errors.Is(err, keysvc.ErrAccessDenied):
		return "check the credentials and the key policy"
	case errors.Is(err, keysvc.ErrUnavailable):
		return "the key service did not answer in time; check the endpoint and the network"
	}
	return ""
}

// report prints err as "kmsfs: error: …" (and "kmsfs: hint: …" when one
// applies) and returns its exit code. A -h request has already printed its
// usage and exits 0.
func report(env *Env, err error) int {
	code := exitCode(err)
	if code == ExitOK {
		return code
	}
	fmt.Fprintf(env.Stderr, "kmsfs: error: %s\n", err)
	if h := hintFor(err); h != "" {
		fmt.Fprintf(env.Stderr, "kmsfs: hint: %s\n", h)
	}
	return code
}

// reportOneLine is report with the hint folded into the error line, for
// commands whose failure must be a single line (mount).
func reportOneLine(env *Env, err error) int {
	code := exitCode(err)
	if code == ExitOK {
		return code
	}
	msg := err.Error()
	if h := hintFor(err); h != "" {
		msg += " (hint: " + h + ")"
	}
	fmt.Fprintf(env.Stderr, "kmsfs: error: %s\n", oneLine(msg))
	return code
}
