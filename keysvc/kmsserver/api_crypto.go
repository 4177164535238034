package kmsserver

import (
	"encoding/json"
	"errors"

	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/keysvc/local"
)

// Cryptographic operations: GenerateDataKey(WithoutPlaintext), Encrypt,
// Decrypt, ReEncrypt, GenerateRandom. Plaintexts are zeroed once the answer
// is encoded (ServeHTTP calls zero on outputs that hold one).

// zeroer is implemented by outputs carrying a plaintext.
type zeroer interface{ zero() }

var encryptionAlgorithms = []string{symmetricDefault, "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"}

// checkAlgorithm accepts SYMMETRIC_DEFAULT (or nothing): every key here is
// symmetric, and AWS answers InvalidKeyUsageException for the others.
func checkAlgorithm(alg string) *apiError {
	if alg != "" && alg != symmetricDefault {
		return newAPIError(400, "InvalidKeyUsageException", "The encryption algorithm "+alg+" is not valid for a symmetric key; use SYMMETRIC_DEFAULT.")
	}
	return nil
}

// checkGrantsAndRecipient refuses what this service cannot honour: grant
// tokens (it issues no grants, so every token is invalid) and Nitro
// Enclave recipients.
func checkGrantsAndRecipient(tokens []string, recipient json.RawMessage) *apiError {
	if len(tokens) > 0 {
		return newAPIError(400, "InvalidGrantTokenException", "This key service issues no grants; the grant token is not valid.")
	}
	if len(recipient) > 0 && string(recipient) != "null" {
		return newAPIError(400, "UnsupportedOperationException", "Recipient (attested enclave) requests are not supported.")
	}
	return nil
}

var errDryRun = newAPIError(400, "DryRunOperationException", "The request would have succeeded, but the DryRun option is set.")

type generateDataKeyInput struct {
	KeyID             *string           `json:"KeyId"`
	EncryptionContext map[string]string `json:"EncryptionContext"`
	NumberOfBytes     *int              `json:"NumberOfBytes"`
	KeySpec           *string           `json:"KeySpec"`
	GrantTokens       []string          `json:"GrantTokens"`
	DryRun            bool              `json:"DryRun"`
	Recipient         json.RawMessage   `json:"Recipient"`
}

func (in *generateDataKeyInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	v.context("encryptionContext", in.EncryptionContext)
	if in.NumberOfBytes != nil {
		v.rangeInt("numberOfBytes", *in.NumberOfBytes, 1, local.MaxDataKeyBytes)
	}
	if in.KeySpec != nil {
		v.enum("keySpec", *in.KeySpec, "AES_256", "AES_128")
	}
	v.grantTokens(in.GrantTokens)
}

// size returns the data key size the request asks for: exactly one of
// KeySpec and NumberOfBytes must be given.
func (in *generateDataKeyInput) size() (int, *apiError) {
	switch {
	case (in.KeySpec == nil) == (in.NumberOfBytes == nil):
		return 0, newAPIError(400, "ValidationException", "Please specify either number of bytes or key spec.")
	case in.NumberOfBytes != nil:
		return *in.NumberOfBytes, nil
	case *in.KeySpec == "AES_128":
		return 16, nil
	default:
		return 32, nil
	}
}

type generateDataKeyOutput struct {
	CiphertextBlob []byte `json:"CiphertextBlob"`
	Plaintext      []byte `json:"Plaintext,omitempty"`
	KeyID          string `json:"KeyId"`
	KeyMaterialID  string `json:"KeyMaterialId,omitempty"`
}

func (o *generateDataKeyOutput) zero() { keysvc.Zero(o.Plaintext) }

