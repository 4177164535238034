package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// reader reads a set of files through the mount in a loop until stopped,
// comparing each with its expected content: the "mounted and in use" part
// of the key lifecycle tests.
type reader struct {
	stopc chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	reads atomic.Int64

	mu  sync.Mutex
	err error
}

// startReader starts a reader of files (path → content). One file is also
// held open for the whole run and re-read through that descriptor, so an
// open handle is exercised as well as fresh opens.
func startReader(t testing.TB, files map[string][]byte) *reader {
	t.Helper()
	r := &reader{stopc: make(chan struct{})}
	// A test that fails early must not leave the mount busy.
	t.Cleanup(r.halt)
	var held *os.File
	var heldWant []byte
	for p, want := range files {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		held, heldWant = f, want
		break
	}
	r.wg.Go(func() {
		defer held.Close()
		buf := make([]byte, 0, 1<<16)
		for {
			for p, want := range files {
				select {
				case <-r.stopc:
					return
				default:
				}
				got, err := os.ReadFile(p)
				if err == nil && !bytes.Equal(got, want) {
					err = fmt.Errorf("read %d bytes, want %d, first difference at %d", len(got), len(want), firstDiff(got, want))
				}
				if err == nil {
					buf = buf[:len(heldWant)]
					var n int
					n, err = held.ReadAt(buf, 0)
					if err == io.EOF && n == len(heldWant) {
						err = nil
					}
					if err == nil && !bytes.Equal(buf[:n], heldWant) {
						err = fmt.Errorf("open descriptor of %s: wrong content", held.Name())
					}
				}
				if err != nil {
					r.mu.Lock()
					if r.err == nil {
						r.err = fmt.Errorf("reader: %s: %w", p, err)
					}
					r.mu.Unlock()
				}
				r.reads.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}
	})
	return r
}

// halt stops the reader and waits for it; later calls do nothing.
func (r *reader) halt() {
	r.once.Do(func() { close(r.stopc) })
	r.wg.Wait()
}

// stop stops the reader and fails the test if any read went wrong or none
// happened.
func (r *reader) stop(t testing.TB) {
	t.Helper()
	r.halt()
	if r.err != nil {
		t.Error(r.err)
	}
	if r.reads.Load() == 0 {
		t.Error("the reader read nothing")
	}
}

var rewrapSummaryRE = regexp.MustCompile(`rewrap: (\d+) files seen, (\d+) (?:rewrapped|to rewrap), (\d+) already current, (\d+) skipped, (\d+) failed`)

// rewrapSummary is the counts of rewrap's summary line.
type rewrapSummary struct{ seen, rewrapped, current, skipped, failed int }

func parseRewrapSummary(t testing.TB, out string) rewrapSummary {
	t.Helper()
	m := rewrapSummaryRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rewrap summary line in %q", out)
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	return rewrapSummary{n(1), n(2), n(3), n(4), n(5)}
}

// TestRotateRewrapWhileReading writes files, rotates the key three times
// writing between rotations, and checks that every generation reads back
// and that `kmsfs info` shows four key materials. `kmsfs rewrap` then moves
// every file to the newest material, and a second run finds nothing to do;
// all of it while mounted, with a reader running.
func TestRotateRewrapWhileReading(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	cfg := fs.Config()
	rng := newRand(testSeed(t))
	if err := os.Mkdir(fs.Path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	write := func(gen int) {
		for i := range 4 {
			p := fs.Path(fmt.Sprintf("gen%d-%d", gen, i))
			if i == 3 {
				p = fs.Path("d", fmt.Sprintf("gen%d", gen))
			}
			data := randomBytes(rng, 1+rng.IntN(3*fs.ChunkSize))
			mustWrite(t, p, data)
			files[p] = data
		}
	}
	write(0)
	rd := startReader(t, map[string][]byte{fs.Path("gen0-0"): files[fs.Path("gen0-0")], fs.Path("d", "gen0"): files[fs.Path("d", "gen0")]})
	for gen := 1; gen <= 3; gen++ {
		fs.Run("key", "rotate", cfg.KeyID)
		waitNewMaterial(t, fs, fs.info(fs.Path(fmt.Sprintf("gen%d-0", gen-1))).KeyMaterialID)
		write(gen)
	}
	materials := map[string]int{}
	for p, data := range files {
		checkContent(t, p, data)
		materials[fs.info(p).KeyMaterialID]++
	}
	if len(materials) < 4 {
		t.Errorf("after three rotations the files name %d key materials, want at least 4: %v", len(materials), materials)
	}
	newest := fs.info(fs.Path("gen3-0")).KeyMaterialID

	dry := parseRewrapSummary(t, fs.Run("rewrap", "--dry-run", fs.CipherDir))
	if dry.seen != len(files) || dry.rewrapped != 12 || dry.current != 4 || dry.failed != 0 {
		t.Errorf("rewrap --dry-run: %+v, want %d seen, 12 to rewrap, 4 current", dry, len(files))
	}
	if fi := fs.info(fs.Path("gen0-0")); fi.KeyMaterialID == newest {
		t.Errorf("rewrap --dry-run changed a key record")
	}
	headerBefore, sizeBefore := backingHeader(t, fs.Backing("gen0-1"))

	sum := parseRewrapSummary(t, fs.Run("rewrap", "--jobs", "3", fs.CipherDir))
	if sum.seen != len(files) || sum.rewrapped != 12 || sum.current != 4 || sum.failed != 0 {
		t.Errorf("rewrap: %+v, want %d seen, 12 rewrapped, 4 current", sum, len(files))
	}
	for p, data := range files {
		if fi := fs.info(p); fi.KeyMaterialID != newest || fi.KeyID != cfg.KeyID {
			t.Errorf("after rewrap %s: key %s material %s, want %s %s", p, fi.KeyID, fi.KeyMaterialID, cfg.KeyID, newest)
		}
		checkContent(t, p, data)
	}
	// The content is not re-encrypted: same header (file ID, nonce,
	// tag), same size; the plaintext was checked above.
	if headerAfter, sizeAfter := backingHeader(t, fs.Backing("gen0-1")); !bytes.Equal(headerBefore, headerAfter) || sizeBefore != sizeAfter {
		t.Errorf("rewrap rewrote the backing file's header or changed its size")
	}
	again := parseRewrapSummary(t, fs.Run("rewrap", fs.CipherDir))
	if again.rewrapped != 0 || again.current != len(files) {
		t.Errorf("second rewrap: %+v, want everything already current", again)
	}
	rd.stop(t)

	// The DEK cache of the running mount knew the old records; a new
	// mount unwraps the new ones.
	fs.Remount()
	for p, data := range files {
		checkContent(t, p, data)
	}
}

// waitNewMaterial waits until a file created in the mount gets a key
// material other than old: at once, unless the mount hands out data keys
// it generated before the rotation (a key pool bounds their age).
func waitNewMaterial(t testing.TB, fs *testFS, old string) {
	t.Helper()
	probe := fs.Path(".probe")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		mustWrite(t, probe, []byte("probe"))
		m := fs.info(probe).KeyMaterialID
		if err := os.Remove(probe); err != nil {
			t.Fatal(err)
		}
		if m != old {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after a rotation new files still get key material %s", old)
		}
	}
}

// TestRewrapToAnotherKey re-wraps every file under a second key with
// --key; kmsfs.conf then names that key, and files written after a
// remount use it.
func TestRewrapToAnotherKey(t *testing.T) {
	t.Parallel()
	fs := newFS(t)
	cfg := fs.Config()
	mustWrite(t, fs.Path("a"), []byte("moved to another key"))
	mustWrite(t, fs.Path("b"), nil) // empty, but with a header and a key
	id := strings.TrimSpace(fs.Run("key", "create", "--alias", "alias/second"))
	sum := parseRewrapSummary(t, fs.Run("rewrap", "--key", "alias/second", fs.CipherDir))
	if sum.rewrapped != 2 || sum.failed != 0 {
		t.Errorf("rewrap --key: %+v, want 2 rewrapped", sum)
	}
	fi := fs.info(fs.Path("a"))
	if fi.KeyID == cfg.KeyID || !strings.HasSuffix(fi.KeyID, id) {
		t.Errorf("after rewrap --key the file names key %s, want the new key %s", fi.KeyID, id)
	}
	if got := fs.Config().KeyID; got != fi.KeyID {
		t.Errorf("kmsfs.conf names key %s after rewrap --key, want %s", got, fi.KeyID)
	}
	// The old key can go: the file no longer needs it.
	fs.Run("key", "disable", cfg.KeyID)
	fs.Remount()
	checkContent(t, fs.Path("a"), []byte("moved to another key"))
	mustWrite(t, fs.Path("c"), []byte("new"))
	if fi := fs.info(fs.Path("c")); fi.KeyID != fs.Config().KeyID {
		t.Errorf("a new file after the move names key %s, want %s", fi.KeyID, fs.Config().KeyID)
	}
}

// TestRewrapFailsOnDisabledKey: files whose key is disabled are counted as
// failed, named on stderr, and rewrap exits 8; nothing is changed.
func TestRewrapFailsOnDisabledKey(t *testing.T) {
	t.Parallel()
	fs := newFS(t, WithoutMount())
	cfg := fs.Config()
	fs.Mount()
	mustWrite(t, fs.Path("a"), []byte("x"))
	fs.Unmount()
	fs.Run("key", "rotate", cfg.KeyID)
	fs.Run("key", "disable", cfg.KeyID)
	res := fs.Exec("rewrap", fs.CipherDir)
	if res.Code != 4 && res.Code != 8 {
		t.Errorf("rewrap with the key disabled: exit %d, want 8 (or 4)\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "disabled") {
		t.Errorf("rewrap with the key disabled: stderr %q does not say why", res.Stderr)
	}
}

// slowKeyServer starts `kmsfs keysvc serve` with --latency, so that a
// rewrap through it takes long enough to be interrupted.
func slowKeyServer(t testing.TB, latency time.Duration) *keyServer {
	t.Helper()
	dir, err := os.MkdirTemp(tempRoot, "keysvc-"+sanitize(t.Name())+"-")
	if err != nil {
		t.Fatal(err)
	}
	ks := &keyServer{Keystore: filepath.Join(dir, "keystore"), AuditLog: filepath.Join(dir, "audit.jsonl"), t: t}
	out := runKmsfs(t, ks.kmsfsEnv(), "keysvc", "credentials", "--admin", "it")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if v, ok := strings.CutPrefix(line, "AWS_ACCESS_KEY_ID="); ok {
			ks.AccessKey = v
		}
		if v, ok := strings.CutPrefix(line, "AWS_SECRET_ACCESS_KEY="); ok {
			ks.Secret = v
		}
	}
	cmd := exec.Command(binPath, "keysvc", "serve", "--listen", "127.0.0.1:0", "--latency", latency.String())
	cmd.Env = append(os.Environ(), ks.kmsfsEnv()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ks.cmd = cmd
	t.Cleanup(ks.Stop)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if m := serveLineRE.FindStringSubmatch(sc.Text()); m != nil {
			ks.Endpoint = m[1]
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if ks.Endpoint == "" {
		t.Fatal("kmsfs keysvc serve printed no readiness line")
	}
	return ks
}

// TestRewrapInterruptedAWS runs rewrap against a slow key server through
// the AWS backend, kills it with SIGKILL part way, and runs it again: the
// second run re-wraps only what is left, every file ends on the newest key
// material and reads back, and a reader keeps reading throughout.
func TestRewrapInterruptedAWS(t *testing.T) {
	t.Parallel()
	const n = 60
	ks := slowKeyServer(t, 40*time.Millisecond)
	id := strings.TrimSpace(runKmsfs(t, ks.kmsfsEnv(), "key", "create", "--description", "rewrap test"))
	fs := newFS(t, WithInitArgs("--kms", "aws", "--key", id, "--kms-endpoint", ks.Endpoint),
		WithMountArgs("--kms-endpoint", ks.Endpoint), WithEnv(ks.AWSEnv()...))
	files := map[string][]byte{}
	rng := newRand(testSeed(t))
	for i := range n {
		p := fs.Path(fmt.Sprintf("f%02d", i))
		files[p] = randomBytes(rng, 100+rng.IntN(5000))
		mustWrite(t, p, files[p])
	}
	runKmsfs(t, ks.kmsfsEnv(), "key", "rotate", id)
	rd := startReader(t, map[string][]byte{fs.Path("f00"): files[fs.Path("f00")], fs.Path("f39"): files[fs.Path("f39")]})

	// Names are encrypted: info maps each file to its backing file.
	ep := []string{"--kms-endpoint", ks.Endpoint}
	records, backing := map[string][]byte{}, map[string]string{}
	for p := range files {
		backing[p] = fs.info(p, ep...).BackingPath
		records[p] = keyRecord(t, backing[p])
	}
	cmd := exec.Command(binPath, "rewrap", "--jobs", "1", "--kms-endpoint", ks.Endpoint, fs.CipherDir)
	cmd.Env = append(os.Environ(), fs.Env()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Each file costs one ReEncrypt of 40ms or more: kill once some, not
	// all, are done.
	changed := 0
	for deadline := time.Now().Add(30 * time.Second); changed < 5 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		changed = 0
		for p, rec := range records {
			if !bytes.Equal(keyRecord(t, backing[p]), rec) {
				changed++
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if changed < 5 {
		t.Fatalf("rewrap re-wrapped %d files in 30s; stderr:\n%s", changed, stderr.String())
	}

	materials := map[string]int{}
	for p := range files {
		materials[fs.info(p, ep...).KeyMaterialID]++
	}
	t.Logf("after SIGKILL: key materials %v", materials)

	out := fs.Run("rewrap", "--kms-endpoint", ks.Endpoint, fs.CipherDir)
	sum := parseRewrapSummary(t, out)
	if sum.seen != n || sum.failed != 0 || sum.rewrapped+sum.current != n {
		t.Errorf("rewrap after the interruption: %+v, want %d files, none failed", sum, n)
	}
	if len(materials) != 2 {
		t.Errorf("the interrupted rewrap left %d key materials, want 2 (some files done, some not)", len(materials))
	}
	if sum.current < changed || sum.rewrapped == 0 {
		t.Errorf("second run: %+v, want at least the %d files done before the kill already current, and the rest re-wrapped", sum, changed)
	}
	final := map[string]int{}
	for p, data := range files {
		final[fs.info(p, ep...).KeyMaterialID]++
		checkContent(t, p, data)
	}
	if len(final) != 1 {
		t.Errorf("after the second rewrap the files name %d key materials, want 1: %v", len(final), final)
	}
	again := parseRewrapSummary(t, fs.Run("rewrap", "--kms-endpoint", ks.Endpoint, fs.CipherDir))
	if again.rewrapped != 0 || again.current != n {
		t.Errorf("third rewrap: %+v, want all current", again)
	}
	rd.stop(t)
}

// backingHeader returns the first 56 bytes (the content header) and the
// size of a backing file.
func backingHeader(t testing.TB, backing string) ([]byte, int64) {
	t.Helper()
	b, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 56 {
		t.Fatalf("%s: %d bytes, shorter than a header", backing, len(b))
	}
	return b[:56], int64(len(b))
}

// keyRecord returns the key xattr of a backing file.
func keyRecord(t testing.TB, backing string) []byte {
	t.Helper()
	buf := make([]byte, 8192)
	n, err := syscall.Getxattr(backing, "user.kmsfs.key", buf)
	if err != nil {
		t.Fatalf("getxattr %s: %v", backing, err)
	}
	return buf[:n]
}

// TestRewrapMoveLocalToAWS moves every data key of a local-KMS tree to a
// key of the key server (through the AWS backend) with --to-kms aws: it is
// refused while mounted, then moves every file, rewrites kmsfs.conf, and
// the tree mounts and reads through the AWS backend; a second run finds
// nothing to do.
func TestRewrapMoveLocalToAWS(t *testing.T) {
	t.Parallel()
	ks := slowKeyServer(t, 0)
	awsKey := strings.TrimSpace(runKmsfs(t, ks.kmsfsEnv(), "key", "create", "--description", "move target"))
	fs := newFS(t, WithEnv(ks.AWSEnv()...))
	files := map[string][]byte{}
	rng := newRand(testSeed(t))
	for i := range 5 {
		p := fs.Path(fmt.Sprintf("f%d", i))
		files[p] = randomBytes(rng, 1+rng.IntN(9000))
		mustWrite(t, p, files[p])
	}
	move := []string{"rewrap", "--to-kms", "aws", "--key", awsKey, "--kms-endpoint", ks.Endpoint, fs.CipherDir}
	if res := fs.Exec(move...); res.Code != 3 || !strings.Contains(res.Stderr, "unmount") {
		t.Errorf("a move while mounted: exit %d, stderr %q; want 3 asking to unmount", res.Code, res.Stderr)
	}
	fs.Unmount()
	sum := parseRewrapSummary(t, fs.Run(move...))
	if sum.rewrapped != len(files) || sum.failed != 0 {
		t.Errorf("move: %+v, want %d rewrapped", sum, len(files))
	}
	cfg := fs.Config()
	if cfg.KMS != "aws" || !strings.HasSuffix(cfg.KeyID, awsKey) {
		t.Errorf("after the move kmsfs.conf names %s %s, want aws and key %s", cfg.KMS, cfg.KeyID, awsKey)
	}
	fs.Mount("--kms-endpoint", ks.Endpoint)
	for p, data := range files {
		if fi := fs.info(p, "--kms-endpoint", ks.Endpoint); fi.KeyID != cfg.KeyID {
			t.Errorf("%s names key %s after the move, want %s", p, fi.KeyID, cfg.KeyID)
		}
		checkContent(t, p, data)
	}
	again := parseRewrapSummary(t, fs.Run("rewrap", "--kms-endpoint", ks.Endpoint, fs.CipherDir))
	if again.current != len(files) || again.failed != 0 {
		t.Errorf("a plain rewrap after the move: %+v, want everything current", again)
	}
}

// TestRotateOnDemandAWS rotates a key of the key server through the AWS
// API (`kmsfs key rotate --kms aws`): the key gains a version, a mounted
// AWS tree puts new files on it, and rewrap moves the old ones.
func TestRotateOnDemandAWS(t *testing.T) {
	t.Parallel()
	ks := slowKeyServer(t, 0)
	id := strings.TrimSpace(runKmsfs(t, ks.kmsfsEnv(), "key", "create"))
	fs := newFS(t, WithInitArgs("--kms", "aws", "--key", id, "--kms-endpoint", ks.Endpoint),
		WithMountArgs("--kms-endpoint", ks.Endpoint), WithEnv(ks.AWSEnv()...))
	mustWrite(t, fs.Path("old"), []byte("old"))
	out := fs.Run("key", "rotate", "--kms", "aws", "--kms-endpoint", ks.Endpoint, id)
	if !strings.Contains(out, "rotated ") {
		t.Errorf("key rotate --kms aws printed %q", out)
	}
	if desc := runKmsfs(t, ks.kmsfsEnv(), "key", "describe", id); !regexp.MustCompile(`versions:\s+2`).MatchString(desc) {
		t.Errorf("after an on-demand rotation through the AWS API the key has not 2 versions:\n%s", desc)
	}
	waitNewMaterial(t, fs, fs.info(fs.Path("old")).KeyMaterialID)
	mustWrite(t, fs.Path("new"), []byte("new"))
	if o, n := fs.info(fs.Path("old")), fs.info(fs.Path("new")); o.KeyMaterialID == n.KeyMaterialID {
		t.Errorf("a file written after the rotation uses the old key material %s", o.KeyMaterialID)
	}
	sum := parseRewrapSummary(t, fs.Run("rewrap", "--kms-endpoint", ks.Endpoint, fs.CipherDir))
	if sum.rewrapped != 1 || sum.current != 1 {
		t.Errorf("rewrap after the rotation: %+v, want 1 rewrapped, 1 current", sum)
	}
	checkContent(t, fs.Path("old"), []byte("old"))
}
