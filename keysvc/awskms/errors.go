package awskms

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/kmsfs/kmsfs/keysvc"
)

// Error codes that aws-sdk-go-v2 does not model as types for KMS: they come
// back as a generic smithy.APIError and must be matched by code. The
// authentication codes are those of AWS's common error set (and of
// `kmsfs keysvc serve`).
var (
	accessDeniedCodes = map[string]bool{
		"AccessDeniedException":               true,
		"AccessDenied":                        true,
		"UnrecognizedClientException":         true,
		"InvalidSignatureException":           true,
		"IncompleteSignature":                 true,
		"IncompleteSignatureException":        true,
		"MissingAuthenticationToken":          true,
		"MissingAuthenticationTokenException": true,
		"InvalidClientTokenId":                true,
		"SignatureDoesNotMatch":               true,
		"ExpiredToken":                        true,
		"ExpiredTokenException":               true,
		"RequestExpired":                      true,
		"NotAuthorized":                       true,
	}
	unavailableCodes = map[string]bool{
		"ThrottlingException":         true,
		"Throttling":                  true,
		"LimitExceededException":      true,
		"RequestLimitExceeded":        true,
		"TooManyRequestsException":    true,
		"ServiceUnavailable":          true,
		"ServiceUnavailableException": true,
		"InternalFailure":             true,
		"InternalServerError":         true,
	}
	invalidArgumentCodes = map[string]bool{
		"ValidationException":         true,
		"ValidationError":             true,
		"SerializationException":      true,
		"InvalidParameterValue":       true,
		"InvalidParameterCombination": true,
		"UnknownOperationException":   true,
		"InvalidAction":               true,
		"MalformedQueryString":        true,
	}
)

// classify maps an error from the SDK to exactly one keysvc sentinel and
// wraps both, so callers match with errors.Is(err, keysvc.ErrX) and can still
// reach the SDK error with errors.As. It is the only place in kmsfs that
// knows AWS's error names. KMS error messages never carry key material, so
// wrapping the original is safe.
func classify(op string, err error) error {
	return fmt.Errorf("awskms: %s: %w: %w", op, kind(err), err)
}

// kind returns the sentinel for err.
func kind(err error) error {
	var (
		notFound      *types.NotFoundException
		disabled      *types.DisabledException
		invalidState  *types.KMSInvalidStateException
		unavailable   *types.KeyUnavailableException
		invalidCipher *types.InvalidCiphertextException
		incorrectKey  *types.IncorrectKeyException
		invalidUsage  *types.InvalidKeyUsageException
		invalidArn    *types.InvalidArnException
		invalidAlias  *types.InvalidAliasNameException
		invalidGrant  *types.InvalidGrantTokenException
		unsupported   *types.UnsupportedOperationException
		limit         *types.LimitExceededException
		exists        *types.AlreadyExistsException
		dependency    *types.DependencyTimeoutException
		internal      *types.KMSInternalException
		invalidParams *smithy.InvalidParamsError
		api           smithy.APIError
	)
	switch {
	case errors.As(err, &notFound):
		return keysvc.ErrNotFound
	case errors.As(err, &disabled):
		return keysvc.ErrDisabled
	case errors.As(err, &invalidState), errors.As(err, &unavailable):
		return keysvc.ErrInvalidState
	case errors.As(err, &invalidCipher):
		return keysvc.ErrInvalidCiphertext
	case errors.As(err, &incorrectKey):
		return keysvc.ErrIncorrectKey
	case errors.As(err, &invalidUsage), errors.As(err, &invalidArn), errors.As(err, &invalidAlias),
		errors.As(err, &invalidGrant), errors.As(err, &unsupported), errors.As(err, &invalidParams):
		return keysvc.ErrInvalidArgument
	case errors.As(err, &exists):
		return keysvc.ErrAlreadyExists
	case errors.As(err, &limit):
		// A quota (request rate or e.g. on-demand rotations); it reaches
		// here only after the retryer gave up.
		return keysvc.ErrLimitExceeded
	case errors.As(err, &dependency), errors.As(err, &internal):
		return keysvc.ErrUnavailable
	case errors.As(err, &api):
		code := api.ErrorCode()
		switch {
		case accessDeniedCodes[code]:
			return keysvc.ErrAccessDenied
		case unavailableCodes[code]:
			return keysvc.ErrUnavailable
		case invalidArgumentCodes[code]:
			return keysvc.ErrInvalidArgument
		case api.ErrorFault() == smithy.FaultServer:
			return keysvc.ErrUnavailable
		default:
			// An unmodelled client-side fault we have no name for: the
			// request was refused as given, retrying will not help.
			return keysvc.ErrInvalidArgument
		}
	case errors.As(err, new(*credentialsError)):
		return keysvc.ErrAccessDenied
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return keysvc.ErrUnavailable
	default:
		// Connection refused, reset, DNS, TLS handshake, timeouts, the
		// retryer's quota: the service could not be reached.
		return keysvc.ErrUnavailable
	}
}

// credentialsError marks a failure to obtain credentials, which the SDK
// reports as an untyped "get identity" error.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "retrieve AWS credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }
