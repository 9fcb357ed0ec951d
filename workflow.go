package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/crashpoint"
	"widget-store/internal/critpath"
	"widget-store/internal/durable"
	"widget-store/internal/payment"
	"widget-store/internal/paywait"
	"widget-store/internal/periodic"
	"widget-store/internal/provider"
	"widget-store/internal/reconcile"
	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// The store's durable workflows: checkout and dispatch, the purchase; release
// and refund, which make good what a checkout cannot finish (see
// internal/reconcile); cancel-order, an operator's. Every step runs through
// step or call (steps.go), under its durable name (internal/shop), and then
// passes its crash point (CRASH_AT, internal/crashpoint). The payment's steps
// at the provider (open, expire, close, refund) are one call each to
// payments (internal/payment), which runs them the same way on the
// workflow's DBOS context: the workflows never know which provider they have.

// workflows holds what the workflows and their steps need.
type workflows struct {
	dctx     dbos.Context
	db       *store.DB
	handoffs *paywait.Hub
	steps    steps           // the transactional steps (steps.go)
	run      *durable.Runner // runs every step (steps.go: step, call)
	payments *payment.Steps  // the payment's steps at the provider: the stand-in or Stripe
	logger   *slog.Logger
}

// register registers the workflows under their durable names.
func (w *workflows) register() {
	dbos.RegisterWorkflow(w.dctx, w.checkout, dbos.WithWorkflowName(shop.CheckoutWorkflow))
	dbos.RegisterWorkflow(w.dctx, w.dispatch, dbos.WithWorkflowName(shop.DispatchWorkflow))
	dbos.RegisterWorkflow(w.dctx, w.release, dbos.WithWorkflowName(shop.ReleaseWorkflow))
	dbos.RegisterWorkflow(w.dctx, w.refund, dbos.WithWorkflowName(shop.RefundWorkflow))
	dbos.RegisterWorkflow(w.dctx, w.cancelOrder, dbos.WithWorkflowName(shop.CancelOrderWorkflow))
}

// checkoutInput is the checkout workflow's recorded input.
type checkoutInput struct {
	Shopper string `json:"shopper,omitempty"` // the browser that bought, for "your orders" and who may see it
	Client  string `json:"client,omitempty"`  // the buyer's address, for the hold limit ("" when it is off)
	// Key is the client's idempotency key (the workflow ID), recorded so that an
	// execution forked by an operator (dbos workflow fork) under another ID knows
	// it is one. Empty in the previous build's inputs.
	Key   string      `json:"key,omitempty"`
	Items []shop.Line `json:"items,omitempty"` // the cart, by product id; none: one unit of product 1 (as before carts)
	// Flow is how the checkout takes its payment: flowOrderRow, or 0 in the
	// inputs of the build before, which took it as a DBOS message
	// (settleByMessage). A workflow's recorded input never changes, so its
	// flow does not either, across any crash, recovery or fork.
	Flow int `json:"flow,omitempty"`
}

// flowOrderRow: the checkout settles its order from the row
// (settleFromRow).
const flowOrderRow = 1

// orderResult is the checkout's recorded result. OrderID is 0 when the
// product sold out.
type orderResult struct {
	OrderID int64       `json:"order_id"`
	Status  shop.Status `json:"order_status"`
}

