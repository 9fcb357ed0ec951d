// Package reconcile makes sure every order reaches a final state even when
// the workflow that should have taken it there never will: an operator
// cancelled it (dbos workflow cancel), it failed (ERROR), DBOS dead-lettered
// it after too many recovery attempts, or it was deleted.
//
// A Reconciler looks at the store's unfinished orders (PENDING or PAID) at
// start and every interval, and at the workflows behind each. It decides:
//
//   - PENDING, and its checkout will not run again: release it: cancel the
//     order and return its unit (Actions.Release). A payment that comes for it
//     later is answered 409 and recorded for refund, like any payment for a
//     cancelled order.
//   - PAID (the customer has paid), and neither its checkout nor its dispatch
//     will start or finish the dispatch: dispatch it once more
//     (Actions.Redispatch); its legs are idempotent, so it picks up where the
//     order's progress is.
//   - anything else: a workflow is alive and will finish it; leave it.
//
// It also looks at the late payments (payments that came for an order
// already cancelled) whose refund is not recorded yet: one whose refund
// workflow ("refund/<payment id>") does not exist, because the process died
// between recording the payment and starting its refund, gets it started
// (Actions.Refund). One whose refund workflow exists is left to it, alive or
// dead: a dead refund (ERROR after the provider refused it, or cancelled)
// is an operator's to look at and resume, not to start again.
//
// The actions are durable and exactly once by construction: each is a DBOS
// workflow whose ID is derived from the order or payment ("release/N",
// "redispatch/N", "refund/<payment id>"),
// so however many instances or passes ask, it runs once, and a crash halfway
// resumes it. That is also why every instance may run a Reconciler: two that
// find the same order start the same workflow, which DBOS runs once.
//
// An order younger than Grace is left alone (its checkout is being started);
// a checkout still PENDING or ENQUEUED is alive, whoever runs it.
package reconcile

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// Actions are the durable actions a Reconciler takes.
type Actions interface {
	Release(ctx context.Context, orderID int64) error
	Redispatch(ctx context.Context, orderID int64) error
	Refund(ctx context.Context, paymentID string) error
}

// Dead reports a workflow status that will not change by itself: the
// workflow will not run again unless an operator resumes it.
func Dead(s dbos.WorkflowStatusType) bool {
	return s == dbos.WorkflowStatusCancelled || s == dbos.WorkflowStatusError || s == dbos.WorkflowStatusMaxRecoveryAttemptsExceeded
}

// Grace is how old an unfinished order must be before a Reconciler looks at
// its workflows.
const Grace = 5 * time.Second

// batch bounds the orders one pass reads.
const batch = 500

// Reconciler is the background service.
type Reconciler struct {
	db      *store.DB
	dctx    dbos.Context
	actions Actions
	every   time.Duration
	logger  *slog.Logger
	stop    func()
}

// New makes a Reconciler that passes every interval.
func New(db *store.DB, dctx dbos.Context, a Actions, every time.Duration, logger *slog.Logger) *Reconciler {
	return &Reconciler{db: db, dctx: dctx, actions: a, every: every, logger: logger.With("component", "reconcile"), stop: func() {}}
}

// Start runs a pass now and then every interval, until Stop.
func (r *Reconciler) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(r.every)
		defer t.Stop()
		for {
			if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
				r.logger.Warn("reconciliation pass failed; trying again at the next", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	r.stop = func() { cancel(); <-done }
}

// Stop stops the service and waits for a pass in progress. Safe without Start.
func (r *Reconciler) Stop() { r.stop() }

// Pass reconciles once and returns how many orders and late payments it
// acted on.
func (r *Reconciler) Pass(ctx context.Context) (int, error) {
	acted, err := r.orders(ctx)
	if err != nil {
		return acted, err
	}
	refunds, err := r.refunds(ctx)
	return acted + refunds, err
}

// refunds starts the refund of every unrefunded late payment whose refund
// workflow does not exist. No grace period: a refund started twice (here and
// by the webhook that recorded the payment) is one workflow.
func (r *Reconciler) refunds(ctx context.Context) (int, error) {
	pids, err := r.db.UnrefundedLatePayments(ctx, batch)
	if err != nil || len(pids) == 0 {
		return 0, err
	}
	ids := make([]string, 0, len(pids))
	for _, pid := range pids {
		ids = append(ids, shop.RefundWorkflowID(pid))
	}
	statuses, err := dbos.ListWorkflows(dbos.From(r.dctx, ctx), dbos.WithFilterWorkflowIDs(ids...),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return 0, err
	}
	exists := make(map[string]bool, len(statuses))
	for _, s := range statuses {
		exists[s.ID] = true
	}
	acted := 0
	for _, pid := range pids {
		if exists[shop.RefundWorkflowID(pid)] {
			continue
		}
		r.logger.Warn("a late payment has no refund workflow; starting it", "payment_id", pid)
		if err := r.actions.Refund(ctx, pid); err != nil {
			return acted, err
		}
		acted++
	}
	return acted, nil
}

// orders acts on the unfinished orders no workflow will finish.
func (r *Reconciler) orders(ctx context.Context) (int, error) {
	orders, err := r.db.UnfinishedOrders(ctx, time.Now().Add(-Grace), batch)
	if err != nil || len(orders) == 0 {
		return 0, err
	}
	ids := make([]string, 0, 3*len(orders))
	for _, o := range orders {
		ids = append(ids, o.Key, shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID))
	}
	statuses, err := dbos.ListWorkflows(dbos.From(r.dctx, ctx), dbos.WithFilterWorkflowIDs(ids...),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return 0, err
	}
	status := make(map[string]dbos.WorkflowStatusType, len(statuses))
	for _, s := range statuses {
		status[s.ID] = s.Status
	}
	alive := func(id string) bool {
		s, ok := status[id]
		return ok && !Dead(s) && s != dbos.WorkflowStatusSuccess
	}
	acted := 0
	for _, o := range orders {
		var err error
		switch {
		case o.Status == shop.StatusPending && !alive(o.Key):
			r.logger.Warn("an order's checkout will not run again; releasing it", "order_id", o.ID, "checkout", o.Key, "checkout_status", status[o.Key])
			err = r.actions.Release(ctx, o.ID)
		case o.Status == shop.StatusPaid && !slices.ContainsFunc([]string{o.Key, shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID)}, alive):
			if _, started := status[shop.RedispatchWorkflowID(o.ID)]; started {
				continue // dispatched once more already, and that one is dead too: an operator's to look at
			}
			r.logger.Warn("a paid order's dispatch will not run again; dispatching it once more", "order_id", o.ID,
				"dispatch_status", status[shop.DispatchWorkflowID(o.ID)])
			err = r.actions.Redispatch(ctx, o.ID)
		default:
			continue
		}
		if err != nil {
			return acted, err
		}
		acted++
	}
	return acted, nil
}
