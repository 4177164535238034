// Package keysvc is everything kmsfs knows about keys: the narrow Service
// interface through which the filesystem asks a key management service for
// data keys, the error kinds every backend maps its failures to, the
// encoding of a wrapped data key as stored beside a file, and a bounded
// cache of unwrapped data keys.
//
// Backends live in sub-packages: keysvc/local (the embedded keystore and the
// server speaking the AWS KMS wire protocol) and keysvc/awskms (the
// aws-sdk-go-v2 client). keysvc imports neither fs nor chunk.
package keysvc

import (
	"context"
	"errors"
	"time"
)

// DataKeySize is the size in bytes of every data encryption key (DEK) kmsfs
// asks for: 32 bytes, an AES-256 key (KMS KeySpec AES_256).
const DataKeySize = 32

// Error kinds. Every backend classifies its failures into exactly one of
// these, once, so callers match with errors.Is and never parse messages.
var (
	// ErrNotFound: the key (or alias) does not exist.
	ErrNotFound = errors.New("key not found")
	// ErrDisabled: the key exists but is disabled (KMS DisabledException).
	ErrDisabled = errors.New("key is disabled")
	// ErrInvalidState: the key is pending deletion, pending import or
	// unavailable (KMS KMSInvalidStateException).
	ErrInvalidState = errors.New("key is in an invalid state for this operation")
	// ErrInvalidCiphertext: the wrapped blob is damaged, truncated, not a
	// blob at all, or the encryption context does not match the one it was
	// made with. Like KMS, backends cannot tell these apart, on purpose.
	ErrInvalidCiphertext = errors.New("invalid ciphertext or encryption context")
	// ErrIncorrectKey: the caller named a key and the blob was wrapped
	// under another one (KMS IncorrectKeyException).
	ErrIncorrectKey = errors.New("ciphertext was wrapped under a different key")
	// ErrAccessDenied: the caller is not authenticated or not authorised.
	ErrAccessDenied = errors.New("access denied by the key service")
	// ErrUnavailable: the key service could not be reached, timed out or
	// throttled the request even after bounded retries. Transient.
	ErrUnavailable = errors.New("key service unavailable")
	// ErrInvalidArgument: the request itself is malformed (bad key ID,
	// sizes out of range, bad encryption context).
	ErrInvalidArgument = errors.New("invalid argument to the key service")
	// ErrAlreadyExists: the resource to create (an alias) already exists
	// (KMS AlreadyExistsException).
	ErrAlreadyExists = errors.New("resource already exists")
	// ErrLimitExceeded: a per-key or per-account limit was reached, e.g.
	// the cap on on-demand rotations (KMS LimitExceededException).
	ErrLimitExceeded = errors.New("key service limit exceeded")
)

// EncryptionContext is the KMS encryption context: additional authenticated
// data bound to a wrapped key. Matching is exact and case-sensitive; order
// does not matter. It is not secret: KMS audit logs show it. kmsfs puts the
// filesystem ID and the file ID in it, never a path or a file name.
type EncryptionContext map[string]string

// Encryption-context keys kmsfs uses for its data keys.
const (
	ContextFilesystemID = "kmsfs:fs"
	ContextFileID       = "kmsfs:file"
	// ContextPurpose names what a key that is not a file's data key is
	// for (PurposeNames), so that it can never be confused with a file's
	// key (which has ContextFileID instead) or with another purpose's.
	ContextPurpose = "kmsfs:purpose"
)

// Values of ContextPurpose.
const (
	// PurposeNames: the names key of a tree of format v2 (names/FORMAT.md).
	PurposeNames = "names"
)

// FileContext returns the encryption context of the data key of one file:
// the filesystem ID and the file ID (both lower-case hex), never a path or
// a name, which change on rename and would leak into KMS audit logs. It is
// the one place that context is built: the mount, fsck, rewrap and rekey
// all call it, so a key made by one is unwrapped by every other.
func FileContext(fsID, fileID string) EncryptionContext {
	return EncryptionContext{ContextFilesystemID: fsID, ContextFileID: fileID}
}

// NamesContext returns the encryption context of the names key of the
// filesystem fsID (lower-case hex): the filesystem ID and the purpose
// PurposeNames. It is the one place that context is built: init makes the
// key with it, and the mount, fsck and rewrap unwrap and re-wrap it with
// it. It shares no key with FileContext's contexts beyond the filesystem
// ID, so a file's wrapped key can never be passed off as the names key or
// the other way round.
func NamesContext(fsID string) EncryptionContext {
	return EncryptionContext{ContextFilesystemID: fsID, ContextPurpose: PurposeNames}
}

// DataKey is a freshly generated data key: the plaintext for immediate use
// and its wrapped form for storage. The caller owns Plaintext and must zero
// it (Zero) once it has built its cipher.
type DataKey struct {
	Plaintext []byte
	Wrapped   WrappedKey
}

// WrappedKey is a data key encrypted by the KMS, together with the names of
// the key and key material (backing-key version) that wrapped it. KeyID is
// the full key ARN (or the local key's ARN); KeyMaterialID identifies the
// backing-key version and may be empty when the backend does not report it.
type WrappedKey struct {
	KeyID         string
	KeyMaterialID string
	Blob          []byte
}

// Unwrapped is the result of Decrypt: the plaintext data key and the key
// and key material that unwrapped it. The caller owns Plaintext and must
// zero it when done.
type Unwrapped struct {
	Plaintext     []byte
	KeyID         string
	KeyMaterialID string
	// Fetched is when the KMS gave this answer: set by Cache (a cached
	// answer is as old as its entry); the zero time means just now.
	// Callers that must bound how long a key is used without the KMS's
	// word (revocation of open files) count from it.
	Fetched time.Time
}

// KeyInfo describes a KMS key, as much as kmsfs needs of DescribeKey.
type KeyInfo struct {
	KeyID                string // the key's ID (UUID form)
	ARN                  string
	Enabled              bool
	State                string // Enabled, Disabled, PendingDeletion, …
	CurrentKeyMaterialID string // may be empty when the backend does not say
}

// Service is the narrow interface kmsfs needs from a key management service.
// Every method takes a context for its deadline; implementations must honour
// it and must never put key material in an error string.
type Service interface {
	// GenerateDataKey returns a new random DataKeySize-byte data key,
	// wrapped under keyID (an ID, ARN or alias) with the given context.
	GenerateDataKey(ctx context.Context, keyID string, ec EncryptionContext) (DataKey, error)
	// Decrypt unwraps blob. keyID may be empty; when set, a blob wrapped
	// under another key fails with ErrIncorrectKey. A damaged blob or a
	// context that differs from the one used to wrap fails with
	// ErrInvalidCiphertext.
	Decrypt(ctx context.Context, blob []byte, keyID string, ec EncryptionContext) (Unwrapped, error)
	// ReEncrypt re-wraps blob under destKeyID (its newest key material)
	// without exposing the plaintext to the caller. The encryption context
	// stays the same. srcKeyID is as Decrypt's keyID: when set, a blob
	// wrapped under another key fails with ErrIncorrectKey, so a record
	// that names a trusted key but holds a blob of another one is never
	// laundered under the destination key.
	ReEncrypt(ctx context.Context, blob []byte, srcKeyID string, ec EncryptionContext, destKeyID string) (WrappedKey, error)
	// DescribeKey returns the key's metadata.
	DescribeKey(ctx context.Context, keyID string) (KeyInfo, error)
}

// Zero overwrites b with zeros. Use it on every plaintext key slice once it
// is no longer needed.
func Zero(b []byte) {
	clear(b)
}
