package loadgen

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgresWakeupRightAfterStart reproduces a stall found by the
// crash-point test: DBOS (v1.8.0) starts its Postgres LISTEN connection in a
// goroutine at Launch and never re-checks for messages that were NOTIFYed
// before it listened. The store reports ready right after Launch, so a
// payment sent in that moment is stored (dbos.notifications, unconsumed) but
// does not wake the checkout's Recv, which sleeps until PAYMENT_TIMEOUT (120 s
// by default) and only then reads it; the webhook hangs 60 s and answers 503.
// The order ends right (PAID), two minutes late.
//
// Timing-dependent (roughly 1 start in 10 with 16 stores starting at once on
// 2 cores), so it runs only on request:
//
//	WAKEUP_REPRO=1 TEST_DATABASE_URL=postgres://… go test -run TestPostgresWakeupRightAfterStart -v ./internal/loadgen
//
// STORE_BIN names a prebuilt store binary (default: build it).
func TestPostgresWakeupRightAfterStart(t *testing.T) {
	admin := os.Getenv("TEST_DATABASE_URL")
	if os.Getenv("WAKEUP_REPRO") == "" || admin == "" {
		t.Skip("set WAKEUP_REPRO=1 and TEST_DATABASE_URL to reproduce the lost wake-up")
	}
	bin := os.Getenv("STORE_BIN")
	if bin == "" {
		root, err := FindModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		if bin, err = Build(root, t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			ctx := context.Background()
			db, err := NewPostgresDB(ctx, admin)
			if err != nil {
				t.Error(err)
				return
			}
			defer db.Drop(ctx) // best effort
			st := &Store{Bin: bin, DB: db}
			defer st.Kill()
			// Start once to create the schema, then again: a restart, as after a crash.
			if _, err := st.Start(ctx); err != nil {
				t.Error(err)
				return
			}
			if err := st.Stop(10 * time.Second); err != nil {
				t.Error(err)
				return
			}
			if _, err := st.Start(ctx); err != nil {
				t.Error(err)
				return
			}
			c := NewClient(st.Base(), 2, 20*time.Second)
			a, _, err := c.Checkout(ctx, "k1")
			if err != nil {
				t.Error(err)
				return
			}
			payCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			start := time.Now()
			p, _, err := c.Pay(payCtx, a.Body, "paid")
			if took := time.Since(start); err != nil || took > 2*time.Second {
				var n int
				var consumed bool
				if conn, cerr := pgx.Connect(ctx, db.URL); cerr == nil {
					conn.QueryRow(ctx, `SELECT count(*), coalesce(bool_or(consumed), false) FROM dbos.notifications WHERE destination_uuid = 'k1'`).Scan(&n, &consumed) // diagnostics only
					conn.Close(ctx)
				}
				t.Errorf("store %d: payment answered %v after %v (%v); messages for the checkout: %d, consumed: %v",
					i, p, took.Round(time.Millisecond), err, n, consumed)
			}
		})
	}
	wg.Wait()
}
