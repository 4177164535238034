package cipherdir

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/keysvc"
	"github.com/kmsfs/kmsfs/names"
)

// The checker behind `kmsfs fsck`: it reads every backing regular file of
// a tree while nothing else writes to it (a mount in shared mode is held
// off by the file's internal locks, see checker.file; any other mount
// must not be writing), and reports, per file and chunk,
// everything the reader rules of chunk/FORMAT.md and the key-record rules
// (keyrecord.go) would reject, plus what they accept but should not stay
// (crash remnants, a missing copy of the key record). With Repair it fixes
// what is safe; with ZeroUnreadable also what loses data, listing it.

// Problem kinds. They are stable strings: --json output and scripts use
// them.
const (
	ProblemSize           = "size"             // backing size no content can have
	ProblemHeader         = "header"           // malformed header, another chunk size, or a header tag that fails
	ProblemXattrMissing   = "xattr-missing"    // key xattr absent, slot good
	ProblemXattrBad       = "xattr-bad"        // key xattr malformed or does not unwrap for this file
	ProblemSlotMissing    = "slot-missing"     // key-record slot empty, xattr good
	ProblemSlotBad        = "slot-bad"         // key-record slot malformed or does not unwrap for this file
	ProblemRecordsDiffer  = "records-differ"   // both unwrap to the data key but differ (an interrupted rewrap)
	ProblemSlotTooSmall   = "record-too-large" // the record does not fit the slot (warning)
	ProblemNoKey          = "no-key"           // no key record unwraps: the file is unreadable
	ProblemKeyRefused     = "key-refused"      // the key service refuses the key (disabled, pending deletion, access denied)
	ProblemUntrustedKey   = "untrusted-key"    // the key record names a KMS key the filesystem does not trust (a planted file?); never repaired
	ProblemKeyUnavailable = "key-unavailable"  // the key service did not answer: the file was not checked
	ProblemTag            = "chunk-tag"        // a chunk fails authentication
	ProblemTruncated      = "truncated"        // the last chunk opens only as a middle chunk, or the file was emptied
	ProblemHole           = "unexpected-hole"  // an all-zero chunk where no hole may be
	ProblemRemnant        = "crash-remnant"    // a middle chunk sealed as final
	ProblemHasData        = "has-data-missing" // chunks, but no HAS_DATA in the header
	ProblemPunch          = "punch-failed"     // --repair could not punch the zero tails of compressed chunks (warning)
	ProblemBusy           = "busy"             // a mount in shared mode kept writing the file: not checked (warning)
)

// NoChunk is Problem.Chunk for a problem of the whole file.
const NoChunk = -1

// Problem is one finding in one file.
type Problem struct {
	Kind   string `json:"kind"`
	Chunk  int64  `json:"chunk"` // NoChunk when not about one chunk
	Detail string `json:"detail"`
	// Warning marks findings that do not make the tree unhealthy.
	Warning bool `json:"warning,omitempty"`
	// Repaired says the repair of this problem was done; Repair describes it.
	Repaired bool   `json:"repaired,omitempty"`
	Repair   string `json:"repair,omitempty"`
}

// FileReport is the result of checking one backing file.
type FileReport struct {
	Path string `json:"path"` // relative to CIPHERDIR
	// PlainPath is the entry's path in the mount (v2 trees only: in v1 it
	// is Path), with "?" for each name that cannot be decrypted; "" for
	// kmsfs's own entries, which have none.
	PlainPath     string    `json:"plain_path,omitempty"`
	FileID        string    `json:"file_id,omitempty"`
	KeyID         string    `json:"key_id,omitempty"`
	KeyMaterialID string    `json:"key_material_id,omitempty"`
	PlaintextSize int64     `json:"plaintext_size"`
	Chunks        int64     `json:"chunks"`
	Problems      []Problem `json:"problems,omitempty"`
	// Zeroed lists the chunks replaced by sealed zeros (ZeroUnreadable).
	Zeroed []int64 `json:"zeroed,omitempty"`
	// Freed is the backing bytes Repair gave back by punching the zero
	// tails of compressed chunks that were still allocated.
	Freed int64 `json:"freed_bytes,omitempty"`
	// Unavailable: the key service did not answer, the file was not checked.
	Unavailable bool `json:"-"`
	// Busy: a mount in shared mode kept the file's internal locks, the
	// file was not checked (or, with Repair, not repaired).
	Busy bool `json:"-"`
	// NotFile: the report is about an entry other than a regular file (a
	// directory, symlink, sidecar, temporary… of a v2 tree), which is not
	// one of the files checked.
	NotFile bool `json:"-"`
}