// checkout sells a cart, all of it or nothing. Its workflow ID is the client's
// idempotency key, which is also the payment id, so a key runs it at most once.
func (w *workflows) checkout(ctx dbos.Context, in checkoutInput) (orderResult, error) {
	key, err := w.checkoutKey(ctx, in)
	if err != nil || key == "" {
		return orderResult{}, err
	}
	ctx = critpath.DBOS(ctx, key)                 // a recovered checkout's statements count for the requests waiting on it too
	handoff, err := w.handoffs.Checkout(ctx, key) // tells the requests waiting in this process, at once; a recovered checkout queues at the recovery gate
	if err != nil {
		return orderResult{}, err
	}
	defer handoff.Close()

	// A checkout replaying under the recovery gate replays its reserve step
	// (a turn at SQLite's write lock) behind new shoppers' writes. The marked
	// context is for this step only: it is a copy of DBOS's context, which a
	// waiting checkout would otherwise hold for as long as it waits.
	order, err := step(handoff.Context(ctx), w, shop.CheckoutWorkflow, shop.StepReserve, w.steps.reserve(key, in.Shopper, in.Client, in.Items))
	if err != nil {
		return orderResult{}, err
	}
	payAt, opened, err := w.payments.Open(ctx, order.payment(key))
	if err != nil {
		return orderResult{}, err
	}
	handoff.PaymentID(order.OrderID, time.UnixMilli(order.CreatedAtMs))
	w.crashAfter(shop.CheckoutWorkflow, crashpoint.PaymentID)
	if order.OrderID == 0 || order.Existing {
		return w.answerAsIs(ctx, handoff, order), nil
	}

	// The order's fate: PAID, or CANCELLED with every unit back. Its row
	// decides, and the checkout follows it (internal/paywait's package
	// comment): the webhook settled it (PAID, or CANCELLED, declined) and
	// answered at that commit, or recorded a payment that came too late for
	// that, and the checkout settles it from there. How depends on which
	// build started the checkout (checkoutInput.Flow): its recorded steps
	// must replay.
	var paidAtMs int64
	if in.Flow >= flowOrderRow {
		ctx, paidAtMs, err = w.settleFromRow(ctx, handoff, order, opened)
	} else {
		ctx, paidAtMs, err = w.settleByMessage(ctx, handoff, key, order, opened, payAt)
	}
	if err != nil {
		return orderResult{}, err
	}
	status := shop.StatusPaid
	if paidAtMs == 0 {
		status = shop.StatusCancelled
	}
	// A webhook still waiting for the outcome (one that came after the
	// window, which this checkout decided) gets it from here: the order's
	// fate has committed, with its checkpoint. So it is handed over now,
	// before the dispatch starts: starting a child workflow is a transaction
	// and five more statements (a write-lock turn on SQLite) that the answer
	// does not depend on. A crash between the two
	// leaves this checkout PENDING; DBOS recovers it, replays everything up
	// to here from its checkpoints and starts the dispatch, once (its ID is
	// per order). An operator who cancels the checkout in that window leaves
	// a PAID order with no dispatch, which the reconciler dispatches
	// (redispatch/<id>), as for a cancel after settle. CRASH_AT
	// checkout:outcome is that window (internal/storetest's TestCrashPoints).
	handoff.Outcome(status)
	w.crashAfter(shop.CheckoutWorkflow, crashpoint.Outcome)
	if status == shop.StatusPaid {
		if err := w.startDispatch(ctx, order.OrderID, paidAtMs); err != nil {
			return orderResult{}, err
		}
	}
	return orderResult{OrderID: order.OrderID, Status: status}, nil
}

// settleFromRow is the checkout's payment: it waits until the order has
// something to settle it by (a webhook settled it or recorded a status, an
// operator cancelled it) or its window closes (paywait.AwaitPayment, which
// records nothing), then settles it in one step (settle, steps.go) and
// returns when it was paid (0: cancelled). A step that finds nothing to
// decide by (a wrong kick; never on the common path) changes nothing and the
// checkout waits again: each round is a step of its own, and a replay
// follows the recorded outcomes round by round. An order this step cancelled
// at the end of its window has its payment closed at the provider
// (payment-close; nothing for the stand-in): after the units went back, for
// the reason payment.Steps.Close gives.
//
// From the wait's end on, the checkout is background work on SQLite's write
// lock (store.InBackground), the returned context: the webhook settled the
// order and answered at its own commit, and no request waits for what
// follows but a late payment's (the checkout decides it; a background
// writer's wait is bounded), so these steps give way to the writes buyers
// wait for.
func (w *workflows) settleFromRow(ctx dbos.Context, handoff *paywait.Checkout, order reserved, opened bool) (dbos.Context, int64, error) {
	for again := false; ; again = true {
		if opened {
			if err := handoff.AwaitPayment(ctx, time.UnixMilli(order.PayByMs), again); err != nil { // the deadline is the reserve's checkpoint
				return ctx, 0, err
			}
			w.crashAfter(shop.CheckoutWorkflow, crashpoint.AwaitPayment)
		}
		bg := store.InBackground(ctx)
		s, err := step(bg, w, shop.CheckoutWorkflow, shop.StepSettle, w.steps.settle(order.OrderID, order.PayByMs, opened))
		if err != nil {
			return ctx, 0, err
		}
		if s.Outcome == "" {
			w.log(ctx, order.OrderID).Warn("checkout: woken with nothing to settle the order by, its window still open; waiting again")
			continue
		}
		w.log(ctx, order.OrderID).Info("checkout: payment status", "payment", s.Outcome)
		if s.Outcome == shop.PaymentTimedOut {
			w.payments.Close(bg, shop.CheckoutWorkflow, order.OrderID)
		}
		return bg, s.PaidAtMs, nil
	}
}

