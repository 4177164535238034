package keysvc

import (
	"context"
	"errors"
	"sync/atomic"
)

// Operations a Metered service counts, in the order Calls reports them.
var meteredOps = [...]string{"GenerateDataKey", "Decrypt", "ReEncrypt", "DescribeKey"}

// Results a Metered service counts: "ok", one per error kind, "timeout"
// for an ended context and "other" for anything unclassified.
var meteredResults = [...]string{"ok", "not_found", "disabled", "invalid_state", "invalid_ciphertext",
	"incorrect_key", "access_denied", "unavailable", "invalid_argument", "already_exists",
	"limit_exceeded", "timeout", "other"}

var resultKinds = [...]error{nil, ErrNotFound, ErrDisabled, ErrInvalidState, ErrInvalidCiphertext,
	ErrIncorrectKey, ErrAccessDenied, ErrUnavailable, ErrInvalidArgument, ErrAlreadyExists, ErrLimitExceeded}

// Metered is a Service that counts the calls made to the Service behind it,
// by operation and result, for metrics. Put it directly in front of the
// backend (under a Cache) so that it counts real KMS calls. Counting costs
// one atomic add per call.
type Metered struct {
	svc    Service
	counts [len(meteredOps)][len(meteredResults)]atomic.Uint64
}

var _ Service = (*Metered)(nil)

// NewMetered returns a Metered in front of svc.
func NewMetered(svc Service) *Metered { return &Metered{svc: svc} }

// CallCount is one counter of a Metered service.
type CallCount struct {
	Op     string // GenerateDataKey, Decrypt, ReEncrypt or DescribeKey
	Result string // ok, not_found, disabled, …, timeout, other
	N      uint64
}

// Calls returns every counter, zeros included, in a fixed order.
func (m *Metered) Calls() []CallCount {
	out := make([]CallCount, 0, len(meteredOps)*len(meteredResults))
	for o, op := range meteredOps {
		for r, res := range meteredResults {
			out = append(out, CallCount{Op: op, Result: res, N: m.counts[o][r].Load()})
		}
	}
	return out
}

// count records one call of operation op that ended with err.
func (m *Metered) count(op int, err error) {
	m.counts[op][resultIndex(err)].Add(1)
}

func resultIndex(err error) int {
	if err == nil {
		return 0
	}
	for i, k := range resultKinds[1:] {
		if errors.Is(err, k) {
			return i + 1
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return len(meteredResults) - 2
	}
	return len(meteredResults) - 1
}

// GenerateDataKey implements Service.
func (m *Metered) GenerateDataKey(ctx context.Context, keyID string, ec EncryptionContext) (DataKey, error) {
	dk, err := m.svc.GenerateDataKey(ctx, keyID, ec)
	m.count(0, err)
	return dk, err
}

// Decrypt implements Service.
func (m *Metered) Decrypt(ctx context.Context, blob []byte, keyID string, ec EncryptionContext) (Unwrapped, error) {
	u, err := m.svc.Decrypt(ctx, blob, keyID, ec)
	m.count(1, err)
	return u, err
}

// ReEncrypt implements Service.
func (m *Metered) ReEncrypt(ctx context.Context, blob []byte, srcKeyID string, ec EncryptionContext, destKeyID string) (WrappedKey, error) {
	w, err := m.svc.ReEncrypt(ctx, blob, srcKeyID, ec, destKeyID)
	m.count(2, err)
	return w, err
}

// DescribeKey implements Service.
func (m *Metered) DescribeKey(ctx context.Context, keyID string) (KeyInfo, error) {
	ki, err := m.svc.DescribeKey(ctx, keyID)
	m.count(3, err)
	return ki, err
}