// Unhealthy reports whether the file has a problem that is not a warning
// and was not repaired.
func (r *FileReport) Unhealthy() bool {
	for _, p := range r.Problems {
		if !p.Warning && !p.Repaired {
			return true
		}
	}
	return false
}

func (r *FileReport) add(kind string, chunkIndex int64, format string, args ...any) *Problem {
	r.Problems = append(r.Problems, Problem{Kind: kind, Chunk: chunkIndex, Detail: fmt.Sprintf(format, args...)})
	return &r.Problems[len(r.Problems)-1]
}

// CheckOptions configure Check.
type CheckOptions struct {
	CipherDir string
	Config    Config
	// Names is the names key of a v2 tree (nil for v1): names, directory
	// IDs, sidecars and symlink targets are checked too (check_v2.go).
	Names *names.Keys
	// Mounted says CIPHERDIR is mounted (fsck --repair --force): Repair
	// then leaves temporaries, orphan sidecars and orphan long-target
	// files alone, which a running mount may be writing.
	Mounted bool
	// Keys unwraps the key records; it should not be a cache that outlives
	// the run (fsck asks the KMS itself).
	Keys keysvc.Service
	// Codecs decompress the chunks of compressed files (codec.All()); a
	// file whose compression has none is reported unreadable.
	Codecs chunk.Codecs
	// KMSTimeout bounds each key service call (0: 30 s).
	KMSTimeout time.Duration
	// Repair fixes what loses nothing: a missing or bad copy of the key
	// record from the good one, crash remnants re-sealed as middle chunks,
	// a missing HAS_DATA flag. In files with compression it also punches
	// the zero tails of compressed chunks that are still allocated
	// (written by a kmsfs that did not punch, or copied by a tool that
	// fills holes), which changes no byte of the file.
	Repair bool
	// ZeroUnreadable (with Repair) also replaces chunks that fail
	// authentication by sealed zero chunks, re-seals a last chunk that
	// opens only as a middle chunk as final (accepting the cut), and
	// clears HAS_DATA of a file truncated to empty. Each is listed.
	ZeroUnreadable bool
	// Jobs is how many files are checked at once (0: 2).
	Jobs int
	// Wait makes a file that a mount in shared mode is writing wait for
	// its internal locks; without, such a file is reported busy (and not
	// repaired) after a few tries.
	Wait bool
	// Files, when not nil, receives the number of regular files the walk
	// found, before checking starts: for a progress bar.
	Files func(n int)
	// Report receives each file's report as it is done (from one
	// goroutine at a time).
	Report func(FileReport)
}

// KeyUsage counts the files per key and key material (fsck --keys).
type KeyUsage struct {
	KeyID     string           `json:"key_id"`
	Files     int64            `json:"files"`
	Materials map[string]int64 `json:"materials"` // key material ID → files
}

// CheckSummary totals a run.
type CheckSummary struct {
	Files       int64      `json:"files"`       // regular files checked
	Empty       int64      `json:"empty"`       // of which 0-byte (no header yet)
	Directories int64      `json:"directories"` // directories walked
	Other       int64      `json:"other"`       // symlinks and special files (nothing to check)
	Damaged     int64      `json:"damaged"`     // files with problems that remain
	Repaired    int64      `json:"repaired"`    // problems repaired
	Remaining   int64      `json:"remaining"`   // problems that remain (warnings excluded)
	Warnings    int64      `json:"warnings"`    // warnings
	Unavailable int64      `json:"unavailable"` // files not checked: key service unavailable
	Busy        int64      `json:"busy"`        // files not checked: a mount in shared mode was writing them
	Bytes       int64      `json:"plain_bytes"` // plaintext bytes checked
	Chunks      int64      `json:"chunks"`      // chunks checked
	Found       int64      `json:"problems"`    // problems found (warnings excluded)
	Freed       int64      `json:"freed_bytes"` // backing bytes freed by punching zero tails (Repair)
	XattrsOff   bool       `json:"xattrs_unsupported,omitempty"`
	Keys        []KeyUsage `json:"keys,omitempty"`
}

