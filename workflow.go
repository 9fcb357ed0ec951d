package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/crashpoint"
	"widget-store/internal/critpath"
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
// passes its crash point (CRASH_AT, internal/crashpoint).

// workflows holds what the workflows and their steps need.
type workflows struct {
	dctx     dbos.Context
	ds       *dbos.DataSource // the shared handle, as DBOS's data source
	db       *store.DB
	handoffs *paywait.Hub
	steps    steps // the transactional steps (steps.go)
	logger   *slog.Logger
	crash    crashpoint.Point  // CRASH_AT, for tests
	provider provider.Provider // the payment provider: the stand-in or Stripe
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
}

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
	payAt, opened, err := w.openPayment(ctx, key, order)
	if err != nil {
		return orderResult{}, err
	}
	handoff.PaymentID(order.OrderID, time.UnixMilli(order.CreatedAtMs))
	w.crashAfter(shop.CheckoutWorkflow, crashpoint.PaymentID)
	if order.OrderID == 0 || order.Existing {
		return w.answerAsIs(ctx, handoff, order), nil
	}

	payment := shop.PaymentFailed // the provider opened no payment: nobody can pay
	if opened {
		if payment, err = handoff.AwaitPayment(ctx, time.UnixMilli(order.PayByMs)); err != nil { // the deadline is the reserve's checkpoint
			return orderResult{}, err
		}
		w.crashAfter(shop.CheckoutWorkflow, crashpoint.AwaitPayment)
		if payment == shop.PaymentTimedOut {
			w.expirePayment(ctx, key, order.OrderID, payAt)
		}
	}
	w.log(ctx, order.OrderID).Info("checkout: payment status", "payment", payment)

	status := shop.StatusPaid
	var paidAtMs int64
	if payment == shop.PaymentPaid {
		paidAtMs, err = step(ctx, w, shop.CheckoutWorkflow, shop.StepMarkPaid, w.steps.markPaid(order.OrderID))
	} else { // declined, or no payment in time: cancelled, every unit back
		status = shop.StatusCancelled
		_, err = step(ctx, w, shop.CheckoutWorkflow, shop.StepCancel, w.steps.cancel(order.OrderID, payment))
	}
	if err != nil {
		return orderResult{}, err
	}
	// The webhook's answer (the order id: paid, or cancelled) is true from
	// here: the order's fate has committed, with its checkpoint. So it is
	// handed over now, before the dispatch starts: starting a child workflow
	// is a transaction and five more statements (a write-lock turn on
	// SQLite) that the answer does not depend on. A crash between the two
	// leaves this checkout PENDING; DBOS recovers it, replays everything up
	// to here from its checkpoints and starts the dispatch, once (its ID is
	// per order). An operator who cancels the checkout in that window leaves
	// a PAID order with no dispatch, which the reconciler dispatches
	// (redispatch/<id>), as for a cancel after mark-paid. CRASH_AT
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

// openPayment opens the payment of a new order at the provider, when the
// provider is asked (Stripe; the stand-in's pay page is the store's own, and
// a stand-in checkout runs no step here):
//
//  1. [payment-create] ask the provider for the order's payment, with an
//     idempotency key per checkout (provider.Stripe): a step is at least
//     once, the key makes it one session. Transport errors and 5xx are
//     retried until the payment window closes.
//  2. [payment-record] record it with the order (payment_sessions), in one
//     transaction with the step's checkpoint: the buyer's redirect and
//     POST /checkout's pay_url read it.
//
// After 1's checkpoint a crash asks the provider nothing more: the recovered
// checkout replays the session from it. opened is false when the provider
// opened none (it refused, or could not be reached before the window
// closed): the checkout cancels the order as declined, and a request waiting
// for the pay URL is told so. A sold-out or replayed reserve opens nothing.
func (w *workflows) openPayment(ctx dbos.Context, key string, order reserved) (p provider.Payment, opened bool, err error) {
	if order.OrderID == 0 || order.Existing || w.provider.Local() {
		return provider.Payment{}, true, nil
	}
	p, err = call(ctx, w, shop.CheckoutWorkflow, shop.StepPaymentCreate, func(ctx context.Context) (provider.Payment, error) {
		var created provider.Payment
		o, err := w.steps.paymentOrder(ctx, w.db, key, order)
		if err == nil && w.steps.now().UnixMilli() >= order.PayByMs {
			w.closeLatePayment(ctx, key, o)
			return created, provider.PermanentError(fmt.Errorf("the payment window of order %d closed before the provider opened a payment", order.OrderID))
		}
		if err == nil {
			created, err = w.provider.Create(ctx, o)
		}
		if err != nil && !provider.Permanent(err) {
			w.logger.Warn("checkout: creating the payment at the provider failed; retrying", "workflow_id", key, "order_id", order.OrderID, "err", err)
		}
		return created, err
	}, dbos.WithStepMaxRetries(1000), dbos.WithStepBaseInterval(200*time.Millisecond), dbos.WithStepBackoffFactor(2),
		dbos.WithStepMaxInterval(5*time.Second), dbos.WithStepRetryPredicate(func(err error) bool { return !provider.Permanent(err) }))
	if err != nil && ctx.Err() != nil {
		return provider.Payment{}, false, err // a stop, not the provider's answer: nothing was checkpointed, the recovered checkout asks again
	}
	if err != nil {
		w.log(ctx, order.OrderID).Error("checkout: the payment provider opened no payment; the order is cancelled", "err", err)
		return provider.Payment{}, false, nil
	}
	if _, err := step(ctx, w, shop.CheckoutWorkflow, shop.StepPaymentRecord, w.steps.recordPayment(key, order.OrderID, p)); err != nil {
		return p, false, err
	}
	return p, true, nil
}

