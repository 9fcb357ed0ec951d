package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/durable"
	"widget-store/internal/legs"
	"widget-store/internal/metrics"
	"widget-store/internal/payment"
	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// Every database write a workflow makes (but payment-record's, which is the
// payment's, in internal/payment), and the few helpers through which the
// workflows (workflow.go) run their steps and one another. Each step
// returns the function dbos.RunAsTransaction runs, in one transaction with
// the step's checkpoint on the handle DBOS itself uses (after a crash a step
// either happened, and is replayed from its checkpoint, or did not, and runs
// again, never twice); the workflow runs it under its durable name with step,
// below. The one exception is a dispatch leg (dispatchLeg), an idempotent
// write that is no step, for the reason given there.

// step runs the transactional step name of workflow wf: fn, by
// dbos.RunAsTransaction on the store's handle; then it passes the step's
// crash point (CRASH_AT=wf:name). call is the same for a step that calls
// something other than the database (dbos.RunAsStep, with opts). Both time
// the step's work for the metrics (widget_step_duration_seconds{workflow=wf,
// step=name}) each time it runs; a step replayed from its checkpoint does not
// run, and is not timed. Both are internal/durable's, which the payment's
// steps (internal/payment) run theirs through too.
func step[R any](ctx dbos.Context, w *workflows, wf, name string, fn func(context.Context, dbos.Tx) (R, error)) (R, error) {
	return durable.Tx(ctx, w.run, wf, name, fn)
}

// call is step for a step outside the database.
func call[R any](ctx dbos.Context, w *workflows, wf, name string, fn func(context.Context) (R, error), opts ...dbos.StepOption) (R, error) {
	return durable.Call(ctx, w.run, wf, name, fn, opts...)
}

// start starts (or, under an ID already used, finds) workflow fn with input
// in under workflow ID id, and with wait waits for its result. It runs on the
// store's root DBOS context, never a request's: a request's context, once
// cancelled, would durably cancel the workflow.
func start[P, R any](w *workflows, fn dbos.Workflow[P, R], in P, id string, wait bool) (R, error) {
	return startOn(w.dctx, w, fn, in, id, wait)
}

// startOn is start on dctx, the root context or one derived from it with a
// value only (critpath.DBOS), never a request's.
func startOn[P, R any](dctx dbos.Context, w *workflows, fn dbos.Workflow[P, R], in P, id string, wait bool) (R, error) {
	var out R
	h, err := dbos.RunWorkflow(dctx, fn, in, dbos.WithWorkflowID(id))
	if err == nil && wait {
		out, err = h.GetResult()
	}
	if err != nil {
		return out, fmt.Errorf("workflow %s: %w", id, err)
	}
	return out, nil
}

// crashAfter exits the process if CRASH_AT names point of workflow wf
// (internal/crashpoint): a step, the child workflow a step starts, or a
// hand-off.
func (w *workflows) crashAfter(wf, point string) { w.run.CrashAfter(wf, point) }

// steps makes the steps; the workflows hold one.
type steps struct {
	metrics    *metrics.Metrics
	now        func() time.Time
	payTimeout time.Duration // PAYMENT_TIMEOUT: the order's payment window
	legs       *legs.Writer  // writes dispatch legs in batches; nil writes each on its own
}

// reserved is the reserve step's checkpointed output.
type reserved struct {
	OrderID int64 `json:"order_id"` // 0 when sold out
	// PayByMs is when the payment window closes (Unix ms). Being part of the
	// checkpoint, it makes the payment wait durable without a step of its own.
	PayByMs int64 `json:"pay_by_ms"`
	// CreatedAtMs is when the order was created (Unix ms): the hand-off tells
	// a new order from a replayed one by it. 0 in checkpoints of the
	// previous build, which then count as replayed (the safe side).
	CreatedAtMs int64 `json:"created_at_ms,omitempty"`
	// Existing reports an order this key had made before this execution
	// began: the checkout's DBOS records were deleted (retention, or an
	// operator's dbos workflow delete) and its client asked again. Status is
	// that order's status; the checkout answers from it and changes nothing.
	Existing bool        `json:"existing,omitempty"`
	Status   shop.Status `json:"status,omitempty"`
}

// payment is the order whose payment checkout key opens (internal/payment).
func (r reserved) payment(key string) payment.Order {
	return payment.Order{Key: key, OrderID: r.OrderID, CreatedAtMs: r.CreatedAtMs, PayByMs: r.PayByMs, Replayed: r.Existing}
}

