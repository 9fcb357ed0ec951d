package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/paywait"
	"widget-store/internal/periodic"
	"widget-store/internal/provider"
	"widget-store/internal/reconcile"
	"widget-store/internal/shop"
	"widget-store/internal/store"
	"widget-store/internal/supervisor"
)

// The store's durable workflows: checkout and dispatch, the purchase; release
// and refund, which make good what a checkout cannot finish (see
// internal/reconcile). Every database write they make is in steps.go: a step
// executed by dbos.RunAsTransaction on the handle DBOS itself uses, so the
// write and the step's checkpoint commit together (after a crash a step
// either happened, and is replayed from its checkpoint, or did not, and runs
// again, never twice), or, for the dispatch legs, an idempotent write whose
// reason is written next to it.

// appVersion is the DBOS application version. DBOS recovers only workflows of
// its own version (its default, a hash of the binary, would strand every
// order in flight at each rebuild). Bump it when a change to the workflows
// would make old checkpoints replay wrongly, and carry the unfinished
// workflows of the previous version over at startup (see upgradeRenames).
const appVersion = "widget-store-3"

// previousAppVersion is the build before explicit step names: DBOS named its
// steps after their Go functions. upgradeRenames maps those names to today's;
// the steps, their order, inputs and outputs are otherwise the same, so an
// order in flight under the previous build finishes under this one.
const previousAppVersion = "widget-store-2"

func upgradeRenames() map[string]string {
	return map[string]string{
		"main.checkoutTx.reserveAndCreateOrder-fm": shop.StepReserve,
		"main.orderTx.markPaid-fm":                 shop.StepMarkPaid,
		"main.orderTx.cancel-fm":                   shop.StepCancel,
		"main.progressTx.apply-fm":                 shop.StepDispatchLeg,
	}
}

// workflows holds what the workflows and their steps need.
type workflows struct {
	dctx     dbos.Context
	ds       *dbos.DataSource // the shared handle, as DBOS's data source
	db       *store.DB
	handoffs *paywait.Hub
	steps    steps // the transactional steps (steps.go)
	logger   *slog.Logger
	crash    crashPoint       // CRASH_AT, for tests
	provider *provider.Client // the payment provider's refund API
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
	Shopper string `json:"shopper,omitempty"` // the browser that bought, for "your orders"
	// Client is the buyer's address, recorded for the hold limit; "" when
	// the limit is off (a demo store) and in earlier builds' inputs.
	Client string `json:"client,omitempty"`
	// Key is the client's idempotency key, which the workflow ID is too,
	// recorded so that an execution forked by an operator (dbos workflow
	// fork), which runs under another ID with the same input, knows it is
	// one. Empty in the previous build's inputs.
	Key string `json:"key,omitempty"`
}

// orderResult is the checkout's recorded result. OrderID is 0 when the
// product sold out.
type orderResult struct {
	OrderID int64       `json:"order_id"`
	Status  shop.Status `json:"order_status"`
}

