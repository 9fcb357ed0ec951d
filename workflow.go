package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/jackc/pgx/v5"

	"widget-store/views"
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
	topicPaymentStatus = "payment_status" // webhook → checkout: "paid" or "failed"
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

// registerWorkflows registers every workflow under a stable name, which is
// what DBOS records and looks up at recovery.
func (a *app) registerWorkflows() {
	dbos.RegisterWorkflow(a.dbos, a.checkoutWorkflow, dbos.WithWorkflowName("checkout"))
	dbos.RegisterWorkflow(a.dbos, a.dispatchWorkflow, dbos.WithWorkflowName("dispatch"))
}

// checkoutWorkflow sells one widget. Its ID is the client's idempotency key,
// so a key runs it at most once. Steps (numbered for CRASH_AT):
//
//  1. reserve a unit and create the PENDING order (one transaction; it also
//     records the payment deadline)
//  2. publish the payment id: in memory, to the request waiting in this
//     process (what step 1 committed, the order row or the sold-out record,
//     is the durable record; a sold-out checkout stops here)
//  3. receive the payment status, waiting at most until the deadline
//  4. paid: mark the order PAID / otherwise: cancel it and return the unit
//  5. paid: start the dispatch workflow
//  6. publish the outcome: in memory, to the webhook waiting in this process
//     (the order's status committed in step 4 is the durable record)
//
// Every write is a RunAsTransaction, so it commits with its checkpoint and a
// crash can never apply it twice. Steps 2 and 6 write nothing: they save two
// SetEvent transactions and the GetEvent reads that waited on them, and a
// request that hears nothing from them reads the database instead (see
// checkoutWatch).
func (a *app) checkoutWorkflow(ctx dbos.Context, in checkoutInput) (orderResult, error) {
	key, err := dbos.GetWorkflowID(ctx)
	if err != nil {
		return orderResult{}, err
	}
	w := a.watches.acquire(key, true)
	defer a.watches.release(key, w, true)
	var reservedNow bool // step 1 ran in this execution (not replayed from its checkpoint)
	res, err := dbos.RunAsTransaction(ctx, a.ds, checkoutTx{a: a, key: key, shopper: in.Shopper, ran: &reservedNow}.reserveAndCreateOrder)
	if err != nil {
		return orderResult{}, err
	}
	a.afterStep("checkout", 1)
	log := a.wfLogger(ctx, res.OrderID)
	if res.OrderID == 0 {
		log.Info("checkout: sold out")
		w.publishStarted(0) // step 1 committed the sold_out_checkouts row

		a.afterStep("checkout", 2)
		return orderResult{}, nil
	}
	w.publishStarted(res.OrderID)
	a.afterStep("checkout", 2)
	log.Debug("checkout: order created, awaiting payment")

	status, err := a.awaitPayment(ctx, key, w, res.PayByMs, reservedNow)
	if err != nil {
		return orderResult{}, err
	}
	a.afterStep("checkout", 3)
	log.Info("checkout: payment status", "payment", status)

	result := orderResult{OrderID: res.OrderID}
	order := orderTx{a: a, orderID: res.OrderID}
	if status == paymentPaid {
		paidAtMs, err := dbos.RunAsTransaction(ctx, a.ds, order.markPaid)
		if err != nil {
			return orderResult{}, err
		}
		a.afterStep("checkout", 4)
		// A child workflow: started once (the start is checkpointed), and it
		// runs on by itself after checkout completes.
		in := dispatchInput{OrderID: res.OrderID, FirstDueMs: paidAtMs + time.Second.Milliseconds()}
		if _, err := dbos.RunWorkflow(ctx, a.dispatchWorkflow, in, dbos.WithWorkflowID(dispatchWorkflowID(res.OrderID))); err != nil {
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
	w.publishOutcome(result)
	a.afterStep("checkout", 6)
	return result, nil
}

// awaitPayment receives the payment status, waiting at most until payByMs
// (recorded by step 1, so a wait cut by a crash still ends PAYMENT_TIMEOUT
// after the order was made). It returns "paid", "failed" or "timeout".
//
// The webhook delivers the status with dbos.Send (see deliverPayment) and
// the checkout takes it with dbos.Recv, which consumes the message and
// checkpoints it in one transaction: exactly once on both databases.
//
// The checkout calls Recv only once its message is there (or at the
// deadline), so Recv never records a deadline step of its own and never
// sleeps in DBOS's wait. Until then the checkout waits for a kick: from a
// webhook in this process right after its Send commits, or, on Postgres,
// from a webhook in any process through the store's own payment channel
// (wakeup.go). Two reasons not to leave the wait to Recv:
//   - SQLite has no NOTIFY: DBOS wakes a Recv there from a one-second poller
//     (≈500 ms median wake-up);
//   - on Postgres, DBOS starts LISTENing in the background after Launch and
//     does not look again for messages that arrived before it listened, so a
//     payment sent in the first moments after a (re)start could leave a
//     recovered checkout asleep until its payment window closed. The store's
//     channel is listening before Launch recovers anything, and every kick
//     (and a check every paymentRecheck, as a safety net) reads the database.
//
// A checkout whose order was created in this very execution skips the first
// look: no payment can be sent before the order exists, and this watch was
// held from before that, so any payment sent since is a kick waiting in it.
// A kick that knows its status was sent skips the look too: on the happy
// path the wait reads nothing.
func (a *app) awaitPayment(ctx dbos.Context, key string, w *checkoutWatch, payByMs int64, orderIsNew bool) (string, error) {
	defer a.metrics.step("checkout", "await_payment", time.Now()) // a replay after recovery records ~0
	look := !orderIsNew
	for !w.paymentSent.Load() {
		recheck := paymentRecheck
		if look {
			sent, err := a.paymentMessageExists(ctx, key)
			if err != nil {
				// The read is only a hint: a failure (the database restarting,
				// say) must not fail the checkout. Look again shortly.
				a.logger.Warn("checkout: looking for the payment message failed; retrying", "workflow_id", key, "err", err)
				sent, recheck = false, time.Second
			}
			if sent {
				break
			}
		}
		remaining := time.Until(time.UnixMilli(payByMs))
		if remaining <= 0 {
			break
		}
		look = true
		t := time.NewTimer(min(remaining, recheck))
		select {
		case <-w.paymentKick:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		}
		t.Stop()
	}
	// A deadline already past still gets one Recv: it records the timeout
	// (or takes a message that came just in time) as the checkpoint.
	remaining := time.Until(time.UnixMilli(payByMs))
	status, err := dbos.Recv[string](ctx, topicPaymentStatus, max(remaining, time.Millisecond))
	if errors.Is(err, dbos.ErrTimeout) {
		return paymentTimedOut, nil
	}
	return status, err
}

// paymentRecheck is how often a waiting checkout looks for its payment
// message without having been kicked: a safety net only, every kick path
// is meant to be enough.
const paymentRecheck = 10 * time.Second

// paymentMessageExists reports whether a payment status was ever sent to
// checkout key, consumed or not. It reads DBOS's own notifications table
// (SDK v1.8.0 schema: "notifications" in SQLite, "dbos.notifications" in
// Postgres), read-only, with the lookup DBOS's Recv itself makes.
// Consumed messages count so that a replayed checkout whose Recv is already
// checkpointed goes straight to Recv, which returns the checkpoint.
func (a *app) paymentMessageExists(ctx context.Context, key string) (bool, error) {
	var found bool
	err := a.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+a.dialect.dbosTable("notifications")+` WHERE destination_uuid = $1 AND topic = $2)`,
		key, topicPaymentStatus).Scan(&found)
	if err != nil {
		return false, fmt.Errorf("look for a payment message: %w", err)
	}
	return found, nil
}

// deliverPayment hands a payment status to the checkout behind payment id
// pid and returns its order with the outcome: when the order is still
// PENDING, the status is sent (durably, once per payment id: a duplicate is
// dropped by Send's idempotency key, so the first status to arrive is the one
// checkout sees) and the outcome awaited; otherwise the order as it is.
//
// The order read and the Send are one transaction, so a webhook costs one
// commit. The outcome comes from the checkout in memory when it runs in this
// process, else from the order row (polled with backoff).
func (a *app) deliverPayment(ctx context.Context, pid, status string) (views.Order, error) {
	w := a.watches.acquire(pid, false)
	defer a.watches.release(pid, w, false)
	o, err := a.sendPaymentIfPending(ctx, pid, status)
	if err != nil || o.Status != statusPending {
		return o, err
	}
	w.kickPayment(true)
	deadline := time.Now().Add(60 * time.Second)
	err = w.await(ctx, w.outcome, deadline, func() (bool, error) {
		cur, err := a.orderByKey(ctx, pid)
		if err != nil {
			return false, err
		}
		o = cur
		return cur.Status != statusPending, nil
	})
	if errors.Is(err, errWatchDeadline) {
		return o, errorf(http.StatusServiceUnavailable, "payment for order %d received; the order is still being processed, retry to see its outcome", o.ID)
	}
	if err != nil {
		return o, err
	}
	if r, ok := w.result(); ok {
		o.Status = r.Status
	}
	return o, nil
}

// sendPaymentIfPending reads the order behind pid and, if it is PENDING,
// sends it the payment status, in one transaction.
func (a *app) sendPaymentIfPending(ctx context.Context, pid, status string) (views.Order, error) {
	send := func(tx any) error {
		return dbos.Send(a.dbos, pid, status, topicPaymentStatus,
			dbos.WithIdempotencyKey("payment/"+pid), dbos.WithSendTransaction(tx))
	}
	q := `SELECT ` + orderColumns + ` FROM orders WHERE checkout_key = $1`
	var o views.Order
	var err error
	if a.dialect.postgres {
		err = pgx.BeginFunc(ctx, a.pgPool, func(tx pgx.Tx) error {
			if o, err = scanOrder(tx.QueryRow(ctx, q, pid)); err != nil || o.Status != statusPending {
				return err
			}
			if err := send(tx); err != nil {
				return err
			}
			// Wakes the checkout in whichever instance runs it, at commit.
			_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, paymentChannel, pid)
			return err
		})
	} else {
		err = func() error {
			tx, err := a.sqlDB.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback() // no-op after Commit
			if o, err = scanOrder(tx.QueryRowContext(ctx, q, pid)); err != nil || o.Status != statusPending {
				return err
			}
			if err := send(tx); err != nil {
				return err
			}
			return tx.Commit()
		}()
	}
	if isNoRows(err) {
		return o, errorf(http.StatusNotFound, "unknown payment id %s", pid)
	}
	if err != nil {
		return o, fmt.Errorf("deliver payment: %w", err)
	}
	return o, nil
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
//
// A checkout running in this process hands the payment id over in memory
// right after step 1 commits. A request that does not hear from it (the key
// was used before, or its checkout runs elsewhere) reads what step 1
// committed: the order row, or the sold-out event.
func (a *app) startCheckout(ctx context.Context, key, shopper string) (string, error) {
	w := a.watches.acquire(key, false)
	defer a.watches.release(key, w, false)
	// The workflow runs on the app's root context, never the request's: a
	// cancelled request context would durably cancel the workflow.
	if _, err := dbos.RunWorkflow(a.dbos, a.checkoutWorkflow, checkoutInput{Shopper: shopper}, dbos.WithWorkflowID(key)); err != nil {
		return "", fmt.Errorf("start checkout: %w", err)
	}
	pid := ""
	err := w.await(ctx, w.started, time.Now().Add(30*time.Second), func() (bool, error) {
		state, err := a.checkoutState(ctx, key)
		if state == stepOneOrder {
			pid = key
		}
		return state != stepOneNotYet, err
	})
	if errors.Is(err, errWatchDeadline) {
		return "", errorf(http.StatusServiceUnavailable, "checkout %s is still starting; retry with the same key", key)
	}
	if err != nil {
		return "", fmt.Errorf("await payment id: %w", err)
	}
	if id, ok := w.startedOrder(); ok && id != 0 {
		pid = key
	}
	return pid, nil
}
