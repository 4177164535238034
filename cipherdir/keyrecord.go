package cipherdir

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/keysvc"
)

// Key records: where a backing file keeps its wrapped data key.
//
// Every non-empty backing file carries its key record (a keysvc record) in
// two places: the user.kmsfs.key extended attribute, and the key-record
// slot right after the header (chunk.MarshalSlot). The slot travels with
// the file's bytes, so copies that drop extended attributes (cp -r, rsync
// without -X, tar without --xattrs) lose nothing; trees on backing file
// systems without user xattrs (Config.KeyRecord "slot") use the slot only.
// Neither copy is authenticated by the content format: the key service
// authenticates a record when it unwraps it, with the encryption context
// naming the filesystem and file ID, so a record copied from another file
// fails wherever it is found.
//
// ReadKeyRecord and WriteKeyRecord are the only functions that read and
// write records; the mount, fsck, info, rewrap and rekey all go through
// them.

// KeyXattr is the backing regular file's extended attribute holding its
// wrapped data key (a keysvc record). Every InternalXattrPrefix attribute
// is invisible and untouchable through the mount.
const KeyXattr = "user.kmsfs.key"

// InternalXattrPrefix marks the extended attributes kmsfs keeps for
// itself.
const InternalXattrPrefix = "user.kmsfs."

// RecordPlace says where a key record was found or stored.
type RecordPlace uint8

const (
	// PlaceXattr is the user.kmsfs.key extended attribute.
	PlaceXattr RecordPlace = 1 << iota
	// PlaceSlot is the key-record slot in the backing file.
	PlaceSlot
)

// String names the places in p, "none" for none.
func (p RecordPlace) String() string {
	switch p {
	case PlaceXattr:
		return "xattr"
	case PlaceSlot:
		return "slot"
	case PlaceXattr | PlaceSlot:
		return "xattr+slot"
	}
	return "none"
}

// xattrUnsupported reports errors that mean the backing file system keeps
// no user extended attributes.
func xattrUnsupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// ReadKeyRecord returns the key record of the open, non-empty backing file
// fd in a tree whose Config.KeyRecord is mode, and where it was found.
// With "xattr+slot" the extended attribute wins; the slot is read only when
// the attribute is missing (ENODATA: a copy dropped it) or the backing file
// system has none (ENOTSUP). An attribute that is present but unreadable
// is an error, not a reason to look elsewhere: fsck --repair restores it
// from the slot, after the key service has vouched for the slot's record.
// With "slot" only the slot is read. Errors wrap ErrNoKey (EIO).
func ReadKeyRecord(fd int, mode string) (keysvc.WrappedKey, RecordPlace, error) {
	if mode != KeyRecordSlot {
		raw, err := readKeyXattr(fd)
		if err == nil {
			wk, err := keysvc.ParseRecord(raw)
			if err != nil {
				return keysvc.WrappedKey{}, PlaceXattr, fmt.Errorf("%w: key xattr: %w", ErrNoKey, err)
			}
			return wk, PlaceXattr, nil
		}
		if !errors.Is(err, unix.ENODATA) && !xattrUnsupported(err) {
			return keysvc.WrappedKey{}, PlaceXattr, fmt.Errorf("%w: key xattr: %w", ErrNoKey, err)
		}
	}
	raw, err := readKeySlot(fd)
	if err != nil {
		return keysvc.WrappedKey{}, PlaceSlot, fmt.Errorf("%w: %w", ErrNoKey, err)
	}
	wk, err := keysvc.ParseRecord(raw)
	if err != nil {
		return keysvc.WrappedKey{}, PlaceSlot, fmt.Errorf("%w: key-record slot: %w", ErrNoKey, err)
	}
	return wk, PlaceSlot, nil
}

