package paywait

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/loadgen"
	"widget-store/internal/metrics"
	"widget-store/internal/store"
	"widget-store/internal/storetest"
)

// TestPeriodicLook: a payment whose kick was lost (sent while nobody here
// listened, say) is still found by the hub's periodic look, which kicks that
// checkout alone, as sent; and the look asks about all the process's
// waiting checkouts in one statement per lookPage, not one each: with 2,500
// waiting, 3 statements on Postgres (the counted round trips, beside
// DBOS's own background), where the checkouts' own looks every 10 s made
// 2,500.
func TestPeriodicLook(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, ldb *loadgen.Database) {
		ctx := context.Background()
		var statements atomic.Int64
		db, err := store.Open(ctx, ldb.URL, store.Options{OnStatement: func() { statements.Add(1) }})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg := dbos.Config{AppName: "periodic-look-test", ApplicationVersion: "test", ExecutorID: "test", Logger: logger}
		db.ConfigureDBOS(&cfg)
		dctx, err := dbos.NewContext(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		// parked stands for a checkout waiting for its payment: DBOS takes a
		// message only for a workflow that exists.
		parked := func(ctx dbos.Context, _ string) (string, error) {
			return dbos.Recv[string](ctx, "never", 30*time.Second)
		}
		dbos.RegisterWorkflow(dctx, parked, dbos.WithWorkflowName("parked"))
		if err := dbos.Launch(dctx); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := dbos.Shutdown(dctx, 5*time.Second); err != nil {
				t.Logf("dbos shutdown: %v", err)
			}
		}()
		for _, key := range []string{"unpaid", "paid"} {
			if _, err := dbos.RunWorkflow(dctx, parked, "", dbos.WithWorkflowID(key)); err != nil {
				t.Fatal(err)
			}
		}
		// The payment, sent with no kick: as if its announcement were lost.
		if err := dbos.Send(dctx, "paid", "paid", Topic); err != nil {
			t.Fatal(err)
		}

		hub := New(db, dctx, logger, metrics.New(), 2*time.Minute)
		waiting := map[string]*handoff{}
		for _, key := range []string{"unpaid", "paid"} {
			waiting[key] = hub.acquire(key, true)
			hub.setAwaiting(waiting[key], true)
		}
		for i := range 2498 {
			key := fmt.Sprintf("other-%d", i)
			hub.setAwaiting(hub.acquire(key, true), true)
		}

		before := statements.Load()
		hub.lookAll(ctx)
		// 3 of its own; DBOS's pollers share the pool and its count
		// meanwhile, so the bound leaves room for them, far below one per
		// checkout.
		if got := statements.Load() - before; db.Dialect.Postgres && got >= 250 {
			t.Errorf("the look at 2,500 waiting checkouts sent %d statements; want 3 (one per %d) and DBOS's background", got, lookPage)
		}
		select {
		case <-waiting["paid"].paymentKick:
		default:
			t.Fatal("the periodic look did not kick the checkout whose payment was sent")
		}
		if !waiting["paid"].sent() {
			t.Error("the look kicked the paid checkout without saying its payment was sent (it would read again)")
		}
		select {
		case <-waiting["unpaid"].paymentKick:
			t.Error("the look kicked a checkout nobody paid")
		default:
		}
	})
}