// reserve holds every line of the cart (one unit of product 1 without one)
// and creates the PENDING order with its lines, at the products' prices now,
// in one transaction. If any line is short it holds nothing: it records the
// cart and the stock it found (sold_out_checkouts, sold_out_lines: they tell
// a retried checkout, its payment page and the answer which lines were
// short) and returns OrderID 0.
//
// Each line is a conditional UPDATE of its product's row, in product_id
// order (the cart is sorted by the checkout's start): on Postgres each row
// is locked in that order, so two carts never wait on each other in a cycle.
// A short line's UPDATE matches nothing; the lines already taken are given
// back in the same transaction, which then commits only the sold-out record.
//
// A key that already made an order or found a line short takes nothing:
// DBOS runs a workflow ID once only while it keeps the workflow's records,
// and retention (internal/retention) or an operator deletes them, after
// which the same key starts a new execution. The first line's UPDATE checks
// for both in the same statement (two index lookups, no extra round trip),
// and only when it took nothing does a second read tell which.
func (s steps) reserve(key, shopper, client string, cart []shop.Line) func(context.Context, dbos.Tx) (reserved, error) {
	if len(cart) == 0 {
		cart = shop.DefaultCart() // the reference store's checkout, and every input of the previous build
	}
	return func(ctx context.Context, tx dbos.Tx) (reserved, error) {
		lines := make([]shop.Line, 0, len(cart))
		var short []shop.Shortage
		for i, l := range cart {
			q := `UPDATE products SET inventory = inventory - $1 WHERE product_id = $2 AND inventory >= $1`
			if i == 0 {
				q += ` AND NOT EXISTS (SELECT 1 FROM orders WHERE checkout_key = $3)
				AND NOT EXISTS (SELECT 1 FROM sold_out_checkouts WHERE checkout_key = $3)`
			}
			q += ` RETURNING price_cents`
			args := []any{l.Quantity, l.ProductID}
			if i == 0 {
				args = append(args, key)
			}
			err := tx.QueryRow(ctx, q, args...).Scan(&l.UnitPriceCents)
			switch {
			case err == nil:
				lines = append(lines, l)
				continue
			case !store.IsNoRows(err):
				return reserved{}, fmt.Errorf("reserve product %d: %w", l.ProductID, err)
			case i == 0:
				if r, done, err := s.seenBefore(ctx, tx, key); done || err != nil {
					return r, err
				}
			}
			var available int
			if err := tx.QueryRow(ctx, `SELECT inventory FROM products WHERE product_id = $1`, l.ProductID).Scan(&available); err != nil && !store.IsNoRows(err) {
				return reserved{}, fmt.Errorf("read the stock of product %d: %w", l.ProductID, err)
			}
			short = append(short, shop.Shortage{ProductID: l.ProductID, Quantity: l.Quantity, Available: available})
		}
		now := s.now().UnixMilli()
		if len(short) > 0 {
			return reserved{}, s.recordShort(ctx, tx, key, cart, lines, short, now)
		}
		var orderID int64
		err := tx.QueryRow(ctx, `
			INSERT INTO orders (checkout_key, shopper, product_id, price_cents, order_status, progress_remaining, created_at, last_update_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
			RETURNING order_id`,
			key, shopper, lines[0].ProductID, shop.Total(lines), shop.StatusPending, shop.DispatchLegs, now).Scan(&orderID)
		if err != nil {
			return reserved{}, fmt.Errorf("create order: %w", err)
		}
		for _, l := range lines {
			if _, err := tx.Exec(ctx, `INSERT INTO order_lines (order_id, product_id, quantity, unit_price_cents) VALUES ($1, $2, $3, $4)`,
				orderID, l.ProductID, l.Quantity, l.UnitPriceCents); err != nil {
				return reserved{}, fmt.Errorf("record the lines of order %d: %w", orderID, err)
			}
		}
		if client != "" { // the hold limit is on: remember where the hold came from
			if _, err := tx.Exec(ctx, `INSERT INTO hold_clients (order_id, client, created_at) VALUES ($1, $2, $3)`, orderID, client, now); err != nil {
				return reserved{}, fmt.Errorf("record the client: %w", err)
			}
		}
		s.metrics.Checkout(metrics.CheckoutStarted)
		return reserved{OrderID: orderID, PayByMs: now + s.payTimeout.Milliseconds(), CreatedAtMs: now}, nil
	}
}