// dataKey runs GenerateDataKey and GenerateDataKeyWithoutPlaintext.
func (c *call) dataKey(in *generateDataKeyInput, action string) (*generateDataKeyOutput, *apiError) {
	c.audit.EncryptionContext = in.EncryptionContext
	n, aerr := in.size()
	if aerr != nil {
		return nil, aerr
	}
	if aerr := checkGrantsAndRecipient(in.GrantTokens, in.Recipient); aerr != nil {
		return nil, aerr
	}
	m, aerr := c.authorize(*in.KeyID, action, in.EncryptionContext)
	if aerr != nil {
		return nil, aerr
	}
	if in.DryRun {
		return nil, errDryRun
	}
	dk, err := c.s.store.GenerateDataKeyBytes(c.ctx, m.ARN, n, in.EncryptionContext)
	if err != nil {
		return nil, storeError(err, *in.KeyID)
	}
	c.audit.KeyMaterialID = dk.Wrapped.KeyMaterialID
	return &generateDataKeyOutput{CiphertextBlob: dk.Wrapped.Blob, Plaintext: dk.Plaintext, KeyID: dk.Wrapped.KeyID, KeyMaterialID: dk.Wrapped.KeyMaterialID}, nil
}

func (c *call) generateDataKey(in *generateDataKeyInput) (any, *apiError) {
	out, aerr := c.dataKey(in, "kms:GenerateDataKey")
	if aerr != nil {
		return nil, aerr
	}
	return out, nil
}

func (c *call) generateDataKeyWithoutPlaintext(in *generateDataKeyInput) (any, *apiError) {
	if in.Recipient != nil {
		// Not a member of this operation; AWS would ignore it as unknown.
		in.Recipient = nil
	}
	out, aerr := c.dataKey(in, "kms:GenerateDataKeyWithoutPlaintext")
	if aerr != nil {
		return nil, aerr
	}
	out.zero()
	out.Plaintext = nil
	return out, nil
}

type encryptInput struct {
	KeyID               *string           `json:"KeyId"`
	Plaintext           []byte            `json:"Plaintext"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	GrantTokens         []string          `json:"GrantTokens"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
	DryRun              bool              `json:"DryRun"`
}

func (in *encryptInput) validate(v *validator) {
	v.keyID("keyId", in.KeyID, true)
	if v.required("plaintext", in.Plaintext != nil) {
		v.length("plaintext", len(in.Plaintext), 1, local.MaxPlaintextSize)
	}
	v.context("encryptionContext", in.EncryptionContext)
	v.grantTokens(in.GrantTokens)
	v.enum("encryptionAlgorithm", in.EncryptionAlgorithm, encryptionAlgorithms...)
}

func (c *call) encrypt(in *encryptInput) (any, *apiError) {
	defer keysvc.Zero(in.Plaintext)
	c.audit.EncryptionContext = in.EncryptionContext
	if aerr := checkGrantsAndRecipient(in.GrantTokens, nil); aerr != nil {
		return nil, aerr
	}
	m, aerr := c.authorize(*in.KeyID, "kms:Encrypt", in.EncryptionContext)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := checkAlgorithm(in.EncryptionAlgorithm); aerr != nil {
		return nil, aerr
	}
	if in.DryRun {
		return nil, errDryRun
	}
	w, err := c.s.store.Encrypt(c.ctx, m.ARN, in.Plaintext, in.EncryptionContext)
	if err != nil {
		return nil, storeError(err, *in.KeyID)
	}
	c.audit.KeyMaterialID = w.KeyMaterialID
	return struct {
		CiphertextBlob      []byte `json:"CiphertextBlob"`
		KeyID               string `json:"KeyId"`
		EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
	}{w.Blob, w.KeyID, symmetricDefault}, nil
}

type decryptInput struct {
	CiphertextBlob      []byte            `json:"CiphertextBlob"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	GrantTokens         []string          `json:"GrantTokens"`
	KeyID               *string           `json:"KeyId"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
	DryRun              bool              `json:"DryRun"`
	Recipient           json.RawMessage   `json:"Recipient"`
}

func (in *decryptInput) validate(v *validator) {
	v.blob("ciphertextBlob", in.CiphertextBlob, in.CiphertextBlob != nil)
	v.context("encryptionContext", in.EncryptionContext)
	v.grantTokens(in.GrantTokens)
	v.keyID("keyId", in.KeyID, false)
	v.enum("encryptionAlgorithm", in.EncryptionAlgorithm, encryptionAlgorithms...)
}

type decryptOutput struct {
	KeyID               string `json:"KeyId"`
	Plaintext           []byte `json:"Plaintext"`
	EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
	KeyMaterialID       string `json:"KeyMaterialId,omitempty"`
}