// Check checks every backing regular file under opts.CipherDir. It
// returns an error only when the walk itself fails; findings are in the
// reports and the summary.
func Check(ctx context.Context, opts CheckOptions) (CheckSummary, error) {
	if opts.KMSTimeout <= 0 {
		opts.KMSTimeout = 30 * time.Second
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 2
	}
	var sum CheckSummary
	root, err := OpenRoot(opts.CipherDir)
	if err != nil {
		return sum, fmt.Errorf("fsck: %w", err)
	}
	defer unix.Close(root)
	c := &checker{opts: opts, root: root, keys: map[string]*KeyUsage{}}
	var files []fileJob
	var entries []FileReport // findings about other entries than regular files (v2)
	if opts.Names != nil {
		files, entries, err = c.walkV2(root, opts.Names, &sum)
	} else {
		err = Walk(root, opts.Config.EncryptedNames(), func(e Entry) error {
			switch {
			case e.IsDir():
				sum.Directories++
			case e.IsRegular():
				files = append(files, fileJob{rel: e.Rel})
			default:
				sum.Other++
			}
			return nil
		})
	}
	if err != nil {
		return sum, fmt.Errorf("fsck: %s: %w", opts.CipherDir, err)
	}
	if opts.Files != nil {
		opts.Files(len(files))
	}
	for _, rep := range entries {
		c.tally(rep, &sum)
	}
	tctx, cancel := context.WithTimeout(ctx, opts.KMSTimeout)
	c.trust = NewTrust(tctx, opts.Keys, opts.Config, nil)
	cancel()
	work := make(chan fileJob)
	var wg sync.WaitGroup
	for range opts.Jobs {
		wg.Go(func() {
			for job := range work {
				rep := c.file(ctx, job.rel)
				rep.PlainPath = job.plain
				rep.Problems = append(job.pre, rep.Problems...)
				c.done(rep, &sum)
			}
		})
	}
	for _, job := range files {
		work <- job
	}
	close(work)
	wg.Wait()
	sum.XattrsOff = c.xattrsOff
	for _, k := range c.keys {
		sum.Keys = append(sum.Keys, *k)
	}
	sort.Slice(sum.Keys, func(i, j int) bool { return sum.Keys[i].KeyID < sum.Keys[j].KeyID })
	return sum, nil
}

type checker struct {
	opts  CheckOptions
	root  int    // CIPHERDIR: every file is opened below it
	trust *Trust // the keys whose records are accepted

	mu        sync.Mutex // guards the fields below and serialises Report
	keys      map[string]*KeyUsage
	xattrsOff bool
}

// done adds rep, the report of a regular file, to the summary and hands it
// to the caller.
func (c *checker) done(rep FileReport, sum *CheckSummary) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sum.Files++
	sum.Bytes += rep.PlaintextSize
	sum.Chunks += rep.Chunks
	sum.Freed += rep.Freed
	if rep.Unavailable {
		sum.Unavailable++
	}
	if rep.Busy {
		sum.Busy++
	}
	if rep.FileID == "" && rep.PlaintextSize == 0 && !rep.Unhealthy() {
		sum.Empty++
	}
	if rep.KeyID != "" {
		k := c.keys[rep.KeyID]
		if k == nil {
			k = &KeyUsage{KeyID: rep.KeyID, Materials: map[string]int64{}}
			c.keys[rep.KeyID] = k
		}
		k.Files++
		k.Materials[rep.KeyMaterialID]++
	}
	c.tallyLocked(rep, sum)
}