// seenBefore is the reserve's second read, when its first UPDATE took
// nothing: done when this key made an order (Existing) or found a line short
// before this execution; otherwise the first line was short, and the reserve
// goes on.
func (s steps) seenBefore(ctx context.Context, tx dbos.Tx, key string) (r reserved, done bool, err error) {
	o, err := store.OrderByKey(ctx, tx, key)
	if err == nil {
		return reserved{OrderID: o.ID, CreatedAtMs: o.CreatedAt.UnixMilli(), Existing: true, Status: o.Status}, true, nil
	}
	if shop.KindOf(err) != shop.NotFound {
		return reserved{}, true, err
	}
	var one int
	err = tx.QueryRow(ctx, `SELECT 1 FROM sold_out_checkouts WHERE checkout_key = $1`, key).Scan(&one)
	if store.IsNoRows(err) {
		return reserved{}, false, nil
	}
	if err == nil {
		s.metrics.Checkout(metrics.CheckoutSoldOut)
	}
	return reserved{}, true, err
}

// recordShort gives back the lines taken, and records the sold-out cart:
// every line with the stock the reserve found (a taken line had enough).
func (s steps) recordShort(ctx context.Context, tx dbos.Tx, key string, cart, taken []shop.Line, short []shop.Shortage, now int64) error {
	for _, l := range taken {
		if _, err := tx.Exec(ctx, `UPDATE products SET inventory = inventory + $1 WHERE product_id = $2`, l.Quantity, l.ProductID); err != nil {
			return fmt.Errorf("give back product %d: %w", l.ProductID, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO sold_out_checkouts (checkout_key, at) VALUES ($1, $2) ON CONFLICT (checkout_key) DO NOTHING`, key, now); err != nil {
		return fmt.Errorf("record sold out: %w", err)
	}
	found := map[int]int{}
	for _, sh := range short {
		found[sh.ProductID] = sh.Available
	}
	for _, l := range cart {
		available, ok := found[l.ProductID]
		if !ok {
			available = l.Quantity // taken: there was enough
		}
		if _, err := tx.Exec(ctx, `INSERT INTO sold_out_lines (checkout_key, product_id, quantity, available) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			key, l.ProductID, l.Quantity, available); err != nil {
			return fmt.Errorf("record the sold-out cart: %w", err)
		}
	}
	s.metrics.Checkout(metrics.CheckoutSoldOut)
	return nil
}

// markPaid and cancel are the last steps of a checkout the message build
// started (workflow.go, settleByMessage); this build's checkouts run settle.
//
// markPaid follows a payment the checkout received: the order PAID, and
// when (Unix ms). The webhook settled the order itself in the transaction
// that sent the payment (internal/paywait, Deliver), so the order is
// normally PAID already and this step only reads when; an order still
// PENDING (a payment sent by the previous build, which left the move to this
// step) is moved here. An order CANCELLED meanwhile (an operator's
// Cancel-and-refund came between the payment and this step, and refunds it)
// returns 0: the checkout ends cancelled, nothing ships. The output stays
// the previous build's (a time, never 0 then), so its checkpoints replay.
func (s steps) markPaid(orderID int64) func(context.Context, dbos.Tx) (int64, error) {
	return func(ctx context.Context, tx dbos.Tx) (int64, error) {
		o, err := store.OrderByID(ctx, tx, orderID) // one read on the common path: the webhook settled it
		if err != nil {
			return 0, err
		}
		if o.Status == shop.StatusPending {
			now := s.now().UnixMilli()
			moved, err := store.MoveOrder(ctx, tx, orderID, shop.StatusPending, shop.StatusPaid, now)
			if err != nil || moved {
				if moved {
					s.metrics.Checkout(metrics.CheckoutPaid)
				}
				return now, err
			}
			// On Postgres a cancel can commit between the read and the move:
			// follow it.
			if o, err = store.OrderByID(ctx, tx, orderID); err != nil {
				return 0, err
			}
		}
		if o.Status == shop.StatusCancelled {
			return 0, nil
		}
		return o.LastUpdate.UnixMilli(), nil // PAID by the webhook then (or DISPATCHED since, by a redispatch: its dispatch finds it done)
	}
}

// cancelOutcome is the cancel step's checkpointed output. PaidAtMs is 0 when
// the order is cancelled (by this step, or before it: a declined payment the
// webhook settled, an operator's cancel); else a payment settled it PAID at
// that time before this step could cancel it (it came as the payment window
// closed), and the checkout ships it.
type cancelOutcome struct {
	PaidAtMs int64 `json:"paid_at_ms,omitempty"`
}

// UnmarshalJSON also reads the previous build's checkpoint of the step, the
// time of the cancel (a bare number): the order was cancelled then.
func (c *cancelOutcome) UnmarshalJSON(b []byte) error {
	var at int64
	if json.Unmarshal(b, &at) == nil {
		*c = cancelOutcome{}
		return nil
	}
	type plain cancelOutcome // without this method
	return json.Unmarshal(b, (*plain)(c))
}

// cancel cancels the order, PENDING, and returns its units to the stock, in
// one transaction; payment is why: shop.PaymentFailed or
// shop.PaymentTimedOut (for the metrics). The order row decides, as the
// webhook's settling does (internal/paywait, Deliver): an order already
// CANCELLED (a decline the webhook settled) stays so; one a payment settled
// PAID first is not cancelled, and the outcome says when it was paid.
func (s steps) cancel(orderID int64, payment string) func(context.Context, dbos.Tx) (cancelOutcome, error) {
	return func(ctx context.Context, tx dbos.Tx) (cancelOutcome, error) {
		now := s.now().UnixMilli()
		moved, err := store.CancelAndRestock(ctx, tx, orderID, shop.StatusPending, now)
		if err != nil {
			return cancelOutcome{}, err
		}
		if moved {
			outcome := metrics.CheckoutDeclined
			if payment == shop.PaymentTimedOut {
				outcome = metrics.CheckoutTimedOut
			}
			s.metrics.Checkout(outcome)
			return cancelOutcome{}, nil
		}
		o, err := store.OrderByID(ctx, tx, orderID)
		if err != nil || o.Status == shop.StatusCancelled {
			return cancelOutcome{}, err
		}
		return cancelOutcome{PaidAtMs: o.LastUpdate.UnixMilli()}, nil
	}
}

// settlement is the settle step's checkpointed output.
type settlement struct {
	// PaidAtMs is when the order was paid (Unix ms); 0 when it ends
	// cancelled.
	PaidAtMs int64 `json:"paid_at_ms,omitempty"`
	// Outcome is how: shop.PaymentPaid; shop.PaymentFailed (declined, or
	// found cancelled: a decline the webhook settled, an operator's cancel);
	// shop.PaymentTimedOut (this step cancelled it when the window had
	// closed). "" is "nothing to decide by yet": the order is unchanged and
	// the checkout waits again.
	Outcome string `json:"outcome,omitempty"`
}

// settle settles the checkout's order from its row, in one transaction with
// the step's checkpoint: what replaces the payment message and the
// mark-paid or cancel step of the build before (internal/paywait's package
// comment says why). It reads the order with any status recorded for it
// (store.OrderToSettle), and
//   - PAID (or DISPATCHED since, by a redispatch): the webhook settled it;
//     it returns when;
//   - CANCELLED: the webhook settled a decline, or an operator cancelled it;
//   - PENDING with a status recorded (a payment that came after the window,
//     or while the checkout was not alive in DBOS): paid moves it PAID,
//     failed cancels it and returns its units;
//   - PENDING, nothing recorded, and the window (payByMs) closed: it
//     cancels it and returns its units, timed out;
//   - PENDING, nothing recorded, the window still open (a kick that was
//     wrong): it changes nothing and says so.
//
// opened false (the provider opened no payment: nobody can pay) cancels a
// PENDING order at once, as declined. The moves are conditional on PENDING,
// so whatever committed first wins (a webhook, an operator's cancel), and
// the step follows it.
func (s steps) settle(orderID, payByMs int64, opened bool) func(context.Context, dbos.Tx) (settlement, error) {
	return func(ctx context.Context, tx dbos.Tx) (settlement, error) {
		o, received, err := store.OrderToSettle(ctx, tx, orderID)
		if err != nil {
			return settlement{}, err
		}
		if o.Status == shop.StatusPending {
			now := s.now().UnixMilli()
			decide := received
			switch {
			case !opened:
				decide = shop.PaymentFailed
			case decide == "" && now < payByMs:
				return settlement{}, nil // nothing to decide by yet
			case decide == "":
				decide = shop.PaymentTimedOut
			}
			var moved bool
			if decide == shop.PaymentPaid {
				moved, err = store.MoveOrder(ctx, tx, orderID, shop.StatusPending, shop.StatusPaid, now)
			} else {
				moved, err = store.CancelAndRestock(ctx, tx, orderID, shop.StatusPending, now)
			}
			if err != nil {
				return settlement{}, err
			}
			if moved {
				return s.settled(decide, now), nil
			}
			// On Postgres a webhook or an operator's cancel can commit
			// between the read and the move: follow it.
			if o, err = store.OrderByID(ctx, tx, orderID); err != nil {
				return settlement{}, err
			}
		}
		switch o.Status {
		case shop.StatusPending:
			return settlement{}, fmt.Errorf("settle order %d: still PENDING after a move conditional on it matched nothing", orderID)
		case shop.StatusCancelled:
			return settlement{Outcome: shop.PaymentFailed}, nil
		default:
			return settlement{PaidAtMs: o.LastUpdate.UnixMilli(), Outcome: shop.PaymentPaid}, nil
		}
	}
}

// settled is the settle step's outcome when it moved the order itself, by
// payment status decide, at nowMs, counted in the metrics.
func (s steps) settled(decide string, nowMs int64) settlement {
	switch decide {
	case shop.PaymentPaid:
		s.metrics.Checkout(metrics.CheckoutPaid)
		return settlement{PaidAtMs: nowMs, Outcome: decide}
	case shop.PaymentTimedOut:
		s.metrics.Checkout(metrics.CheckoutTimedOut)
	default:
		s.metrics.Checkout(metrics.CheckoutDeclined)
	}
	return settlement{Outcome: decide}
}

// release cancels the order of a checkout that will never finish it, and
// returns its unit, in one transaction; released is false when the order was
// no longer PENDING (its checkout did finish it after all).
func (s steps) release(orderID int64) func(context.Context, dbos.Tx) (bool, error) {
	return func(ctx context.Context, tx dbos.Tx) (bool, error) {
		return store.CancelAndRestock(ctx, tx, orderID, shop.StatusPending, s.now().UnixMilli())
	}
}

// dispatchLeg writes one leg of a dispatch: the order's progress_remaining
// becomes remaining, and at 0 the order is DISPATCHED. It is not a DBOS step
// but an idempotent write (see dispatch in workflow.go): a set, never a
// decrement, and only downwards, so running it again (a recovered dispatch,
// or a stale execution of one that another instance took over) changes
// nothing. Zero rows matched means it was written before; an order that is
// neither PAID nor DISPATCHED, or already behind this leg, is an error that
// fails the dispatch.
//
// A failed write (the database restarting, a connection cut) is retried
// until it succeeds or the workflow stops: DBOS retries its own steps'
// transactions the same way, and a dispatch must not end in ERROR with its
// order left PAID because Postgres blinked.
//
// dispatched reports an order now DISPATCHED (by this leg, or before it: a
// second dispatch of the same order finds its work done).
//
// The write goes into the batch of legs due now (internal/legs: one
// statement and one commit for them all, the same conditional UPDATE), and
// dispatchLeg returns after its commit. A leg the batch did not write (written
// before, or an order no leg may write) takes the single-leg path below,
// which reads the row to tell which.
func (s steps) dispatchLeg(ctx context.Context, db dbos.Querier, logger *slog.Logger, orderID int64, remaining int) (dispatched bool, err error) {
	defer s.metrics.Step(shop.DispatchWorkflow, shop.StepDispatchLeg, time.Now())
	for pause := 50 * time.Millisecond; ; pause = min(2*pause, 2*time.Second) {
		dispatched, done, err := s.writeLeg(ctx, db, orderID, remaining)
		if done || err == nil {
			return dispatched, err
		}
		logger.Warn("dispatch: writing a leg failed; retrying", "order_id", orderID, "remaining", remaining, "err", err)
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(pause):
		}
	}
}

