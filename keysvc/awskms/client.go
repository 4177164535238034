// Package awskms is the keysvc backend for AWS KMS and everything that speaks
// its wire protocol (`kmsfs keysvc serve`, moto, LocalStack), built on
// aws-sdk-go-v2's service/kms client.
//
// The SDK client sits behind kmsAPI, an unexported interface holding only
// the four calls kmsfs makes, so tests can substitute a fake that performs
// real AES-GCM. Configuration is the SDK's own: region, profile and the
// default credential chain, with the endpoint taken from Options.Endpoint,
// else AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL or the shared config file.
//
// A key server speaking HTTPS with a private CA (`kmsfs keysvc serve
// --tls-cert`) is trusted through the SDK's AWS_CA_BUNDLE.
//
// Every call runs under its own deadline (Options.CallTimeout), detached
// from the caller's cancellation: a FUSE request's context is cancelled by
// any signal the calling process receives, and half-finished KMS calls would
// then surface as spurious I/O errors. Throttling and transient failures are
// retried by the SDK's standard retryer, at most Options.MaxAttempts times
// with jittered exponential backoff, all inside that deadline. Every failure
// is classified exactly once, in classify (errors.go), into keysvc's
// sentinel errors.
package awskms

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/kmsfs/kmsfs/keysvc"
)

// Defaults for Options.
const (
	// DefaultCallTimeout bounds one KMS call, retries included.
	DefaultCallTimeout = 10 * time.Second
	// DefaultMaxAttempts is the number of attempts per call (1 + 2 retries),
	// the SDK's standard.
	DefaultMaxAttempts = 3
	// maxBackoff caps the delay between two attempts.
	maxBackoff = 2 * time.Second
	// defaultRegionWithEndpoint is used when an endpoint override is given
	// but no region is configured: local servers accept any region, and the
	// SigV4 signature needs one.
	defaultRegionWithEndpoint = "us-east-1"
	// maxCiphertextBlob is KMS's limit on any CiphertextBlob.
	maxCiphertextBlob = 6144
)

// kmsAPI holds exactly the service/kms calls this package makes. Keeping it
// narrow keeps the fake in the tests honest and small.
type kmsAPI interface {
	GenerateDataKey(ctx context.Context, in *kms.GenerateDataKeyInput, optFns ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error)
	Decrypt(ctx context.Context, in *kms.DecryptInput, optFns ...func(*kms.Options)) (*kms.DecryptOutput, error)
	ReEncrypt(ctx context.Context, in *kms.ReEncryptInput, optFns ...func(*kms.Options)) (*kms.ReEncryptOutput, error)
	Encrypt(ctx context.Context, in *kms.EncryptInput, optFns ...func(*kms.Options)) (*kms.EncryptOutput, error)
	RotateKeyOnDemand(ctx context.Context, in *kms.RotateKeyOnDemandInput, optFns ...func(*kms.Options)) (*kms.RotateKeyOnDemandOutput, error)
	DescribeKey(ctx context.Context, in *kms.DescribeKeyInput, optFns ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
}

var _ kmsAPI = (*kms.Client)(nil)

var _ keysvc.Service = (*Client)(nil)

// Options configures New. The zero value uses the SDK's default
// configuration chain and this package's defaults.
type Options struct {
	// Endpoint overrides the KMS endpoint URL, e.g.
	// "http://127.0.0.1:4599" for `kmsfs keysvc serve`. Empty means the
	// SDK's resolution: AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL, the shared
	// config file's services section, else the regional AWS endpoint.
	Endpoint string
	// Region overrides AWS_REGION / the profile's region. When neither is
	// set and an endpoint override is in effect, "us-east-1" is used.
	Region string
	// Profile selects a shared-config profile instead of AWS_PROFILE.
	Profile string
	// Credentials, when non-nil, replaces the SDK's default credential
	// chain (environment, shared files, SSO, web identity, IMDS, …).
	Credentials aws.CredentialsProvider
	// CallTimeout bounds each call including its retries; 0 means
	// DefaultCallTimeout. A shorter deadline on the caller's context wins.
	CallTimeout time.Duration
	// MaxAttempts is the number of attempts per call; 0 means
	// DefaultMaxAttempts, 1 disables retries.
	MaxAttempts int
}

// Client is a keysvc.Service backed by AWS KMS (or anything speaking its
// protocol). It is safe for concurrent use.
type Client struct {
	api     kmsAPI
	timeout time.Duration
}

// New loads the SDK configuration and returns a client. It does not contact
// KMS, but it does resolve credentials once so that a missing or broken
// credential configuration fails here, clearly, rather than on the first
// file open; that failure wraps keysvc.ErrAccessDenied.
func New(ctx context.Context, opts Options) (*Client, error) {
	if opts.CallTimeout < 0 || opts.MaxAttempts < 0 {
		return nil, fmt.Errorf("awskms: negative call timeout or attempt count: %w", keysvc.ErrInvalidArgument)
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	attempts := opts.MaxAttempts
	loadOpts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				o.MaxBackoff = maxBackoff
			})
		}),
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.Profile != "" {
		loadOpts = append(loadOpts, config.WithSharedConfigProfile(opts.Profile))
	}
	if opts.Credentials != nil {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(opts.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("awskms: load AWS configuration: %w: %w", keysvc.ErrInvalidArgument, err)
	}
	if cfg.Credentials == nil {
		return nil, fmt.Errorf("awskms: no AWS credentials configured: %w", keysvc.ErrAccessDenied)
	}
	cfg.Credentials = markedCredentials{cfg.Credentials}
	api := kms.NewFromConfig(cfg, func(o *kms.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		if o.Region == "" && o.BaseEndpoint != nil {
			o.Region = defaultRegionWithEndpoint
		}
	})
	if api.Options().Region == "" {
		return nil, fmt.Errorf("awskms: no AWS region configured (set AWS_REGION or a profile region): %w", keysvc.ErrInvalidArgument)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.CallTimeout)
	defer cancel()
	if _, err := cfg.Credentials.Retrieve(cctx); err != nil {
		return nil, fmt.Errorf("awskms: resolve AWS credentials: %w: %w", keysvc.ErrAccessDenied, err)
	}
	return newClient(api, opts.CallTimeout), nil
}