func (o *decryptOutput) zero() { keysvc.Zero(o.Plaintext) }

// sourceKey finds the key a blob was wrapped under and checks it against
// the key the caller named, if any: a blob that is not ours, or names no
// key of this keystore, is InvalidCiphertextException; a named key that
// exists but is not the blob's is IncorrectKeyException.
func (c *call) sourceKey(blob []byte, named *string, action string, ec map[string]string) (local.KeyMetadata, *apiError) {
	id, ok := local.BlobKeyID(blob)
	if !ok {
		return local.KeyMetadata{}, newAPIError(400, "InvalidCiphertextException", "")
	}
	if named != nil {
		nm, _, err := c.s.store.KeyAndPolicy(c.ctx, *named)
		if err != nil {
			return local.KeyMetadata{}, storeError(err, *named)
		}
		if nm.KeyID != id {
			c.audit.KeyID = nm.ARN
			return local.KeyMetadata{}, storeError(keysvc.ErrIncorrectKey, *named)
		}
	}
	m, aerr := c.authorize(id, action, ec)
	if aerr != nil && aerr.typ == "NotFoundException" {
		return local.KeyMetadata{}, newAPIError(400, "InvalidCiphertextException", "")
	}
	return m, aerr
}

func (c *call) decrypt(in *decryptInput) (any, *apiError) {
	c.audit.EncryptionContext = in.EncryptionContext
	if aerr := checkGrantsAndRecipient(in.GrantTokens, in.Recipient); aerr != nil {
		return nil, aerr
	}
	if aerr := checkAlgorithm(in.EncryptionAlgorithm); aerr != nil {
		return nil, aerr
	}
	m, aerr := c.sourceKey(in.CiphertextBlob, in.KeyID, "kms:Decrypt", in.EncryptionContext)
	if aerr != nil {
		return nil, aerr
	}
	if in.DryRun {
		return nil, errDryRun
	}
	u, err := c.s.store.Decrypt(c.ctx, in.CiphertextBlob, m.ARN, in.EncryptionContext)
	if err != nil {
		return nil, storeError(err, m.ARN)
	}
	c.audit.KeyMaterialID = u.KeyMaterialID
	return &decryptOutput{KeyID: u.KeyID, Plaintext: u.Plaintext, EncryptionAlgorithm: symmetricDefault, KeyMaterialID: u.KeyMaterialID}, nil
}

type reEncryptInput struct {
	CiphertextBlob                 []byte            `json:"CiphertextBlob"`
	SourceEncryptionContext        map[string]string `json:"SourceEncryptionContext"`
	SourceKeyID                    *string           `json:"SourceKeyId"`
	DestinationKeyID               *string           `json:"DestinationKeyId"`
	DestinationEncryptionContext   map[string]string `json:"DestinationEncryptionContext"`
	SourceEncryptionAlgorithm      string            `json:"SourceEncryptionAlgorithm"`
	DestinationEncryptionAlgorithm string            `json:"DestinationEncryptionAlgorithm"`
	GrantTokens                    []string          `json:"GrantTokens"`
	DryRun                         bool              `json:"DryRun"`
}

func (in *reEncryptInput) validate(v *validator) {
	v.blob("ciphertextBlob", in.CiphertextBlob, in.CiphertextBlob != nil)
	v.context("sourceEncryptionContext", in.SourceEncryptionContext)
	v.keyID("sourceKeyId", in.SourceKeyID, false)
	v.keyID("destinationKeyId", in.DestinationKeyID, true)
	v.context("destinationEncryptionContext", in.DestinationEncryptionContext)
	v.enum("sourceEncryptionAlgorithm", in.SourceEncryptionAlgorithm, encryptionAlgorithms...)
	v.enum("destinationEncryptionAlgorithm", in.DestinationEncryptionAlgorithm, encryptionAlgorithms...)
	v.grantTokens(in.GrantTokens)
}

