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
		db := openStepsDB(t, ldb)
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
		stock := func() int { return stockOf(t, db, 1) }
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

// TestSettleDecidesFromTheRow: the checkout's settle step (steps.go) on a
// real database, against every state the order row can be in when it runs;
// and store.PaymentsIn, which tells a waiting checkout that its order has
// something to settle by, agrees with it on each.
func TestSettleDecidesFromTheRow(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, ldb *loadgen.Database) {
		ctx := context.Background()
		db := openStepsDB(t, ldb)
		now := time.UnixMilli(time.Now().UnixMilli())
		s := steps{metrics: metrics.New(), now: func() time.Time { return now }}
		stock := func() int { return stockOf(t, db, 1) }
		earlier := now.Add(-time.Second).UnixMilli()
		later, past := now.Add(time.Minute).UnixMilli(), now.Add(-time.Millisecond).UnixMilli()
		for _, c := range []struct {
			name       string
			status     shop.Status
			recorded   string // a payment recorded beside the order (store.RecordPayment)
			payBy      int64
			opened     bool
			want       settlement
			wantStatus shop.Status
			restocked  int
			lookFinds  bool // store.PaymentsIn reports it before the step
		}{
			{"paid by the webhook", shop.StatusPaid, "", later, true, settlement{PaidAtMs: earlier, Outcome: shop.PaymentPaid}, shop.StatusPaid, 0, true},
			{"declined by the webhook", shop.StatusCancelled, "", later, true, settlement{Outcome: shop.PaymentFailed}, shop.StatusCancelled, 0, true},
			{"nothing yet, the window open", shop.StatusPending, "", later, true, settlement{}, shop.StatusPending, 0, false},
			{"nothing, the window closed", shop.StatusPending, "", past, true, settlement{Outcome: shop.PaymentTimedOut}, shop.StatusCancelled, 1, false},
			{"paid after the window, recorded", shop.StatusPending, shop.PaymentPaid, past, true, settlement{PaidAtMs: now.UnixMilli(), Outcome: shop.PaymentPaid}, shop.StatusPaid, 0, true},
			{"declined, recorded", shop.StatusPending, shop.PaymentFailed, later, true, settlement{Outcome: shop.PaymentFailed}, shop.StatusCancelled, 1, true},
			{"no payment opened", shop.StatusPending, "", later, false, settlement{Outcome: shop.PaymentFailed}, shop.StatusCancelled, 1, false},
			{"paid, a decline recorded before it is not read", shop.StatusPaid, shop.PaymentFailed, later, true, settlement{PaidAtMs: earlier, Outcome: shop.PaymentPaid}, shop.StatusPaid, 0, true},
		} {
			t.Run(c.name, func(t *testing.T) {
				key := storetest.NewKey()
				var id int64
				if err := db.Q().QueryRow(ctx, `
					INSERT INTO orders (checkout_key, product_id, price_cents, order_status, created_at, last_update_time)
					VALUES ($1, 1, 100, $2, $3, $3) RETURNING order_id`, key, c.status, earlier).Scan(&id); err != nil {
					t.Fatal(err)
				}
				if c.recorded != "" {
					for i, status := range []string{c.recorded, shop.PaymentPaid, shop.PaymentFailed} {
						var recorded bool
						err := db.InTx(ctx, func(tx store.Tx) (err error) {
							recorded, err = store.RecordPayment(ctx, tx, key, status, earlier)
							return err
						})
						if err != nil || recorded != (i == 0) {
							t.Fatalf("RecordPayment #%d: %v, %v; want only the first recorded", i+1, recorded, err)
						}
					}
				}
				if found, err := db.PaymentsIn(ctx, []string{storetest.NewKey(), key}); err != nil || (len(found) == 1) != c.lookFinds {
					t.Fatalf("PaymentsIn: %q, %v; want it found: %v", found, err, c.lookFinds)
				}
				before := stock()
				var got settlement
				err := db.InTx(ctx, func(tx store.Tx) (err error) {
					got, err = s.settle(id, c.payBy, c.opened)(ctx, noCommit{tx.Querier})
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				if got != c.want {
					t.Errorf("settle: %+v, want %+v", got, c.want)
				}
				o, err := db.OrderByID(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if o.Status != c.wantStatus || stock()-before != c.restocked {
					t.Errorf("after settle: %v, %d units back; want %v, %d", o.Status, stock()-before, c.wantStatus, c.restocked)
				}
			})
		}
	})
}

// openStepsDB opens ldb with the store's schema, for the steps' own SQL.
func openStepsDB(t *testing.T, ldb *loadgen.Database) *store.DB {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, ldb.URL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx, schemaSQL); err != nil {
		t.Fatal(err)
	}
	return db
}

// stockOf is product id's stock.
func stockOf(t *testing.T, db *store.DB, id int) int {
	t.Helper()
	var n int
	if err := db.Q().QueryRow(context.Background(), `SELECT inventory FROM products WHERE product_id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
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
