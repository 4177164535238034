package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/chunk"
	"github.com/kmsfs/kmsfs/cipherdir"
	"github.com/kmsfs/kmsfs/codec"
	"github.com/kmsfs/kmsfs/keysvc"
)

// checkTree is a CIPHERDIR with files written through the fs code paths
// (no FUSE needed) for the checker's tests.
type checkTree struct {
	r    *root
	keys *fakeKeys
	dir  string
	data map[string][]byte
	ids  map[string]chunk.FileID
}

const checkChunk = 512

func newCheckTree(t *testing.T, mode string, files map[string]int) *checkTree {
	t.Helper()
	data := map[string][]byte{}
	for name, n := range files {
		data[name] = bytes.Repeat([]byte(name), n/len(name)+1)[:n]
	}
	return newCheckTreeWith(t, checkChunk, func(c *cipherdir.Config) { c.KeyRecord = mode }, data)
}

// newCheckTreeWith is newCheckTree with the chunk size cs, a config
// edited by edit, and the files' contents given.
func newCheckTreeWith(t *testing.T, cs int, edit func(*cipherdir.Config), files map[string][]byte) *checkTree {
	t.Helper()
	keys := newFakeKeys()
	cfg, err := cipherdir.NewConfig(cipherdir.KMSLocal, keys.keyID, cs)
	if err != nil {
		t.Fatal(err)
	}
	edit(&cfg)
	dir := t.TempDir()
	if err := cipherdir.WriteConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	rn, err := newRoot(Options{CipherDir: dir, Config: cfg, Keys: keys, Codecs: codec.All()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rn.r.close)
	ct := &checkTree{r: rn.r, keys: keys, dir: dir, data: map[string][]byte{}, ids: map[string]chunk.FileID{}}
	ctx := context.Background()
	for name, data := range files {
		h, _, err := ct.r.createFile(ctx, ct.r.fd, name, newMode{perm: 0o600}, syscall.O_RDWR, true)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > 0 {
			if _, err := ct.r.change(ctx, h.c, &h.backingFile, change{kind: changeWrite, data: data}); err != nil {
				t.Fatal(err)
			}
		}
		ct.data[name], ct.ids[name] = data, h.c.cipher.Header().FileID
		h.Release(ctx)
	}
	return ct
}

func (ct *checkTree) path(name string) string { return filepath.Join(ct.dir, name) }

// check runs the checker and returns the problems as "name kind chunk"
// strings (sorted) and the summary.
func (ct *checkTree) check(t *testing.T, repair, zero bool) ([]string, cipherdir.CheckSummary) {
	t.Helper()
	var got []string
	sum, err := cipherdir.Check(context.Background(), cipherdir.CheckOptions{
		CipherDir: ct.dir, Config: ct.r.cfg, Keys: ct.keys, Codecs: ct.r.codecs, Repair: repair, ZeroUnreadable: zero,
		Report: func(r cipherdir.FileReport) {
			for _, p := range r.Problems {
				s := fmt.Sprintf("%s %s %d", r.Path, p.Kind, p.Chunk)
				if p.Repaired {
					s += " repaired"
				}
				got = append(got, s)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	return got, sum
}

// edit changes the backing file name in place.
func (ct *checkTree) edit(t *testing.T, name string, fn func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(ct.path(name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ct.path(name), fn(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// read opens name the way a mount does and returns its plaintext.
func (ct *checkTree) read(t *testing.T, name string) ([]byte, error) {
	t.Helper()
	ctx := context.Background()
	h, err := ct.r.openFile(ctx, ct.r.fd, name, syscall.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer h.Release(ctx)
	buf := make([]byte, len(ct.data[name])+10)
	h.c.mu.RLock()
	defer h.c.mu.RUnlock()
	n, err := h.file(h.c).ReadAt(buf, 0)
	if n == len(ct.data[name]) {
		err = nil
	}
	return buf[:n], err
}

func want(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

const checkSealed = checkChunk + chunk.Overhead

func at(i int) int { return chunk.DataOffset + i*checkSealed }

func TestCheckClean(t *testing.T) {
	ct := newCheckTree(t, cipherdir.KeyRecordXattrSlot, map[string]int{"a": 3*checkChunk + 7, "b": checkChunk, "c": 1, "empty": 0})
	if err := os.WriteFile(ct.path("zero-bytes"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, sum := ct.check(t, false, false)
	want(t, "clean tree", got)
	if sum.Files != 5 || sum.Empty != 1 || sum.Chunks != 6 || sum.Remaining != 0 || len(sum.Keys) != 1 || sum.Keys[0].Files != 4 {
		t.Errorf("summary %+v", sum)
	}
}

func TestCheckKeyRecords(t *testing.T) {
	ct := newCheckTree(t, cipherdir.KeyRecordXattrSlot, map[string]int{"nox": 1000, "noslot": 1000, "foreignx": 1000, "foreigns": 1000, "donor": 1000, "differ": 1000})
	donorX, _ := readXattrFile(t, ct.path("donor"))
	if err := unix.Removexattr(ct.path("nox"), KeyXattr); err != nil {
		t.Fatal(err)
	}
	ct.edit(t, "noslot", func(b []byte) []byte { clear(b[chunk.HeaderSize:chunk.DataOffset]); return b })
	if err := unix.Setxattr(ct.path("foreignx"), KeyXattr, donorX, 0); err != nil {
		t.Fatal(err)
	}
	donorSlot, _ := os.ReadFile(ct.path("donor"))
	ct.edit(t, "foreigns", func(b []byte) []byte {
		copy(b[chunk.HeaderSize:chunk.DataOffset], donorSlot[chunk.HeaderSize:chunk.DataOffset])
		return b
	})
	// differ: the xattr wraps the same data key with another nonce, as a
	// rewrap interrupted between the slot and the xattr leaves it.
	rec, _ := readXattrFile(t, ct.path("differ"))
	wk, err := keysvc.ParseRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	ec := ct.r.encryptionContext(ct.ids["differ"])
	n := ct.keys.aead.NonceSize()
	dek, err := ct.keys.aead.Open(nil, wk.Blob[:n], wk.Blob[n:], ct.keys.aad(ec))
	if err != nil {
		t.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{7}, n)
	wk.Blob = ct.keys.aead.Seal(nonce, nonce, dek, ct.keys.aad(ec))
	if err := unix.Setxattr(ct.path("differ"), KeyXattr, wk.MarshalRecord(), 0); err != nil {
		t.Fatal(err)
	}

	// Before repair: a mount reads nox (from the slot) and noslot (xattr),
	// and refuses foreignx (the xattr wins and does not unwrap).
	if _, err := ct.read(t, "foreignx"); err == nil {
		t.Error("a foreign key xattr opened the file")
	}
	got, _ := ct.check(t, false, false)
	want(t, "check", got, "nox xattr-missing -1", "noslot slot-missing -1", "foreignx xattr-bad -1",
		"foreigns slot-bad -1", "differ records-differ -1")
	got, sum := ct.check(t, true, false)
	want(t, "repair", got, "nox xattr-missing -1 repaired", "noslot slot-missing -1 repaired", "foreignx xattr-bad -1 repaired",
		"foreigns slot-bad -1 repaired", "differ records-differ -1 repaired")
	if sum.Repaired != 5 || sum.Remaining != 0 {
		t.Errorf("summary %+v", sum)
	}
	got, _ = ct.check(t, false, false)
	want(t, "after repair", got)
	for name := range ct.data {
		if b, err := ct.read(t, name); err != nil || !bytes.Equal(b, ct.data[name]) {
			t.Errorf("%s after repair: %v", name, err)
		}
	}
}

func readXattrFile(t *testing.T, path string) ([]byte, error) {
	t.Helper()
	buf := make([]byte, maxRecordSize)
	n, err := unix.Getxattr(path, KeyXattr, buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n], nil
}

func TestCheckChunks(t *testing.T) {
	ct := newCheckTree(t, cipherdir.KeyRecordXattrSlot, map[string]int{"flip": 3 * checkChunk, "remnant": 3*checkChunk + 5,
		"cut": 3 * checkChunk, "emptied": 2 * checkChunk, "zeroed": 3 * checkChunk, "hasdata": 2 * checkChunk, "midcut": 3 * checkChunk})
	ct.edit(t, "flip", func(b []byte) []byte { b[at(1)+40] ^= 1; return b })
	ci := func(name string) *chunk.Cipher {
		f, err := os.Open(ct.path(name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		c, err := ct.r.loadKey(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rc := ci("remnant")
	ct.edit(t, "remnant", func(b []byte) []byte {
		copy(b[at(1):], rc.SealChunk(nil, ct.data["remnant"][checkChunk:2*checkChunk], 1, true))
		return b
	})
	ct.edit(t, "cut", func(b []byte) []byte { return b[:at(2)] })
	ct.edit(t, "emptied", func(b []byte) []byte { return b[:chunk.DataOffset] })
	ct.edit(t, "zeroed", func(b []byte) []byte { clear(b[at(1):at(2)]); return b })
	hc := ci("hasdata")
	ct.edit(t, "hasdata", func(b []byte) []byte {
		hb, err := hc.MarshalHeaderFlags(0)
		if err != nil {
			t.Fatal(err)
		}
		copy(b, hb)
		return b
	})
	ct.edit(t, "midcut", func(b []byte) []byte { return b[:at(2)+20] })

	got, sum := ct.check(t, false, false)
	want(t, "check", got, "flip chunk-tag 1", "remnant crash-remnant 1", "cut truncated 1", "emptied truncated 0",
		"zeroed unexpected-hole 1", "hasdata has-data-missing -1", "midcut size 2")
	if sum.Remaining != 7 || sum.Damaged != 7 {
		t.Errorf("summary %+v", sum)
	}
	// The truncated file reads as an error through the fs code, not as empty.
	if _, err := ct.read(t, "emptied"); err == nil {
		t.Error("a file truncated to empty opened without error")
	}
	got, sum = ct.check(t, true, false)
	want(t, "safe repair", got, "flip chunk-tag 1", "remnant crash-remnant 1 repaired", "cut truncated 1", "emptied truncated 0",
		"zeroed unexpected-hole 1", "hasdata has-data-missing -1 repaired", "midcut size 2")
	if sum.Repaired != 2 || sum.Remaining != 5 {
		t.Errorf("summary %+v", sum)
	}
	var zeroed []string
	sum, err := cipherdir.Check(context.Background(), cipherdir.CheckOptions{CipherDir: ct.dir, Config: ct.r.cfg, Keys: ct.keys, Codecs: ct.r.codecs, Repair: true, ZeroUnreadable: true,
		Report: func(r cipherdir.FileReport) {
			if len(r.Zeroed) > 0 {
				zeroed = append(zeroed, fmt.Sprint(r.Path, r.Zeroed))
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(zeroed)
	if fmt.Sprint(zeroed) != "[flip[1] zeroed[1]]" || sum.Repaired != 4 || sum.Remaining != 1 {
		t.Errorf("repair with --zero-unreadable: zeroed %v, summary %+v", zeroed, sum)
	}
	got, _ = ct.check(t, false, false)
	want(t, "after repair", got, "midcut size 2")
	// What the repairs promise: remnant and hasdata intact, flip with
	// chunk 1 zeroed, cut keeps two chunks, emptied is empty.
	for name, wantData := range map[string][]byte{
		"remnant": ct.data["remnant"], "hasdata": ct.data["hasdata"],
		"flip": append(append(bytes.Clone(ct.data["flip"][:checkChunk]), make([]byte, checkChunk)...), ct.data["flip"][2*checkChunk:]...),
		"cut":  ct.data["cut"][:2*checkChunk], "emptied": {},
	} {
		ct.data[name] = wantData
		if b, err := ct.read(t, name); err != nil || !bytes.Equal(b, wantData) {
			t.Errorf("%s after repair: %d bytes, %v", name, len(b), err)
		}
	}
}

// TestKeyRecordSlotMode: a tree on a backing filesystem without user
// xattrs never touches the xattr, and the checker is content with the slot.
func TestKeyRecordSlotMode(t *testing.T) {
	ct := newCheckTree(t, cipherdir.KeyRecordSlot, map[string]int{"a": 2000})
	if _, err := unix.Getxattr(ct.path("a"), KeyXattr, make([]byte, maxRecordSize)); err != unix.ENODATA {
		t.Fatalf("slot mode set the key xattr: %v", err)
	}
	if b, err := ct.read(t, "a"); err != nil || !bytes.Equal(b, ct.data["a"]) {
		t.Fatalf("read in slot mode: %v", err)
	}
	if _, err := unix.Getxattr(ct.path("a"), KeyXattr, make([]byte, maxRecordSize)); err != unix.ENODATA {
		t.Fatalf("an open in slot mode restored the xattr: %v", err)
	}
	got, _ := ct.check(t, false, false)
	want(t, "slot mode", got)
}

// TestOpenRestoresXattr: a file whose xattr a copy dropped opens from the
// slot and gets its xattr back, once, with one log line.
func TestOpenRestoresXattr(t *testing.T) {
	ct := newCheckTree(t, cipherdir.KeyRecordXattrSlot, map[string]int{"a": 2000})
	var log bytes.Buffer
	ct.r.log = slog.New(slog.NewTextHandler(&log, nil))
	rec, _ := readXattrFile(t, ct.path("a"))
	if err := unix.Removexattr(ct.path("a"), KeyXattr); err != nil {
		t.Fatal(err)
	}
	if b, err := ct.read(t, "a"); err != nil || !bytes.Equal(b, ct.data["a"]) {
		t.Fatalf("read without xattr: %v", err)
	}
	if back, _ := readXattrFile(t, ct.path("a")); !bytes.Equal(back, rec) {
		t.Error("xattr not restored to the slot's record")
	}
	if n := strings.Count(log.String(), "restored the missing key xattr"); n != 1 {
		t.Errorf("%d restore log lines: %s", n, log.String())
	}
}

// TestAuthLogOnce: one damaged chunk read many times is one log line per
// authLogWindow; another chunk or reason is a line of its own.
func TestAuthLogOnce(t *testing.T) {
	var buf bytes.Buffer
	r := &root{log: slog.New(slog.NewTextHandler(&buf, nil))}
	id := chunk.FileID{1}
	for range 5 {
		r.errno("read", fmt.Errorf("read: %w", &chunk.AuthError{FileID: id, Chunk: 2}))
	}
	r.errno("read", &chunk.AuthError{FileID: id, Chunk: 3})
	r.errno("read", &chunk.AuthError{FileID: id, Chunk: 2, Reason: chunk.ReasonHole})
	if n := strings.Count(buf.String(), "content authentication failed"); n != 3 {
		t.Errorf("%d log lines, want 3:\n%s", n, buf.String())
	}
	var l logOnce
	now := time.Now()
	e := chunk.AuthError{FileID: id}
	if !l.first(e, now) || l.first(e, now.Add(authLogWindow-1)) || !l.first(e, now.Add(authLogWindow)) {
		t.Error("logOnce window")
	}
}

// TestSlotFallbackReadOnlyAndInfo: a read-only mount reads a file whose
// xattr is gone but leaves the backing file alone, and `kmsfs info`
// (cipherdir.FileInfo) reads the record from the slot.
func TestSlotFallbackReadOnlyAndInfo(t *testing.T) {
	ct := newCheckTree(t, cipherdir.KeyRecordXattrSlot, map[string]int{"a": 3000})
	if err := unix.Removexattr(ct.path("a"), KeyXattr); err != nil {
		t.Fatal(err)
	}
	ct.r.readOnly = true
	if b, err := ct.read(t, "a"); err != nil || !bytes.Equal(b, ct.data["a"]) {
		t.Fatalf("read-only read without xattr: %v", err)
	}
	if _, err := unix.Getxattr(ct.path("a"), KeyXattr, make([]byte, maxRecordSize)); err != unix.ENODATA {
		t.Errorf("a read-only mount restored the xattr: %v", err)
	}
	info, err := cipherdir.FileInfo(ct.path("a"))
	if err != nil || info.KeyID != ct.keys.keyID || info.FileID != ct.ids["a"].String() || info.PlaintextSize != 3000 {
		t.Errorf("cipherdir.FileInfo without xattr: %+v, %v", info, err)
	}
}

// TestCheckPunchesZeroTails: compressed chunks whose zero tails are
// allocated again (a copy that filled the holes) are punched by a repair,
// which reports the bytes freed and changes no byte; a check without
// repair and a file without compression are left alone.
func TestCheckPunchesZeroTails(t *testing.T) {
	const cs = 64 << 10
	random := make([]byte, 3*cs)
	_, _ = rand.Read(random)
	files := map[string][]byte{"text": compressibleText(5*cs + 1000), "random": random}
	ct := newCheckTreeWith(t, cs, func(c *cipherdir.Config) { c.Compress = "zstd" }, files)
	plain := newCheckTreeWith(t, cs, func(*cipherdir.Config) {}, map[string][]byte{"text": files["text"]})
	punched := map[string]int64{}
	for name := range files {
		punched[name] = allocated(t, ct.path(name))
		// Rewrite every byte in place, as cp --sparse=never does.
		ct.edit(t, name, func(b []byte) []byte { return b })
	}
	plain.edit(t, "text", func(b []byte) []byte { return b })
	filled, plainFilled := allocated(t, ct.path("text")), allocated(t, plain.path("text"))
	if filled <= punched["text"] {
		t.Skipf("the temp file system allocates %d bytes with holes, %d without: no hole accounting", punched["text"], filled)
	}

	if got, sum := ct.check(t, false, false); len(got) != 0 || sum.Freed != 0 || allocated(t, ct.path("text")) != filled {
		t.Fatalf("check without repair: %v, freed %d, %d bytes allocated (was %d)", got, sum.Freed, allocated(t, ct.path("text")), filled)
	}
	got, sum := ct.check(t, true, false)
	if len(got) != 0 {
		t.Fatalf("repair found %v", got)
	}
	after := allocated(t, ct.path("text"))
	if after != punched["text"] || sum.Freed != filled-after {
		t.Errorf("repair: text takes %d bytes (%d as written with punching, %d filled), freed %d reported",
			after, punched["text"], filled, sum.Freed)
	}
	if a := allocated(t, ct.path("random")); a != punched["random"] {
		t.Errorf("repair: incompressible file takes %d bytes, %d before", a, punched["random"])
	}
	for name, want := range files {
		if b, err := ct.read(t, name); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s after repair: %d bytes, %v", name, len(b), err)
		}
	}
	if got, sum := ct.check(t, true, false); len(got) != 0 || sum.Freed != 0 {
		t.Errorf("second repair: %v, freed %d", got, sum.Freed)
	}

	if _, sum := plain.check(t, true, false); sum.Freed != 0 || allocated(t, plain.path("text")) != plainFilled {
		t.Errorf("repair of a file without compression freed %d bytes", sum.Freed)
	}
}
