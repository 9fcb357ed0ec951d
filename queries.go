package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"widget-store/views"
)

// Reads and operator writes outside workflows. Workflow writes are in steps.go.

func (a *app) product(ctx context.Context) (views.Product, error) {
	var p views.Product
	err := a.db.QueryRow(ctx, `SELECT product_id, name, description, price_cents, inventory FROM products WHERE product_id = $1`, productID).
		Scan(&p.ID, &p.Name, &p.Description, &p.PriceCents, &p.Inventory)
	if err != nil {
		return p, fmt.Errorf("read product: %w", err)
	}
	return p, nil
}

const orderColumns = `order_id, checkout_key, product_id, price_cents, order_status, progress_remaining, created_at, last_update_time`

type scanner interface{ Scan(dest ...any) error }

func scanOrder(s scanner) (views.Order, error) {
	var o views.Order
	var created, updated int64
	err := s.Scan(&o.ID, &o.Key, &o.ProductID, &o.PriceCents, &o.Status, &o.ProgressRemaining, &created, &updated)
	o.CreatedAt, o.LastUpdate = time.UnixMilli(created), time.UnixMilli(updated)
	return o, err
}

func (a *app) orderByID(ctx context.Context, id int64) (views.Order, error) {
	o, err := scanOrder(a.db.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE order_id = $1`, id))
	if isNoRows(err) {
		return o, errorf(http.StatusNotFound, "there is no order %d", id)
	}
	if err != nil {
		return o, fmt.Errorf("read order %d: %w", id, err)
	}
	return o, nil
}

// orderByKey finds the order a checkout key (which is also its payment id) made.
func (a *app) orderByKey(ctx context.Context, key string) (views.Order, error) {
	o, err := scanOrder(a.db.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE checkout_key = $1`, key))
	if isNoRows(err) {
		return o, errorf(http.StatusNotFound, "unknown payment id %s", key)
	}
	if err != nil {
		return o, fmt.Errorf("read order for key: %w", err)
	}
	return o, nil
}

// recentOrders lists the newest orders, of one shopper when shopper != "".
func (a *app) recentOrders(ctx context.Context, shopper string, limit int) ([]views.Order, error) {
	q := `SELECT ` + orderColumns + ` FROM orders ORDER BY order_id DESC LIMIT $1`
	args := []any{limit}
	if shopper != "" {
		q = `SELECT ` + orderColumns + ` FROM orders WHERE shopper = $1 ORDER BY order_id DESC LIMIT $2`
		args = []any{shopper, limit}
	}
	rows, err := a.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	var out []views.Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// recordLatePayment notes a payment that came for a cancelled order, once
// per payment id, so it can be refunded.
func (a *app) recordLatePayment(ctx context.Context, pid string, orderID int64) error {
	res, err := a.db.Exec(ctx, `INSERT INTO late_payments (payment_id, order_id, received_at) VALUES ($1, $2, $3) ON CONFLICT (payment_id) DO NOTHING`,
		pid, orderID, a.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("record late payment: %w", err)
	}
	// Log the first delivery only: a retried webhook is not a second refund.
	if n, err := res.RowsAffected(); err == nil && n == 1 {
		a.logger.Warn("payment for a cancelled order recorded for refund", "payment_id", pid, "order_id", orderID)
	}
	return nil
}

// restock sets the stock to n: an operator action, not part of any workflow.
func (a *app) restock(ctx context.Context, n int) error {
	if _, err := a.db.Exec(ctx, `UPDATE products SET inventory = $1 WHERE product_id = $2`, n, productID); err != nil {
		return fmt.Errorf("restock: %w", err)
	}
	a.logger.Info("restocked", "inventory", n)
	return nil
}

// latePayments lists the payments recorded for refund, oldest first.
func (a *app) latePayments(ctx context.Context) ([]latePaymentJSON, error) {
	rows, err := a.db.Query(ctx, `SELECT payment_id, order_id, received_at FROM late_payments ORDER BY received_at, payment_id`)
	if err != nil {
		return nil, fmt.Errorf("list late payments: %w", err)
	}
	defer rows.Close()
	out := []latePaymentJSON{}
	for rows.Next() {
		var p latePaymentJSON
		var ms int64
		if err := rows.Scan(&p.PaymentID, &p.OrderID, &ms); err != nil {
			return nil, fmt.Errorf("list late payments: %w", err)
		}
		p.ReceivedAt = time.UnixMilli(ms).UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}

// What the first checkout step committed for a key.
const (
	stepOneNotYet  = iota // nothing yet: the checkout has not run its first step (or never existed)
	stepOneOrder          // it reserved a unit and made an order
	stepOneSoldOut        // it found no stock
)

// checkoutState reads, in one query, what the first step of checkout key
// committed: its order, or its sold-out record.
func (a *app) checkoutState(ctx context.Context, key string) (int, error) {
	var hasOrder bool
	err := a.db.QueryRow(ctx, `
		SELECT TRUE FROM orders WHERE checkout_key = $1
		UNION ALL
		SELECT FALSE FROM sold_out_checkouts WHERE checkout_key = $1`, key).Scan(&hasOrder)
	switch {
	case isNoRows(err):
		return stepOneNotYet, nil
	case err != nil:
		return stepOneNotYet, fmt.Errorf("read checkout %s: %w", key, err)
	case hasOrder:
		return stepOneOrder, nil
	}
	return stepOneSoldOut, nil
}
