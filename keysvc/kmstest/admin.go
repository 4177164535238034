package kmstest

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// StoreAdmin manages keys of an embedded keystore directly.
func StoreAdmin(s *local.Store) Admin { return storeAdmin{s} }

type storeAdmin struct{ s *local.Store }

func (a storeAdmin) CreateKey(ctx context.Context, desc string) (string, error) {
	m, err := a.s.CreateKey(ctx, local.CreateKeyInput{Description: desc})
	return m.ARN, err
}

func (a storeAdmin) CreateAlias(ctx context.Context, alias, arn string) error {
	return a.s.CreateAlias(ctx, alias, arn)
}

func (a storeAdmin) RotateKey(ctx context.Context, arn string) error {
	_, err := a.s.RotateKey(ctx, arn)
	return err
}

func (a storeAdmin) EnableKey(ctx context.Context, arn string) error { return a.s.EnableKey(ctx, arn) }
func (a storeAdmin) DisableKey(ctx context.Context, arn string) error {
	return a.s.DisableKey(ctx, arn)
}

func (a storeAdmin) ScheduleKeyDeletion(ctx context.Context, arn string, days int) error {
	_, err := a.s.ScheduleKeyDeletion(ctx, arn, days)
	return err
}

func (a storeAdmin) CancelKeyDeletion(ctx context.Context, arn string) error {
	_, err := a.s.CancelKeyDeletion(ctx, arn)
	return err
}

// SDKAdmin manages keys through the AWS KMS API (the key server, moto, or
// AWS itself). It names keys by key ID, not ARN: AWS accepts both, and
// moto 5 crashes (HTTP 500, KeyError) on DisableKey and ScheduleKeyDeletion
// given an ARN.
func SDKAdmin(c *kms.Client) Admin { return sdkAdmin{c} }

type sdkAdmin struct{ c *kms.Client }

// keyID returns the key ID part of a key ARN (anything else unchanged).
func keyID(arn string) *string {
	if i := strings.LastIndex(arn, ":key/"); i >= 0 {
		return aws.String(arn[i+len(":key/"):])
	}
	return aws.String(arn)
}

// sdkErr marks the one error the suite checks by kind on Admin calls.
func sdkErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var exists *types.AlreadyExistsException
	if errors.As(err, &exists) {
		return fmt.Errorf("%s: %w: %w", op, keysvc.ErrAlreadyExists, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func (a sdkAdmin) CreateKey(ctx context.Context, desc string) (string, error) {
	out, err := a.c.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String(desc)})
	if err != nil {
		return "", sdkErr("CreateKey", err)
	}
	return aws.ToString(out.KeyMetadata.Arn), nil
}

func (a sdkAdmin) CreateAlias(ctx context.Context, alias, arn string) error {
	_, err := a.c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: keyID(arn)})
	return sdkErr("CreateAlias", err)
}

func (a sdkAdmin) RotateKey(ctx context.Context, arn string) error {
	_, err := a.c.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: keyID(arn)})
	return sdkErr("RotateKeyOnDemand", err)
}

func (a sdkAdmin) EnableKey(ctx context.Context, arn string) error {
	_, err := a.c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: keyID(arn)})
	return sdkErr("EnableKey", err)
}

func (a sdkAdmin) DisableKey(ctx context.Context, arn string) error {
	_, err := a.c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: keyID(arn)})
	return sdkErr("DisableKey", err)
}

func (a sdkAdmin) ScheduleKeyDeletion(ctx context.Context, arn string, days int) error {
	_, err := a.c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: keyID(arn), PendingWindowInDays: aws.Int32(int32(days))})
	return sdkErr("ScheduleKeyDeletion", err)
}

func (a sdkAdmin) CancelKeyDeletion(ctx context.Context, arn string) error {
	_, err := a.c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: keyID(arn)})
	return sdkErr("CancelKeyDeletion", err)
}