// tally adds the findings of rep, the report of an entry that is not a
// regular file (a directory, symlink, sidecar, temporary…), to the summary
// and hands it to the caller.
func (c *checker) tally(rep FileReport, sum *CheckSummary) {
	rep.NotFile = true
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tallyLocked(rep, sum)
}

func (c *checker) tallyLocked(rep FileReport, sum *CheckSummary) {
	for _, p := range rep.Problems {
		switch {
		case p.Warning:
			sum.Warnings++
		case p.Repaired:
			sum.Found++
			sum.Repaired++
		default:
			sum.Found++
			sum.Remaining++
		}
	}
	if rep.Unhealthy() {
		sum.Damaged++
	}
	if c.opts.Report != nil {
		c.opts.Report(rep)
	}
}

// record is one copy of a file's key record and what became of it.
type record struct {
	place     RecordPlace
	raw       []byte // nil when absent
	err       error  // why it is absent or unusable
	wk        keysvc.WrappedKey
	dek       []byte // unwrapped; zeroed by the caller
	cipher    *chunk.Cipher
	missing   bool // absent (ENODATA, empty slot), as opposed to bad
	refused   error
	untrusted bool // names a key the tree does not trust
}

// file checks (and repairs) the backing file rel, with the internal
// locks of chunk/FORMAT.md so that no mount in shared mode writes it
// meanwhile, on this host or another. A repair holds the size lock
// exclusively for the whole file (LockExclusive). A check reads without
// locks first, as a mount's reader does, so that it holds up no writer;
// a file with findings is checked again with every writer held off
// (LockContent), and only that second check counts: a chunk read while
// a writer rewrote it is no finding. A file whose locks stay taken is
// reported busy (a warning, Busy) and not checked.
func (c *checker) file(ctx context.Context, rel string) FileReport {
	if c.opts.Repair {
		return c.checkFile(ctx, rel, true)
	}
	rep := c.checkFile(ctx, rel, false)
	if !rep.Unhealthy() {
		return rep
	}
	again := c.checkFile(ctx, rel, true)
	if again.Busy {
		var kinds []string
		for _, p := range rep.Problems {
			if !p.Warning {
				kinds = append(kinds, p.Kind)
			}
		}
		again.Problems[len(again.Problems)-1].Detail += fmt.Sprintf(" (read while it was written it showed: %s)", strings.Join(kinds, ", "))
	}
	return again
}

// checkFile checks (and with Repair repairs) the backing file rel, holding
// its internal locks when lock is set.
func (c *checker) checkFile(ctx context.Context, rel string, lock bool) (rep FileReport) {
	rep.Path = rel
	fd, err := OpenFile(c.root, rel, c.opts.Repair)
	if err != nil {
		rep.add(ProblemHeader, NoChunk, "open: %v", err)
		return rep
	}
	defer unix.Close(fd)
	if lock {
		mode := LockContent
		if c.opts.Repair {
			mode = LockExclusive
		}
		unlock, err := lockSoon(fd, mode, c.opts.Wait)
		if errors.Is(err, ErrBusy) {
			rep.Busy = true
			what := "checked"
			if c.opts.Repair {
				what = "checked or repaired"
			}
			rep.add(ProblemBusy, NoChunk, "a mount in shared mode kept writing it; not %s, run fsck again (or with --wait)", what).Warning = true
			return rep
		}
		if err != nil {
			rep.add(ProblemHeader, NoChunk, "%v", err)
			return rep
		}
		defer unlock()
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		rep.add(ProblemHeader, NoChunk, "stat: %v", err)
		return rep
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return rep // replaced by something else since the walk
	}
	size := st.Size
	if size == 0 {
		return rep // empty, no header yet: nothing to check
	}
	var hb [chunk.HeaderSize]byte
	if n, err := unix.Pread(fd, hb[:], 0); err != nil || n < len(hb) {
		rep.add(ProblemSize, NoChunk, "backing size %d is shorter than the %d-byte header", size, chunk.HeaderSize)
		return rep
	}
	h, err := chunk.ParseHeader(hb[:])
	if err != nil {
		rep.add(ProblemHeader, NoChunk, "%v", err)
		return rep
	}
	rep.FileID = h.FileID.String()
	if int(h.ChunkSize) != c.opts.Config.ChunkSize {
		rep.add(ProblemHeader, NoChunk, "chunk size %d, the filesystem's is %d", h.ChunkSize, c.opts.Config.ChunkSize)
		return rep
	}
	if size < chunk.DataOffset {
		rep.add(ProblemSize, NoChunk, "backing size %d is shorter than header and key-record slot (%d)", size, chunk.DataOffset)
		return rep
	}

	ci, ok := c.keyRecords(ctx, fd, h, hb[:], &rep)
	if !ok {
		return rep
	}
	c.chunks(fd, ci, size, &rep)
	return rep
}

