// Package seed makes the database of a large store: one that has sold
// hundreds of thousands of widgets through real checkouts, for the
// large-store benchmark (internal/storetest/large_test.go) and cmd/seed.
//
// It first starts the real store binary once on the empty database and stops
// it (SIGTERM): that applies the store's schema exactly as a start does, and
// lets DBOS create and migrate its own tables, so both schemas are the
// shipped ones, indexes included. Then it writes, in big transactions through
// the store's own handle (store.WriteBulk: multi-row INSERTs on SQLite, COPY
// on Postgres), the rows the store and DBOS would have written for each
// purchase, with the values a real checkout records (taken from a real run of
// this build; DBOS's rows in DBOS's encodings through store.DBOSHistory,
// which is where every statement on DBOS's tables lives):
//
//   - the order (orders), DISPATCHED or, for a declined payment, CANCELLED;
//   - the checkout workflow (workflow_status, ID = its key; its input and
//     output in workflow_input / workflow_output) and its steps
//     (operation_outputs: reserve, settle, and for a paid one the dispatch
//     child's start);
//   - for a paid one, the dispatch workflow (dispatch/<order id>, its parent
//     the checkout), which records no steps (its legs are idempotent writes);
//   - for a few cancelled orders (Config.LateRate), a payment that came after
//     the decline: the late payment (late_payments), its refund workflow
//     (refund/<key>: refund-provider, refund-record), the stand-in
//     provider's refund (provider_refunds) and the store's record of it
//     (refunds);
//   - one process run (process_runs) of the executor that ran them all,
//     started before the first order, so the timeline labels their steps.
//
// Only final orders are seeded: a PENDING or PAID order with no live
// workflow behind it would be found by the reconciler and released or
// redispatched, which is right for a real store and wrong for a benchmark.
// Stock is conserved: the product's final stock is Config.FinalStock and its
// initial stock (Result.InitialStock) that plus the orders dispatched, so
// loadgen.CheckInvariants holds on the result with Result.Purchases as the
// clients' acknowledgements.
//
// Everything is derived from Config.Seed: the same seed makes the same keys,
// shoppers and times (relative to the moment of seeding).
package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// Recorded values of this build (appName in main.go, the application
// version in shop, the price in schema.sql): the seeded rows must look like
// the ones it writes.
const (
	appName    = "widget-store"
	priceCents = 9999
	// payWindow is the store's default PAYMENT_TIMEOUT, recorded in each
	// reserve step's output as the payment deadline.
	payWindow = 120 * time.Second
	// executor is the EXECUTOR_ID the seeded history ran under.
	executor = "seeded-history"
)

// Config says what to seed.
type Config struct {
	Bin    string            // the store binary, started once to apply the schemas
	DB     *loadgen.Database // an empty database (a new SQLite file, or an empty Postgres database)
	Orders int               // how many orders
	// DeclineRate is the fraction of payments declined (their orders
	// CANCELLED); 0 means 0.1.
	DeclineRate float64
	// Span is how far back the first order lies; the last is two minutes
	// old. 0 means 90 days.
	Span time.Duration
	// LateRate is the fraction of cancelled orders paid for after all
	// (refunded); 0 means 0.05.
	LateRate float64
	// Shoppers is how many browsers bought (each order's shopper cookie is
	// one of them); 0 means Orders/20, at least 1.
	Shoppers int
	// FinalStock is the product's stock after all the orders; 0 means 100.
	FinalStock int
	Seed       uint64    // drives keys, shoppers, mix and times
	Progress   io.Writer // progress lines; nil: none
	StoreLog   io.Writer // the store's log while it applies the schema; nil discards it
}

// Result is what was seeded.
type Result struct {
	Orders, Dispatched, Cancelled int
	LatePayments                  int // refunded, one per order at most
	InitialStock, FinalStock      int
	Took                          time.Duration // the whole seeding, schema start included
	// Shopper is a seeded shopper id (the shopper cookie) with orders:
	// the benchmark's "my orders".
	Shopper string
	// ShopperOrders is how many orders Shopper has.
	ShopperOrders int

	keys   []string
	paid   []bool
	late   []bool
	shopOf []int32
}

// Key is the checkout key of order id (ids run from 1 to Orders).
func (r Result) Key(id int64) string { return r.keys[id-1] }

