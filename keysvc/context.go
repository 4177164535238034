package keysvc

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"
)

// MaxContextSize is the largest encryption context accepted, in bytes,
// counted as the sum of the lengths of every key and value. AWS KMS caps
// the encryption context at 8,192 bytes.
const MaxContextSize = 8192

// EncodeContext returns the canonical encoding of ec, used as additional
// authenticated data by the local backend and as part of cache keys.
//
// The encoding is uvarint(number of pairs) followed, for each pair in
// increasing byte order of the key, by uvarint(len(key)) ‖ key ‖
// uvarint(len(value)) ‖ value. Every length is explicit, so distinct
// contexts never share an encoding ({"ab": "c"} and {"a": "bc"} differ),
// and the pair order is fixed, so equal maps always encode alike. A nil
// and an empty context both encode as the single byte 0x00.
func EncodeContext(ec EncryptionContext) []byte {
	keys := make([]string, 0, len(ec))
	size := binary.MaxVarintLen64
	for k, v := range ec {
		keys = append(keys, k)
		size += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	slices.Sort(keys)
	out := make([]byte, 0, size)
	out = binary.AppendUvarint(out, uint64(len(keys)))
	for _, k := range keys {
		v := ec[k]
		out = binary.AppendUvarint(out, uint64(len(k)))
		out = append(out, k...)
		out = binary.AppendUvarint(out, uint64(len(v)))
		out = append(out, v...)
	}
	return out
}

// ValidateContext checks ec against the rules AWS KMS applies: every key
// is a non-empty string, keys and values are valid UTF-8, and the total
// size of keys and values is at most MaxContextSize bytes. Errors wrap
// ErrInvalidArgument and name the offending key (contexts are not secret).
func ValidateContext(ec EncryptionContext) error {
	total := 0
	for k, v := range ec {
		if k == "" {
			return fmt.Errorf("encryption context has an empty key: %w", ErrInvalidArgument)
		}
		if !utf8.ValidString(k) {
			return fmt.Errorf("encryption context key %q is not valid UTF-8: %w", k, ErrInvalidArgument)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("encryption context value of key %q is not valid UTF-8: %w", k, ErrInvalidArgument)
		}
		total += len(k) + len(v)
	}
	if total > MaxContextSize {
		return fmt.Errorf("encryption context is %d bytes, more than %d: %w", total, MaxContextSize, ErrInvalidArgument)
	}
	return nil
}
