package store

import (
	"cmp"
	"context"
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
