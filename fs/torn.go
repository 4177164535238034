package fs

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
)

// Torn tails.
//
// The kernel copies a large pwrite into the page cache page by page and
// stops at a page boundary when the writer gets SIGKILL (or the machine
// loses power before the size reaches the disk). A write that extends a
// file can therefore leave its backing file ending anywhere, including
// inside the nonce and tag of an unfinished chunk: a backing size the
// format calls impossible. Those at most chunk.Overhead bytes can hold no
// data (a chunk needs more), so dropping them loses nothing: the whole
// chunks before them are what the interrupted write stored. The last of
// them was usually sealed as a middle chunk, so it then reads as EIO
// ("truncated") and `kmsfs fsck` reports it — never wrong plaintext.
//
// getattr shows the size of the whole chunks, and the first open of such a
// file on a writable mount trims the tail so every later change starts
// from a valid size. A read-only mount leaves the file as it is.

// tornTail reports whether a backing file of size backing ends inside the
// nonce and tag of an unfinished chunk, and the size of the whole chunks
// before it.
func tornTail(backing int64, chunkSize int) (whole int64, torn bool) {
	if backing <= chunk.DataOffset {
		return backing, false
	}
	rem := (backing - chunk.DataOffset) % (int64(chunkSize) + chunk.Overhead)
	if rem == 0 || rem > chunk.Overhead {
		return backing, false
	}
	return backing - rem, true
}

// trimTornTail cuts the torn tail of the open backing file f, if it has
// one, and logs it. It runs under the content's write lock, before the
// first chunk.File of this mount touches the file.
//
// In shared mode a tail that looks torn may be another host's extending
// write under way, which holds the size lock's write side until it is
// done: the size is looked at again under that lock before anything is
// cut.
func (r *root) trimTornTail(f *os.File, id chunk.FileID) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat of backing file: %w", err)
	}
	whole, torn := tornTail(fi.Size(), r.cfg.ChunkSize)
	if torn && r.shared && !r.readOnly {
		l, err := lockSize(int(f.Fd()), true)
		if err != nil {
			return err
		}
		defer l.release()
		if fi, err = f.Stat(); err != nil {
			return fmt.Errorf("stat of backing file: %w", err)
		}
		whole, torn = tornTail(fi.Size(), r.cfg.ChunkSize)
	}
	if !torn {
		return nil
	}
	if r.readOnly {
		r.log.Warn("torn tail left in place on a read-only mount (an interrupted write); run kmsfs fsck",
			"file_id", id.String(), "backing_size", fi.Size())
		return nil
	}
	// The handle may be read-only: truncate through its /proc link, which
	// names this very inode whatever happened to its path.
	if err := unix.Truncate(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), whole); err != nil {
		return fmt.Errorf("trimming the torn tail of file %s: %w", id, err)
	}
	r.log.Warn("trimmed a torn tail left by an interrupted write",
		"file_id", id.String(), "bytes", fi.Size()-whole, "backing_size", whole)
	return nil
}