// markedCredentials marks credential failures so that classify can tell
// them from network failures: the SDK reports both as untyped errors.
type markedCredentials struct{ p aws.CredentialsProvider }

func (m markedCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := m.p.Retrieve(ctx)
	if err != nil {
		return c, &credentialsError{err: err}
	}
	return c, nil
}

// newClient wraps any kmsAPI; tests pass a fake.
func newClient(api kmsAPI, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	return &Client{api: api, timeout: timeout}
}

// callContext returns the context for one KMS call: the caller's values,
// none of its cancellation, and a deadline of the call timeout or the
// caller's own deadline, whichever comes first.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := c.timeout
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < d {
			d = left
		}
	}
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// GenerateDataKey asks KMS for a new AES-256 data key wrapped under keyID.
func (c *Client) GenerateDataKey(ctx context.Context, keyID string, ec keysvc.EncryptionContext) (keysvc.DataKey, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.api.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId:             aws.String(keyID),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: contextMap(ec),
	})
	if err != nil {
		return keysvc.DataKey{}, classify("GenerateDataKey", err)
	}
	if len(out.Plaintext) != keysvc.DataKeySize || len(out.CiphertextBlob) == 0 || len(out.CiphertextBlob) > maxCiphertextBlob {
		keysvc.Zero(out.Plaintext)
		return keysvc.DataKey{}, fmt.Errorf("awskms: GenerateDataKey: malformed response (%d-byte key, %d-byte blob): %w",
			len(out.Plaintext), len(out.CiphertextBlob), keysvc.ErrUnavailable)
	}
	return keysvc.DataKey{
		Plaintext: out.Plaintext,
		Wrapped: keysvc.WrappedKey{
			KeyID:         aws.ToString(out.KeyId),
			KeyMaterialID: aws.ToString(out.KeyMaterialId),
			Blob:          out.CiphertextBlob,
		},
	}, nil
}

