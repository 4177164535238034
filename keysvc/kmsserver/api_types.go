package kmsserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// The AWS KMS JSON 1.1 request and response shapes the server speaks.
// Field names are AWS's. Blobs are []byte, which encoding/json reads and
// writes as standard base64, as the protocol wants; timestamps are epochTime,
// written as fractional epoch seconds.

// epochTime is a timestamp on the wire: seconds since the epoch, with
// millisecond fraction.
type epochTime time.Time

func (t epochTime) MarshalJSON() ([]byte, error) {
	ms := time.Time(t).UnixMilli()
	return []byte(fmt.Sprintf("%d.%03d", ms/1000, ms%1000)), nil
}

func epoch(t time.Time) *epochTime {
	if t.IsZero() {
		return nil
	}
	e := epochTime(t)
	return &e
}

type tag struct {
	TagKey   string `json:"TagKey"`
	TagValue string `json:"TagValue"`
}

type keyMetadataJSON struct {
	AWSAccountID          string     `json:"AWSAccountId"`
	KeyID                 string     `json:"KeyId"`
	Arn                   string     `json:"Arn"`
	CreationDate          *epochTime `json:"CreationDate,omitempty"`
	Enabled               bool       `json:"Enabled"`
	Description           string     `json:"Description"`
	KeyUsage              string     `json:"KeyUsage"`
	KeyState              string     `json:"KeyState"`
	DeletionDate          *epochTime `json:"DeletionDate,omitempty"`
	PendingDeletionWindow int        `json:"PendingDeletionWindowInDays,omitempty"`
	Origin                string     `json:"Origin"`
	KeyManager            string     `json:"KeyManager"`
	CustomerMasterKeySpec string     `json:"CustomerMasterKeySpec"`
	KeySpec               string     `json:"KeySpec"`
	EncryptionAlgorithms  []string   `json:"EncryptionAlgorithms"`
	MultiRegion           bool       `json:"MultiRegion"`
	CurrentKeyMaterialID  string     `json:"CurrentKeyMaterialId,omitempty"`
}

func keyMetadataOf(m local.KeyMetadata) keyMetadataJSON {
	return keyMetadataJSON{
		AWSAccountID:          local.AccountID,
		KeyID:                 m.KeyID,
		Arn:                   m.ARN,
		CreationDate:          epoch(m.Created),
		Enabled:               m.Enabled,
		Description:           m.Description,
		KeyUsage:              "ENCRYPT_DECRYPT",
		KeyState:              string(m.State),
		DeletionDate:          epoch(m.DeletionDate),
		PendingDeletionWindow: m.PendingWindowDays,
		Origin:                "AWS_KMS",
		KeyManager:            "CUSTOMER",
		CustomerMasterKeySpec: "SYMMETRIC_DEFAULT",
		KeySpec:               "SYMMETRIC_DEFAULT",
		EncryptionAlgorithms:  []string{symmetricDefault},
		CurrentKeyMaterialID:  m.CurrentKeyMaterialID,
	}
}

const symmetricDefault = "SYMMETRIC_DEFAULT"

// Limits of the wire protocol not already in model.go.
const (
	maxKeyIDSize     = 2048
	maxGrantTokens   = 10
	maxListLimit     = 1000
	defaultListLimit = 100
	// MaxRequestBody bounds a request body. The largest legitimate one, a
	// 32 KiB policy with its JSON escaping, fits.
	MaxRequestBody = 64 << 10
)

// validator collects AWS-style validation messages: "1 validation error
// detected: Value at 'keyId' failed to satisfy constraint: …". Values are
// never echoed, except enum values, which are not secret.
type validator struct{ msgs []string }

func (v *validator) add(format string, args ...any) {
	v.msgs = append(v.msgs, fmt.Sprintf(format, args...))
}

func (v *validator) required(field string, present bool) bool {
	if !present {
		v.add("Value null at '%s' failed to satisfy constraint: Member must not be null", field)
	}
	return present
}

