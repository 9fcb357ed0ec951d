package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"os"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
)

// Product reads product 1, the reference store's product (GET /product).
func (db *DB) Product(ctx context.Context) (shop.Product, error) {
	return db.ProductByID(ctx, shop.ProductID)
}

// ProductByID reads product id; a shop.NotFound error if there is none.
func (db *DB) ProductByID(ctx context.Context, id int) (shop.Product, error) {
	p, err := scanProduct(db.q.QueryRow(ctx, sqlProduct, id))
	if IsNoRows(err) {
		return p, shop.Errorf(shop.NotFound, "there is no product %d", id)
	}
	if err != nil {
		return p, fmt.Errorf("read product %d: %w", id, err)
	}
	return p, nil
}

// orderColumns are the columns scanOrder reads, in its order.
const orderColumns = `order_id, checkout_key, shopper, product_id, price_cents, order_status, progress_remaining, created_at, last_update_time`

func scanOrder(row interface{ Scan(dest ...any) error }) (shop.Order, error) {
	var o shop.Order
	var created, updated int64
	err := row.Scan(&o.ID, &o.Key, &o.Shopper, &o.ProductID, &o.PriceCents, &o.Status, &o.ProgressRemaining, &created, &updated)
	o.CreatedAt, o.LastUpdate = time.UnixMilli(created), time.UnixMilli(updated)
	return o, err
}

// OrderByID reads order id on q (the handle, or a transaction); a
// shop.NotFound error if there is none.
func OrderByID(ctx context.Context, q dbos.Querier, id int64) (shop.Order, error) {
	return readOrder(ctx, q, sqlOrderByID, id, fmt.Sprintf("there is no order %d", id), fmt.Sprintf("read order %d", id))
}

// OrderByID reads order id; a shop.NotFound error if there is none.
func (db *DB) OrderByID(ctx context.Context, id int64) (shop.Order, error) {
	return OrderByID(ctx, db.q, id)
}

// OrderByKey reads the order that checkout key (which is also its payment id)
// made, on q (the handle, or a transaction); a shop.NotFound error if there
// is none.
func OrderByKey(ctx context.Context, q dbos.Querier, key string) (shop.Order, error) {
	return readOrder(ctx, q, `SELECT `+orderColumns+` FROM orders WHERE checkout_key = $1`, key,
		"unknown payment id "+key, "read the order of checkout "+key)
}

// OrderByKeyAnnouncing is OrderByKey for a Postgres transaction that, when
// the order is PENDING, also announces key on NOTIFY channel, in the same
// statement: the webhook's read of the order and its announcement to every
// instance's waiting checkout are one round trip instead of two. Postgres
// delivers a notification only when its transaction commits, so a webhook
// whose Send then fails (and rolls back) announces nothing.
func OrderByKeyAnnouncing(ctx context.Context, q dbos.Querier, key, channel string) (shop.Order, error) {
	var announced *string
	row := q.QueryRow(ctx, `SELECT `+orderColumns+`, CASE WHEN order_status = $3 THEN pg_notify($2, checkout_key)::text END
		FROM orders WHERE checkout_key = $1`, key, channel, shop.StatusPending)
	o, err := scanOrder(extraColumn{row: row, dest: &announced})
	if IsNoRows(err) {
		return o, shop.Errorf(shop.NotFound, "unknown payment id %s", key)
	}
	if err != nil {
		return o, fmt.Errorf("read the order of checkout %s: %w", key, err)
	}
	return o, nil
}

// extraColumn scans a row of orderColumns and one more column, into dest.
type extraColumn struct {
	row  interface{ Scan(dest ...any) error }
	dest any
}

func (e extraColumn) Scan(dest ...any) error { return e.row.Scan(append(dest, e.dest)...) }

// readOrder reads the one order query selects by arg: no row is a
// shop.NotFound error saying notFound; any other failure is wrapped in what.
func readOrder(ctx context.Context, q dbos.Querier, query string, arg any, notFound, what string) (shop.Order, error) {
	o, err := scanOrder(q.QueryRow(ctx, query, arg))
	if IsNoRows(err) {
		return o, shop.Errorf(shop.NotFound, "%s", notFound)
	}
	if err != nil {
		return o, fmt.Errorf("%s: %w", what, err)
	}
	return o, nil
}