// settleByMessage is the payment of a checkout the build before this one
// started (checkoutInput.Flow 0), still in flight after an upgrade: its
// recorded steps are DBOS's Recv of the payment message (two step IDs),
// payment-expire when none came in time, then mark-paid or cancel, and a
// replay must make the same calls in the same order. This build sends no
// message: the checkout waits as settleFromRow does, until its order was
// settled (or a status recorded) or its window closed, and then Recv
// returns at once, the message the build before sent or recorded, or a
// timeout. mark-paid and cancel follow the row either way: a payment this
// build's webhook settled PAID is found PAID by cancel, which ships it; one
// it recorded after the window (and sent no message for) is cancelled here
// and refunded as late, where the build before could still have shipped it
// had it come before the checkout's Recv. Delete this, with flow 0, once no
// checkout of widget-store-3 started before flowOrderRow is unfinished.
func (w *workflows) settleByMessage(ctx dbos.Context, handoff *paywait.Checkout, key string, order reserved, opened bool, payAt provider.Payment) (dbos.Context, int64, error) {
	payStatus := shop.PaymentFailed // the provider opened no payment: nobody can pay
	if opened {
		if err := handoff.AwaitPayment(ctx, time.UnixMilli(order.PayByMs), false); err != nil {
			return ctx, 0, err
		}
		var err error
		if payStatus, err = handoff.ReceiveMessage(ctx); err != nil {
			return ctx, 0, err
		}
		w.crashAfter(shop.CheckoutWorkflow, crashpoint.AwaitPayment)
		if payStatus == shop.PaymentTimedOut {
			w.payments.Expire(ctx, key, order.OrderID, payAt)
		}
	}
	w.log(ctx, order.OrderID).Info("checkout: payment status", "payment", payStatus)
	ctx = store.InBackground(ctx) // as in settleFromRow
	if payStatus == shop.PaymentPaid {
		paidAtMs, err := step(ctx, w, shop.CheckoutWorkflow, shop.StepMarkPaid, w.steps.markPaid(order.OrderID))
		return ctx, paidAtMs, err
	}
	c, err := step(ctx, w, shop.CheckoutWorkflow, shop.StepCancel, w.steps.cancel(order.OrderID, payStatus))
	return ctx, c.PaidAtMs, err
}

// checkoutKey is the key the checkout acts under, its workflow ID; "" for an
// execution forked by an operator (dbos workflow fork) under another ID, which
// does nothing: an order, its stock and payment belong to the client's key.
func (w *workflows) checkoutKey(ctx dbos.Context, in checkoutInput) (string, error) {
	key, err := dbos.GetWorkflowID(ctx)
	if err == nil && in.Key != "" && in.Key != key {
		w.logger.Warn("checkout: a forked execution does nothing; the checkout acts under its key only", "workflow_id", key, "key", in.Key)
		return "", nil
	}
	return key, err
}

// answerAsIs ends a checkout that found a line short, or this key's
// order made by an execution whose records were deleted: it answers from the
// order and changes nothing (the reconciler releases an order left PENDING).
func (w *workflows) answerAsIs(ctx dbos.Context, handoff *paywait.Checkout, order reserved) orderResult {
	if order.OrderID == 0 {
		w.log(ctx, 0).Info("checkout: sold out")
		return orderResult{}
	}
	w.log(ctx, order.OrderID).Warn("checkout: this key's order was made before its workflow records were deleted; answering from it", "order_status", order.Status)
	handoff.Outcome(order.Status)
	return orderResult{OrderID: order.OrderID, Status: order.Status}
}

// startDispatch starts the dispatch of a paid order, a child workflow that
// runs on by itself; DBOS checkpoints the start as a step named after it.
func (w *workflows) startDispatch(ctx dbos.Context, orderID, paidAtMs int64) error {
	in := dispatchInput{OrderID: orderID, FirstDueMs: paidAtMs + time.Second.Milliseconds()}
	if _, err := dbos.RunWorkflow(ctx, w.dispatch, in, dbos.WithWorkflowID(shop.DispatchWorkflowID(orderID))); err != nil {
		return err
	}
	w.crashAfter(shop.CheckoutWorkflow, shop.DispatchWorkflow)
	return nil
}

