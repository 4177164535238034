package cipherdir

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/kmsfs/kmsfs/chunk"
)

// ConfigName is the name of the configuration file in the root of every
// CIPHERDIR. It holds no secrets and is hidden from the mount.
const ConfigName = "kmsfs.conf"

// ConfigFormatVersion is the only config format version this build reads
// and writes.
const ConfigFormatVersion = 1

// maxConfigSize bounds the config file kmsfs is willing to parse: a valid
// config is a few hundred bytes, so anything over 64 KiB is not one.
const maxConfigSize = 64 << 10

// maxKeyIDLen is the longest key reference accepted in a config (AWS KMS
// key ARNs and alias ARNs are well under 2048 bytes).
const maxKeyIDLen = 2048

// KMS kinds a config may name.
const (
	KMSLocal = "local"
	KMSAWS   = "aws"
)

// Config is the content of kmsfs.conf: which key service and key wrap the
// file data keys of this tree, the chunk size of every file in it, and the
// filesystem ID bound into every data key's encryption context.
type Config struct {
	// FormatVersion is ConfigFormatVersion.
	FormatVersion int `json:"format_version"`
	// FilesystemID is 16 random bytes in lower-case hex (32 characters).
	FilesystemID string `json:"filesystem_id"`
	// KMS is KMSLocal or KMSAWS.
	KMS string `json:"kms"`
	// KeyID is the KMS key (ARN) that wraps new data keys.
	KeyID string `json:"key_id"`
	// ChunkSize is the plaintext bytes per chunk of every file: a power of
	// two from chunk.MinChunkSize to chunk.MaxChunkSize.
	ChunkSize int `json:"chunk_size"`
	// Created is when the tree was initialised (RFC 3339 in the file).
	Created time.Time `json:"created"`
	// KeyRecord says where each file's key record lives: KeyRecordXattrSlot
	// (the user.kmsfs.key xattr and a copy in the file's key-record slot)
	// or KeyRecordSlot (the slot only, for backing file systems without
	// user xattrs; `kmsfs init` probes). Empty, as in configs written
	// before the field existed, means KeyRecordXattrSlot.
	KeyRecord string `json:"key_record,omitempty"`
	// Compress is the compression of new files' chunks: "none", "s2" or
	// "zstd" (see chunk.Compression). Empty, as in configs written before
	// the field existed, means none. Each file records its own algorithm
	// in its header, so changing this would only affect new files.
	Compress string `json:"compress,omitempty"`
	// PreviousKeys are KMS keys (ARNs) whose key records the tree still
	// accepts besides KeyID's: the keys a `kmsfs rewrap --key` migration
	// moves files away from, listed before it starts and removed when it
	// has moved every file (see Trust).
	PreviousKeys []string `json:"previous_keys,omitempty"`
}

// maxPreviousKeys bounds Config.PreviousKeys.
const maxPreviousKeys = 16

// Where a tree keeps its key records (Config.KeyRecord).
const (
	KeyRecordXattrSlot = "xattr+slot"
	KeyRecordSlot      = "slot"
)

// KeyRecordMode returns c.KeyRecord with the default filled in.
func (c Config) KeyRecordMode() string {
	if c.KeyRecord == "" {
		return KeyRecordXattrSlot
	}
	return c.KeyRecord
}