// checkout sells one widget. Its workflow ID is the client's idempotency key,
// which is also the payment id, so a key runs it at most once. The numbers
// are the crash points of CRASH_AT=checkout:N.
func (w *workflows) checkout(ctx dbos.Context, in checkoutInput) (orderResult, error) {
	key, err := dbos.GetWorkflowID(ctx)
	if err != nil {
		return orderResult{}, err
	}
	if in.Key != "" && in.Key != key {
		// A forked execution (dbos workflow fork) runs under another ID: a
		// checkout's order, stock and payment belong to its client's key, so
		// it does nothing (resume the original instead).
		w.logger.Warn("checkout: a forked execution does nothing; the checkout acts under its key only", "workflow_id", key, "key", in.Key)
		return orderResult{}, nil
	}
	handoff := w.handoffs.Checkout(key) // tells the requests waiting in this process, at once
	defer handoff.Close()

	// 1. Reserve a unit and create the PENDING order, with its payment
	// deadline; sold out, record that instead.
	order, err := dbos.RunAsTransaction(ctx, w.ds, w.steps.reserve(key, in.Shopper, in.Client), dbos.WithStepName(shop.StepReserve))
	if err != nil {
		return orderResult{}, err
	}
	w.crashAfter(shop.CheckoutWorkflow, 1)

	// 2. Hand out the payment id (or "sold out", and stop).
	handoff.PaymentID(order.OrderID, time.UnixMilli(order.CreatedAtMs))
	w.crashAfter(shop.CheckoutWorkflow, 2)
	log := w.log(ctx, order.OrderID)
	if order.OrderID == 0 {
		log.Info("checkout: sold out")
		return orderResult{}, nil
	}
	if order.Existing {
		// This key's order was made by an execution whose records are
		// deleted: answer from the order, change nothing. An order left
		// PENDING (an operator deleted a checkout in flight) has no checkout
		// any more; the reconciler releases it.
		log.Warn("checkout: this key's order was made before its workflow records were deleted; answering from it", "order_status", order.Status)
		handoff.Outcome(order.Status)
		return orderResult{OrderID: order.OrderID, Status: order.Status}, nil
	}

	// 3. Wait for the payment webhook, at most until the deadline.
	payment, err := handoff.AwaitPayment(ctx, time.UnixMilli(order.PayByMs))
	if err != nil {
		return orderResult{}, err
	}
	w.crashAfter(shop.CheckoutWorkflow, 3)
	log.Info("checkout: payment status", "payment", payment)

	result := orderResult{OrderID: order.OrderID, Status: shop.StatusPaid}
	if payment == shop.PaymentPaid {
		// 4. Mark the order paid.
		paidAtMs, err := dbos.RunAsTransaction(ctx, w.ds, w.steps.markPaid(order.OrderID), dbos.WithStepName(shop.StepMarkPaid))
		if err != nil {
			return orderResult{}, err
		}
		w.crashAfter(shop.CheckoutWorkflow, 4)
		// 5. Start the dispatch: a child workflow, started once (the start
		// is checkpointed), which runs on by itself.
		dispatch := dispatchInput{OrderID: order.OrderID, FirstDueMs: paidAtMs + time.Second.Milliseconds()}
		if _, err := dbos.RunWorkflow(ctx, w.dispatch, dispatch, dbos.WithWorkflowID(shop.DispatchWorkflowID(order.OrderID))); err != nil {
			return orderResult{}, err
		}
		w.crashAfter(shop.CheckoutWorkflow, 5)
	} else {
		// 4. Not paid (declined, or no payment in time): cancel the order
		// and return its unit.
		if _, err := dbos.RunAsTransaction(ctx, w.ds, w.steps.cancel(order.OrderID, payment), dbos.WithStepName(shop.StepCancel)); err != nil {
			return orderResult{}, err
		}
		w.crashAfter(shop.CheckoutWorkflow, 4)
		result.Status = shop.StatusCancelled
	}

	// 6. Hand out the outcome to the waiting webhook, with the order id.
	handoff.Outcome(result.Status)
	w.crashAfter(shop.CheckoutWorkflow, 6)
	return result, nil
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
// counting its progress down to 0, when the order is DISPATCHED. Leg N is
// the crash point CRASH_AT=dispatch:N.
//
// The legs are not DBOS steps: each is an idempotent write (steps.go,
// dispatchLeg) on a schedule the workflow's input fixes (leg N is due
// FirstDueMs + N−1 seconds). A checkpointed step per leg would buy nothing
// here, for nine round trips to Postgres (or a write transaction on SQLite)
// each: the write is a set, only ever downwards, so writing it again is
// harmless, and the schedule needs no checkpoint to survive a crash. A
// recovered dispatch (DBOS replays it from the start) writes the leg the
// schedule says is due now, once, and carries on from there.
func (w *workflows) dispatch(ctx dbos.Context, in dispatchInput) (int64, error) {
	leg := 1
	if late := int((w.steps.now().UnixMilli()-in.FirstDueMs)/time.Second.Milliseconds()) + 1; late > 1 {
		leg = min(late, shop.DispatchLegs) // recovered, or behind: the legs already due are one write
	}
	for ; leg <= shop.DispatchLegs; leg++ {
		if err := sleepUntil(ctx, w.steps.now, in.FirstDueMs+int64(leg-1)*time.Second.Milliseconds()); err != nil {
			return 0, err
		}
		dispatched, err := w.steps.dispatchLeg(ctx, w.db.Q(), w.logger, in.OrderID, shop.DispatchLegs-leg)
		if err != nil {
			return 0, err
		}
		w.crashAfter(shop.DispatchWorkflow, leg)
		if dispatched {
			break // the last leg, or another dispatch of this order got there first
		}
	}
	w.log(ctx, in.OrderID).Info("dispatch: order dispatched")
	return in.OrderID, nil
}

// release cancels order orderID, whose checkout will never finish it, and
// returns its unit: one step, exactly once (its workflow ID is per order).
// It changes nothing if the order is no longer PENDING.
func (w *workflows) release(ctx dbos.Context, orderID int64) (bool, error) {
	released, err := dbos.RunAsTransaction(ctx, w.ds, w.steps.release(orderID), dbos.WithStepName(shop.StepRelease))
	if err == nil && released {
		w.log(ctx, orderID).Warn("release: the order's checkout will not finish it; cancelled, unit returned")
	}
	return released, err
}

// The refund workflow pays back a late payment: one that came for an order
// already cancelled (declined first, past the payment window, or released by
// the reconciler after an operator cancelled its checkout). Pay starts it
// right after recording the late payment, and the reconciler starts it for a
// late payment whose refund workflow does not exist (a crash between the two).
// Its ID is per payment (shop.RefundWorkflowID), so however often it is
// started (a retried webhook, two instances, two passes) it runs once.
//
//  1. [refund-provider] POST {PROVIDER_URL}/refunds/{payment id} with
//     Idempotency-Key: <payment id>. A DBOS step is at least once: a crash
//     after the call but before its checkpoint calls again on recovery, and
//     failed attempts are retried in process. The provider's idempotency key
//     turns that into exactly once: a repeat answers the first refund and
//     refunds nothing more. Transport errors and 5xx are retried with
//     backoff (up to about a day, refundRetries); a 4xx, or an answer that
//     is not a refund of this payment, is not (trying again cannot change it),
//     and the workflow ends in ERROR for an operator: fix the cause, then
//     press Retry in the internals panel, which forks the workflow from this
//     step (a resume would replay the checkpointed error; see
//     operations.Retry), or run `dbos workflow fork refund/<payment id>
//     --step 0`: the fork calls again with the same key.
//  2. [refund-record] record the refund (table refunds) in one transaction
//     with the step's checkpoint: GET /late_payments shows it refunded.

// refundInput is the refund workflow's recorded input.
type refundInput struct {
	PaymentID   string `json:"payment_id"`
	OrderID     int64  `json:"order_id"`
	AmountCents int64  `json:"amount_cents"` // the order's price: what was paid
}

// Retries of the provider call: 100 ms doubling to a minute between
// attempts, about a day in all (every recovery starts the count again).
const (
	refundRetries     = 1500
	refundBaseBackoff = 100 * time.Millisecond
	refundMaxBackoff  = time.Minute
)

// refund is the refund workflow. Steps 1 and 2 are the crash points of
// CRASH_AT=refund:N.
func (w *workflows) refund(ctx dbos.Context, in refundInput) (string, error) {
	// 1. Ask the provider, with the payment id as idempotency key.
	got, err := dbos.RunAsStep(ctx, func(ctx context.Context) (provider.Refund, error) {
		r, err := w.provider.Refund(ctx, in.PaymentID, in.AmountCents)
		if err != nil && !provider.Permanent(err) {
			w.logger.Warn("refund: the provider call failed; retrying", "payment_id", in.PaymentID, "err", err)
		}
		return r, err
	}, dbos.WithStepName(shop.StepRefundCall),
		dbos.WithStepMaxRetries(refundRetries),
		dbos.WithStepBaseInterval(refundBaseBackoff),
		dbos.WithStepBackoffFactor(2),
		dbos.WithStepMaxInterval(refundMaxBackoff),
		dbos.WithStepRetryPredicate(func(err error) bool { return !provider.Permanent(err) }))
	if err != nil {
		return "", err
	}
	w.crashAfter(shop.RefundWorkflow, 1)
	// 2. Record the refund.
	if _, err := dbos.RunAsTransaction(ctx, w.ds, w.steps.recordRefund(in.PaymentID, got.RefundID), dbos.WithStepName(shop.StepRefundRecord)); err != nil {
		return "", err
	}
	w.crashAfter(shop.RefundWorkflow, 2)
	w.log(ctx, in.OrderID).Info("refund: late payment refunded", "payment_id", in.PaymentID, "refund_id", got.RefundID, "replayed", got.Replayed)
	return got.RefundID, nil
}

// sleepUntil waits until the Unix-ms time due, or until ctx ends (a graceful stop),
// in which case the workflow stays PENDING and resumes at the next start.
func sleepUntil(ctx context.Context, now func() time.Time, dueMs int64) error {
	return periodic.Sleep(ctx, time.UnixMilli(dueMs).Sub(now()))
}

// log is the logger for a line about a workflow: the store's logger (which
// carries executor_id) plus the workflow's ID and the order it works on (0
// when the product sold out).
func (w *workflows) log(ctx dbos.Context, orderID int64) *slog.Logger {
	id, err := dbos.GetWorkflowID(ctx)
	if err != nil {
		id = "" // not inside a workflow: the line still has the order id
	}
	return w.logger.With("workflow_id", id, "order_id", orderID)
}

// Start and Pay are how a request reaches the workflows (they satisfy
// web.Checkout).

// Start starts the checkout of key (or, for a key seen before, finds it) and
// waits for its first step; soldOut reports that it found no stock. shopper
// is the buying browser's session ("" for an API client), client its address
// when the hold limit is on.
func (w *workflows) Start(ctx context.Context, key, shopper, client string) (soldOut bool, err error) {
	return w.handoffs.AwaitStart(ctx, key, func() error {
		// On the store's root DBOS context, never the request's: a cancelled
		// request context would durably cancel the workflow.
		_, err := dbos.RunWorkflow(w.dctx, w.checkout, checkoutInput{Shopper: shopper, Client: client, Key: key}, dbos.WithWorkflowID(key))
		return err
	})
}

// Pay applies a payment status to the order behind payment id pid and
// returns the order id. A replay is answered from the order's state; a status
// that contradicts the order's fate is a conflict, and a payment for an order
// already cancelled is recorded for refund and its refund workflow started
// (refund.go).
func (w *workflows) Pay(ctx context.Context, pid, status string) (int64, error) {
	o, err := w.handoffs.Deliver(ctx, pid, status, func(ctx context.Context) (bool, error) {
		return w.checkoutGone(ctx, pid)
	})
	if errors.Is(err, paywait.ErrOrphaned) {
		// Its checkout will never take the payment: release the order now
		// (the reconciler would, a little later) and answer from it.
		if err := w.Release(ctx, o.ID); err != nil {
			return 0, err
		}
		o, err = w.db.OrderByKey(ctx, pid)
	}
	if err != nil {
		return 0, err
	}
	switch {
	case status == shop.PaymentPaid && (o.Status == shop.StatusPaid || o.Status == shop.StatusDispatched):
		return o.ID, nil
	case status == shop.PaymentFailed && o.Status == shop.StatusCancelled:
		return o.ID, nil
	case status == shop.PaymentPaid && o.Status == shop.StatusCancelled:
		first, err := w.db.RecordLatePayment(ctx, pid, o.ID)
		if err != nil {
			return 0, err
		}
		if first { // a retried webhook is not a second refund
			w.logger.Warn("payment for a cancelled order recorded for refund", "payment_id", pid, "order_id", o.ID)
		}
		// Started on every delivery, not only the first: a crash between the
		// record and this start leaves the retried webhook (or, without one,
		// the reconciler) to start it, and with its fixed ID a second start
		// finds the first.
		if err := w.startRefund(o); err != nil {
			return 0, err
		}
		return 0, shop.Errorf(shop.Conflict, "order %d was already cancelled (declined, or not paid within the payment window); this payment is recorded for refund", o.ID)
	default: // failed, but the order is paid
		return 0, shop.Errorf(shop.Conflict, "order %d is already paid; a decline cannot cancel it", o.ID)
	}
}

// crashPoint is CRASH_AT, "workflow:step": the process exits right after step
// N of that workflow (numbered in workflow.go) commits, and a test restarts
// it without CRASH_AT and checks that the workflow carries on from exactly
// there. The zero value never crashes.
type crashPoint struct {
	workflow string
	step     int
}

func parseCrashPoint(s string) (crashPoint, error) {
	name, num, ok := strings.Cut(s, ":")
	step, err := strconv.Atoi(num)
	if !ok || err != nil || step < 1 || (name != shop.CheckoutWorkflow && name != shop.DispatchWorkflow && name != shop.RefundWorkflow) {
		return crashPoint{}, fmt.Errorf("CRASH_AT %q: want checkout:N, dispatch:N or refund:N with N ≥ 1", s)
	}
	return crashPoint{workflow: name, step: step}, nil
}

// crashAfter exits the process if CRASH_AT names step n of workflow name.
func (w *workflows) crashAfter(name string, n int) {
	if w.crash.workflow == name && w.crash.step == n {
		w.logger.Warn("CRASH_AT: exiting", "workflow", name, "step", n)
		os.Exit(supervisor.ExitCrash)
	}
}

// Release, Redispatch and Refund (refund.go) are the durable actions the reconciler takes
// (internal/reconcile.Actions).

// Release starts (or finds) the release workflow of an order and waits for it.
func (w *workflows) Release(ctx context.Context, orderID int64) error {
	h, err := dbos.RunWorkflow(w.dctx, w.release, orderID, dbos.WithWorkflowID(shop.ReleaseWorkflowID(orderID)))
	if err != nil {
		return fmt.Errorf("release order %d: %w", orderID, err)
	}
	if _, err := h.GetResult(); err != nil {
		return fmt.Errorf("release order %d: %w", orderID, err)
	}
	return nil
}

// Redispatch starts (or finds) a second dispatch of a paid order whose own
// will not run again; it runs on by itself.
//
// Its schedule goes on from the order's progress: the next leg is due in a
// second.
func (w *workflows) Redispatch(ctx context.Context, orderID int64) error {
	o, err := w.db.OrderByID(ctx, orderID)
	if err != nil {
		return fmt.Errorf("redispatch order %d: %w", orderID, err)
	}
	done := int64(shop.DispatchLegs - o.ProgressRemaining)
	in := dispatchInput{OrderID: orderID, FirstDueMs: w.steps.now().Add(time.Second).UnixMilli() - done*time.Second.Milliseconds()}
	if _, err := dbos.RunWorkflow(w.dctx, w.dispatch, in, dbos.WithWorkflowID(shop.RedispatchWorkflowID(orderID))); err != nil {
		return fmt.Errorf("redispatch order %d: %w", orderID, err)
	}
	w.logger.Warn("redispatch: the order's dispatch will not run again; dispatching it once more", "order_id", orderID)
	return nil
}

// checkoutGone reports, for an order still PENDING, a checkout that will
// never take its payment: its workflow cancelled, failed, dead-lettered or
// deleted, or finished (SUCCESS with the order PENDING is a re-run of a
// deleted checkout, which answered from the order and ended).
func (w *workflows) checkoutGone(ctx context.Context, key string) (bool, error) {
	st, err := dbos.ListWorkflows(dbos.From(w.dctx, ctx), dbos.WithFilterWorkflowIDs(key),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return false, err
	}
	return len(st) == 0 || reconcile.Dead(st[0].Status) || st[0].Status == dbos.WorkflowStatusSuccess, nil
}

// Refund starts (or finds) the refund workflow of late payment pid; it runs
// on by itself. It is the reconciler's action (internal/reconcile.Actions)
// for a late payment whose refund workflow does not exist.
func (w *workflows) Refund(ctx context.Context, pid string) error {
	o, err := w.db.OrderByKey(ctx, pid)
	if err != nil {
		return fmt.Errorf("refund %s: %w", pid, err)
	}
	return w.startRefund(o)
}

// startRefund starts the refund workflow of the late payment for order o
// (whose key is the payment id), on the store's root DBOS context: a
// request's would cancel it with the request.
func (w *workflows) startRefund(o shop.Order) error {
	in := refundInput{PaymentID: o.Key, OrderID: o.ID, AmountCents: o.PriceCents}
	if _, err := dbos.RunWorkflow(w.dctx, w.refund, in, dbos.WithWorkflowID(shop.RefundWorkflowID(o.Key))); err != nil {
		return fmt.Errorf("refund %s: %w", o.Key, err)
	}
	return nil
}

// cancelOrder is an operator's Cancel-and-refund of an unfinished order (the
// internals panel's button; see CancelOrder): one step cancels it, returns
// its unit and, if it was paid, records the payment for refund; then the
// refund workflow of that payment is started as a child (its ID is per
// payment, so the reconciler, which also starts refunds of late payments,
// finds it started). Its ID is per order (shop.CancelOrderWorkflowID): a
// double click or two operators cancel once.
func (w *workflows) cancelOrder(ctx dbos.Context, orderID int64) (cancelled, error) {
	c, err := dbos.RunAsTransaction(ctx, w.ds, w.steps.cancelOrder(orderID), dbos.WithStepName(shop.StepCancelOrder))
	if err != nil || !c.WasPaid {
		return c, err
	}
	in := refundInput{PaymentID: c.Key, OrderID: orderID, AmountCents: c.Price}
	if _, err := dbos.RunWorkflow(ctx, w.refund, in, dbos.WithWorkflowID(shop.RefundWorkflowID(c.Key))); err != nil {
		return c, fmt.Errorf("start the refund of %s: %w", c.Key, err)
	}
	w.log(ctx, orderID).Warn("cancel-order: an operator cancelled the paid order; its payment is being refunded", "payment_id", c.Key)
	return c, nil
}

// operations are the operator's actions of the internals panel
// (web.Operations): the list of what needs attention, Retry and
// Cancel-and-refund, on DBOS's own APIs.
type operations struct {
	w         *workflows
	reconcile *reconcile.Reconciler
	payWindow time.Duration
}

// attentionLimit bounds the orders and late payments one attention list
// reads (the internals panel polls it every second).
const attentionLimit = 50

// Attention lists what an operator should look at (reconcile.Attention).
func (o operations) Attention(ctx context.Context) ([]shop.Attention, error) {
	return o.reconcile.Attention(ctx, o.payWindow, attentionLimit)
}

// Retry runs the stopped workflow behind order id that the attention list
// offers to retry again, and returns the ID of the execution that does.
//
// A workflow stopped by a cancel (or a crash loop) is resumed
// (dbos.ResumeWorkflow: it runs on from its last completed step). One that
// failed at a step cannot be resumed usefully: DBOS checkpoints the step's
// error with it, so a resumed execution replays the same error. It is
// forked from that step instead (dbos.ForkWorkflow: a new execution, with
// the checkpoints before the step, that runs the step again). That is safe
// for every workflow offered here: a dispatch's legs are idempotent, and a
// refund's provider call carries the payment id as its idempotency key. The
// fork's ID is the original's plus "/retry-N" (reconcile.RetryIDs), N
// counting the forks, so two clicks at once fork once.
func (o operations) Retry(ctx context.Context, id int64) (string, error) {
	list, err := o.Attention(ctx)
	if err != nil {
		return "", err
	}
	i := slices.IndexFunc(list, func(a shop.Attention) bool { return a.Order.ID == id && a.Retry != "" })
	if i < 0 {
		return "", shop.Errorf(shop.Conflict, "order %d has no stopped workflow to retry (it may have moved on; reload)", id)
	}
	wid := list[i].Retry
	dctx := dbos.From(o.w.dctx, ctx)
	steps, err := dbos.GetWorkflowSteps(dctx, wid, dbos.WithStepsLoadOutput(false))
	if err != nil {
		return "", fmt.Errorf("steps of %s: %w", wid, err)
	}
	failed := slices.IndexFunc(steps, func(s dbos.StepInfo) bool { return s.Error != nil })
	if failed < 0 {
		if _, err := dbos.ResumeWorkflow[any](o.w.dctx, wid); err != nil {
			return "", fmt.Errorf("resume %s: %w", wid, err)
		}
		o.w.logger.Warn("an operator resumed a workflow", "workflow_id", wid, "order_id", id)
		return wid, nil
	}
	retries := reconcile.RetryIDs(wid)
	forks, err := dbos.ListWorkflows(dctx, dbos.WithFilterWorkflowIDs(retries...), dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return "", fmt.Errorf("forks of %s: %w", wid, err)
	}
	if len(forks) >= len(retries) {
		return "", shop.Errorf(shop.Conflict, "workflow %s was retried %d times already; look at its error (dbos workflow steps) before forking it again with DBOS's CLI", wid, len(forks))
	}
	fork := retries[len(forks)]
	if _, err := dbos.ForkWorkflow[any](o.w.dctx, dbos.ForkWorkflowInput{
		OriginalWorkflowID: wid, ForkedWorkflowID: fork, StartStep: uint(steps[failed].StepID),
	}); err != nil {
		return "", fmt.Errorf("fork %s from step %d: %w", wid, steps[failed].StepID, err)
	}
	o.w.logger.Warn("an operator retried a failed workflow from its failed step", "workflow_id", wid, "fork", fork,
		"step", steps[failed].StepName, "order_id", id)
	return fork, nil
}

// CancelOrder cancels unfinished order id and refunds its payment if it was
// paid: it cancels the order's live workflows with DBOS (so none of them goes
// on: their next step finds them cancelled), then runs the cancel-order
// workflow and waits for it. A final order is a shop.Conflict.
func (o operations) CancelOrder(ctx context.Context, id int64) (shop.Order, error) {
	ord, err := o.w.db.OrderByID(ctx, id)
	if err != nil {
		return ord, err
	}
	if ord.Final() {
		return ord, shop.Errorf(shop.Conflict, "order %d is already %s: nothing to cancel", id, ord.Status)
	}
	live, err := o.reconcile.Live(ctx, ord)
	if err != nil {
		return ord, err
	}
	for _, wid := range live {
		if err := dbos.CancelWorkflow(o.w.dctx, wid); err != nil {
			return ord, fmt.Errorf("cancel workflow %s of order %d: %w", wid, id, err)
		}
	}
	h, err := dbos.RunWorkflow(o.w.dctx, o.w.cancelOrder, id, dbos.WithWorkflowID(shop.CancelOrderWorkflowID(id)))
	if err != nil {
		return ord, fmt.Errorf("cancel order %d: %w", id, err)
	}
	c, err := h.GetResult()
	if err != nil {
		return ord, fmt.Errorf("cancel order %d: %w", id, err)
	}
	if ord, err = o.w.db.OrderByID(ctx, id); err != nil {
		return ord, err
	}
	if !c.Cancelled {
		return ord, shop.Errorf(shop.Conflict, "order %d became %s before it could be cancelled", id, c.Status)
	}
	o.w.logger.Warn("an operator cancelled an order", "order_id", id, "was_paid", c.WasPaid)
	return ord, nil
}
