package integration

import (
	"os"
	"testing"
)

// TestOptionMatrix reruns a compact scenario (a varied tree, up to 2,000 random
// operations against a reference, remount, identical tree) under several
// init and mount options, like gocryptfs reruns its suite over option
// combinations.
func TestOptionMatrix(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	cases := []struct {
		name string
		ops  int
		opts []Option
	}{
		{"no-dek-cache", 2000, []Option{WithMountArgs("--cache-max-age", "0s")}},
		{"debug-log", 2000, []Option{WithMountArgs("--debug")}},
		// Every small write re-seals a whole 1 MiB chunk: fewer operations.
		{"chunk1MiB", 400, []Option{WithChunkSize(1 << 20)}},
		{"chunk512-no-cache", 2000, []Option{WithChunkSize(512), WithMountArgs("--cache-max-age", "0s")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			fs := newFS(t, c.opts...)
			if err := os.Mkdir(fs.Path("tree"), 0o755); err != nil {
				t.Fatal(err)
			}
			populate(t, fs.Path("tree"), seed)
			want := snapshot(t, fs.Path("tree"))
			d := &differ{t: t, fs: fs, ref: t.TempDir(), r: newRand(seed), cs: fs.ChunkSize, seed: seed}
			t.Cleanup(d.closeQuietly)
			d.run(c.ops)
			diffSnapshots(t, "after the run and remount", want, snapshot(t, fs.Path("tree")))
		})
	}
}
