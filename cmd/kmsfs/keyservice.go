package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/keysvc/awskms"
)

// openKeyService opens the key service of kind (cipherdir.KMSLocal or
// cipherdir.KMSAWS): the local keystore through ks (logging to logger,
// nil for none), or the AWS KMS client with endpoint. It is the one place
// that maps a config's kms to a backend: init, mount, fsck, rewrap and
// rekey all come here. The returned close releases the backend.
func openKeyService(ctx context.Context, kind string, ks *keystoreFlags, endpoint string, env *Env, logger *slog.Logger) (cipherdir.Encrypter, func(), error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	switch kind {
	case cipherdir.KMSLocal:
		store, err := ks.open(env, logger)
		if err != nil {
			return nil, nil, err
		}
		return store, func() { store.Close() }, nil
	case cipherdir.KMSAWS:
		client, err := awskms.New(ctx, awskms.Options{Endpoint: endpoint})
		if err != nil {
			return nil, nil, err
		}
		return client, func() {}, nil
	}
	return nil, nil, withKind(errCipherDir, fmt.Errorf("config names unknown kms %q", kind))
}
