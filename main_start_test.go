package main

import (
	"context"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"widget-store/internal/loadgen"
	"widget-store/internal/store"
	"widget-store/internal/storetest"
)

// stopDuringStart is the store's log as an io.Writer that cancels the run
// (as SIGTERM would) when DBOS says it is initialising: a start-up that is
// stopped after dbos.NewContext, so that a later step of startServices
// fails with the context's error.
type stopDuringStart struct {
	*lineWaiter
	cancel context.CancelFunc
}

func (s stopDuringStart) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "Initializing DBOS context") {
		s.cancel()
	}
	return s.lineWaiter.Write(p)
}

// TestFailedStartReleasesEverything: a start that fails after DBOS's
// context was made (here: stopped by a signal while DBOS initialises) shuts
// DBOS down and closes every connection it opened before it returns the
// error, on either database: no goroutine is left behind (the SDK's or the
// store's), the SQLite file is free for the next start, and no session of
// the store is left on the Postgres server. The Postgres case needs
// $TEST_DATABASE_URL (CI sets it).
func TestFailedStartReleasesEverything(t *testing.T) {
	flavours := []struct {
		name string
		new  func(testing.TB) *loadgen.Database
	}{{"sqlite", storetest.NewSQLiteDB}, {"postgres", storetest.NewPostgresDB}}
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) { // one after another: goroutines are counted
			db := fl.new(t)
			before := len(goroutines(""))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			vars := map[string]string{"PORT": "0", "SUPERVISE": "0", "DATABASE_URL": db.URL, "LOG_LEVEL": "info", "EXECUTOR_ID": "failed-start"}
			log := stopDuringStart{newLineWaiter(), cancel}
			err := run(ctx, []string{"widget-store"}, func(k string) string { return vars[k] }, newLineWaiter(), log)
			if err == nil || !strings.Contains(err.Error(), "start:") {
				t.Fatalf("run: %v, want a start-up error (the run was stopped while DBOS initialised)", err)
			}
			t.Logf("run: %v", err)

			// Shutdown's goroutines end a moment after it returns; wait for them.
			var left []string
			n := 0
			for deadline := time.Now().Add(5 * time.Second); ; {
				left, n = goroutines("dbos-transact-golang"), len(goroutines(""))
				if (len(left) == 0 && n <= before) || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond) // the polling interval
			}
			if len(left) > 0 {
				t.Errorf("%d goroutines of the DBOS SDK left after the failed start, first:\n%s", len(left), left[0])
			}
			if n > before {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines after the failed start, %d before it:\n%s", n, before, buf[:runtime.Stack(buf, true)])
			}
			if db.Kind == "sqlite" { // the file is free for the next start
				again, err := store.Open(context.Background(), db.URL, store.Options{})
				if err != nil {
					t.Fatalf("open the file after the failed start: %v", err)
				}
				again.Close()
			}
			if db.Kind == "postgres" {
				if n := storeSessions(t, db.URL); n != 0 {
					t.Errorf("%d sessions of the store still open on the Postgres server after the failed start, want 0", n)
				}
			}
		})
	}
}

// goroutines are the stacks of the running goroutines that mention in, but
// not os/signal's loop, which the first signal.Notify starts for good.
func goroutines(in string) []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, in) && !strings.Contains(g, "os/signal.loop") {
			found = append(found, g)
		}
	}
	return found
}

// storeSessions counts the sessions open on the database of dbURL, other
// than the one counting.
func storeSessions(t *testing.T, dbURL string) int {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, os.Getenv(storetest.PostgresEnv))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
