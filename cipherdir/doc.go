// Package cipherdir is the CIPHERDIR itself: the backing tree of one kmsfs
// filesystem, for the mount and for every offline tool.
//
// It owns the config file (kmsfs.conf), the key records of backing files
// (the user.kmsfs.key xattr and the key-record slot), the one rule that
// says which backing names belong to kmsfs (IsInternalName), the one way
// to open a backing file and build its cipher (LoadKey, for a key record
// naming a key the tree trusts: Trust), the one way to start a new file
// (NewHeader, GenerateFileKey, FileCipher, StartFile), and the one tree
// walk (Walk). On top of those it holds the offline engines: Check (fsck),
// FileInfo (info), Rewrapper (rewrap) and Rekeyer (rekey).
//
// Every path under CIPHERDIR is resolved from a directory descriptor of
// CIPHERDIR with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so a
// symlink or a directory swapped underneath never leads a tool, which
// may run as root, outside the tree.
//
// cipherdir imports chunk and keysvc, never fs or go-fuse.
package cipherdir

import "errors"

var (
	// ErrNoKey: a non-empty backing file has no readable key record.
	ErrNoKey = errors.New("backing file has no valid key record")
	// ErrBadHeader: the backing file's header is unreadable or does not
	// match the tree (another chunk size, say).
	ErrBadHeader = errors.New("backing file header does not fit this filesystem")
)