// NewConfig returns a config for a new tree with a fresh random
// filesystem ID. chunkSize 0 selects chunk.DefaultChunkSize.
func NewConfig(kms, keyARN string, chunkSize int) (Config, error) {
	if chunkSize == 0 {
		chunkSize = chunk.DefaultChunkSize
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Config{}, fmt.Errorf("config: filesystem ID: %w", err)
	}
	c := Config{
		FormatVersion: ConfigFormatVersion,
		FilesystemID:  hex.EncodeToString(id[:]),
		KMS:           kms,
		KeyID:         keyARN,
		ChunkSize:     chunkSize,
		Created:       time.Now().UTC().Truncate(time.Second),
		KeyRecord:     KeyRecordXattrSlot,
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks every field and reports the first one that is wrong.
func (c Config) Validate() error {
	if c.FormatVersion != ConfigFormatVersion {
		return fmt.Errorf("config: unsupported format_version %d (this kmsfs reads version %d)", c.FormatVersion, ConfigFormatVersion)
	}
	if len(c.FilesystemID) != 32 || strings.ToLower(c.FilesystemID) != c.FilesystemID {
		return fmt.Errorf("config: filesystem_id must be 32 lower-case hex characters, got %d characters", len(c.FilesystemID))
	}
	if _, err := hex.DecodeString(c.FilesystemID); err != nil {
		return fmt.Errorf("config: filesystem_id is not hex: %w", err)
	}
	if c.KMS != KMSLocal && c.KMS != KMSAWS {
		return fmt.Errorf("config: kms must be %q or %q, got %q", KMSLocal, KMSAWS, c.KMS)
	}
	if err := validKeyRef("key_id", c.KeyID); err != nil {
		return err
	}
	if len(c.PreviousKeys) > maxPreviousKeys {
		return fmt.Errorf("config: previous_keys has %d keys, more than %d", len(c.PreviousKeys), maxPreviousKeys)
	}
	for _, k := range c.PreviousKeys {
		if err := validKeyRef("previous_keys", k); err != nil {
			return err
		}
	}
	if err := validChunkSize(c.ChunkSize); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.Created.IsZero() {
		return errors.New("config: created is missing")
	}
	if y := c.Created.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("config: created year %d (UTC) is out of range", y)
	}
	if c.KeyRecord != "" && c.KeyRecord != KeyRecordXattrSlot && c.KeyRecord != KeyRecordSlot {
		return fmt.Errorf("config: key_record must be %q or %q, got %q", KeyRecordXattrSlot, KeyRecordSlot, c.KeyRecord)
	}
	if err := validCompress(c.Compress); err != nil {
		return err
	}
	return nil
}

// validKeyRef checks one key reference of field.
func validKeyRef(field, ref string) error {
	if ref == "" {
		return fmt.Errorf("config: %s is empty", field)
	}
	if len(ref) > maxKeyIDLen {
		return fmt.Errorf("config: %s is %d bytes, more than %d", field, len(ref), maxKeyIDLen)
	}
	for _, r := range ref {
		if r > unicode.MaxASCII || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("config: %s %q has a character that is not printable ASCII", field, ref)
		}
	}
	return nil
}

func validChunkSize(n int) error {
	if n < chunk.MinChunkSize || n > chunk.MaxChunkSize || n&(n-1) != 0 {
		return fmt.Errorf("chunk_size %d is not a power of two from %d to %d", n, chunk.MinChunkSize, chunk.MaxChunkSize)
	}
	return nil
}

// ParseConfig decodes and validates a config file's bytes. Unknown fields,
// duplicate documents and trailing data are refused, so a typo never
// silently falls back to a default.
func ParseConfig(b []byte) (Config, error) {
	if len(b) > maxConfigSize {
		return Config{}, fmt.Errorf("config: %d bytes, more than %d", len(b), maxConfigSize)
	}
	// Read the version first so a newer format gets a clear message rather
	// than a complaint about a field this build does not know.
	var probe struct {
		FormatVersion *int `json:"format_version"`
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&probe); err != nil {
		return Config{}, fmt.Errorf("config: not a JSON object: %w", err)
	}
	if probe.FormatVersion == nil {
		return Config{}, errors.New("config: format_version is missing")
	}
	if *probe.FormatVersion != ConfigFormatVersion {
		return Config{}, fmt.Errorf("config: unsupported format_version %d (this kmsfs reads version %d)", *probe.FormatVersion, ConfigFormatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Config{}, errors.New("config: trailing data after the JSON object")
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if len(c.PreviousKeys) == 0 {
		c.PreviousKeys = nil // one form for "none": [] and absent alike
	}
	return c, nil
}

// LoadConfig reads and validates dir/kmsfs.conf.
func LoadConfig(dir string) (Config, error) {
	f, err := os.Open(filepath.Join(dir, ConfigName))
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigName), err)
	}
	return c, nil
}

