package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
)

// Order statuses, as stored and as the JSON API reports them. The numbers
// are the reference widget store's, so existing clients keep working.
const (
	statusCancelled  = -1
	statusPending    = 0
	statusDispatched = 1
	statusPaid       = 2
)

// Names under which workflows, events and messages are recorded. They are
// part of the durable state: renaming one strands workflows already started.
const (
	eventPaymentID     = "payment_id"     // checkout → shopper: the payment id, "" when sold out
	eventOrderResult   = "order_result"   // checkout → webhook: the order id and its outcome
	topicPaymentStatus = "payment_status" // webhook → checkout (Postgres): "paid" or "failed"
	eventPaymentStatus = "payment_status" // payment workflow → checkout (SQLite): the same
)

// dispatchSteps is how many one-second legs the dispatch of an order takes.
const dispatchSteps = 10

// Payment statuses the webhook accepts. Anything else is rejected before it
// reaches a workflow: a typo must not cancel a customer's order.
const (
	paymentPaid   = "paid"
	paymentFailed = "failed"
)

// paymentTimedOut is what checkout records when no payment came in time.
const paymentTimedOut = "timeout"

// checkoutInput is the checkout workflow's recorded input.
type checkoutInput struct {
	Shopper string `json:"shopper,omitempty"` // the browser that bought, for "your orders"
}

// orderResult is the checkout's outcome, published for the webhook and
// returned as the workflow's result. OrderID is 0 when the product sold out.
type orderResult struct {
	OrderID int64 `json:"order_id"`
	Status  int   `json:"order_status"`
}

// dispatchInput is the dispatch workflow's recorded input.
type dispatchInput struct {
	OrderID int64 `json:"order_id"`
	// FirstDueMs is when the first leg completes (Unix ms). It is derived from
	// the checkpointed payment time, so a recovered dispatch keeps its schedule.
	FirstDueMs int64 `json:"first_due_ms"`
}

// The workflow IDs of the helpers of a checkout. Checkout keys cannot contain
// "/", so these never collide with a checkout's own ID.
func dispatchWorkflowID(orderID int64) string { return "dispatch/" + strconv.FormatInt(orderID, 10) }
func paymentWorkflowID(key string) string     { return "payment/" + key }

// registerWorkflows registers every workflow under a stable name, which is
// what DBOS records and looks up at recovery.
func (a *app) registerWorkflows() {
	dbos.RegisterWorkflow(a.dbos, a.checkoutWorkflow, dbos.WithWorkflowName("checkout"))
	dbos.RegisterWorkflow(a.dbos, a.dispatchWorkflow, dbos.WithWorkflowName("dispatch"))
	dbos.RegisterWorkflow(a.dbos, a.paymentWorkflow, dbos.WithWorkflowName("payment"))
}

// checkoutWorkflow sells one widget. Its ID is the client's idempotency key,
// so a key runs it at most once. Steps (numbered for CRASH_AT):
//
//  1. reserve a unit and create the PENDING order (one transaction)
//  2. publish the payment id ("" when sold out, and stop)
//  3. wait for the payment status, at most PAYMENT_TIMEOUT, durably
//  4. paid: mark the order PAID / otherwise: cancel it and return the unit
//  5. paid: start the dispatch workflow
//  6. publish the outcome for the webhook
//
// Every write is a RunAsTransaction, so it commits with its checkpoint and a
// crash can never apply it twice.
func (a *app) checkoutWorkflow(ctx dbos.Context, in checkoutInput) (orderResult, error) {
	key, err := dbos.GetWorkflowID(ctx)
	if err != nil {
		return orderResult{}, err
	}
	orderID, err := dbos.RunAsTransaction(ctx, a.ds, checkoutTx{a: a, key: key, shopper: in.Shopper}.reserveAndCreateOrder)
	if err != nil {
		return orderResult{}, err
	}
	a.afterStep("checkout", 1)
	log := a.wfLogger(ctx, orderID)
	if orderID == 0 {
		log.Info("checkout: sold out")
		if err := dbos.SetEvent(ctx, eventPaymentID, ""); err != nil {
			return orderResult{}, err
		}
		a.afterStep("checkout", 2)
		return orderResult{}, nil
	}
	if err := dbos.SetEvent(ctx, eventPaymentID, key); err != nil {
		return orderResult{}, err
	}
	a.afterStep("checkout", 2)
	log.Debug("checkout: order created, awaiting payment")

	status, err := a.awaitPayment(ctx, key)
	if err != nil {
		return orderResult{}, err
	}
	a.afterStep("checkout", 3)
	log.Info("checkout: payment status", "payment", status)

	result := orderResult{OrderID: orderID}
	order := orderTx{a: a, orderID: orderID}
	if status == paymentPaid {
		paidAtMs, err := dbos.RunAsTransaction(ctx, a.ds, order.markPaid)
		if err != nil {
			return orderResult{}, err
		}
		a.afterStep("checkout", 4)
		// A child workflow: started once (the start is checkpointed), and it
		// runs on by itself after checkout completes.
		in := dispatchInput{OrderID: orderID, FirstDueMs: paidAtMs + time.Second.Milliseconds()}
		if _, err := dbos.RunWorkflow(ctx, a.dispatchWorkflow, in, dbos.WithWorkflowID(dispatchWorkflowID(orderID))); err != nil {
			return orderResult{}, err
		}
		a.afterStep("checkout", 5)
		result.Status = statusPaid
	} else {
		order.paymentStatus = status
		if _, err := dbos.RunAsTransaction(ctx, a.ds, order.cancel); err != nil {
			return orderResult{}, err
		}
		a.afterStep("checkout", 4)
		result.Status = statusCancelled
	}
	if err := dbos.SetEvent(ctx, eventOrderResult, result); err != nil {
		return orderResult{}, err
	}
	a.afterStep("checkout", 6)
	return result, nil
}

