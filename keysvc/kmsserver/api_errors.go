package kmsserver

import (
	"errors"
	"strings"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// apiError is an error answer of the KMS JSON protocol: HTTP status,
// {"__type": typ, "message": msg}. Messages are written here, by the
// server, from request fields that are not secret (key IDs, alias names,
// sizes): never from plaintext, blobs or key material.
type apiError struct {
	status int
	typ    string
	msg    string
}

func newAPIError(status int, typ, msg string) *apiError {
	return &apiError{status: status, typ: typ, msg: msg}
}

func (e *apiError) Error() string { return e.typ + ": " + e.msg }

// internalError is the answer to anything unexpected; details go to the
// server log only.
var internalError = newAPIError(500, "KMSInternalException", "The request could not be completed due to an internal error.")

// keyNotFound is NotFoundException for a key reference as the caller gave
// it, in AWS's words.
func keyNotFound(ref string) *apiError {
	switch {
	case strings.HasPrefix(ref, "alias/"):
		return newAPIError(400, "NotFoundException", "Alias '"+local.AliasARN(ref)+"' is not found.")
	case strings.HasPrefix(ref, local.ARNPrefix+"alias/"):
		return newAPIError(400, "NotFoundException", "Alias '"+ref+"' is not found.")
	case local.IsKeyID(ref):
		return newAPIError(400, "NotFoundException", "Key '"+local.KeyARN(ref)+"' does not exist")
	case strings.HasPrefix(ref, "arn:"):
		return newAPIError(400, "NotFoundException", "Key '"+ref+"' does not exist")
	default:
		return newAPIError(400, "NotFoundException", "Invalid keyId '"+ref+"'")
	}
}

// storeError maps an error from the Store to the KMS error a client of AWS
// would see. ref is the key reference the request named (may be empty),
// used in NotFound messages. The Store's own messages are not passed on,
// except for validation problems, which the Store words without values.
func storeError(err error, ref string) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, keysvc.ErrNotFound):
		if ref == "" {
			return newAPIError(400, "NotFoundException", "The resource does not exist.")
		}
		return keyNotFound(ref)
	case errors.Is(err, keysvc.ErrDisabled):
		return newAPIError(400, "DisabledException", keyARNFor(ref)+" is disabled.")
	case errors.Is(err, keysvc.ErrInvalidState):
		return newAPIError(400, "KMSInvalidStateException", keyARNFor(ref)+" is not in a valid state for this operation (it may be pending deletion).")
	case errors.Is(err, keysvc.ErrInvalidCiphertext):
		return newAPIError(400, "InvalidCiphertextException", "")
	case errors.Is(err, keysvc.ErrIncorrectKey):
		return newAPIError(400, "IncorrectKeyException", "The key ID in the request does not identify a CMK that can perform this operation.")
	case errors.Is(err, keysvc.ErrAlreadyExists):
		return newAPIError(400, "AlreadyExistsException", "The resource already exists.")
	case errors.Is(err, keysvc.ErrLimitExceeded):
		return newAPIError(400, "LimitExceededException", storeMessage(err, keysvc.ErrLimitExceeded))
	case errors.Is(err, keysvc.ErrAccessDenied):
		return newAPIError(400, "AccessDeniedException", "Access denied.")
	case errors.Is(err, keysvc.ErrInvalidArgument):
		return newAPIError(400, "ValidationException", storeMessage(err, keysvc.ErrInvalidArgument))
	case errors.Is(err, keysvc.ErrUnavailable):
		return newAPIError(500, "DependencyTimeoutException", "The keystore could not be reached in time.")
	default:
		return internalError
	}
}

// storeMessage turns a Store error into a message: its text without the
// sentinel's, first letter capitalised.
func storeMessage(err, sentinel error) string {
	msg := strings.TrimSuffix(err.Error(), ": "+sentinel.Error())
	if msg == "" {
		return sentinel.Error()
	}
	return strings.ToUpper(msg[:1]) + msg[1:]
}

// keyARNFor names a key in a message: the ARN when ref is a bare ID.
func keyARNFor(ref string) string {
	if local.IsKeyID(ref) {
		return local.KeyARN(ref)
	}
	if strings.HasPrefix(ref, "alias/") {
		return local.AliasARN(ref)
	}
	if ref == "" {
		return "The key"
	}
	return ref
}