// OrderByKey reads the order that checkout key made.
func (db *DB) OrderByKey(ctx context.Context, key string) (shop.Order, error) {
	return OrderByKey(ctx, db.q, key)
}

// RecentOrders lists the newest orders, of one shopper when shopper != "".
func (db *DB) RecentOrders(ctx context.Context, shopper string, limit int) ([]shop.Order, error) {
	q := sqlRecentOrders
	args := []any{limit}
	if shopper != "" {
		q = sqlShopperOrders
		args = []any{shopper, limit}
	}
	return db.orders(ctx, "list orders", q, args...)
}

// orders runs q, a SELECT of orderColumns, and scans every row; what names
// the list in errors.
func (db *DB) orders(ctx context.Context, what, q string, args ...any) ([]shop.Order, error) {
	rows, err := db.q.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	var out []shop.Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// OrdersPage lists up to limit orders with ids above afterID (0: from the
// first), in ascending order_id (oldest first, the primary key's order);
// more reports that another page follows. It reads limit+1 rows to know, so
// the last page needs no extra query.
//
// Order ids are handed out in commit order: every order is inserted by the
// reserve step, whose transaction first updates (and so locks) the product
// row, so no order can commit with an id below one already visible. A client
// that follows the pages therefore sees every order exactly once, including
// the ones created while it reads: they land after its position.
func (db *DB) OrdersPage(ctx context.Context, afterID int64, limit int) (page []shop.Order, more bool, err error) {
	page, err = db.orders(ctx, "list orders", sqlOrdersPage, afterID, limit+1)
	if err != nil {
		return nil, false, err
	}
	if len(page) > limit {
		return page[:limit], true, nil
	}
	return page, false, nil
}

// UnfinishedOrders lists up to limit orders still PENDING or PAID that were
// created before before, with ids after afterID (a page; 0 for the first),
// oldest first (the partial index orders_unfinished
// keeps this a read of the few unfinished rows, however many orders there are).
func (db *DB) UnfinishedOrders(ctx context.Context, before time.Time, afterID int64, limit int) ([]shop.Order, error) {
	return db.orders(ctx, "list unfinished orders", sqlUnfinishedOrders, before.UnixMilli(), afterID, limit)
}

// NewestOrderID is the id of the newest order, 0 when there is none.
func (db *DB) NewestOrderID(ctx context.Context) (int64, error) {
	var id int64
	if err := db.q.QueryRow(ctx, sqlNewestOrderID).Scan(&id); err != nil {
		return 0, fmt.Errorf("newest order: %w", err)
	}
	return id, nil
}

// Holder names who holds unpaid checkouts, for the hold limit: a client
// address (hold_clients) or a browser session (orders.shopper).
type Holder struct {
	Client  string // the client's address; "" for a session
	Shopper string // the browser session; "" for an address
}

// Holds counts holder's orders created after since that are still PENDING
// (unpaid checkouts holding stock), and returns the oldest one's creation
// time (zero when there is none).
func (db *DB) Holds(ctx context.Context, h Holder, since time.Time) (n int, oldest time.Time, err error) {
	q, who := sqlClientHolds, h.Client
	if h.Client == "" {
		q, who = sqlShopperHolds, h.Shopper
	}
	var oldestMs int64
	if err := db.q.QueryRow(ctx, q, who, since.UnixMilli()).Scan(&n, &oldestMs); err != nil {
		return 0, time.Time{}, fmt.Errorf("count unpaid checkouts: %w", err)
	}
	if n > 0 {
		oldest = time.UnixMilli(oldestMs)
	}
	return n, oldest, nil
}

// CheckoutState is what the first step of a checkout committed for its key.
type CheckoutState int

// Checkout states.
const (
	CheckoutNotYet  CheckoutState = iota // nothing yet: the first step has not run (or there is no such checkout)
	CheckoutOrdered                      // it reserved a unit and made an order
	CheckoutSoldOut                      // it found no stock
)

// CheckoutState reads, in one query, what the first step of checkout key
// committed: its order, or its sold-out record.
func (db *DB) CheckoutState(ctx context.Context, key string) (CheckoutState, error) {
	var hasOrder bool
	err := db.q.QueryRow(ctx, `
		SELECT TRUE FROM orders WHERE checkout_key = $1
		UNION ALL
		SELECT FALSE FROM sold_out_checkouts WHERE checkout_key = $1`, key).Scan(&hasOrder)
	switch {
	case IsNoRows(err):
		return CheckoutNotYet, nil
	case err != nil:
		return CheckoutNotYet, fmt.Errorf("read checkout %s: %w", key, err)
	case hasOrder:
		return CheckoutOrdered, nil
	}
	return CheckoutSoldOut, nil
}

// RecordLatePayment notes a payment that came for a cancelled order, once per
// payment id, so it can be refunded. first reports the first record of it (a
// retried webhook is not a second refund).
func (db *DB) RecordLatePayment(ctx context.Context, pid string, orderID int64) (first bool, err error) {
	res, err := db.q.Exec(ctx, `INSERT INTO late_payments (payment_id, order_id, received_at) VALUES ($1, $2, $3) ON CONFLICT (payment_id) DO NOTHING`,
		pid, orderID, db.now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("record late payment: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record late payment: %w", err)
	}
	return n == 1, nil
}

// Refund states of a late payment (LatePayment.RefundStatus).
const (
	RefundPending  = "pending"  // the refund workflow has not recorded the provider's refund yet
	RefundRefunded = "refunded" // paid back: the provider confirmed it and the store recorded it
)

// LatePayment is a payment that came for an already cancelled order, and
// where its refund stands.
type LatePayment struct {
	PaymentID    string     `json:"payment_id"`
	OrderID      int64      `json:"order_id"`
	ReceivedAt   time.Time  `json:"received_at"`
	RefundStatus string     `json:"refund_status"`         // RefundPending or RefundRefunded
	RefundedAt   *time.Time `json:"refunded_at,omitempty"` // when RefundRefunded
	RefundID     string     `json:"refund_id,omitempty"`   // the provider's refund id, when RefundRefunded
}

// LatePaymentPos is a late payment's place in the list's order, received_at
// (Unix ms) then payment_id: unique, since payment_id is.
type LatePaymentPos struct {
	ReceivedAtMs int64
	PaymentID    string
}

// Pos is p's place in the list.
func (p LatePayment) Pos() LatePaymentPos {
	return LatePaymentPos{ReceivedAtMs: p.ReceivedAt.UnixMilli(), PaymentID: p.PaymentID}
}

// LatePaymentsPage lists up to limit payments recorded for refund, oldest
// first (received_at, then payment_id), from just after position after (nil:
// from the start), each with its refund state; more reports that another
// page follows. It reads limit+1 rows to know, so the last page needs no
// extra query. The index late_payments_received serves it; the refund is one
// primary-key lookup per row.
//
// A payment recorded before a client starts following the pages is on
// exactly one of them. One recorded while it follows them is on at most one:
// received_at is the recording instance's clock, taken before the insert, so
// a payment recorded concurrently can sort just behind a page already read.
func (db *DB) LatePaymentsPage(ctx context.Context, after *LatePaymentPos, limit int) (page []LatePayment, more bool, err error) {
	const cols = `SELECT l.payment_id, l.order_id, l.received_at, r.refunded_at, r.provider_refund_id
		FROM late_payments l LEFT JOIN refunds r ON r.payment_id = l.payment_id`
	q := cols + ` ORDER BY l.received_at, l.payment_id LIMIT $1`
	args := []any{limit + 1}
	if after != nil {
		q = cols + ` WHERE (l.received_at, l.payment_id) > ($1, $2)
			ORDER BY l.received_at, l.payment_id LIMIT $3`
		args = []any{after.ReceivedAtMs, after.PaymentID, limit + 1}
	}
	rows, err := db.q.Query(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("list late payments: %w", err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	page = make([]LatePayment, 0, min(limit+1, 64))
	for rows.Next() {
		var p LatePayment
		var ms int64
		var refundedAt sql.NullInt64
		var refundID sql.NullString
		if err := rows.Scan(&p.PaymentID, &p.OrderID, &ms, &refundedAt, &refundID); err != nil {
			return nil, false, fmt.Errorf("list late payments: %w", err)
		}
		p.ReceivedAt = time.UnixMilli(ms).UTC()
		p.RefundStatus = RefundPending
		if refundedAt.Valid {
			at := time.UnixMilli(refundedAt.Int64).UTC()
			p.RefundStatus, p.RefundedAt, p.RefundID = RefundRefunded, &at, refundID.String
		}
		page = append(page, p)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list late payments: %w", err)
	}
	if len(page) > limit {
		return page[:limit], true, nil
	}
	return page, false, nil
}

// RecentLatePayments lists the newest limit late payments with their refund
// state, newest first (the internals panel).
func (db *DB) RecentLatePayments(ctx context.Context, limit int) ([]LatePayment, error) {
	rows, err := db.q.Query(ctx, sqlRecentLatePayments, limit)
	if err != nil {
		return nil, fmt.Errorf("list recent late payments: %w", err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	var out []LatePayment
	for rows.Next() {
		var p LatePayment
		var ms int64
		var refundedAt sql.NullInt64
		var refundID sql.NullString
		if err := rows.Scan(&p.PaymentID, &p.OrderID, &ms, &refundedAt, &refundID); err != nil {
			return nil, fmt.Errorf("list recent late payments: %w", err)
		}
		p.ReceivedAt = time.UnixMilli(ms).UTC()
		p.RefundStatus = RefundPending
		if refundedAt.Valid {
			at := time.UnixMilli(refundedAt.Int64).UTC()
			p.RefundStatus, p.RefundedAt, p.RefundID = RefundRefunded, &at, refundID.String
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// UnrefundedLatePayments lists up to limit payment ids of late payments whose
// refund is not recorded yet, oldest first: the reconciler looks for the ones
// whose refund workflow was never started, and the internals panel's
// attention list for the ones stuck.
//
// Nearly always there is none, and finding that out with the anti-join
// below reads every late payment a store ever had (5.8 ms on SQLite at
// 4,876 of them, a million orders, on every load of the store page and the
// internals panel, which made them 38 ms at p50). So it first compares the
// counts of the two tables, in one statement (one snapshot): every refund
// is of a late payment (the refund workflow's input is one, and neither
// table is ever deleted from), so equal counts mean nothing is pending, and
// counting a table is a walk of its smallest B-tree, not a lookup per row.
func (db *DB) UnrefundedLatePayments(ctx context.Context, limit int) ([]string, error) {
	var pending int
	if err := db.q.QueryRow(ctx, `SELECT (SELECT count(*) FROM late_payments) - (SELECT count(*) FROM refunds)`).Scan(&pending); err != nil {
		return nil, fmt.Errorf("count unrefunded late payments: %w", err)
	}
	if pending == 0 {
		return nil, nil
	}
	rows, err := db.q.Query(ctx, `SELECT l.payment_id FROM late_payments l
		WHERE NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = l.payment_id)
		ORDER BY l.received_at, l.payment_id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list unrefunded late payments: %w", err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	var out []string
	for rows.Next() {
		var pid string
		if err := rows.Scan(&pid); err != nil {
			return nil, fmt.Errorf("list unrefunded late payments: %w", err)
		}
		out = append(out, pid)
	}
	return out, rows.Err()
}

// ProviderRefund is a refund made by the stand-in payment provider.
type ProviderRefund struct {
	RefundID    string
	PaymentID   string
	AmountCents int64
	Replayed    bool // an earlier request with the same Idempotency-Key made it
}

// ProviderRefundOnce is the stand-in provider's refund: it records one
// refund per idempotency key (newID names it) and answers it; a repeat with
// the same key inserts nothing and answers the first one, Replayed. A key
// reused for another payment or amount is a shop.Conflict, as a real
// provider refuses it. It is a plain write outside any workflow: the
// provider is another party, and the key is its idempotency.
func (db *DB) ProviderRefundOnce(ctx context.Context, key, pid string, amountCents int64, newID string) (ProviderRefund, error) {
	res, err := db.q.Exec(ctx, `INSERT INTO provider_refunds (idempotency_key, refund_id, payment_id, amount_cents, created_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING`, key, newID, pid, amountCents, db.now().UnixMilli())
	if err != nil {
		return ProviderRefund{}, fmt.Errorf("provider refund: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return ProviderRefund{}, fmt.Errorf("provider refund: %w", err)
	}
	if n == 1 {
		return ProviderRefund{RefundID: newID, PaymentID: pid, AmountCents: amountCents}, nil
	}
	r := ProviderRefund{Replayed: true}
	if err := db.q.QueryRow(ctx, `SELECT refund_id, payment_id, amount_cents FROM provider_refunds WHERE idempotency_key = $1`, key).
		Scan(&r.RefundID, &r.PaymentID, &r.AmountCents); err != nil {
		return ProviderRefund{}, fmt.Errorf("provider refund: read the first: %w", err)
	}
	if r.PaymentID != pid || r.AmountCents != amountCents {
		return ProviderRefund{}, shop.Errorf(shop.Conflict, "Idempotency-Key %s was used for payment %s, %d cents; this request is for %s, %d cents",
			key, r.PaymentID, r.AmountCents, pid, amountCents)
	}
	return r, nil
}

// Restock sets product productID's stock to n: an operator action, not part
// of any workflow. A product that does not exist is a shop.NotFound error.
func (db *DB) Restock(ctx context.Context, productID, n int) error {
	res, err := db.q.Exec(ctx, `UPDATE products SET inventory = $1 WHERE product_id = $2`, n, productID)
	if err != nil {
		return fmt.Errorf("restock: %w", err)
	}
	if m, err := res.RowsAffected(); err != nil || m == 0 {
		return cmp.Or(err, shop.Errorf(shop.NotFound, "there is no product %d", productID))
	}
	return nil
}

// ProcessRun is one start of a store process. DBOS records when each step ran
// and which executor owns a workflow, but not which process run executed a
// step; the workflow timeline labels steps with these runs.
type ProcessRun struct {
	ID        int64
	Executor  string
	StartedAt time.Time
}

// RecordRun notes a process start in process_runs. It is a plain insert
// outside any workflow: it records a fact about this process, not a step of
// an order, and a crash right after it only leaves a run with no steps.
func (db *DB) RecordRun(ctx context.Context, executor string, at time.Time) (ProcessRun, error) {
	r := ProcessRun{Executor: executor, StartedAt: at}
	err := db.q.QueryRow(ctx, `INSERT INTO process_runs (executor_id, pid, started_at) VALUES ($1, $2, $3) RETURNING run_id`,
		executor, os.Getpid(), at.UnixMilli()).Scan(&r.ID)
	if err != nil {
		return r, fmt.Errorf("record process run: %w", err)
	}
	return r, nil
}

// RunsSince returns the runs of executor that could have executed a workflow
// created at created: the last run started before it, and every later one
// (at most 200).
func (db *DB) RunsSince(ctx context.Context, executor string, created time.Time) ([]ProcessRun, error) {
	rows, err := db.q.Query(ctx, sqlRunsSince, executor, created.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("list process runs: %w", err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	var out []ProcessRun
	for rows.Next() {
		var r ProcessRun
		var ms int64
		if err := rows.Scan(&r.ID, &r.Executor, &ms); err != nil {
			return nil, fmt.Errorf("list process runs: %w", err)
		}
		r.StartedAt = time.UnixMilli(ms)
		out = append(out, r)
	}
	return out, rows.Err()
}
