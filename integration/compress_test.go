package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Compression (kmsfs init --compress): the differential test, the tamper
// matrix and fio's verification rerun with it, on compressible data, and
// the disk-space promise of issue 7 is checked on real blocks.

// textWords are the vocabulary of fillText: enough variety that zstd and
// s2 do real work, and a ratio close to source code's.
var textWords = strings.Fields(`func return if err != nil { } package import type struct
	interface for range := var const chunk file size offset backing cipher header
	the a of to in is that it with as for was on are be this by not or
	// fmt.Errorf("%w", err) t.Fatal(err) byte int64 uint64 string bool`)

// fillText fills b with random sentences of textWords and some digits:
// compressible like source text, different on every call.
func fillText(r *rand.Rand, b []byte) {
	i := 0
	for i < len(b) {
		w := textWords[r.IntN(len(textWords))]
		if r.IntN(8) == 0 {
			w = fmt.Sprint(r.IntN(100000))
		}
		i += copy(b[i:], w)
		if i < len(b) {
			b[i] = " \n\t("[r.IntN(4)]
			i++
		}
	}
}

// textBytes returns n bytes of fillText.
func textBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	fillText(r, b)
	return b
}

func compressOpt(alg string) Option { return WithInitArgs("--compress", alg) }

// TestCompressedDifferential is TestDifferential on trees with compression,
// with compressible data (and random data in the plain run of each case,
// via the incompressible variant), at 4 KiB and the default 64 KiB chunks.
func TestCompressedDifferential(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	for _, tc := range []struct {
		name string
		cs   int // 0: init's default with compression
		ops  int
		text bool
		alg  string
	}{
		{"zstd-chunk4096-text", 4096, 5000, true, "zstd"},
		{"zstd-default-text", 0, 2000, true, "zstd"},
		{"zstd-default-random", 0, 1000, false, "zstd"},
		{"s2-chunk16384-text", 16384, 2000, true, "s2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := []Option{compressOpt(tc.alg)}
			if tc.cs != 0 {
				opts = append(opts, WithChunkSize(tc.cs))
			}
			fs := newFS(t, opts...)
			if tc.cs == 0 && fs.ChunkSize != 65536 {
				t.Fatalf("init --compress: chunk size %d, want 65536", fs.ChunkSize)
			}
			d := &differ{t: t, fs: fs, ref: t.TempDir(), r: newRand(seed + uint64(fs.ChunkSize)), cs: fs.ChunkSize, seed: seed, text: tc.text}
			t.Cleanup(d.closeQuietly)
			d.run(tc.ops)
		})
	}
}

// TestCompressedTamperMatrix is TestTamperMatrix with zstd on text: the
// same detections, repairs and exit codes with compressed chunks.
func TestCompressedTamperMatrix(t *testing.T) {
	t.Parallel()
	tamperMatrix(t, textBytes, compressOpt("zstd"))
}

// TestCompressedFio runs fio's verification jobs with zstd.
func TestCompressedFio(t *testing.T) {
	t.Parallel()
	requireTool(t, "fio")
	fs := newFS(t, compressOpt("zstd"))
	args := func(rw, bs string) []string {
		return []string{
			"--name=" + rw + "-" + bs, "--directory=" + fs.Mnt, "--filename=" + rw + "-" + bs,
			"--rw=" + rw, "--bs=" + bs, "--size=16m",
			"--ioengine=psync", "--direct=0", "--end_fsync=1",
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
			// Half of every buffer compressible, as a mix of data would be.
			"--buffer_compress_percentage=50", "--refill_buffers",
			"--randrepeat=1", "--randseed=4242", "--verify_state_save=0",
		}
	}
	jobs := [][2]string{{"write", "128k"}, {"randwrite", "4k"}, {"randrw", "16k"}}
	for _, j := range jobs {
		runFio(t, args(j[0], j[1])...)
	}
	fs.Remount()
	for _, j := range jobs {
		runFio(t, append(args(j[0], j[1]), "--verify_only")...)
	}
}

// duBytes returns the bytes allocated to the files under dir.
func duBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() {
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestCompressedDiskSpace writes text and random files through mounts with
// and without zstd and compares the blocks the backing files take: text at
// most half its size, random data no more than without compression.
func TestCompressedDiskSpace(t *testing.T) {
	t.Parallel()
	r := newRand(77)
	text := textBytes(r, 8<<20)
	random := randomBytes(r, 8<<20)
	du := map[string]int64{}
	for _, alg := range []string{"none", "zstd"} {
		fs := newFS(t, compressOpt(alg))
		mustWrite(t, fs.Path("text"), text)
		mustWrite(t, fs.Path("random"), random)
		fs.Unmount()
		for _, name := range []string{"text", "random"} {
			du[alg+"/"+name] = duBytes(t, fs.Backing(name))
		}
		fs.Mount()
		checkContent(t, fs.Path("text"), text)
		checkContent(t, fs.Path("random"), random)
	}
	t.Logf("allocated bytes for 8 MiB: %v", du)
	if du["none/text"] < int64(len(text)) {
		t.Skipf("the backing file system allocates %d bytes for %d: no block accounting", du["none/text"], len(text))
	}
	if got := du["zstd/text"]; got > int64(len(text))/2 {
		t.Errorf("zstd: 8 MiB of text takes %d bytes on disk, more than half", got)
	}
	if du["zstd/random"] > du["none/random"] {
		t.Errorf("zstd: random data takes %d bytes, %d without compression", du["zstd/random"], du["none/random"])
	}
}

// TestCompressedFsckPunch copies a zstd file with cp --sparse=never, which
// allocates the punched zero tails again, and checks that fsck --repair
// punches them: the summary reports the bytes freed, the exit code stays
// 0, the file takes what it took before the copy and reads back.
func TestCompressedFsckPunch(t *testing.T) {
	t.Parallel()
	fs := newFS(t, compressOpt("zstd"))
	text := textBytes(newRand(11), 1<<20)
	mustWrite(t, fs.Path("text"), text)
	fs.Unmount()
	p := fs.Backing("text")
	punched := duBytes(t, p)
	if out, err := exec.Command("cp", "--sparse=never", "--preserve=all", p, p+".copy").CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if err := os.Rename(p+".copy", p); err != nil {
		t.Fatal(err)
	}
	filled := duBytes(t, p)
	if filled <= punched {
		t.Skipf("the backing file system allocates %d bytes with holes and %d without", punched, filled)
	}
	code, problems, doc := fsck(t, fs, fs.CipherDir, "--repair")
	if code != 0 || len(problems) != 0 {
		t.Fatalf("fsck --repair: exit %d, %v", code, problems)
	}
	after := duBytes(t, p)
	if doc.Summary.Freed != filled-after || after != punched {
		t.Errorf("fsck --repair freed %d bytes (reported %d): %d allocated, %d before the copy", filled-after, doc.Summary.Freed, after, punched)
	}
	fs.Mount()
	checkContent(t, fs.Path("text"), text)
}
