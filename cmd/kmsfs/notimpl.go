package main

import (
	"context"
	"errors"
)

// runFsck is reserved for issue 4. It parses its arguments (so typos are
// still usage errors) and then refuses honestly, touching nothing.
func runFsck(_ context.Context, args []string, env *Env) error {
	fs := newFlagSet("fsck")
	if _, err := parseArgs(fs, "fsck", args, env, 1, 1); err != nil {
		return err
	}
	return withKind(errNotImplemented, errors.New("fsck is not implemented yet (issue 4); nothing was checked"))
}
