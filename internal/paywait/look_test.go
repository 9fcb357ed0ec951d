package paywait

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/metrics"
	"widget-store/internal/shop"
	"widget-store/internal/store"
	"widget-store/internal/storetest"
)

// TestPeriodicLook: a payment whose kick was lost (settled while nobody
// here listened, say) is still found by the hub's periodic look, which kicks
// that checkout alone, as having something to settle by: an order the
// webhook settled, and one whose late payment it recorded; and the look asks
// about all the process's waiting checkouts in one statement per lookPage,
// not one each: with 2,500 waiting, 3 statements, where the checkouts' own
// looks every 10 s made 2,500.
func TestPeriodicLook(t *testing.T) {
	schema, err := os.ReadFile("../../schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	storetest.ForEachDB(t, func(t *testing.T, ldb *loadgen.Database) {
		ctx := context.Background()
		var statements atomic.Int64
		db, err := store.Open(ctx, ldb.URL, store.Options{OnStatement: func() { statements.Add(1) }})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Migrate(ctx, string(schema)); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UnixMilli()
		for key, status := range map[string]shop.Status{"unpaid": shop.StatusPending, "paid": shop.StatusPaid, "late": shop.StatusPending} {
			if _, err := db.Q().Exec(ctx, `INSERT INTO orders (checkout_key, product_id, price_cents, order_status, created_at, last_update_time)
				VALUES ($1, 1, 100, $2, $3, $3)`, key, status, now); err != nil {
				t.Fatal(err)
			}
		}
		// The late payment, recorded with no kick: as if its announcement were lost.
		if err := db.InTx(ctx, func(tx store.Tx) error {
			_, err := store.RecordPayment(ctx, tx, "late", shop.PaymentPaid, now)
			return err
		}); err != nil {
			t.Fatal(err)
		}

		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		hub := New(db, nil, logger, metrics.New(), 2*time.Minute) // no DBOS context: the look never asks DBOS
		waiting := map[string]*handoff{}
		for _, key := range []string{"unpaid", "paid", "late"} {
			waiting[key] = hub.acquire(key, true)
			hub.setAwaiting(waiting[key], true)
		}
		for i := range 2497 {
			key := fmt.Sprintf("other-%d", i)
			hub.setAwaiting(hub.acquire(key, true), true)
		}

		before := statements.Load()
		hub.lookAll(ctx)
		if got := statements.Load() - before; db.Dialect.Postgres && got != 3 { // counted on Postgres
			t.Errorf("the look at 2,500 waiting checkouts sent %d statements; want 3 (one per %d)", got, lookPage)
		}
		for _, key := range []string{"paid", "late"} {
			select {
			case <-waiting[key].paymentKick:
			default:
				t.Fatalf("the periodic look did not kick the %s checkout", key)
			}
			if !waiting[key].sent() {
				t.Errorf("the look kicked the %s checkout without saying it has something to settle by (it would read again)", key)
			}
		}
		select {
		case <-waiting["unpaid"].paymentKick:
			t.Error("the look kicked a checkout nobody paid")
		default:
		}
	})
}