// Purchases are the acknowledgements the seeded store gave its clients:
// each checkout answered 200 with its key as payment id, each payment 200
// with its order id. loadgen.CheckInvariants checks the database against them.
func (r Result) Purchases() []loadgen.Purchase {
	out := make([]loadgen.Purchase, len(r.keys))
	for i, k := range r.keys {
		p := loadgen.Purchase{
			Key:      k,
			Checkout: loadgen.Answer{Status: http.StatusOK, Body: k},
			Sent:     shop.PaymentFailed,
			Payment:  loadgen.Answer{Status: http.StatusOK, Body: strconv.Itoa(i + 1)},
		}
		switch {
		case r.paid[i]:
			p.Sent = shop.PaymentPaid
		case r.late[i]:
			// Its last word was a payment after the decline: 409, recorded
			// for refund.
			p.Sent, p.Payment = shop.PaymentPaid, loadgen.Answer{Status: http.StatusConflict}
		}
		out[i] = p
	}
	return out
}

// chunk is how many orders go in one transaction.
const chunk = 25_000

// Run seeds cfg.DB. It refuses a database that already has orders.
func Run(ctx context.Context, cfg Config) (Result, error) {
	started := time.Now()
	if cfg.Orders <= 0 {
		return Result{}, errors.New("seed: Orders must be positive")
	}
	if cfg.DeclineRate == 0 {
		cfg.DeclineRate = 0.1
	}
	if cfg.Span == 0 {
		cfg.Span = 90 * 24 * time.Hour
	}
	if cfg.LateRate == 0 {
		cfg.LateRate = 0.05
	}
	if cfg.Shoppers == 0 {
		cfg.Shoppers = max(1, cfg.Orders/20)
	}
	if cfg.FinalStock == 0 {
		cfg.FinalStock = 100
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}

	// 1. The schemas, by the real binary.
	st := &loadgen.Store{Bin: cfg.Bin, DB: cfg.DB, Log: cfg.StoreLog, Env: []string{"EXECUTOR_ID=seed-schema", "RECONCILE_EVERY=1h"}}
	if _, err := st.Start(ctx); err != nil {
		return Result{}, fmt.Errorf("seed: start the store to apply its schema: %w", err)
	}
	if err := st.Stop(30 * time.Second); err != nil {
		return Result{}, fmt.Errorf("seed: stop the store: %w", err)
	}
	if code, err := st.WaitExit(time.Second); err != nil || code != 0 {
		return Result{}, fmt.Errorf("seed: the store exited with status %d (%v) on SIGTERM", code, err)
	}
	fmt.Fprintf(progress, "schema applied by the store binary in %v\n", time.Since(started).Round(time.Millisecond))

	// 2. The rows, through the store's own handle.
	db, err := store.Open(ctx, cfg.DB.URL, store.Options{})
	if err != nil {
		return Result{}, fmt.Errorf("seed: %w", err)
	}
	defer db.Close() // every batch was committed or rolled back below
	var n int
	if err := db.Q().QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil {
		return Result{}, fmt.Errorf("seed: count orders: %w", err)
	}
	if n != 0 {
		return Result{}, fmt.Errorf("seed: the database already has %d orders; seed an empty one", n)
	}

	g := newGenerator(cfg, time.Now())
	res := Result{Orders: cfg.Orders, FinalStock: cfg.FinalStock, keys: g.keys, paid: g.paid, late: g.late, shopOf: g.shopOf}
	if _, err := db.Q().Exec(ctx, `INSERT INTO process_runs (executor_id, pid, started_at) VALUES ($1, $2, $3)`,
		executor, 1, g.t0-60_000); err != nil {
		return res, fmt.Errorf("seed: process run: %w", err)
	}
	last := time.Now()
	for from := 0; from < cfg.Orders; from += chunk {
		to := min(cfg.Orders, from+chunk)
		if err := db.WriteBulk(ctx, g.batch(from, to)); err != nil {
			return res, fmt.Errorf("seed: orders %d–%d: %w", from+1, to, err)
		}
		if time.Since(last) > 5*time.Second || to == cfg.Orders {
			last = time.Now()
			el := time.Since(started)
			fmt.Fprintf(progress, "%d / %d orders (%.0f%%) in %v, %.0f orders/s\n", to, cfg.Orders,
				100*float64(to)/float64(cfg.Orders), el.Round(time.Second), float64(to)/el.Seconds())
		}
	}
	for i, p := range g.paid {
		if p {
			res.Dispatched++
		}
		if g.late[i] {
			res.LatePayments++
		}
	}
	res.Cancelled = res.Orders - res.Dispatched
	res.InitialStock = res.FinalStock + res.Dispatched
	if err := finish(ctx, db, cfg.FinalStock, int64(cfg.Orders)); err != nil {
		return res, fmt.Errorf("seed: finish: %w", err)
	}
	res.Shopper, res.ShopperOrders = g.shoppers[g.shopOf[cfg.Orders-1]], 0
	for _, s := range g.shopOf {
		if s == g.shopOf[cfg.Orders-1] {
			res.ShopperOrders++
		}
	}
	res.Took = time.Since(started)
	fmt.Fprintf(progress, "seeded %d orders (%d dispatched, %d cancelled, %d late payments refunded), %d workflows, in %v\n",
		res.Orders, res.Dispatched, res.Cancelled, res.LatePayments, res.Orders+res.Dispatched+res.LatePayments, res.Took.Round(time.Millisecond))
	return res, nil
}