// LoadConfigAt reads and validates kmsfs.conf in the CIPHERDIR open as
// the directory descriptor root, without following a symlink.
func LoadConfigAt(root int) (Config, error) {
	fd, err := OpenFile(root, ConfigName, false)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	f := os.NewFile(uintptr(fd), ConfigName)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(b)
}

// Marshal returns the config file's bytes: indented JSON with a trailing
// newline.
func (c Config) Marshal() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.Created = c.Created.UTC()
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return append(b, '\n'), nil
}

// WriteConfig writes dir/kmsfs.conf (mode 0644) durably and atomically,
// and refuses to replace an existing one: the file is written under a
// temporary name, fsynced, hard-linked into place (which fails if the name
// exists) and the directory fsynced.
func WriteConfig(dir string, c Config) error {
	return storeConfig(dir, c, false)
}

// Compression returns the configured compression of new files; an empty
// or missing field is none.
func (c Config) Compression() chunk.Compression {
	comp, err := chunk.ParseCompression(c.Compress)
	if err != nil || c.Compress == "" {
		return chunk.CompressionNone
	}
	return comp
}

// DefaultChunkSize is the chunk size of a new tree unless told otherwise.
const DefaultChunkSize = chunk.DefaultChunkSize

// ParseCompress returns the canonical name of the compression s names
// ("none", "s2" or "zstd"), for Config.Compress.
func ParseCompress(s string) (string, error) {
	comp, err := chunk.ParseCompression(s)
	if err != nil {
		return "", fmt.Errorf("config: compress must be none, s2 or zstd, got %q", s)
	}
	return comp.String(), nil
}

// validCompress checks Config.Compress.
func validCompress(s string) error {
	if s == "" {
		return nil
	}
	if _, err := chunk.ParseCompression(s); err != nil {
		return fmt.Errorf("config: compress must be none, s2 or zstd, got %q", s)
	}
	return nil
}

// writeConfigTemp writes b to a new temporary file in dir (an internal
// name, kmsfs.conf.tmp-*, hidden from the mount), mode 0644, fsynced and
// closed, and returns its path; storeConfig links or renames it into
// place and removes the name.
func writeConfigTemp(dir string, b []byte) (string, error) {
	tmp, err := os.CreateTemp(dir, ConfigName+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	name := tmp.Name()
	err = tmp.Chmod(0o644)
	if err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("config: %w", err)
	}
	return name, nil
}

// replaceConfig atomically replaces dir/kmsfs.conf with c: written under a
// temporary name (an internal name, hidden from the mount), fsynced,
// renamed over the old one, and the directory fsynced.
func replaceConfig(dir string, c Config) error {
	return storeConfig(dir, c, true)
}

// storeConfig writes c to dir/kmsfs.conf through a temporary file
// (writeConfigTemp), then renames it over the old config (replace) or
// hard-links it into place, which fails if a config exists, and fsyncs
// the directory.
func storeConfig(dir string, c Config, replace bool) error {
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	final := filepath.Join(dir, ConfigName)
	tmpName, err := writeConfigTemp(dir, b)
	if err != nil {
		return err
	}
	defer os.Remove(tmpName)
	if replace {
		err = os.Rename(tmpName, final)
	} else if err = os.Link(tmpName, final); errors.Is(err, os.ErrExist) {
		return fmt.Errorf("config: %s already exists; refusing to overwrite it", final)
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("config: sync %s: %w", dir, err)
	}
	return nil
}
