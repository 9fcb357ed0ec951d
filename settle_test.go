package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/loadgen"
	"widget-store/internal/metrics"
	"widget-store/internal/shop"
	"widget-store/internal/store"
	"widget-store/internal/storetest"
)

// The checkout's last steps follow the order row (steps.go): on a real
// database, cancel finds an order a payment settled PAID first (the payment
// came as the window closed) and reports when it was paid, so the checkout
// ships it, without cancelling it or moving stock; mark-paid finds an order
// an operator cancelled meanwhile and reports 0, so nothing ships; and each
// still moves an order it finds PENDING (a payment sent by the previous
// build, which left the move to the checkout).
func TestStepsFollowTheOrderRow(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, ldb *loadgen.Database) {
		ctx := context.Background()
		db, err := store.Open(ctx, ldb.URL, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		if err := db.Migrate(ctx, schemaSQL); err != nil {
			t.Fatal(err)
		}
		now := time.UnixMilli(time.Now().UnixMilli())
		s := steps{metrics: metrics.New(), now: func() time.Time { return now }}
		order := func(status shop.Status, atMs int64) int64 {
			var id int64
			if err := db.Q().QueryRow(ctx, `
				INSERT INTO orders (checkout_key, product_id, price_cents, order_status, created_at, last_update_time)
				VALUES ($1, 1, 100, $2, $3, $3) RETURNING order_id`, storetest.NewKey(), status, atMs).Scan(&id); err != nil {
				t.Fatal(err)
			}
			return id
		}
		inTx := func(fn func(dbos.Tx) error) {
			if err := db.InTx(ctx, func(tx store.Tx) error { return fn(noCommit{tx.Querier}) }); err != nil {
				t.Fatal(err)
			}
		}
		statusOf := func(id int64) shop.Status {
			o, err := db.OrderByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return o.Status
		}
		stock := func() int {
			var n int
			if err := db.Q().QueryRow(ctx, `SELECT inventory FROM products WHERE product_id = 1`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		before := stock()

		paidAt := now.Add(-time.Second).UnixMilli()
		paid := order(shop.StatusPaid, paidAt)
		inTx(func(tx dbos.Tx) error {
			c, err := s.cancel(paid, shop.PaymentTimedOut)(ctx, tx)
			if err == nil && c.PaidAtMs != paidAt {
				t.Errorf("cancel of an order a payment settled first: paid at %d, want %d (it ships)", c.PaidAtMs, paidAt)
			}
			return err
		})
		if got := statusOf(paid); got != shop.StatusPaid || stock() != before {
			t.Errorf("cancel changed a PAID order: %v, stock %d → %d", got, before, stock())
		}

		cancelled := order(shop.StatusCancelled, paidAt)
		inTx(func(tx dbos.Tx) error {
			at, err := s.markPaid(cancelled)(ctx, tx)
			if err == nil && at != 0 {
				t.Errorf("mark-paid of an order cancelled meanwhile: %d, want 0 (nothing ships)", at)
			}
			return err
		})
		inTx(func(tx dbos.Tx) error {
			c, err := s.cancel(cancelled, shop.PaymentFailed)(ctx, tx)
			if err == nil && c.PaidAtMs != 0 {
				t.Errorf("cancel of a cancelled order: paid at %d, want 0", c.PaidAtMs)
			}
			return err
		})
		if got := statusOf(cancelled); got != shop.StatusCancelled || stock() != before {
			t.Errorf("a cancelled order became %v, stock %d → %d (units returned twice?)", got, before, stock())
		}

		pending := order(shop.StatusPending, paidAt)
		inTx(func(tx dbos.Tx) error {
			at, err := s.markPaid(pending)(ctx, tx)
			if err == nil && at != now.UnixMilli() {
				t.Errorf("mark-paid of a PENDING order: %d, want now (%d)", at, now.UnixMilli())
			}
			return err
		})
		if got := statusOf(pending); got != shop.StatusPaid {
			t.Errorf("mark-paid left a PENDING order %v, want PAID", got)
		}
		pending = order(shop.StatusPending, paidAt)
		inTx(func(tx dbos.Tx) error {
			c, err := s.cancel(pending, shop.PaymentTimedOut)(ctx, tx)
			if err == nil && c.PaidAtMs != 0 {
				t.Errorf("cancel of a PENDING order: paid at %d, want 0", c.PaidAtMs)
			}
			return err
		})
		if got := statusOf(pending); got != shop.StatusCancelled || stock() != before+1 {
			t.Errorf("cancel of a PENDING order: %v, stock %d → %d, want CANCELLED and one unit back", got, before, stock())
		}
	})
}

// noCommit is a transaction of store.InTx seen as DBOS's: the test's InTx
// commits it.
type noCommit struct{ dbos.Querier }

func (noCommit) Commit(context.Context) error   { return nil }
func (noCommit) Rollback(context.Context) error { return nil }

// The cancel step's checkpoint of the previous build was the time of the
// cancel, a bare number: it reads as cancelled, so a checkout recovered
// across the upgrade ships nothing it did not before.
func TestCancelOutcomeReadsThePreviousCheckpoint(t *testing.T) {
	for _, c := range []struct {
		in   string
		want cancelOutcome
	}{
		{`1764672000000`, cancelOutcome{}},
		{`{}`, cancelOutcome{}},
		{`{"paid_at_ms":1764672000123}`, cancelOutcome{PaidAtMs: 1764672000123}},
	} {
		var got cancelOutcome
		if err := json.Unmarshal([]byte(c.in), &got); err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	b, err := json.Marshal(cancelOutcome{PaidAtMs: 5})
	if err != nil || string(b) != `{"paid_at_ms":5}` {
		t.Errorf("marshal: %s, %v", b, err)
	}
}