// awaitPayment waits durably for the payment status: the deadline is
// checkpointed, so a wait cut by a crash still ends PAYMENT_TIMEOUT after it
// began. It returns "paid", "failed" or "timeout".
//
// The wake-up path differs by database (see deliverPayment). Postgres wakes a
// Recv through a trigger and LISTEN/NOTIFY within milliseconds. SQLite has no
// NOTIFY and DBOS wakes a Recv there from a one-second poller (≈500 ms median),
// but a SetEvent in this process wakes a local GetEvent at once, so on SQLite
// the webhook records the status as an event of a one-step payment workflow.
func (a *app) awaitPayment(ctx dbos.Context, key string) (string, error) {
	defer a.metrics.step("checkout", "await_payment", time.Now()) // a replay after recovery records ~0
	var status string
	var err error
	if a.dialect.postgres {
		status, err = dbos.Recv[string](ctx, topicPaymentStatus, a.cfg.PayTimeout)
	} else {
		status, err = dbos.GetEvent[string](ctx, paymentWorkflowID(key), eventPaymentStatus, a.cfg.PayTimeout)
	}
	if errors.Is(err, dbos.ErrTimeout) {
		return paymentTimedOut, nil
	}
	return status, err
}

// deliverPayment hands a payment status to the checkout waiting for it,
// durably and at most once per payment id: a duplicate delivery is dropped
// (Send's idempotency key, or the payment workflow's fixed ID), so the first
// status to arrive is the one checkout sees.
func (a *app) deliverPayment(key, status string) error {
	if a.dialect.postgres {
		return dbos.Send(a.dbos, key, status, topicPaymentStatus, dbos.WithIdempotencyKey("payment/"+key))
	}
	_, err := dbos.RunWorkflow(a.dbos, a.paymentWorkflow, status, dbos.WithWorkflowID(paymentWorkflowID(key)))
	return err
}

// paymentWorkflow (SQLite only, see awaitPayment) records a payment status as
// an event that wakes the waiting checkout in this process at once.
func (a *app) paymentWorkflow(ctx dbos.Context, status string) (string, error) {
	return status, dbos.SetEvent(ctx, eventPaymentStatus, status)
}

// dispatchWorkflow ships a paid order in dispatchSteps legs of one second,
// counting progress_remaining down to 0, when the order is DISPATCHED.
//
// The waits are durable without a checkpoint of their own: each progress
// transaction records when the next leg is due as its checkpointed output
// (the first due time is in the workflow's input), so a recovered dispatch
// replays those due times and sleeps only what is left of the current leg.
// That saves one commit per leg over dbos.Sleep.
func (a *app) dispatchWorkflow(ctx dbos.Context, in dispatchInput) (int64, error) {
	due := in.FirstDueMs
	for remaining := dispatchSteps - 1; remaining >= 0; remaining-- {
		if err := a.sleepUntil(ctx, due); err != nil {
			return 0, err
		}
		next, err := dbos.RunAsTransaction(ctx, a.ds, progressTx{a: a, orderID: in.OrderID, remaining: remaining}.apply)
		if err != nil {
			return 0, err
		}
		a.afterStep("dispatch", dispatchSteps-remaining)
		due = next
	}
	a.wfLogger(ctx, in.OrderID).Info("dispatch: order dispatched")
	return in.OrderID, nil
}

// sleepUntil waits until the Unix-ms time due, or until ctx ends (shutdown),
// in which case the workflow stays PENDING and resumes at the next start.
func (a *app) sleepUntil(ctx context.Context, dueMs int64) error {
	d := time.UnixMilli(dueMs).Sub(a.now())
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// afterStep exits the process right after step n of workflow w committed, when
// CRASH_AT asks for it: a test restarts the store (without CRASH_AT) and
// checks that the workflow carries on from exactly that point.
func (a *app) afterStep(w string, n int) {
	if a.crashWorkflow == w && a.crashStep == n {
		a.logger.Warn("CRASH_AT: exiting", "workflow", w, "step", n)
		a.exit(exitCrash)
	}
}

// startCheckout starts (or, for a key seen before, finds) the checkout
// workflow and waits for its payment id. It returns "" when sold out.
func (a *app) startCheckout(ctx context.Context, key, shopper string) (string, error) {
	// The workflow runs on the app's root context, never the request's: a
	// cancelled request context would durably cancel the workflow.
	if _, err := dbos.RunWorkflow(a.dbos, a.checkoutWorkflow, checkoutInput{Shopper: shopper}, dbos.WithWorkflowID(key)); err != nil {
		return "", fmt.Errorf("start checkout: %w", err)
	}
	pid, err := dbos.GetEvent[string](dbos.From(a.dbos, ctx), key, eventPaymentID, 30*time.Second)
	if errors.Is(err, dbos.ErrTimeout) {
		return "", errorf(503, "checkout %s is still starting; retry with the same key", key)
	}
	if err != nil {
		return "", fmt.Errorf("await payment id: %w", err)
	}
	return pid, nil
}
