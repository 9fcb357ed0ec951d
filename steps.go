package main

import (
	"context"
	"fmt"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
)

// The transactional steps of the workflows. Each runs inside
// dbos.RunAsTransaction, on the handle DBOS itself uses, so the writes and the
// step's checkpoint commit in one transaction: after a crash a step either
// happened (and is replayed from its checkpoint) or did not (and runs again).
//
// DBOS names a step after its function, and checks the name when it replays a
// checkpoint. These are methods of small value types, so the names
// ("main.checkoutTx.reserveAndCreateOrder-fm", …) are stable and readable.

// productID is the store's one product.
const productID = 1

// checkoutTx carries what the first checkout step needs.
type checkoutTx struct {
	a       *app
	key     string
	shopper string
	ran     *bool // set when the step runs, rather than replays its checkpoint
}

// reserved is the first checkout step's checkpointed output.
type reserved struct {
	OrderID int64 `json:"order_id"` // 0 when sold out
	// PayByMs is when the payment window closes (Unix ms). Being part of the
	// checkpoint, it makes the payment wait durable without a step of its own.
	PayByMs int64 `json:"pay_by_ms"`
}

// reserveAndCreateOrder takes one unit of stock and creates the PENDING
// order, in one transaction. It returns the new order's id, or 0 when the
// product is sold out (then only the sold-out record is written).
func (c checkoutTx) reserveAndCreateOrder(ctx context.Context, tx dbos.Tx) (reserved, error) {
	*c.ran = true
	defer c.a.metrics.step("checkout", "reserve", time.Now())
	res, err := tx.Exec(ctx, `UPDATE products SET inventory = inventory - 1 WHERE product_id = $1 AND inventory > 0`, productID)
	if err != nil {
		return reserved{}, fmt.Errorf("reserve: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return reserved{}, err
	}
	now := c.a.now().UnixMilli()
	if n == 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO sold_out_checkouts (checkout_key, at) VALUES ($1, $2) ON CONFLICT (checkout_key) DO NOTHING`, c.key, now); err != nil {
			return reserved{}, fmt.Errorf("record sold out: %w", err)
		}
		c.a.metrics.checkout(checkoutSoldOut)
		return reserved{}, nil
	}
	var orderID int64
	err = tx.QueryRow(ctx, `
		INSERT INTO orders (checkout_key, shopper, product_id, price_cents, order_status, progress_remaining, created_at, last_update_time)
		SELECT $1, $2, product_id, price_cents, 0, $3, $4, $4 FROM products WHERE product_id = $5
		RETURNING order_id`,
		c.key, c.shopper, dispatchSteps, now, productID).Scan(&orderID)
	if err != nil {
		return reserved{}, fmt.Errorf("create order: %w", err)
	}
	c.a.metrics.checkout(checkoutStarted)
	return reserved{OrderID: orderID, PayByMs: now + c.a.cfg.PayTimeout.Milliseconds()}, nil
}

// orderTx carries the order a later checkout step works on.
type orderTx struct {
	a       *app
	orderID int64
	// paymentStatus is why cancel cancels ("failed" or "timeout"), for metrics.
	paymentStatus string
}

// markPaid moves the order from PENDING to PAID and returns when (Unix ms).
func (o orderTx) markPaid(ctx context.Context, tx dbos.Tx) (int64, error) {
	defer o.a.metrics.step("checkout", "mark_paid", time.Now())
	now := o.a.now().UnixMilli()
	res, err := tx.Exec(ctx, `UPDATE orders SET order_status = $1, last_update_time = $2 WHERE order_id = $3 AND order_status = $4`,
		statusPaid, now, o.orderID, statusPending)
	if err != nil {
		return 0, err
	}
	if err := expectOneRow(res, o.orderID, "mark paid"); err != nil {
		return 0, err
	}
	o.a.metrics.checkout(checkoutPaid)
	return now, nil
}

// cancel moves the order from PENDING to CANCELLED and returns its unit of
// stock, in one transaction.
func (o orderTx) cancel(ctx context.Context, tx dbos.Tx) (int64, error) {
	defer o.a.metrics.step("checkout", "cancel", time.Now())
	now := o.a.now().UnixMilli()
	res, err := tx.Exec(ctx, `UPDATE orders SET order_status = $1, last_update_time = $2 WHERE order_id = $3 AND order_status = $4`,
		statusCancelled, now, o.orderID, statusPending)
	if err != nil {
		return 0, err
	}
	if err := expectOneRow(res, o.orderID, "cancel"); err != nil {
		return 0, err
	}
	res, err = tx.Exec(ctx, `UPDATE products SET inventory = inventory + 1 WHERE product_id = (SELECT product_id FROM orders WHERE order_id = $1)`, o.orderID)
	if err != nil {
		return 0, err
	}
	if err := expectOneRow(res, o.orderID, "return stock"); err != nil {
		return 0, err
	}
	o.a.metrics.checkout(cancelOutcome(o.paymentStatus))
	return now, nil
}

// progressTx is one leg of a dispatch.
type progressTx struct {
	a         *app
	orderID   int64
	remaining int
}

// apply sets progress_remaining (a set, not a decrement, so it is idempotent
// even outside DBOS's exactly-once guarantee), marks the order DISPATCHED at
// 0, and returns when the next leg is due (Unix ms): the checkpoint of this
// transaction is what makes the dispatch's waits durable.
func (p progressTx) apply(ctx context.Context, tx dbos.Tx) (int64, error) {
	defer p.a.metrics.step("dispatch", "progress", time.Now())
	now := p.a.now()
	status := statusPaid
	if p.remaining == 0 {
		status = statusDispatched
	}
	res, err := tx.Exec(ctx, `
		UPDATE orders SET progress_remaining = $1, order_status = $2, last_update_time = $3
		WHERE order_id = $4 AND order_status = $5 AND progress_remaining > $1`,
		p.remaining, status, now.UnixMilli(), p.orderID, statusPaid)
	if err != nil {
		return 0, err
	}
	if err := expectOneRow(res, p.orderID, "dispatch progress"); err != nil {
		return 0, err
	}
	return now.Add(time.Second).UnixMilli(), nil
}

// expectOneRow turns a transition that matched no order into an error. With
// exactly-once steps it cannot happen; if it ever does, the workflow stops
// with this error instead of silently skipping a state change.
func expectOneRow(res dbos.Result, orderID int64, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("%s: order %d matched %d rows, want 1", what, orderID, n)
	}
	return nil
}
