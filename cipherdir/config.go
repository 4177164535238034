package cipherdir

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
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
	"github.com/kmsfs/kmsfs/keysvc"
)

// ConfigName is the name of the configuration file in the root of every
// CIPHERDIR. It holds no secrets and is hidden from the mount.
const ConfigName = "kmsfs.conf"

// ConfigCopyName is the second copy of a v2 tree's configuration, beside
// kmsfs.conf in the root of the CIPHERDIR: the same bytes, written before
// kmsfs.conf whenever it changes, so that losing kmsfs.conf (a backup of
// the tree's files without it, an rm) loses neither the names key nor the
// filesystem ID (`kmsfs init --recover` copies it back). Its name contains
// '.', so a v2 mount hides it, and cannot be a temporary of storeConfig
// (kmsfs.conf.tmp-*). v1 trees have none.
const ConfigCopyName = ConfigName + ".copy"

// Config format versions. Version 1 is a tree with plaintext names;
// version 2 a tree whose names are encrypted (names/FORMAT.md), with the
// wrapped names key in NamesKey. This build reads and writes both; a
// build that knows only version 1 refuses a version 2 config, so it can
// never write plaintext names into a v2 tree.
const (
	ConfigFormatV1 = 1
	ConfigFormatV2 = 2
	// ConfigFormatVersion is the version NewConfig writes: a tree with
	// plaintext names, which InitNames turns into ConfigFormatV2.
	ConfigFormatVersion = ConfigFormatV1
)

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
	// FormatVersion is ConfigFormatV1 (plaintext names) or ConfigFormatV2
	// (encrypted names).
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
	// NamesKey is the names key of a v2 tree, wrapped by the KMS under
	// the tree's key with keysvc.NamesContext: standard base64 (with
	// padding) of its key record (keysvc.WrappedKey.MarshalRecord, the
	// encoding of file key records). Required in version 2, absent in
	// version 1. Its second copy is in ConfigCopyName.
	NamesKey string `json:"names_key,omitempty"`
	// Shared says that several hosts mount this tree at once on shared
	// storage (NFSv4, CephFS): every mount of it then runs in shared mode
	// (fs.Options.Shared: byte-range locks on backing files, bounded
	// kernel caches, no writeback cache), whatever its flags. Set by
	// `kmsfs init --shared`; absent (false) otherwise, in v1 and v2
	// configs alike.
	Shared bool `json:"shared,omitempty"`
}

// EncryptedNames reports whether the tree's entry names, symlink targets
// and user xattrs are encrypted (format version 2, names/FORMAT.md).
func (c Config) EncryptedNames() bool { return c.FormatVersion == ConfigFormatV2 }