// keyRecords checks both copies of the key record, unwraps them, verifies
// the header under the data key, repairs a missing or bad copy from the
// good one, and returns the file's cipher.
func (c *checker) keyRecords(ctx context.Context, fd int, h chunk.Header, hb []byte, rep *FileReport) (*chunk.Cipher, bool) {
	mode := c.opts.Config.KeyRecordMode()
	ec := keysvc.FileContext(c.opts.Config.FilesystemID, h.FileID.String())
	var recs []*record
	if mode != KeyRecordSlot {
		x := &record{place: PlaceXattr}
		raw, err := readKeyXattr(fd)
		switch {
		case err == nil:
			x.raw = raw
		case errors.Is(err, unix.ENODATA):
			x.missing, x.err = true, err
		case xattrUnsupported(err):
			c.mu.Lock()
			c.xattrsOff = true
			c.mu.Unlock()
			x = nil
		default:
			x.err = err
		}
		if x != nil {
			recs = append(recs, x)
		}
	}
	s := &record{place: PlaceSlot}
	raw, err := readKeySlot(fd)
	switch {
	case err == nil:
		s.raw = raw
	case errors.Is(err, chunk.ErrSlotEmpty):
		s.missing, s.err = true, err
	default:
		s.err = err
	}
	recs = append(recs, s)
	defer func() {
		for _, r := range recs {
			keysvc.Zero(r.dek)
		}
	}()

	// Unwrap each present copy (once when both are the same bytes).
	var good *record
	unavailable := false
	for i, r := range recs {
		if r.raw == nil {
			continue
		}
		if i > 0 && recs[0].raw != nil && bytes.Equal(recs[0].raw, r.raw) {
			*r = record{place: r.place, raw: r.raw, wk: recs[0].wk, err: recs[0].err, refused: recs[0].refused,
				untrusted: recs[0].untrusted, cipher: recs[0].cipher, dek: bytes.Clone(recs[0].dek)}
		} else {
			c.unwrap(ctx, r, h, hb, ec)
		}
		if r.err != nil && isUnavailable(r.err) {
			unavailable = true
		}
		if r.cipher != nil && good == nil {
			good = r
		}
	}
	if good == nil {
		for _, r := range recs {
			if r.untrusted {
				// Not repairable: only the owner of the data can say
				// whether the file is theirs (rekey or copy it in).
				rep.KeyID, rep.KeyMaterialID = r.wk.KeyID, r.wk.KeyMaterialID
				rep.add(ProblemUntrustedKey, NoChunk, "%s: %v; the file was not opened (it may have been planted)", r.place, r.err)
				return nil, false
			}
		}
		for _, r := range recs {
			if r.refused != nil {
				rep.KeyID, rep.KeyMaterialID = r.wk.KeyID, r.wk.KeyMaterialID
				rep.add(ProblemKeyRefused, NoChunk, "%s: %v", r.place, r.refused)
				return nil, false
			}
		}
		if unavailable {
			rep.Unavailable = true
			rep.add(ProblemKeyUnavailable, NoChunk, "the key service did not answer; the file was not checked").Warning = true
			return nil, false
		}
		var why []string
		for _, r := range recs {
			why = append(why, fmt.Sprintf("%s: %v", r.place, r.err))
		}
		rep.add(ProblemNoKey, NoChunk, "no key record opens the file (%s)", strings.Join(why, "; "))
		return nil, false
	}
	rep.KeyID, rep.KeyMaterialID = good.wk.KeyID, good.wk.KeyMaterialID

	// Each copy that is not the good one: missing, bad, or different.
	var fix []*Problem
	for _, r := range recs {
		if r == good {
			continue
		}
		kindMissing, kindBad := ProblemXattrMissing, ProblemXattrBad
		if r.place == PlaceSlot {
			kindMissing, kindBad = ProblemSlotMissing, ProblemSlotBad
		}
		switch {
		case r.missing && r.place == PlaceSlot && len(good.raw) > chunk.MaxSlotRecord:
			p := rep.add(ProblemSlotTooSmall, NoChunk, "the %d-byte key record does not fit the %d-byte slot; it is in the xattr only, and a copy that drops xattrs loses this file", len(good.raw), chunk.MaxSlotRecord)
			p.Warning = true
		case r.missing:
			fix = append(fix, rep.add(kindMissing, NoChunk, "the %s holds no key record; the %s does", r.place, good.place))
		case r.cipher == nil:
			fix = append(fix, rep.add(kindBad, NoChunk, "the %s's key record does not open this file: %v", r.place, r.err))
		case subtle.ConstantTimeCompare(r.dek, good.dek) != 1:
			fix = append(fix, rep.add(kindBad, NoChunk, "the %s's key record holds another data key", r.place))
		case !bytes.Equal(r.raw, good.raw):
			// Both hold the data key: a rewrap was interrupted between the
			// slot (written first) and the xattr.
			fix = append(fix, rep.add(ProblemRecordsDiffer, NoChunk, "xattr (key %s, material %s) and slot (key %s, material %s) differ; both open the file",
				recs[0].wk.KeyID, short(recs[0].wk.KeyMaterialID), s.wk.KeyID, short(s.wk.KeyMaterialID)))
			if s.cipher != nil {
				// The slot is the newer one: make it the good one.
				good = s
				rep.KeyID, rep.KeyMaterialID = s.wk.KeyID, s.wk.KeyMaterialID
			}
		}
	}
	if len(fix) > 0 && c.opts.Repair {
		place, err := WriteKeyRecord(fd, nil, good.raw, mode)
		for _, p := range fix {
			if err != nil {
				p.Repair = "failed: " + err.Error()
				continue
			}
			p.Repaired = true
			p.Repair = fmt.Sprintf("key record rewritten from the %s (now in: %s)", good.place, place)
		}
	}
	return good.cipher, true
}