// ----- the rows -----

// generator makes the rows of the seeded orders. Order i (0-based, id i+1)
// is created at t0 + i*step, so ids ascend with time, as the store hands
// them out.
type generator struct {
	t0, step float64 // Unix ms
	keys     []string
	paid     []bool
	late     []bool // a cancelled order paid for after all
	shopOf   []int32
	shoppers []string
	payDelay []int32 // ms from the order to its payment
	xids     *rand.Rand
}

func newGenerator(cfg Config, now time.Time) *generator {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	end := float64(now.Add(-2 * time.Minute).UnixMilli())
	g := &generator{
		t0:       end - float64(cfg.Span.Milliseconds()),
		keys:     make([]string, cfg.Orders),
		paid:     make([]bool, cfg.Orders),
		late:     make([]bool, cfg.Orders),
		shopOf:   make([]int32, cfg.Orders),
		shoppers: make([]string, cfg.Shoppers),
		payDelay: make([]int32, cfg.Orders),
		xids:     rand.New(rand.NewPCG(cfg.Seed, 0x0c1d)),
	}
	if cfg.Orders > 1 {
		g.step = (end - g.t0) / float64(cfg.Orders-1)
	}
	for i := range g.shoppers {
		g.shoppers[i] = fmt.Sprintf("%016x%016x", rng.Uint64(), uint64(i)) // a store-page shopper cookie: 32 hex digits
	}
	for i := range cfg.Orders {
		// A client's idempotency key, 32 hex digits like the store page's,
		// but time-ordered (the time, the order's index, random bits), as
		// clients that use UUIDv7 or ULID keys send them: the index makes
		// each unique, and the order makes the inserts into the key
		// indexes appends, which seeds a million orders several times
		// faster than random keys (whose B-tree pages outgrow the cache).
		ms := uint64(g.t0 + float64(i)*g.step)
		g.keys[i] = fmt.Sprintf("%012x%08x%012x", ms&0xffffffffffff, uint32(i), rng.Uint64()&0xffffffffffff)
		g.paid[i] = rng.Float64() >= cfg.DeclineRate
		g.shopOf[i] = int32(rng.IntN(cfg.Shoppers))
		g.payDelay[i] = int32(2_000 + rng.IntN(28_000)) // 2–30 s on the payment page
		g.late[i] = !g.paid[i] && rng.Float64() < cfg.LateRate
	}
	return g
}

// uuid is a random version-4 UUID, as DBOS records in creator_xid.
func (g *generator) uuid() string {
	a, b := g.xids.Uint64(), g.xids.Uint64()
	a = a&^0xf000 | 0x4000
	b = b&^(3<<62) | 2<<62
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}