func (c *call) reEncrypt(in *reEncryptInput) (any, *apiError) {
	c.audit.EncryptionContext = in.SourceEncryptionContext
	if aerr := checkGrantsAndRecipient(in.GrantTokens, nil); aerr != nil {
		return nil, aerr
	}
	if aerr := checkAlgorithm(in.SourceEncryptionAlgorithm); aerr != nil {
		return nil, aerr
	}
	if aerr := checkAlgorithm(in.DestinationEncryptionAlgorithm); aerr != nil {
		return nil, aerr
	}
	src, aerr := c.sourceKey(in.CiphertextBlob, in.SourceKeyID, "kms:ReEncryptFrom", in.SourceEncryptionContext)
	if aerr != nil {
		return nil, aerr
	}
	c.audit.DestinationEncryptionContext = in.DestinationEncryptionContext
	dst, aerr := c.authorize(*in.DestinationKeyID, "kms:ReEncryptTo", in.DestinationEncryptionContext)
	if dst.ARN != "" {
		c.audit.DestinationKeyID = dst.ARN
	} else {
		c.audit.DestinationKeyID = *in.DestinationKeyID
	}
	if aerr != nil {
		return nil, aerr
	}
	if in.DryRun {
		return nil, errDryRun
	}
	out, err := c.s.store.ReEncryptWith(c.ctx, local.ReEncryptInput{
		Blob:               in.CiphertextBlob,
		SourceKeyID:        src.ARN,
		SourceContext:      in.SourceEncryptionContext,
		DestinationKeyID:   dst.ARN,
		DestinationContext: in.DestinationEncryptionContext,
	})
	if err != nil {
		// Disabled or invalid-state errors may be the source's or the
		// destination's; name the source unless it is usable.
		ref := src.ARN
		if errors.Is(err, keysvc.ErrDisabled) || errors.Is(err, keysvc.ErrInvalidState) {
			if src.State == local.KeyStateEnabled {
				ref = dst.ARN
			}
		}
		return nil, storeError(err, ref)
	}
	c.audit.KeyID = out.SourceKeyID
	c.audit.KeyMaterialID = out.SourceKeyMaterialID
	c.audit.DestinationKeyMaterialID = out.Wrapped.KeyMaterialID
	return struct {
		CiphertextBlob                 []byte `json:"CiphertextBlob"`
		SourceKeyID                    string `json:"SourceKeyId"`
		KeyID                          string `json:"KeyId"`
		SourceEncryptionAlgorithm      string `json:"SourceEncryptionAlgorithm"`
		DestinationEncryptionAlgorithm string `json:"DestinationEncryptionAlgorithm"`
		SourceKeyMaterialID            string `json:"SourceKeyMaterialId,omitempty"`
		DestinationKeyMaterialID       string `json:"DestinationKeyMaterialId,omitempty"`
	}{out.Wrapped.Blob, out.SourceKeyID, out.Wrapped.KeyID, symmetricDefault, symmetricDefault,
		out.SourceKeyMaterialID, out.Wrapped.KeyMaterialID}, nil
}

type generateRandomInput struct {
	NumberOfBytes    *int            `json:"NumberOfBytes"`
	CustomKeyStoreID *string         `json:"CustomKeyStoreId"`
	Recipient        json.RawMessage `json:"Recipient"`
}

func (in *generateRandomInput) validate(v *validator) {
	if v.required("numberOfBytes", in.NumberOfBytes != nil) {
		v.rangeInt("numberOfBytes", *in.NumberOfBytes, 1, local.MaxDataKeyBytes)
	}
}

type generateRandomOutput struct {
	Plaintext []byte `json:"Plaintext"`
}

func (o *generateRandomOutput) zero() { keysvc.Zero(o.Plaintext) }

func (c *call) generateRandom(in *generateRandomInput) (any, *apiError) {
	if aerr := checkGrantsAndRecipient(nil, in.Recipient); aerr != nil {
		return nil, aerr
	}
	if in.CustomKeyStoreID != nil {
		return nil, newAPIError(400, "CustomKeyStoreNotFoundException", "This key service has no custom key stores.")
	}
	if aerr := c.authorizeAccount("kms:GenerateRandom"); aerr != nil {
		return nil, aerr
	}
	b, err := c.s.store.GenerateRandom(c.ctx, *in.NumberOfBytes)
	if err != nil {
		return nil, storeError(err, "")
	}
	return &generateRandomOutput{Plaintext: b}, nil
}