// writeLeg is one attempt at a leg. done reports an outcome that trying again
// cannot change: success, or the order in a state no leg may write.
func (s steps) writeLeg(ctx context.Context, db dbos.Querier, orderID int64, remaining int) (dispatched, done bool, err error) {
	if s.legs != nil {
		written, err := s.legs.Write(ctx, orderID, remaining)
		if err != nil {
			return false, false, err
		}
		if written {
			return remaining == 0, true, nil
		}
	}
	status := shop.StatusPaid
	if remaining == 0 {
		status = shop.StatusDispatched
	}
	res, err := db.Exec(ctx, `
		UPDATE orders SET progress_remaining = $1, order_status = $2, last_update_time = $3
		WHERE order_id = $4 AND order_status = $5 AND progress_remaining > $1`,
		remaining, status, s.now().UnixMilli(), orderID, shop.StatusPaid)
	if err != nil {
		return false, false, fmt.Errorf("dispatch leg: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return remaining == 0, err == nil, err
	}
	var cur shop.Status
	var progress int
	if err := db.QueryRow(ctx, `SELECT order_status, progress_remaining FROM orders WHERE order_id = $1`, orderID).Scan(&cur, &progress); err != nil {
		return false, false, fmt.Errorf("dispatch leg: read order %d: %w", orderID, err)
	}
	if progress > remaining || (cur != shop.StatusPaid && cur != shop.StatusDispatched) {
		return false, true, fmt.Errorf("dispatch leg: order %d is %s with %d legs to go, cannot go to %d", orderID, cur, progress, remaining)
	}
	return cur == shop.StatusDispatched, true, nil // written before
}

// recordRefund records that the provider refunded late payment pid as
// refundID, in one transaction with the step's checkpoint, and returns when
// (Unix ms). ON CONFLICT DO NOTHING only guards against a second refund
// workflow of the same payment, which its fixed workflow ID (one per
// payment) rules out: with the checkpoint in the same transaction, the step
// itself never commits twice.
func (s steps) recordRefund(pid, refundID string) func(context.Context, dbos.Tx) (int64, error) {
	return func(ctx context.Context, tx dbos.Tx) (int64, error) {
		now := s.now().UnixMilli()
		if _, err := tx.Exec(ctx, `INSERT INTO refunds (payment_id, provider_refund_id, refunded_at) VALUES ($1, $2, $3) ON CONFLICT (payment_id) DO NOTHING`,
			pid, refundID, now); err != nil {
			return 0, fmt.Errorf("record refund of %s: %w", pid, err)
		}
		return now, nil
	}
}

// cancelled is the cancel-order step's checkpointed output.
type cancelled struct {
	// Cancelled reports that this step cancelled the order; false when it
	// was already final (Status says how).
	Cancelled bool        `json:"cancelled"`
	Status    shop.Status `json:"status"`
	WasPaid   bool        `json:"was_paid"` // it was PAID: its payment is now a late payment, to refund
	Key       string      `json:"key"`
	Price     int64       `json:"price_cents"`
}

// cancelOrder is an operator's cancel of an unfinished order, in one
// transaction: the order CANCELLED, its unit back, and, if it was paid, its
// payment recorded as a late payment (the refund workflow pays it back). It
// changes nothing for an order that is final, or that changed between the
// read and the write (a dispatch's last leg): Status says what it is now.
func (s steps) cancelOrder(orderID int64) func(context.Context, dbos.Tx) (cancelled, error) {
	return func(ctx context.Context, tx dbos.Tx) (cancelled, error) {
		o, err := store.OrderByID(ctx, tx, orderID)
		if err != nil {
			return cancelled{}, err
		}
		out := cancelled{Status: o.Status, Key: o.Key, Price: o.PriceCents}
		if o.Status != shop.StatusPending && o.Status != shop.StatusPaid {
			return out, nil
		}
		now := s.now().UnixMilli()
		moved, err := store.CancelAndRestock(ctx, tx, orderID, o.Status, now)
		if err != nil {
			return cancelled{}, err
		}
		if !moved { // it moved on under us: say what it is now
			o, err = store.OrderByID(ctx, tx, orderID)
			out.Status = o.Status
			return out, err
		}
		if o.Status == shop.StatusPaid {
			// ON CONFLICT: the payment id is the key, recorded once; a
			// late payment for this key cannot exist yet (the order was PAID).
			if _, err := tx.Exec(ctx, `INSERT INTO late_payments (payment_id, order_id, received_at) VALUES ($1, $2, $3) ON CONFLICT (payment_id) DO NOTHING`,
				o.Key, orderID, now); err != nil {
				return cancelled{}, fmt.Errorf("record the payment for refund: %w", err)
			}
		}
		out.Cancelled, out.Status, out.WasPaid = true, shop.StatusCancelled, o.Status == shop.StatusPaid
		return out, nil
	}
}

// log is the logger for a line about a workflow: the store's logger (which
// carries executor_id) plus the workflow's ID and the order it works on.
func (w *workflows) log(ctx dbos.Context, orderID int64) *slog.Logger { return w.run.Log(ctx, orderID) }
