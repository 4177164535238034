package main

import (
	"context"
	"errors"
)

// runKeysvc implements `kmsfs keysvc serve|credentials`. This first version
// only keeps the command in place: the key server (issue 3) replaces it.
// It prints its own error and returns an exit code.
func runKeysvc(_ context.Context, args []string, env *Env) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		_, _ = env.Stdout.Write([]byte(commandHelp("keysvc")))
		return ExitOK
	}
	return report(env, withKind(errNotImplemented, errors.New("keysvc is not implemented yet (issue 3)")))
}