// dispatchInput is the dispatch workflow's recorded input.
type dispatchInput struct {
	OrderID int64 `json:"order_id"`
	// FirstDueMs is when the first leg is due (Unix ms), one second after the
	// checkpointed payment time; leg N is due N−1 seconds later. Being the
	// workflow's recorded input, the schedule survives any crash.
	FirstDueMs int64 `json:"first_due_ms"`
}

// dispatch ships a paid order in shop.DispatchLegs legs of one second,
// counting its progress down to 0, when the order is DISPATCHED. The legs are
// not DBOS steps, which would cost a checkpoint each for nothing: each is an
// idempotent write (steps.go, dispatchLeg) on the schedule the input fixes,
// so a recovered dispatch (replayed from the start) writes the leg due now,
// once, and carries on from there.
func (w *workflows) dispatch(ctx dbos.Context, in dispatchInput) (int64, error) {
	leg := 1
	if late := int((w.steps.now().UnixMilli()-in.FirstDueMs)/time.Second.Milliseconds()) + 1; late > 1 {
		leg = min(late, shop.DispatchLegs) // recovered, or behind: the legs already due are one write
	}
	for ; leg <= shop.DispatchLegs; leg++ {
		if err := periodic.Sleep(ctx, time.UnixMilli(in.FirstDueMs+int64(leg-1)*time.Second.Milliseconds()).Sub(w.steps.now())); err != nil {
			return 0, err // a graceful stop: the workflow stays PENDING and resumes at the next start
		}
		dispatched, err := w.steps.dispatchLeg(ctx, w.db.Q(), w.logger, in.OrderID, shop.DispatchLegs-leg)
		if err != nil {
			return 0, err
		}
		w.crashAfter(shop.DispatchWorkflow, crashpoint.Leg(leg))
		if dispatched {
			break // the last leg, or another dispatch of this order got there first
		}
	}
	w.log(ctx, in.OrderID).Info("dispatch: order dispatched")
	return in.OrderID, nil
}

// release cancels order orderID, whose checkout will never finish it, and
// returns its units: one step, exactly once (its workflow ID is per order).
// It changes nothing if the order is no longer PENDING. A released order's
// payment at the provider is then expired (payment.Steps.Close).
func (w *workflows) release(ctx dbos.Context, orderID int64) (bool, error) {
	released, err := step(ctx, w, shop.ReleaseWorkflow, shop.StepRelease, w.steps.release(orderID))
	if err != nil || !released {
		return released, err
	}
	w.log(ctx, orderID).Warn("release: the order's checkout will not finish it; cancelled, units returned")
	w.payments.Close(ctx, shop.ReleaseWorkflow, orderID)
	return released, nil
}

// refundInput is the refund workflow's recorded input.
type refundInput struct {
	PaymentID   string `json:"payment_id"`
	OrderID     int64  `json:"order_id"`
	AmountCents int64  `json:"amount_cents"` // the order's total: what was paid
}

// refund pays back a late payment, one that came for an order already
// cancelled. The webhook that records the payment starts it, the reconciler
// one that is missing (a crash between the two); its ID is per payment, so
// however often it is started it runs once.
//
//  1. [refund-provider] the provider's refund (payment.Steps.Refund), with
//     the payment id as its idempotency key: one refund however often the
//     step runs. Transport errors and 5xx are retried for about a day; a 4xx,
//     or an answer that is not a refund of this payment, ends the workflow in
//     ERROR for an operator, whose Retry forks it from this step
//     (reconcile.Operations.Retry), or `dbos workflow fork refund/<payment
//     id> --step 0`: the fork calls again with the same key.
//  2. [refund-record] record the refund (table refunds) in one transaction
//     with the step's checkpoint: GET /late_payments shows it refunded.
func (w *workflows) refund(ctx dbos.Context, in refundInput) (string, error) {
	got, err := w.payments.Refund(ctx, in.PaymentID, in.AmountCents)
	if err != nil {
		return "", err
	}
	if _, err := step(ctx, w, shop.RefundWorkflow, shop.StepRefundRecord, w.steps.recordRefund(in.PaymentID, got.RefundID)); err != nil {
		return "", err
	}
	w.log(ctx, in.OrderID).Info("refund: late payment refunded", "payment_id", in.PaymentID, "refund_id", got.RefundID, "replayed", got.Replayed)
	return got.RefundID, nil
}