// unwrap asks the key service for r's data key and verifies the header
// under it.
func (c *checker) unwrap(ctx context.Context, r *record, h chunk.Header, hb []byte, ec keysvc.EncryptionContext) {
	wk, err := keysvc.ParseRecord(r.raw)
	if err != nil {
		r.err = err
		return
	}
	r.wk = wk
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.KMSTimeout)
	defer cancel()
	if err := c.trust.Allow(kctx, wk.KeyID); err != nil {
		r.err, r.untrusted = err, true
		return
	}
	u, err := c.opts.Keys.Decrypt(kctx, wk.Blob, wk.KeyID, ec)
	if err != nil {
		r.err = err
		if IsRevocation(err) {
			r.refused = err
		}
		return
	}
	r.dek = u.Plaintext
	ci, err := chunk.NewCipher(u.Plaintext, h, c.opts.Codecs)
	if err != nil {
		r.err = err
		return
	}
	if err := ci.VerifyHeader(hb); err != nil {
		r.err = fmt.Errorf("the header does not verify under its data key: %w", err)
		return
	}
	r.cipher = ci
}

// IsRevocation reports whether err is the key service refusing a key
// (disabled, pending deletion, access denied, deleted) rather than failing
// to answer or rejecting a blob.
func IsRevocation(err error) bool {
	return errors.Is(err, keysvc.ErrDisabled) || errors.Is(err, keysvc.ErrInvalidState) ||
		errors.Is(err, keysvc.ErrAccessDenied) || errors.Is(err, keysvc.ErrNotFound)
}