func (v *validator) length(field string, n, lo, hi int) {
	switch {
	case n < lo:
		v.add("Value at '%s' failed to satisfy constraint: Member must have length greater than or equal to %d", field, lo)
	case n > hi:
		v.add("Value at '%s' failed to satisfy constraint: Member must have length less than or equal to %d", field, hi)
	}
}

func (v *validator) rangeInt(field string, n, lo, hi int) {
	switch {
	case n < lo:
		v.add("Value '%d' at '%s' failed to satisfy constraint: Member must have value greater than or equal to %d", n, field, lo)
	case n > hi:
		v.add("Value '%d' at '%s' failed to satisfy constraint: Member must have value less than or equal to %d", n, field, hi)
	}
}

func (v *validator) enum(field, value string, allowed ...string) {
	if value == "" {
		return
	}
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	if len(value) > 64 || !utf8.ValidString(value) {
		value = "(invalid)"
	}
	v.add("Value '%s' at '%s' failed to satisfy constraint: Member must satisfy enum value set: [%s]", value, field, strings.Join(allowed, ", "))
}

func (v *validator) keyID(field string, id *string, required bool) {
	if id == nil {
		if required {
			v.required(field, false)
		}
		return
	}
	v.length(field, len(*id), 1, maxKeyIDSize)
}

func (v *validator) blob(field string, b []byte, present bool) {
	if v.required(field, present) {
		v.length(field, len(b), 1, keysvc.MaxBlobSize)
	}
}

func (v *validator) context(field string, ec map[string]string) {
	if err := keysvc.ValidateContext(ec); err != nil {
		v.add("Value at '%s' failed to satisfy constraint: Member must be a map of non-empty UTF-8 keys to UTF-8 values of at most %d bytes in all", field, keysvc.MaxContextSize)
	}
}

func (v *validator) grantTokens(tokens []string) {
	if len(tokens) > maxGrantTokens {
		v.add("Value at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to %d", maxGrantTokens)
	}
}

func (v *validator) limit(n *int) {
	if n != nil {
		v.rangeInt("limit", *n, 1, maxListLimit)
	}
}

func (v *validator) marker(m *string) {
	if m != nil {
		v.length("marker", len(*m), 1, 1024)
	}
}

// err returns the ValidationException, or nil.
func (v *validator) err() *apiError {
	switch len(v.msgs) {
	case 0:
		return nil
	case 1:
		return newAPIError(400, "ValidationException", "1 validation error detected: "+v.msgs[0])
	default:
		return newAPIError(400, "ValidationException", fmt.Sprintf("%d validation errors detected: %s", len(v.msgs), strings.Join(v.msgs, "; ")))
	}
}

// request is what every operation's input implements: validation of the
// decoded fields against the API's constraints.
type request interface {
	validate(v *validator)
}

// decodeJSON decodes one JSON object into in. An empty body is an empty
// object, as AWS accepts. Anything else that is not exactly one JSON
// object of the right shape is a SerializationException, as AWS answers
// (its message names no value).
func decodeJSON(body []byte, in any) *apiError {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	if body[0] != '{' {
		return newAPIError(400, "SerializationException", "Start of structure or map found where not expected.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(in); err != nil {
		msg := "The request body could not be parsed as the operation's JSON input."
		if te, ok := err.(*json.UnmarshalTypeError); ok && te.Field != "" {
			msg = fmt.Sprintf("Unexpected JSON type for field '%s'.", te.Field)
		}
		return newAPIError(400, "SerializationException", msg)
	}
	if dec.More() {
		return newAPIError(400, "SerializationException", "Unexpected data after the JSON object.")
	}
	return nil
}

// decodeRequest decodes and validates the body of operation op. It never
// panics, whatever the bytes (FuzzDecodeRequest checks), and its errors
// never echo the body.
func decodeRequest(op *operation, body []byte) (request, *apiError) {
	in := op.newInput()
	if err := decodeJSON(body, in); err != nil {
		return nil, err
	}
	var v validator
	in.validate(&v)
	if err := v.err(); err != nil {
		return nil, err
	}
	return in, nil
}