// cancelOrder is an operator's Cancel-and-refund of an unfinished order
// (reconcile.Operations.CancelOrder), once per order (its ID): one step
// cancels it, returns its units and, if it was paid, records the payment for
// refund; then the payment's refund workflow starts as a child (its ID is per
// payment, so the reconciler finds it started). An unpaid order's payment at
// the provider is expired instead (payment.Steps.Close).
func (w *workflows) cancelOrder(ctx dbos.Context, orderID int64) (cancelled, error) {
	c, err := step(ctx, w, shop.CancelOrderWorkflow, shop.StepCancelOrder, w.steps.cancelOrder(orderID))
	if err != nil || !c.Cancelled {
		return c, err
	}
	if !c.WasPaid { // its checkout may still be waiting: the payment closes now, not when its window ends
		w.payments.Close(ctx, shop.CancelOrderWorkflow, orderID)
		return c, nil
	}
	in := refundInput{PaymentID: c.Key, OrderID: orderID, AmountCents: c.Price}
	if _, err := dbos.RunWorkflow(ctx, w.refund, in, dbos.WithWorkflowID(shop.RefundWorkflowID(c.Key))); err != nil {
		return c, fmt.Errorf("start the refund of %s: %w", c.Key, err)
	}
	w.log(ctx, orderID).Warn("cancel-order: an operator cancelled the paid order; its payment is being refunded", "payment_id", c.Key)
	return c, nil
}

// The starts: how internal/checkout and internal/reconcile run the workflows,
// each under its fixed ID, so a second start finds the first.

// StartCheckout starts (or finds) the checkout of key for cart items. Its
// DBOS context carries the key, so DBOS's start of it counts on the
// checkout request's critical path (internal/critpath).
func (w *workflows) StartCheckout(key, shopper, client string, items []shop.Line) error {
	_, err := startOn(critpath.DBOS(w.dctx, key), w, w.checkout, checkoutInput{Shopper: shopper, Client: client, Key: key, Items: items, Flow: flowOrderRow}, key, false)
	return err
}

// Release runs (or finds) the release of an order and waits for it.
func (w *workflows) Release(ctx context.Context, orderID int64) error {
	_, err := start(w, w.release, orderID, shop.ReleaseWorkflowID(orderID), true)
	return err
}

// Redispatch starts (or finds) a second dispatch of a paid order whose own
// will not run again. Its schedule goes on from the order's progress: the
// next leg is due in a second.
func (w *workflows) Redispatch(ctx context.Context, orderID int64) error {
	o, err := w.db.OrderByID(ctx, orderID)
	if err == nil {
		done := int64(shop.DispatchLegs - o.ProgressRemaining)
		in := dispatchInput{OrderID: orderID, FirstDueMs: w.steps.now().Add(time.Second).UnixMilli() - done*time.Second.Milliseconds()}
		_, err = start(w, w.dispatch, in, shop.RedispatchWorkflowID(orderID), false)
	}
	if err != nil {
		return err
	}
	w.logger.Warn("redispatch: the order's dispatch will not run again; dispatching it once more", "order_id", orderID)
	return nil
}

// Refund starts (or finds) the refund of late payment pid.
func (w *workflows) Refund(ctx context.Context, pid string) error {
	o, err := w.db.OrderByKey(ctx, pid)
	if err == nil {
		_, err = start(w, w.refund, refundInput{PaymentID: pid, OrderID: o.ID, AmountCents: o.PriceCents}, shop.RefundWorkflowID(pid), false)
	}
	return err
}

// CancelOrder runs (or finds) the cancel-order workflow of an order and
// waits for it.
func (w *workflows) CancelOrder(ctx context.Context, orderID int64) (reconcile.Cancelled, error) {
	c, err := start(w, w.cancelOrder, orderID, shop.CancelOrderWorkflowID(orderID), true)
	return reconcile.Cancelled{Cancelled: c.Cancelled, Status: c.Status, WasPaid: c.WasPaid}, err
}