// readKeyXattr returns the raw key xattr of fd.
func readKeyXattr(fd int) ([]byte, error) {
	buf := make([]byte, keysvc.MaxRecordSize)
	n, err := unix.Fgetxattr(fd, KeyXattr, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// readKeySlot returns the raw record in fd's key-record slot. An empty
// slot gives an error wrapping chunk.ErrSlotEmpty.
func readKeySlot(fd int) ([]byte, error) {
	buf := make([]byte, chunk.SlotSize)
	n, err := unix.Pread(fd, buf, chunk.HeaderSize)
	if err != nil {
		return nil, fmt.Errorf("key-record slot: %w", err)
	}
	if n < len(buf) {
		return nil, fmt.Errorf("key-record slot: backing file ends at %d bytes: %w", chunk.HeaderSize+n, chunk.ErrCorrupt)
	}
	rec, err := chunk.ParseSlot(buf)
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// WriteKeyRecord stores the key record rec of the open backing file fd in
// a tree whose Config.KeyRecord is mode, and returns where it went.
//
// header, when not nil, is a new file's sealed header: it is written with
// the slot in one pwrite, so a new backing file is never without either.
// The slot goes first and the attribute second, so that a crash in between
// leaves either the old record or the new one in each place, both valid
// (a rewrap keeps the data key; a new file's header names its own).
//
// A record longer than chunk.MaxSlotRecord empties the slot (a stale copy
// must not outlive a rewrap) and goes to the attribute only; the caller
// warns, and fsck reports it. With mode "slot" such a record, and with
// "xattr+slot" a backing file system without user xattrs when the slot
// cannot hold the record, is an error: the record would be stored nowhere.
// A file system without user xattrs is otherwise tolerated in
// "xattr+slot" mode: the record is in the slot (PlaceSlot).
func WriteKeyRecord(fd int, header, rec []byte, mode string) (RecordPlace, error) {
	var place RecordPlace
	slot, err := chunk.MarshalSlot(rec)
	switch {
	case err == nil:
		place |= PlaceSlot
	case errors.Is(err, chunk.ErrRecordTooLarge) && mode != KeyRecordSlot:
		slot, _ = chunk.MarshalSlot(nil)
	default:
		return 0, err
	}
	buf, off := slot, int64(chunk.HeaderSize)
	if header != nil {
		if len(header) != chunk.HeaderSize {
			panic(fmt.Sprintf("cipherdir: internal error: header of %d bytes", len(header)))
		}
		buf, off = append(append(make([]byte, 0, chunk.DataOffset), header...), slot...), 0
	}
	n, err := unix.Pwrite(fd, buf, off)
	if err == nil && n < len(buf) {
		err = fmt.Errorf("short write of %d of %d bytes", n, len(buf))
	}
	if err != nil {
		return 0, fmt.Errorf("write key-record slot: %w", err)
	}
	if mode == KeyRecordSlot {
		return place, nil
	}
	if err := unix.Fsetxattr(fd, KeyXattr, rec, 0); err != nil {
		if xattrUnsupported(err) && place&PlaceSlot != 0 {
			return place, nil
		}
		return place, fmt.Errorf("set key xattr: %w", err)
	}
	return place | PlaceXattr, nil
}

// ProbeUserXattrs reports whether the file system holding dir keeps user
// extended attributes: it sets one on a temporary file in dir (named like
// the config's temporary files, which the mount hides) and removes the
// file. ENOTSUP or EOPNOTSUPP means no; other failures are errors.
// `kmsfs init` records the answer as Config.KeyRecord.
func ProbeUserXattrs(dir string) (bool, error) {
	f, err := os.CreateTemp(dir, ConfigName+".tmp-probe-*")
	if err != nil {
		return false, fmt.Errorf("probe user xattrs: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	err = unix.Fsetxattr(int(f.Fd()), InternalXattrPrefix+"probe", []byte{1}, 0)
	switch {
	case err == nil:
		return true, nil
	case xattrUnsupported(err):
		return false, nil
	}
	return false, fmt.Errorf("probe user xattrs: %w", err)
}
