package keysvc

import (
	"context"
	"fmt"
	"testing"
)

// stubService answers every call with err.
type stubService struct{ err error }

func (s stubService) GenerateDataKey(context.Context, string, EncryptionContext) (DataKey, error) {
	return DataKey{Plaintext: make([]byte, DataKeySize)}, s.err
}
func (s stubService) Decrypt(context.Context, []byte, string, EncryptionContext) (Unwrapped, error) {
	return Unwrapped{}, s.err
}
func (s stubService) ReEncrypt(context.Context, []byte, string, EncryptionContext, string) (WrappedKey, error) {
	return WrappedKey{}, s.err
}
func (s stubService) DescribeKey(context.Context, string) (KeyInfo, error) { return KeyInfo{}, s.err }

func TestMeteredCounts(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		err    error
		result string
	}{
		{nil, "ok"},
		{fmt.Errorf("decrypt: %w", ErrDisabled), "disabled"},
		{ErrUnavailable, "unavailable"},
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("strange"), "other"},
	} {
		m := NewMetered(stubService{tc.err})
		m.GenerateDataKey(ctx, "k", nil)
		m.Decrypt(ctx, nil, "", nil)
		m.Decrypt(ctx, nil, "", nil)
		m.ReEncrypt(ctx, nil, "", nil, "k")
		m.DescribeKey(ctx, "k")
		want := map[string]uint64{"GenerateDataKey": 1, "Decrypt": 2, "ReEncrypt": 1, "DescribeKey": 1}
		for _, c := range m.Calls() {
			w := uint64(0)
			if c.Result == tc.result {
				w = want[c.Op]
			}
			if c.N != w {
				t.Errorf("%v: %s/%s = %d, want %d", tc.err, c.Op, c.Result, c.N, w)
			}
		}
	}
}
