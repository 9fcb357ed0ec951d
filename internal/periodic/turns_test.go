package periodic_test

import (
	"context"
	"os"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/periodic"
	"widget-store/internal/store"
	"widget-store/internal/storetest"
)

// Turns on a real SQLite file and a real Postgres database with the store's
// schema: of two instances, one takes each turn, and the turn comes round
// again after nine tenths of the interval, for whichever asks first.
func TestTurns(t *testing.T) {
	schema, err := os.ReadFile("../../schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	storetest.ForEachDB(t, func(t *testing.T, ldb *loadgen.Database) {
		ctx := context.Background()
		db, err := store.Open(ctx, ldb.URL, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		if err := db.Migrate(ctx, string(schema)); err != nil {
			t.Fatal(err)
		}
		const every = 500 * time.Millisecond
		a := periodic.NewTurns(db, "test-pass", "a", every)
		b := periodic.NewTurns(db, "test-pass", "b", every)
		other := periodic.NewTurns(db, "other-pass", "b", every)
		claim := func(tu *periodic.Turns) bool {
			t.Helper()
			mine, err := tu.Claim(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return mine
		}
		if !claim(a) {
			t.Fatal("the first claim of a pass was refused")
		}
		if claim(b) || claim(a) {
			t.Fatal("a turn was taken twice")
		}
		if !claim(other) {
			t.Fatal("another pass's turn was refused: turns are per pass")
		}
		due := time.Now().Add(every - every/10)
		for !claim(b) {
			if time.Now().After(due.Add(every)) {
				t.Fatal("the next turn did not come round within the interval")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if early := time.Until(due); early > 50*time.Millisecond {
			t.Errorf("the next turn came %v early", early)
		}
		if claim(a) {
			t.Fatal("a turn was taken twice")
		}

		// A store restarted with a shorter interval (RECONCILE_EVERY=1h,
		// then 300ms) passes at its new pace: the row says when the last
		// turn was taken, and each instance measures from it by its own
		// interval.
		slow := periodic.NewTurns(db, "restarted", "a", time.Hour)
		fast := periodic.NewTurns(db, "restarted", "a", 200*time.Millisecond)
		if !claim(slow) {
			t.Fatal("the first claim of a pass was refused")
		}
		began := time.Now()
		for !claim(fast) {
			if time.Since(began) > time.Second {
				t.Fatal("after a restart with a shorter interval, no turn within a second")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
