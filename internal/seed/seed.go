// Package seed makes the database of a large store: one that has sold
// hundreds of thousands of widgets through real checkouts, for the
// large-store benchmark (internal/storetest/large_test.go) and cmd/seed.
//
// It first starts the real store binary once on the empty database and stops
// it (SIGTERM): that applies the store's schema exactly as a start does, and
// lets DBOS create and migrate its own tables, so both schemas are the
// shipped ones, indexes included. Then it writes, in big transactions
// (multi-row INSERTs on SQLite, COPY on Postgres), the rows the store and DBOS
// would have written for each purchase, with the values and encodings a real
// checkout records (taken from a real run of this build: base64 JSON
// payloads, serialization DBOS_JSON, application version widget-store-3):
//
//   - the order (orders), DISPATCHED or, for a declined payment, CANCELLED;
//   - the checkout workflow (workflow_status, ID = its key; its input and
//     output in workflow_input / workflow_output) and its steps
//     (operation_outputs: reserve, DBOS.recv, mark-paid or cancel, and for a
//     paid one the dispatch child's start);
//   - for a paid one, the dispatch workflow (dispatch/<order id>, its parent
//     the checkout), which records no steps (its legs are idempotent writes);
//   - the payment message the webhook sent (notifications, consumed);
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
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the store's own pure-Go driver

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// Recorded values of this build (appName in main.go, appVersion in
// workflow.go, the price in schema.sql): the seeded rows must look like the
// ones it writes.
const (
	appName    = "widget-store"
	appVersion = "widget-store-3"
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

	// 2. The rows.
	w, err := openWriter(ctx, cfg.DB, progress)
	if err != nil {
		return Result{}, err
	}
	defer w.close()
	var n int
	if err := w.queryInt(ctx, `SELECT count(*) FROM orders`, &n); err != nil {
		return Result{}, fmt.Errorf("seed: count orders: %w", err)
	}
	if n != 0 {
		return Result{}, fmt.Errorf("seed: the database already has %d orders; seed an empty one", n)
	}

	g := newGenerator(cfg, time.Now())
	res := Result{Orders: cfg.Orders, FinalStock: cfg.FinalStock, keys: g.keys, paid: g.paid, late: g.late, shopOf: g.shopOf}
	if err := w.exec(ctx, `INSERT INTO process_runs (executor_id, pid, started_at) VALUES ($1, $2, $3)`,
		executor, 1, g.t0-60_000); err != nil {
		return res, fmt.Errorf("seed: process run: %w", err)
	}
	last := time.Now()
	for from := 0; from < cfg.Orders; from += chunk {
		to := min(cfg.Orders, from+chunk)
		b := g.batch(from, to)
		if err := w.write(ctx, b); err != nil {
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
	if err := w.finish(ctx, cfg.FinalStock, int64(cfg.Orders)); err != nil {
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

// table is one table's rows in a batch.
type table struct {
	name string // unqualified; DBOS's are qualified on Postgres by the writer
	dbos bool   // one of DBOS's tables
	cols []string
	rows [][]any
}

func (t *table) add(row ...any) { t.rows = append(t.rows, row) }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// uuid is a random version-4 UUID, as DBOS records in creator_xid.
func (g *generator) uuid() string {
	a, b := g.xids.Uint64(), g.xids.Uint64()
	a = a&^0xf000 | 0x4000
	b = b&^(3<<62) | 2<<62
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}

// batch makes the rows of orders from (0-based) up to to.
func (g *generator) batch(from, to int) []*table {
	orders := &table{name: "orders", cols: []string{"order_id", "checkout_key", "shopper", "product_id", "price_cents",
		"order_status", "progress_remaining", "created_at", "last_update_time"}}
	status := &table{name: "workflow_status", dbos: true, cols: []string{"workflow_uuid", "status", "name", "authenticated_roles",
		"executor_id", "created_at", "updated_at", "application_version", "recovery_attempts", "priority", "parent_workflow_id",
		"serialization", "was_forked_from", "rate_limited", "completed_at", "is_debounced", "application_name", "creator_xid"}}
	inputs := &table{name: "workflow_input", dbos: true, cols: []string{"workflow_uuid", "inputs", "retention_timestamp"}}
	outputs := &table{name: "workflow_output", dbos: true, cols: []string{"workflow_uuid", "output", "retention_timestamp"}}
	steps := &table{name: "operation_outputs", dbos: true, cols: []string{"workflow_uuid", "function_id", "function_name", "output",
		"child_workflow_id", "started_at_epoch_ms", "completed_at_epoch_ms", "serialization", "application_name", "retention_timestamp"}}
	late := &table{name: "late_payments", cols: []string{"payment_id", "order_id", "received_at"}}
	refunds := &table{name: "refunds", cols: []string{"payment_id", "provider_refund_id", "refunded_at"}}
	provider := &table{name: "provider_refunds", cols: []string{"idempotency_key", "refund_id", "payment_id", "amount_cents", "created_at"}}
	notes := &table{name: "notifications", dbos: true, cols: []string{"message_uuid", "destination_uuid", "topic", "message",
		"created_at_epoch_ms", "serialization", "consumed", "consumed_by_function_id"}}

	wf := func(id, name, parent string, created, done int64) {
		var p any
		if parent != "" {
			p = parent
		}
		status.add(id, "SUCCESS", name, "null", executor, created, done, appVersion, 1, 0, p,
			"DBOS_JSON", false, false, done, false, appName, g.uuid())
	}
	step := func(wid string, fn int, name string, out any, child any, start, done any) {
		ser := any("DBOS_JSON")
		if out == nil {
			ser = nil
		}
		steps.add(wid, fn, name, out, child, start, done, ser, appName, start)
	}
	for i := from; i < to; i++ {
		id := int64(i + 1)
		key := g.keys[i]
		shopper := g.shoppers[g.shopOf[i]]
		wfCreated := int64(g.t0 + float64(i)*g.step)
		created := wfCreated + 2                // the reserve step's commit: the order's created_at
		payAt := created + int64(g.payDelay[i]) // the webhook's Send
		recvAt := payAt + 3
		settled := recvAt + 1 // mark-paid or cancel

		msg, settleStep := shop.PaymentFailed, shop.StepCancel
		orderStatus, progress, lastUpdate := int(shop.StatusCancelled), 10, settled
		checkoutDone := settled + 1
		if g.paid[i] {
			msg, settleStep = shop.PaymentPaid, shop.StepMarkPaid
			orderStatus, progress, lastUpdate = int(shop.StatusDispatched), 0, settled+int64(shop.DispatchLegs)*1000
			checkoutDone = settled + 3
		}
		orders.add(id, key, shopper, shop.ProductID, priceCents, orderStatus, progress, created, lastUpdate)

		wf(key, shop.CheckoutWorkflow, "", wfCreated, checkoutDone)
		inputs.add(key, b64(`{"shopper":"`+shopper+`","key":"`+key+`"}`), wfCreated)
		outputs.add(key, b64(fmt.Sprintf(`{"order_id":%d,"order_status":%d}`, id, g.checkoutStatus(i))), checkoutDone)
		step(key, 0, shop.StepReserve, b64(fmt.Sprintf(`{"order_id":%d,"pay_by_ms":%d,"created_at_ms":%d}`,
			id, created+payWindow.Milliseconds(), created)), nil, created-1, created)
		// The Recv's own deadline sleep (function id 2) is recorded only
		// when it had to wait for the deadline, which a payment that came
		// in time never does.
		step(key, 1, "DBOS.recv", b64(`"`+msg+`"`), nil, recvAt-1, recvAt)
		step(key, 3, settleStep, b64(strconv.FormatInt(settled, 10)), nil, settled, settled)
		notes.add("payment/"+key+"::"+key, key, "payment_status", b64(`"`+msg+`"`), payAt, "DBOS_JSON", true, 1)

		if g.paid[i] {
			did := shop.DispatchWorkflowID(id)
			step(key, 4, shop.DispatchWorkflow, nil, did, settled+1, nil)
			wf(did, shop.DispatchWorkflow, key, settled+1, lastUpdate+1)
			inputs.add(did, b64(fmt.Sprintf(`{"order_id":%d,"first_due_ms":%d}`, id, settled+1000)), settled+1)
			outputs.add(did, b64("1"), lastUpdate+1)
		}
		if g.late[i] {
			// The payment came after the decline: the webhook recorded it
			// and started the refund, which called the provider and
			// recorded its refund.
			at := settled + 5_000 + int64(g.payDelay[i]) // when it came
			rid := shop.RefundWorkflowID(key)
			refundID := fmt.Sprintf("re_%016x%016x", g.xids.Uint64(), g.xids.Uint64())
			late.add(key, id, at)
			wf(rid, shop.RefundWorkflow, "", at+1, at+4)
			inputs.add(rid, b64(fmt.Sprintf(`{"payment_id":"%s","order_id":%d,"amount_cents":%d}`, key, id, priceCents)), at+1)
			outputs.add(rid, b64(`"`+refundID+`"`), at+4)
			step(rid, 0, shop.StepRefundCall, b64(`{"refund_id":"`+refundID+`","replayed":false}`), nil, at+2, at+3)
			step(rid, 1, shop.StepRefundRecord, b64(strconv.FormatInt(at+3, 10)), nil, at+3, at+3)
			provider.add(key, refundID, key, priceCents, at+2)
			refunds.add(key, refundID, at+3)
		}
	}
	return []*table{orders, status, inputs, outputs, steps, notes, late, refunds, provider}
}

// checkoutStatus is the status the checkout of order i returned: PAID (the
// dispatch runs on as its child) or CANCELLED.
func (g *generator) checkoutStatus(i int) shop.Status {
	if g.paid[i] {
		return shop.StatusPaid
	}
	return shop.StatusCancelled
}

// ----- the writers -----

// writer writes batches to one database.
type writer interface {
	queryInt(ctx context.Context, q string, dst *int) error
	exec(ctx context.Context, q string, args ...any) error
	write(ctx context.Context, b []*table) error
	// finish sets the product's stock and the id sequence after the last
	// order, and brings the planner's statistics up to date where a running
	// database would do that by itself.
	finish(ctx context.Context, stock int, lastID int64) error
	close()
}

func openWriter(ctx context.Context, db *loadgen.Database, progress io.Writer) (writer, error) {
	if db.Kind == "postgres" {
		conn, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			return nil, fmt.Errorf("seed: connect: %w", err)
		}
		// As a superuser, skip triggers and foreign-key checks while
		// seeding: DBOS's trigger on notifications would pg_notify a
		// million times for messages long consumed. Without the right it
		// seeds all the same, only slower.
		if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
			fmt.Fprintf(progress, "cannot skip triggers (not a superuser?), seeding with them: %v\n", err)
		}
		return &pgWriter{conn: conn}, nil
	}
	// One handle, one connection, as the store has it; durability is the
	// seeder's last concern (a failed seed is simply run again).
	sdb, err := sql.Open("sqlite", "file:"+url.PathEscape(db.Path)+
		"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)&_pragma=cache_size(-524288)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	sdb.SetMaxOpenConns(1)
	return &sqliteWriter{db: sdb}, nil
}

type pgWriter struct{ conn *pgx.Conn }

func (w *pgWriter) queryInt(ctx context.Context, q string, dst *int) error {
	return w.conn.QueryRow(ctx, q).Scan(dst)
}

func (w *pgWriter) exec(ctx context.Context, q string, args ...any) error {
	_, err := w.conn.Exec(ctx, q, args...)
	return err
}

func (w *pgWriter) write(ctx context.Context, b []*table) error {
	tx, err := w.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) // after Commit a no-op; otherwise the batch is undone
	for _, t := range b {
		name := pgx.Identifier{t.name}
		if t.dbos {
			name = pgx.Identifier{"dbos", t.name}
		}
		if _, err := tx.CopyFrom(ctx, name, t.cols, pgx.CopyFromRows(t.rows)); err != nil {
			return fmt.Errorf("copy into %s: %w", t.name, err)
		}
	}
	return tx.Commit(ctx)
}

func (w *pgWriter) finish(ctx context.Context, stock int, lastID int64) error {
	for _, q := range []string{
		`UPDATE products SET inventory = ` + strconv.Itoa(stock) + ` WHERE product_id = 1`,
		`SELECT setval(pg_get_serial_sequence('orders', 'order_id'), ` + strconv.FormatInt(lastID, 10) + `)`,
		// What autovacuum would do within minutes on a store that sold
		// this much: statistics for the planner, and the visibility map
		// that index-only scans need.
		`VACUUM ANALYZE`,
	} {
		if _, err := w.conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

func (w *pgWriter) close() { w.conn.Close(context.Background()) }

type sqliteWriter struct{ db *sql.DB }

func (w *sqliteWriter) queryInt(ctx context.Context, q string, dst *int) error {
	return w.db.QueryRowContext(ctx, q).Scan(dst)
}

func (w *sqliteWriter) exec(ctx context.Context, q string, args ...any) error {
	_, err := w.db.ExecContext(ctx, q, args...)
	return err
}

// rowsPerInsert is the rows of one INSERT. Few: modernc's bind costs grow
// with the square of a statement's parameters (500 rows spent 80% of the
// seeding's CPU binding them); 16 saves most of the per-statement cost.
const rowsPerInsert = 16

func (w *sqliteWriter) write(ctx context.Context, b []*table) error {
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // after Commit a no-op; otherwise the batch is undone
	// The statements are prepared in the transaction, on its connection:
	// the handle has only the one.
	stmts := map[string]*sql.Stmt{}
	for _, t := range b {
		for from := 0; from < len(t.rows); from += rowsPerInsert {
			rows := t.rows[from:min(len(t.rows), from+rowsPerInsert)]
			k := t.name + "/" + strconv.Itoa(len(rows))
			stmt, ok := stmts[k]
			if !ok {
				one := "(" + strings.TrimSuffix(strings.Repeat("?,", len(t.cols)), ",") + ")"
				q := `INSERT INTO ` + t.name + ` (` + strings.Join(t.cols, ", ") + `) VALUES ` +
					strings.TrimSuffix(strings.Repeat(one+",", len(rows)), ",")
				if stmt, err = tx.PrepareContext(ctx, q); err != nil {
					return fmt.Errorf("prepare insert into %s: %w", t.name, err)
				}
				stmts[k] = stmt
			}
			args := make([]any, 0, len(rows)*len(t.cols))
			for _, r := range rows {
				args = append(args, r...)
			}
			if _, err := stmt.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("insert into %s: %w", t.name, err)
			}
		}
	}
	return tx.Commit() // closes the statements prepared in it
}

func (w *sqliteWriter) finish(ctx context.Context, stock int, lastID int64) error {
	// sqlite_sequence follows the largest id inserted by itself. No
	// ANALYZE: the store never runs one, so its queries must find their
	// indexes without statistics, as they do here.
	_, err := w.db.ExecContext(ctx, `UPDATE products SET inventory = $1 WHERE product_id = 1`, stock)
	return err
}

func (w *sqliteWriter) close() {
	w.db.Close() // read-write handle: every batch was committed or rolled back above
}