// closeLatePayment closes, best effort, a payment an earlier attempt of the
// payment-create step may have opened at the provider when the payment
// window closed before the step's checkpoint (a crash cut the attempt after
// the provider answered, and the checkout recovered late): nobody has its
// URL, but it would stay open until it expired by itself. Asked again under
// the same idempotency key, the provider answers with that payment (or makes
// one, if no attempt reached it), which is then expired at once under its own
// key. A failure is only logged: the payment expires by itself within the
// hour, and a payment made at it is refunded like any late payment.
func (w *workflows) closeLatePayment(ctx context.Context, key string, o provider.Order) {
	p, err := w.provider.Create(ctx, o)
	if err == nil {
		err = w.provider.Expire(ctx, key, p)
	}
	if err != nil && !provider.Permanent(err) {
		w.logger.Warn("checkout: could not close the payment of a checkout whose window closed before it was recorded; it expires by itself", "workflow_id", key, "order_id", o.OrderID, "err", err)
	}
}

// expirePayment closes payment p at the provider once the payment window
// ended unpaid, before the units go back ([payment-expire]; nothing for the
// stand-in): Stripe sessions cannot expire sooner than 30 minutes by
// themselves, and this is what keeps the store's window honest. A payment
// that wins the race arrives as a completed event for a cancelled order and
// is refunded. The provider refusing (the session is no longer open: paid or
// expired already) ends the step; transport errors and 5xx are retried for
// about two minutes, after which the order is cancelled anyway: the session
// then expires by itself within the hour, and a payment made at it meanwhile
// is refunded the same way. An order no longer PENDING was cancelled by an
// operator while its checkout waited, and its payment closed by that
// cancel-order (closePayment): nothing more is asked of the provider.
func (w *workflows) expirePayment(ctx dbos.Context, key string, orderID int64, p provider.Payment) {
	if w.provider.Local() {
		return
	}
	expired, err := call(ctx, w, shop.CheckoutWorkflow, shop.StepPaymentExpire, func(ctx context.Context) (bool, error) {
		o, err := w.db.OrderByID(ctx, orderID)
		if err != nil {
			return false, err
		}
		if o.Status != shop.StatusPending { // an operator cancelled it meanwhile, and cancel-order closed its payment (closePayment)
			return false, nil
		}
		err = w.provider.Expire(ctx, key, p)
		if provider.Permanent(err) {
			w.logger.Info("checkout: the provider did not expire the payment: it is no longer open (a payment that came is refunded)", "workflow_id", key, "order_id", orderID, "err", err)
			return false, nil
		}
		if err != nil {
			w.logger.Warn("checkout: expiring the payment at the provider failed; retrying", "workflow_id", key, "order_id", orderID, "err", err)
		}
		return err == nil, err
	}, dbos.WithStepMaxRetries(30), dbos.WithStepBaseInterval(200*time.Millisecond), dbos.WithStepBackoffFactor(2), dbos.WithStepMaxInterval(5*time.Second))
	if err != nil {
		w.log(ctx, orderID).Error("checkout: could not expire the payment at the provider; cancelling the order anyway (a payment made at it is refunded)", "err", err)
		return
	}
	w.log(ctx, orderID).Info("checkout: payment window closed; payment expired at the provider", "expired", expired)
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
// payment at the provider is then expired (closePayment).
func (w *workflows) release(ctx dbos.Context, orderID int64) (bool, error) {
	released, err := step(ctx, w, shop.ReleaseWorkflow, shop.StepRelease, w.steps.release(orderID))
	if err != nil || !released {
		return released, err
	}
	w.log(ctx, orderID).Warn("release: the order's checkout will not finish it; cancelled, units returned")
	w.closePayment(ctx, shop.ReleaseWorkflow, orderID)
	return released, nil
}

// closePayment expires at the provider the payment of order orderID, which
// release or cancel-order has just cancelled unpaid, before its checkout
// finished it ([payment-close]; the stand-in asks nobody, and runs no step
// and no transaction here): that checkout will not expire it (release: it
// will never run again; cancel-order: the operator's cancel stopped it with
// DBOS, and one that gets to its expiry anyway finds the order no longer
// PENDING, see expirePayment), and at Stripe the session would stay payable
// for up to an hour.
//
// It runs after the units went back, not before, because the cancel is what
// decides: it cancels only an order still PENDING, in one transaction with
// its checkpoint, and only an order it cancelled needs its payment closed
// (expiring first would close the payment of an order that the step then
// finds paid). The order's guarantee: from the cancel's commit on, any
// payment made at the session is a payment for a cancelled order, which the
// webhook records and the refund workflow pays back, once; this step, with
// the checkout's own key (widget-store-expire-<key>, one expiry however
// often a crash repeats it; recovery re-runs it after a crash before its
// checkpoint), shrinks the time such a payment can still be made from the
// session's own expiry to the step's latency. An order with no payment
// recorded (its checkout stopped before payment-record: nobody was given
// the URL) has nothing to close. The provider refusing (the session is no
// longer open) ends the step; transport errors and 5xx are retried for about
// two minutes, then only logged: the session expires by itself and a payment
// made at it is refunded.
func (w *workflows) closePayment(ctx dbos.Context, wf string, orderID int64) {
	if w.provider.Local() {
		return
	}
	closed, err := call(ctx, w, wf, shop.StepPaymentClose, func(ctx context.Context) (bool, error) {
		o, err := w.db.OrderByID(ctx, orderID)
		if err != nil {
			return false, err
		}
		s, err := w.db.PaymentSession(ctx, o.Key)
		if shop.KindOf(err) == shop.NotFound {
			return false, nil // no payment was recorded: nobody can pay at one
		}
		if err != nil {
			return false, err
		}
		err = w.provider.Expire(ctx, o.Key, provider.Payment{SessionID: s.SessionID, URL: s.URL})
		if provider.Permanent(err) {
			w.logger.Info(wf+": the provider did not expire the payment: it is no longer open (a payment that came is refunded)", "order_id", orderID, "err", err)
			return false, nil
		}
		if err != nil {
			w.logger.Warn(wf+": expiring the payment at the provider failed; retrying", "order_id", orderID, "err", err)
		}
		return err == nil, err
	}, dbos.WithStepMaxRetries(30), dbos.WithStepBaseInterval(200*time.Millisecond), dbos.WithStepBackoffFactor(2), dbos.WithStepMaxInterval(5*time.Second))
	if err != nil {
		w.log(ctx, orderID).Error(wf+": could not expire the cancelled order's payment at the provider; it expires by itself (a payment made at it is refunded)", "err", err)
		return
	}
	w.log(ctx, orderID).Info(wf+": the cancelled order's payment is closed at the provider", "expired", closed)
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
//  1. [refund-provider] the provider's refund, through the same interface
//     for both (the stand-in: POST {PROVIDER_URL}/refunds/{payment id};
//     Stripe: POST /v1/refunds of the PaymentIntent recorded from the
//     payment's event), with Idempotency-Key: <payment id>: a step runs at
//     least once, the key
//     makes it one refund. Transport errors and 5xx are retried for about a
//     day; a 4xx, or an answer that is not a refund of this payment, ends the
//     workflow in ERROR for an operator, whose Retry forks it from this step
//     (reconcile.Operations.Retry), or `dbos workflow fork refund/<payment
//     id> --step 0`: the fork calls again with the same key.
//  2. [refund-record] record the refund (table refunds) in one transaction
//     with the step's checkpoint: GET /late_payments shows it refunded.
func (w *workflows) refund(ctx dbos.Context, in refundInput) (string, error) {
	// Attempts 100 ms doubling to a minute apart, about a day in all (a
	// recovery starts the count again).
	got, err := call(ctx, w, shop.RefundWorkflow, shop.StepRefundCall, func(ctx context.Context) (provider.Refund, error) {
		ref, err := w.db.PaymentRef(ctx, in.PaymentID) // the provider's id of the money taken (Stripe's PaymentIntent), "" for the stand-in
		if err != nil {
			return provider.Refund{}, err
		}
		r, err := w.provider.Refund(ctx, provider.RefundRequest{PaymentID: in.PaymentID, AmountCents: in.AmountCents, PaymentRef: ref})
		if err != nil && !provider.Permanent(err) {
			w.logger.Warn("refund: the provider call failed; retrying", "payment_id", in.PaymentID, "err", err)
		}
		return r, err
	}, dbos.WithStepMaxRetries(1500), dbos.WithStepBaseInterval(100*time.Millisecond), dbos.WithStepBackoffFactor(2),
		dbos.WithStepMaxInterval(time.Minute), dbos.WithStepRetryPredicate(func(err error) bool { return !provider.Permanent(err) }))
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
// the provider is expired instead (closePayment).
func (w *workflows) cancelOrder(ctx dbos.Context, orderID int64) (cancelled, error) {
	c, err := step(ctx, w, shop.CancelOrderWorkflow, shop.StepCancelOrder, w.steps.cancelOrder(orderID))
	if err != nil || !c.Cancelled {
		return c, err
	}
	if !c.WasPaid { // its checkout may still be waiting: the payment closes now, not when its window ends
		w.closePayment(ctx, shop.CancelOrderWorkflow, orderID)
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
	_, err := startOn(critpath.DBOS(w.dctx, key), w, w.checkout, checkoutInput{Shopper: shopper, Client: client, Key: key, Items: items}, key, false)
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