// Decrypt unwraps blob. With keyID set, KMS refuses a blob wrapped under
// another key (keysvc.ErrIncorrectKey).
func (c *Client) Decrypt(ctx context.Context, blob []byte, keyID string, ec keysvc.EncryptionContext) (keysvc.Unwrapped, error) {
	if len(blob) == 0 {
		return keysvc.Unwrapped{}, fmt.Errorf("awskms: Decrypt: empty blob: %w", keysvc.ErrInvalidCiphertext)
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	in := &kms.DecryptInput{
		CiphertextBlob:    blob,
		EncryptionContext: contextMap(ec),
	}
	if keyID != "" {
		in.KeyId = aws.String(keyID)
	}
	out, err := c.api.Decrypt(ctx, in)
	if err != nil {
		return keysvc.Unwrapped{}, classify("Decrypt", err)
	}
	if len(out.Plaintext) == 0 {
		return keysvc.Unwrapped{}, fmt.Errorf("awskms: Decrypt: response without plaintext: %w", keysvc.ErrUnavailable)
	}
	return keysvc.Unwrapped{
		Plaintext:     out.Plaintext,
		KeyID:         aws.ToString(out.KeyId),
		KeyMaterialID: aws.ToString(out.KeyMaterialId),
	}, nil
}

// ReEncrypt re-wraps blob under destKeyID's current key material inside
// KMS, keeping the encryption context.
func (c *Client) ReEncrypt(ctx context.Context, blob []byte, srcKeyID string, ec keysvc.EncryptionContext, destKeyID string) (keysvc.WrappedKey, error) {
	if len(blob) == 0 {
		return keysvc.WrappedKey{}, fmt.Errorf("awskms: ReEncrypt: empty blob: %w", keysvc.ErrInvalidCiphertext)
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	m := contextMap(ec)
	in := &kms.ReEncryptInput{
		CiphertextBlob:               blob,
		SourceEncryptionContext:      m,
		DestinationKeyId:             aws.String(destKeyID),
		DestinationEncryptionContext: m,
	}
	if srcKeyID != "" {
		in.SourceKeyId = aws.String(srcKeyID)
	}
	out, err := c.api.ReEncrypt(ctx, in)
	if err != nil {
		return keysvc.WrappedKey{}, classify("ReEncrypt", err)
	}
	if len(out.CiphertextBlob) == 0 || len(out.CiphertextBlob) > maxCiphertextBlob {
		return keysvc.WrappedKey{}, fmt.Errorf("awskms: ReEncrypt: malformed response (%d-byte blob): %w",
			len(out.CiphertextBlob), keysvc.ErrUnavailable)
	}
	return keysvc.WrappedKey{
		KeyID:         aws.ToString(out.KeyId),
		KeyMaterialID: aws.ToString(out.DestinationKeyMaterialId),
		Blob:          out.CiphertextBlob,
	}, nil
}

// Encrypt wraps plaintext (1..4096 bytes) under keyID's current key
// material. kmsfs uses it only to move a data key from another key service
// (`kmsfs rewrap --to-kms aws`), the one case where a data key passes
// through kmsfs's memory on its way into KMS.
func (c *Client) Encrypt(ctx context.Context, keyID string, plaintext []byte, ec keysvc.EncryptionContext) (keysvc.WrappedKey, error) {
	if len(plaintext) == 0 || len(plaintext) > 4096 {
		return keysvc.WrappedKey{}, fmt.Errorf("awskms: Encrypt: plaintext of %d bytes, want 1..4096: %w", len(plaintext), keysvc.ErrInvalidArgument)
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.api.Encrypt(ctx, &kms.EncryptInput{
		KeyId:             aws.String(keyID),
		Plaintext:         plaintext,
		EncryptionContext: contextMap(ec),
	})
	if err != nil {
		return keysvc.WrappedKey{}, classify("Encrypt", err)
	}
	if len(out.CiphertextBlob) == 0 || len(out.CiphertextBlob) > maxCiphertextBlob {
		return keysvc.WrappedKey{}, fmt.Errorf("awskms: Encrypt: malformed response (%d-byte blob): %w",
			len(out.CiphertextBlob), keysvc.ErrUnavailable)
	}
	// EncryptOutput does not name the key material.
	return keysvc.WrappedKey{KeyID: aws.ToString(out.KeyId), Blob: out.CiphertextBlob}, nil
}

// RotateKeyOnDemand starts an on-demand rotation of keyID (`kmsfs key
// rotate --kms aws`): new data keys get new key material, old ones still
// unwrap. KMS caps on-demand rotations per key (keysvc.ErrLimitExceeded).
func (c *Client) RotateKeyOnDemand(ctx context.Context, keyID string) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	if _, err := c.api.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: aws.String(keyID)}); err != nil {
		return classify("RotateKeyOnDemand", err)
	}
	return nil
}

// DescribeKey returns the key's ID, ARN, state and current key material.
func (c *Client) DescribeKey(ctx context.Context, keyID string) (keysvc.KeyInfo, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	out, err := c.api.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyID)})
	if err != nil {
		return keysvc.KeyInfo{}, classify("DescribeKey", err)
	}
	md := out.KeyMetadata
	if md == nil {
		return keysvc.KeyInfo{}, fmt.Errorf("awskms: DescribeKey: response without key metadata: %w", keysvc.ErrUnavailable)
	}
	return keysvc.KeyInfo{
		KeyID:                aws.ToString(md.KeyId),
		ARN:                  aws.ToString(md.Arn),
		Enabled:              md.Enabled,
		State:                string(md.KeyState),
		CurrentKeyMaterialID: aws.ToString(md.CurrentKeyMaterialId),
	}, nil
}

// contextMap converts an encryption context for the SDK; an empty context
// is sent as no context at all, which KMS treats identically.
func contextMap(ec keysvc.EncryptionContext) map[string]string {
	if len(ec) == 0 {
		return nil
	}
	m := make(map[string]string, len(ec))
	for k, v := range ec {
		m[k] = v
	}
	return m
}
