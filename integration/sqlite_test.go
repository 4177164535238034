// SQLite through two mounts: the application users will believe.

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sqliteTransactions is how many transactions each of the two processes
// runs.
const sqliteTransactions = 2000

// sqlite runs the sqlite3 CLI on db with script on stdin, stopping at the
// first error (-bail), and returns its output.
func sqlite(ctx context.Context, db, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "sqlite3", "-bail", "-batch", db)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("sqlite3 %s: %w: %s", db, err, out)
	}
	return string(out), nil
}

// TestSQLiteTwoMounts: two sqlite3 processes, each through its own mount
// of one CIPHERDIR (its own daemon) in shared mode, run interleaved write
// transactions on one database in rollback-journal mode (SQLite's locking
// is fcntl locks on the database file; WAL needs shared memory, which no
// shared filesystem has across hosts): each transaction increments a
// counter and logs the new value with a 1 KiB blob. No increment may be
// lost (the counter and the log hold every one, each value once) and
// PRAGMA integrity_check must answer ok through either mount. About 40 s
// on two CPUs.
func TestSQLiteTwoMounts(t *testing.T) {
	requireTool(t, "sqlite3")
	a := newFS(t, WithMountArgs("--shared"))
	b := a.SecondMount()
	setup := `PRAGMA journal_mode=DELETE;
CREATE TABLE counter(n INTEGER NOT NULL);
INSERT INTO counter VALUES (0);
CREATE TABLE log(id INTEGER PRIMARY KEY, who TEXT NOT NULL, n INTEGER NOT NULL, pad BLOB);
`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := sqlite(ctx, a.Path("db.sqlite"), setup); err != nil {
		t.Fatal(err)
	} else if strings.TrimSpace(out) != "delete" {
		t.Fatalf("journal_mode: %q", out)
	}

	script := func(who string) string {
		var s strings.Builder
		// The busy handler retries a locked database for up to a minute.
		s.WriteString(".timeout 60000\n.output /dev/null\n")
		for range sqliteTransactions {
			// A 1 KiB blob per row spreads the log over many pages.
			fmt.Fprintf(&s, "BEGIN IMMEDIATE; UPDATE counter SET n = n + 1; "+
				"INSERT INTO log(who, n, pad) SELECT '%s', n, randomblob(1024) FROM counter; COMMIT;\n"+
				// A few milliseconds of work outside any transaction leave
				// the other writer, retrying in its busy handler, a chance.
				"SELECT sum(value) FROM generate_series(1, 20000);\n", who)
		}
		return s.String()
	}
	start := time.Now()
	errs := make(chan error, 2)
	for _, m := range []struct {
		who string
		fs  *testFS
	}{{"a", a}, {"b", b}} {
		sc := script(m.who)
		go func() {
			_, err := sqlite(ctx, m.fs.Path("db.sqlite"), sc)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	t.Logf("2 × %d transactions through two mounts in %v", sqliteTransactions, time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		return
	}

	want := strconv.Itoa(2 * sqliteTransactions)
	check := `PRAGMA integrity_check;
SELECT n FROM counter;
SELECT count(*), count(DISTINCT n), min(n), max(n) FROM log;
SELECT count(*) FROM log x JOIN log y ON y.id = x.id + 1 WHERE x.who != y.who;
`
	for _, m := range []*testFS{a, b} {
		out, err := sqlite(ctx, m.Path("db.sqlite"), check)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 {
			t.Fatalf("through %s: unexpected output:\n%s", m.Mnt, out)
		}
		if lines[0] != "ok" {
			t.Errorf("through %s: integrity_check: %s", m.Mnt, out)
		}
		if lines[1] != want {
			t.Errorf("through %s: counter %s after 2 × %d increments, want %s", m.Mnt, lines[1], sqliteTransactions, want)
		}
		if w := want + "|" + want + "|1|" + want; lines[2] != w {
			t.Errorf("through %s: log rows|distinct values|min|max = %s, want %s", m.Mnt, lines[2], w)
		}
		switches, _ := strconv.Atoi(lines[3])
		t.Logf("through %s: counter %s, log %s, %d switches between the writers", m.Mnt, lines[1], lines[2], switches)
		if switches < 2 {
			t.Errorf("the two writers' transactions did not interleave (%d switches): the test proves nothing", switches)
		}
	}
	if err := os.Remove(a.Path("db.sqlite")); err != nil {
		t.Error(err)
	}
}
