package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
)

// MoveOrder moves order orderID from status from to status to at nowMs, in
// the caller's transaction; moved is false, and nothing changed, when the
// order was not in status from.
func MoveOrder(ctx context.Context, q dbos.Querier, orderID int64, from, to shop.Status, nowMs int64) (moved bool, err error) {
	res, err := q.Exec(ctx, `UPDATE orders SET order_status = $1, last_update_time = $2 WHERE order_id = $3 AND order_status = $4`,
		to, nowMs, orderID, from)
	if err != nil {
		return false, fmt.Errorf("mark order %d %s: %w", orderID, to, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// CancelAndRestock cancels order orderID, if it is in status from, and
// returns every unit of every line to the stock, in the caller's
// transaction; moved is false, and nothing changed, when the order was not in
// status from. The status move comes first and is conditional, so the units
// go back once however often this runs. (An order made before carts has no
// lines: its one unit of its product goes back.)
func CancelAndRestock(ctx context.Context, q dbos.Querier, orderID int64, from shop.Status, nowMs int64) (moved bool, err error) {
	if moved, err := MoveOrder(ctx, q, orderID, from, shop.StatusCancelled, nowMs); err != nil || !moved {
		return false, err
	}
	o, err := OrderByID(ctx, q, orderID)
	if err != nil {
		return false, err
	}
	lines, err := OrderLines(ctx, q, o)
	if err != nil {
		return false, err
	}
	for _, l := range lines {
		res, err := q.Exec(ctx, `UPDATE products SET inventory = inventory + $1 WHERE product_id = $2`, l.Quantity, l.ProductID)
		if err != nil {
			return false, fmt.Errorf("return the units of order %d: %w", orderID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return false, cmp.Or(err, fmt.Errorf("return the units of order %d: product %d matched %d rows, want 1", orderID, l.ProductID, n))
		}
	}
	return true, nil
}

// SettlePayment applies payment status (shop.PaymentPaid or
// shop.PaymentFailed) to order o, PENDING, in the caller's transaction: PAID,
// or CANCELLED with its units back. It settles nothing, and settled is false,
// unless the order is still PENDING, within its payment window (created
// windowMs before nowMs at most: the checkout's deadline, reserve's PayByMs),
// and its checkout (workflow ID o.Key) still PENDING or ENQUEUED in DBOS; in
// one statement with the move (paid) or in a read just before it in the same
// transaction (failed, rare). A payment after the window, or for a checkout
// an operator cancelled or that failed, is left to the slower path in which
// the checkout decides or is found gone (internal/paywait, Deliver), as
// before. internal/paywait says why the webhook settles the order itself.
func (db *DB) SettlePayment(ctx context.Context, q dbos.Querier, o shop.Order, status string, nowMs, windowMs int64) (settled bool, err error) {
	if nowMs >= o.CreatedAt.UnixMilli()+windowMs {
		return false, nil // the window has closed: the checkout decides, as it always did
	}
	wf := db.Dialect.DBOSTable("workflow_status")
	if status == shop.PaymentPaid {
		res, err := q.Exec(ctx, `
			UPDATE orders SET order_status = $1, last_update_time = $2
			WHERE order_id = $3 AND order_status = $4
			  AND EXISTS (SELECT 1 FROM `+wf+` WHERE workflow_uuid = $5 AND status IN ('PENDING', 'ENQUEUED'))`,
			shop.StatusPaid, nowMs, o.ID, shop.StatusPending, o.Key)
		if err != nil {
			return false, fmt.Errorf("mark order %d PAID: %w", o.ID, err)
		}
		n, err := res.RowsAffected()
		return n == 1, err
	}
	if status != shop.PaymentFailed {
		return false, nil
	}
	var live bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+wf+` WHERE workflow_uuid = $1 AND status IN ('PENDING', 'ENQUEUED'))`, o.Key).Scan(&live); err != nil {
		return false, fmt.Errorf("status of checkout %s: %w", o.Key, err)
	}
	if !live {
		return false, nil
	}
	return CancelAndRestock(ctx, q, o.ID, shop.StatusPending, nowMs)
}

// RecordPayment records payment status for checkout key, whose PENDING
// order the webhook could not settle by it (SettlePayment said no: the
// window had closed, or the checkout was not alive in DBOS), in the
// caller's transaction: the checkout's settle step decides by it
// (OrderToSettle). The first status per key is the one that counts; a
// second changes nothing, and recorded is false.
func RecordPayment(ctx context.Context, q dbos.Querier, key, status string, nowMs int64) (recorded bool, err error) {
	res, err := q.Exec(ctx, `INSERT INTO payments_received (checkout_key, payment_status, received_at) VALUES ($1, $2, $3)
		ON CONFLICT (checkout_key) DO NOTHING`, key, status, nowMs)
	if err != nil {
		return false, fmt.Errorf("record the payment of checkout %s: %w", key, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// OrderToSettle reads order orderID with the payment status recorded for it
// (RecordPayment; "" when none), in one statement: what the checkout's
// settle step decides by.
func OrderToSettle(ctx context.Context, q dbos.Querier, orderID int64) (o shop.Order, received string, err error) {
	o, err = scanOrder(extraColumn{row: q.QueryRow(ctx, `
		SELECT o.order_id, o.checkout_key, o.shopper, o.product_id, o.price_cents, o.order_status, o.progress_remaining, o.created_at, o.last_update_time,
		       COALESCE(p.payment_status, '')
		FROM orders o LEFT JOIN payments_received p ON p.checkout_key = o.checkout_key
		WHERE o.order_id = $1`, orderID), dest: &received})
	if IsNoRows(err) {
		return o, "", shop.Errorf(shop.NotFound, "there is no order %d", orderID)
	}
	if err != nil {
		return o, "", fmt.Errorf("read order %d to settle it: %w", orderID, err)
	}
	return o, received, nil
}

// PaymentsIn returns those of keys whose checkout has something to settle
// its order by: the order is no longer PENDING (a webhook settled it, or an
// operator cancelled it), or a payment status was recorded for it
// (RecordPayment). One statement for many keys: the checkouts' periodic look
// (internal/paywait) asks it for every checkout waiting in the process, a
// page at a time, and a checkout that did not create its order in this
// execution asks it for itself before it waits.
func (db *DB) PaymentsIn(ctx context.Context, keys []string) ([]string, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var list any = keys // Postgres: a text[]
	in := `= ANY($1)`
	if !db.Dialect.Postgres {
		b, err := json.Marshal(keys)
		if err != nil {
			return nil, err
		}
		list, in = string(b), `IN (SELECT value FROM json_each($1))`
	}
	rows, err := db.q.Query(ctx, `SELECT o.checkout_key FROM orders o WHERE o.checkout_key `+in+`
		AND (o.order_status <> $2 OR EXISTS (SELECT 1 FROM payments_received p WHERE p.checkout_key = o.checkout_key))`,
		list, shop.StatusPending)
	if err != nil {
		return nil, fmt.Errorf("look for the payments of %d checkouts: %w", len(keys), err)
	}
	defer rows.Close()
	var found []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("look for payments: %w", err)
		}
		found = append(found, k)
	}
	return found, rows.Err()
}