// NamesKeyRecord decodes NamesKey. It fails (wrapping keysvc.ErrBadRecord
// for a bad record) when the field is empty, is not canonical standard
// base64, or holds no valid key record.
func (c Config) NamesKeyRecord() (keysvc.WrappedKey, error) {
	if c.NamesKey == "" {
		return keysvc.WrappedKey{}, fmt.Errorf("config: names_key is missing: %w", keysvc.ErrBadRecord)
	}
	if len(c.NamesKey) > maxNamesKeyLen {
		return keysvc.WrappedKey{}, fmt.Errorf("config: names_key is %d bytes, more than %d: %w", len(c.NamesKey), maxNamesKeyLen, keysvc.ErrBadRecord)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(c.NamesKey)
	if err != nil || base64.StdEncoding.EncodeToString(b) != c.NamesKey {
		return keysvc.WrappedKey{}, fmt.Errorf("config: names_key is not canonical base64: %w", keysvc.ErrBadRecord)
	}
	wk, err := keysvc.ParseRecord(b)
	if err != nil {
		return keysvc.WrappedKey{}, fmt.Errorf("config: names_key: %w", err)
	}
	return wk, nil
}

// maxNamesKeyLen bounds Config.NamesKey: base64 of the largest record.
var maxNamesKeyLen = base64.StdEncoding.EncodedLen(keysvc.MaxRecordSize)

// encodeNamesKey is Config.NamesKey for the wrapped names key wk.
func encodeNamesKey(wk keysvc.WrappedKey) (string, error) {
	if err := wk.Validate(); err != nil {
		return "", fmt.Errorf("names key record: %w", err)
	}
	return base64.StdEncoding.EncodeToString(wk.MarshalRecord()), nil
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
	if err := knownVersion(c.FormatVersion); err != nil {
		return err
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
	switch {
	case c.FormatVersion == ConfigFormatV1 && c.NamesKey != "":
		return errors.New("config: names_key in a format_version 1 config (plaintext names have no names key)")
	case c.FormatVersion == ConfigFormatV2:
		if _, err := c.NamesKeyRecord(); err != nil {
			return err
		}
	}
	return nil
}

// knownVersion checks a config's format_version.
func knownVersion(v int) error {
	if v != ConfigFormatV1 && v != ConfigFormatV2 {
		return fmt.Errorf("config: unsupported format_version %d (this kmsfs reads versions %d and %d)", v, ConfigFormatV1, ConfigFormatV2)
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
	if err := knownVersion(*probe.FormatVersion); err != nil {
		return Config{}, err
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
	return loadConfigFile(dir, ConfigName)
}

// LoadConfigCopy reads and validates the second copy of a v2 tree's
// configuration, dir/kmsfs.conf.copy (ConfigCopyName).
func LoadConfigCopy(dir string) (Config, error) {
	return loadConfigFile(dir, ConfigCopyName)
}

// loadConfigFile reads and validates the config file dir/name.
func loadConfigFile(dir, name string) (Config, error) {
	f, err := os.Open(filepath.Join(dir, name))
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
		return Config{}, fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
	}
	return c, nil
}

// LoadConfigAt reads and validates kmsfs.conf in the CIPHERDIR open as
// the directory descriptor root, without following a symlink.
func LoadConfigAt(root int) (Config, error) {
	return loadConfigAt(root, ConfigName)
}

// loadConfigAt reads and validates the config file name in the CIPHERDIR
// open as root, without following a symlink.
func loadConfigAt(root int, name string) (Config, error) {
	fd, err := OpenFile(root, name, false)
	if err != nil {
		return Config{}, fmt.Errorf("config: %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("config: %s: %w", name, err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
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
// exists) and the directory fsynced. A v2 config's copy
// (ConfigCopyName) is written first, the same way, replacing any.
func WriteConfig(dir string, c Config) error {
	return storeConfig(dir, c, false)
}

// RecoverConfig restores dir/kmsfs.conf of a v2 tree from its second copy
// (ConfigCopyName) and returns it: the copy is read and validated, and
// written back as kmsfs.conf as WriteConfig does (refusing to replace an
// existing kmsfs.conf; the copy itself is left as it is). It makes no key
// and touches nothing else.
func RecoverConfig(dir string) (Config, error) {
	if _, err := os.Lstat(filepath.Join(dir, ConfigName)); err == nil {
		return Config{}, fmt.Errorf("config: %s exists; refusing to replace it with its copy", filepath.Join(dir, ConfigName))
	}
	c, err := LoadConfigCopy(dir)
	if err != nil {
		return Config{}, err
	}
	if !c.EncryptedNames() {
		// kmsfs never writes a v1 copy: this one was put there by hand.
		return Config{}, fmt.Errorf("config: %s is a format_version %d config; only v2 trees have a copy", filepath.Join(dir, ConfigCopyName), c.FormatVersion)
	}
	b, err := c.Marshal()
	if err != nil {
		return Config{}, err
	}
	if err := placeConfigFile(dir, ConfigName, b, false); err != nil {
		return Config{}, err
	}
	return c, nil
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

// storeConfig writes c to dir/kmsfs.conf (placeConfigFile), replacing
// the old one (replace) or refusing to. A v2 config goes first to its
// copy (ConfigCopyName), always replaced: a crash between the two leaves
// the copy newer than kmsfs.conf, never older, and the copy of any state
// kmsfs.conf was ever in is as good as kmsfs.conf itself (the old
// kmsfs.conf stays in force until it is replaced). The names key of a
// rewrap is thus written to the copy, then to the config.
func storeConfig(dir string, c Config, replace bool) error {
	b, err := c.Marshal()
	if err != nil {
		return err
	}
	final := filepath.Join(dir, ConfigName)
	if c.EncryptedNames() {
		if !replace {
			// Do not replace the copy of a config that stays in force.
			if _, err := os.Lstat(final); err == nil {
				return fmt.Errorf("config: %s already exists; refusing to overwrite it", final)
			}
		}
		if err := placeConfigFile(dir, ConfigCopyName, b, true); err != nil {
			return err
		}
	}
	return placeConfigFile(dir, ConfigName, b, replace)
}

// placeConfigFile writes b to dir/name through a temporary file
// (writeConfigTemp), then renames it over the old file (replace) or
// hard-links it into place, which fails if the name exists, and fsyncs
// the directory.
func placeConfigFile(dir, name string, b []byte, replace bool) error {
	final := filepath.Join(dir, name)
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