// batch makes the rows of orders from (0-based) up to to: the orders first,
// then DBOS's rows of their workflows, then their late payments and refunds.
func (g *generator) batch(from, to int) []*store.BulkTable {
	orders := store.NewBulkTable("orders", "order_id", "checkout_key", "shopper", "product_id", "price_cents",
		"order_status", "progress_remaining", "created_at", "last_update_time")
	late := store.NewBulkTable("late_payments", "payment_id", "order_id", "received_at")
	refunds := store.NewBulkTable("refunds", "payment_id", "provider_refund_id", "refunded_at")
	provider := store.NewBulkTable("provider_refunds", "idempotency_key", "refund_id", "payment_id", "amount_cents", "created_at")
	h := store.NewDBOSHistory(appName, shop.AppVersion, executor)

	for i := from; i < to; i++ {
		id := int64(i + 1)
		key := g.keys[i]
		shopper := g.shoppers[g.shopOf[i]]
		wfCreated := int64(g.t0 + float64(i)*g.step)
		created := wfCreated + 2                // the reserve step's commit: the order's created_at
		payAt := created + int64(g.payDelay[i]) // the webhook settles the order
		settled := payAt + 3                    // the checkout's settle step

		settleOutput := fmt.Sprintf(`{"outcome":%q}`, shop.PaymentFailed)
		orderStatus, progress, lastUpdate := int(shop.StatusCancelled), 10, payAt
		checkoutDone := settled + 1
		if g.paid[i] {
			settleOutput = fmt.Sprintf(`{"paid_at_ms":%d,"outcome":%q}`, payAt, shop.PaymentPaid)
			orderStatus, progress, lastUpdate = int(shop.StatusDispatched), 0, payAt+int64(shop.DispatchLegs)*1000
			checkoutDone = settled + 3
		}
		orders.Add(id, key, shopper, shop.ProductID, priceCents, orderStatus, progress, created, lastUpdate)

		h.Workflow(store.HistoryWorkflow{ID: key, Name: shop.CheckoutWorkflow, CreatorXID: g.uuid(),
			Input:   `{"shopper":"` + shopper + `","key":"` + key + `","flow":1}`,
			Output:  fmt.Sprintf(`{"order_id":%d,"order_status":%d}`, id, g.checkoutStatus(i)),
			Created: wfCreated, Completed: checkoutDone})
		h.Step(store.HistoryStep{Workflow: key, ID: 0, Name: shop.StepReserve, Started: created - 1, Completed: created,
			Output: fmt.Sprintf(`{"order_id":%d,"pay_by_ms":%d,"created_at_ms":%d}`, id, created+payWindow.Milliseconds(), created)})
		h.Step(store.HistoryStep{Workflow: key, ID: 1, Name: shop.StepSettle, Output: settleOutput, Started: settled - 1, Completed: settled})

		if g.paid[i] {
			did := shop.DispatchWorkflowID(id)
			h.Step(store.HistoryStep{Workflow: key, ID: 2, Name: shop.DispatchWorkflow, Child: did, Started: settled + 1})
			h.Workflow(store.HistoryWorkflow{ID: did, Name: shop.DispatchWorkflow, Parent: key, CreatorXID: g.uuid(),
				Input: fmt.Sprintf(`{"order_id":%d,"first_due_ms":%d}`, id, payAt+1000), Output: "1",
				Created: settled + 1, Completed: lastUpdate + 1})
		}
		if g.late[i] {
			// The payment came after the decline: the webhook recorded it
			// and started the refund, which called the provider and
			// recorded its refund.
			at := settled + 5_000 + int64(g.payDelay[i]) // when it came
			rid := shop.RefundWorkflowID(key)
			refundID := fmt.Sprintf("re_%016x%016x", g.xids.Uint64(), g.xids.Uint64())
			late.Add(key, id, at)
			h.Workflow(store.HistoryWorkflow{ID: rid, Name: shop.RefundWorkflow, CreatorXID: g.uuid(),
				Input:   fmt.Sprintf(`{"payment_id":"%s","order_id":%d,"amount_cents":%d}`, key, id, priceCents),
				Output:  `"` + refundID + `"`,
				Created: at + 1, Completed: at + 4})
			h.Step(store.HistoryStep{Workflow: rid, ID: 0, Name: shop.StepRefundCall, Output: `{"refund_id":"` + refundID + `","replayed":false}`,
				Started: at + 2, Completed: at + 3})
			h.Step(store.HistoryStep{Workflow: rid, ID: 1, Name: shop.StepRefundRecord, Output: strconv.FormatInt(at+3, 10),
				Started: at + 3, Completed: at + 3})
			provider.Add(key, refundID, key, priceCents, at+2)
			refunds.Add(key, refundID, at+3)
		}
	}
	return append(append([]*store.BulkTable{orders}, h.Tables()...), late, refunds, provider)
}

// checkoutStatus is the status the checkout of order i returned: PAID (the
// dispatch runs on as its child) or CANCELLED.
func (g *generator) checkoutStatus(i int) shop.Status {
	if g.paid[i] {
		return shop.StatusPaid
	}
	return shop.StatusCancelled
}

// finish sets the product's stock and the id sequence after the last
// order, and brings the planner's statistics up to date where a running
// database would do that by itself.
func finish(ctx context.Context, db *store.DB, stock int, lastID int64) error {
	// SQLite's sqlite_sequence follows the largest id inserted by itself.
	// No ANALYZE there: the store never runs one, so its queries must find
	// their indexes without statistics, as they do here.
	qs := []string{`UPDATE products SET inventory = ` + strconv.Itoa(stock) + ` WHERE product_id = 1`}
	if db.Dialect.Postgres {
		qs = append(qs,
			`SELECT setval(pg_get_serial_sequence('orders', 'order_id'), `+strconv.FormatInt(lastID, 10)+`)`,
			// What autovacuum would do within minutes on a store that sold
			// this much: statistics for the planner, and the visibility map
			// that index-only scans need.
			`VACUUM ANALYZE`)
	}
	for _, q := range qs {
		if _, err := db.Q().Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}