func isUnavailable(err error) bool {
	return errors.Is(err, keysvc.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

// chunks checks every chunk of the file with the reader rules of
// FORMAT.md and repairs what it may.
func (c *checker) chunks(fd int, ci *chunk.Cipher, backing int64, rep *FileReport) {
	cs := int64(ci.ChunkSize())
	sealedSize := cs + chunk.Overhead
	header := func() (chunk.Header, error) {
		var hb [chunk.HeaderSize]byte
		if _, err := unix.Pread(fd, hb[:], 0); err != nil {
			return chunk.Header{}, err
		}
		return ci.OpenHeader(hb[:])
	}
	h, err := header()
	if err != nil {
		rep.add(ProblemHeader, NoChunk, "%v", err)
		return
	}
	setFlags := func(flags uint8) error {
		hb, err := ci.MarshalHeaderFlags(flags)
		if err != nil {
			return err
		}
		_, err = unix.Pwrite(fd, hb, 0)
		return err
	}
	plain, err := chunk.PlaintextSize(backing, int(cs))
	n := (plain + cs - 1) / cs
	if err != nil {
		// Cut inside a chunk (or garbage appended): check the whole chunks
		// that are there, none of them as the last.
		n = (backing - chunk.DataOffset) / sealedSize
		rep.add(ProblemSize, n, "backing size %d is impossible: the file was cut inside chunk %d or had bytes appended", backing, n)
		plain = n * cs
	}
	rep.PlaintextSize, rep.Chunks = plain, n
	if backing == chunk.DataOffset {
		if h.Flags&chunk.FlagHasData != 0 {
			p := rep.add(ProblemTruncated, 0, "the header says the file has data but it holds no chunk: it was truncated to empty")
			if c.opts.Repair && c.opts.ZeroUnreadable {
				repaired(p, setFlags(h.Flags&^chunk.FlagHasData), "HAS_DATA cleared: the file is now empty (its data is lost)")
			}
		}
		return
	}
	if n > 0 && h.Flags&chunk.FlagHasData == 0 {
		p := rep.add(ProblemHasData, NoChunk, "the file has chunks but its header lacks HAS_DATA (a truncation to empty would go unnoticed)")
		if c.opts.Repair {
			repaired(p, setFlags(h.Flags|chunk.FlagHasData), "HAS_DATA set")
		}
	}
	sizeOK := err == nil
	last := n - 1
	if !sizeOK {
		last = -1 // no chunk is the last one
	}
	punch := c.opts.Repair && h.Compression() != chunk.CompressionNone
	if punch {
		before, err := allocatedBytes(fd)
		if err == nil {
			defer func() {
				if after, err := allocatedBytes(fd); err == nil && after < before {
					rep.Freed = before - after
				}
			}()
		}
	}
	const batch = 64
	buf := make([]byte, batch*sealedSize)
	plainBuf := make([]byte, 0, cs)
	for first := int64(0); first < n; first += batch {
		end := min(n, first+batch)
		off := chunk.DataOffset + first*sealedSize
		want := min(backing-off, (end-first)*sealedSize)
		got, err := unix.Pread(fd, buf[:want], off)
		if err != nil || int64(got) < want {
			rep.add(ProblemSize, first, "read at backing offset %d: %v", off, err)
			return
		}
		for i := first; i < end; i++ {
			s := (i - first) * sealedSize
			l := min(sealedSize, want-s)
			sealed := buf[s : s+l]
			wrote := c.oneChunk(fd, ci, h, i, last, sealed, plainBuf, rep)
			if punch && !wrote {
				// A chunk rewritten by a repair has new bytes: sealed
				// no longer says where its zeros are.
				err := punchZeroTail(fd, off+s, sealed, i == last)
				if errors.Is(err, unix.EOPNOTSUPP) {
					punch = false
				} else if err != nil {
					p := rep.add(ProblemPunch, i, "punching the zero tail: %v", err)
					p.Warning = true
					punch = false
				}
			}
		}
	}
}

// oneChunk applies the reader rules to chunk i (the file's last is last,
// -1 for none) and repairs it when allowed. It reports whether it wrote
// the chunk (a repair, successful or not).
func (c *checker) oneChunk(fd int, ci *chunk.Cipher, h chunk.Header, i, last int64, sealed, scratch []byte, rep *FileReport) (wrote bool) {
	off := chunk.DataOffset + i*(int64(ci.ChunkSize())+chunk.Overhead)
	plainLen := len(sealed) - chunk.Overhead
	write := func(plain []byte, final bool) error {
		wrote = true
		out := ci.SealChunk(nil, plain, uint64(i), final)
		_, err := unix.Pwrite(fd, out, off)
		return err
	}
	zero := func(p *Problem, final bool) {
		if !c.opts.Repair || !c.opts.ZeroUnreadable {
			return
		}
		err := write(make([]byte, plainLen), final)
		if repaired(p, err, "replaced by a sealed chunk of zeros (its data is lost)") {
			rep.Zeroed = append(rep.Zeroed, i)
		}
	}
	if isAllZero(sealed) {
		switch {
		case i == last:
			zero(rep.add(ProblemHole, i, "the last chunk is all zeros (zeroed, or zeros appended)"), true)
		case h.Flags&chunk.FlagSparse == 0:
			zero(rep.add(ProblemHole, i, "an all-zero chunk in a file that was never sparse"), false)
		}
		return // a hole in a sparse file reads as zeros: fine
	}
	if i == last {
		if _, err := ci.OpenChunk(scratch[:0], sealed, uint64(i), true); err == nil {
			return
		}
		if pt, err := ci.OpenChunk(scratch[:0], sealed, uint64(i), false); err == nil {
			p := rep.add(ProblemTruncated, i, "the last chunk was sealed as a middle chunk: the file was cut after it")
			if c.opts.Repair && c.opts.ZeroUnreadable {
				repaired(p, write(pt, true), "re-sealed as the last chunk: the file keeps this length (what followed is lost)")
			}
			return
		}
		zero(rep.add(ProblemTag, i, "authentication failed"), true)
		return
	}
	if _, err := ci.OpenChunk(scratch[:0], sealed, uint64(i), false); err == nil {
		return
	}
	if pt, err := ci.OpenChunk(scratch[:0], sealed, uint64(i), true); err == nil {
		p := rep.add(ProblemRemnant, i, "a middle chunk sealed as final (an extending write was interrupted); the file could be cut after it unnoticed")
		if c.opts.Repair {
			repaired(p, write(pt, false), "re-sealed as a middle chunk")
		}
		return
	}
	zero(rep.add(ProblemTag, i, "authentication failed"), false)
	return wrote
}

// repaired records the outcome of a repair and reports whether it worked.
func repaired(p *Problem, err error, what string) bool {
	if err != nil {
		p.Repair = "failed: " + err.Error()
		return false
	}
	p.Repaired, p.Repair = true, what
	return true
}

func isAllZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// tailBlock is the granularity of the punches of punchZeroTail: the block
// size of the usual backing file systems, as in package chunk.
const tailBlock = 4096

// punchZeroTail gives back the whole blocks inside the run of zeros that
// ends the slot of a chunk at backing offset off (sealed, as read): the
// zero tail of a compressed record that a writer left allocated. Punching
// zeros changes no byte of the file, whatever the chunk holds. atEOF says
// the slot ends the file: the punch then runs to the end of the block
// holding the end of file, as chunk.File's does.
func punchZeroTail(fd int, off int64, sealed []byte, atEOF bool) error {
	z := len(sealed)
	for z > 0 && sealed[z-1] == 0 {
		z--
	}
	end := off + int64(len(sealed))
	from := (off + int64(z) + tailBlock - 1) / tailBlock * tailBlock
	to := end / tailBlock * tailBlock
	if atEOF {
		to = (end + tailBlock - 1) / tailBlock * tailBlock
	}
	if to <= from {
		return nil
	}
	return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, from, to-from)
}

// allocatedBytes returns the bytes the backing file system allocated for
// fd.
func allocatedBytes(fd int) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}
