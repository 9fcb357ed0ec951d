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
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/periodic"
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
	loop    *periodic.Loop // nil until Start
}

// New makes a Reconciler that passes every interval.
func New(db *store.DB, dctx dbos.Context, a Actions, every time.Duration, logger *slog.Logger) *Reconciler {
	return &Reconciler{db: db, dctx: dctx, actions: a, every: every, logger: logger.With("component", "reconcile")}
}

// Start runs a pass now and then every interval, until Stop.
func (r *Reconciler) Start() {
	r.loop = periodic.Start(r.every, func(ctx context.Context) {
		if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.logger.Warn("reconciliation pass failed; trying again at the next", "err", err)
		}
	})
}

// Stop stops the service and waits for a pass in progress. Safe without Start.
func (r *Reconciler) Stop() { r.loop.Stop() }

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

// orders acts on the unfinished orders no workflow will finish, a page of
// batch at a time, through all of them.
func (r *Reconciler) orders(ctx context.Context) (int, error) {
	acted := 0
	before := time.Now().Add(-Grace)
	for after := int64(0); ; {
		orders, err := r.db.UnfinishedOrders(ctx, before, after, batch)
		if err != nil || len(orders) == 0 {
			return acted, err
		}
		n, err := r.ordersPage(ctx, orders)
		acted += n
		if err != nil || len(orders) < batch {
			return acted, err
		}
		after = orders[len(orders)-1].ID
	}
}

// statuses reads the DBOS status of the workflows behind orders (checkout,
// dispatch, redispatch, release, an operator's cancel), in one query.
func (r *Reconciler) statuses(ctx context.Context, orders []shop.Order) (map[string]dbos.WorkflowStatus, error) {
	ids := make([]string, 0, 5*len(orders))
	for _, o := range orders {
		ids = append(ids, o.Key, shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID),
			shop.ReleaseWorkflowID(o.ID), shop.CancelOrderWorkflowID(o.ID))
	}
	return r.byID(ctx, ids)
}

func (r *Reconciler) byID(ctx context.Context, ids []string) (map[string]dbos.WorkflowStatus, error) {
	list, err := dbos.ListWorkflows(dbos.From(r.dctx, ctx), dbos.WithFilterWorkflowIDs(ids...),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return nil, err
	}
	out := make(map[string]dbos.WorkflowStatus, len(list))
	for _, s := range list {
		out[s.ID] = s
	}
	return out, nil
}

// alive reports a workflow that exists and will still run.
func alive(status map[string]dbos.WorkflowStatus, id string) bool {
	s, ok := status[id]
	return ok && !Dead(s.Status) && s.Status != dbos.WorkflowStatusSuccess
}

func (r *Reconciler) ordersPage(ctx context.Context, orders []shop.Order) (int, error) {
	status, err := r.statuses(ctx, orders)
	if err != nil {
		return 0, err
	}
	acted := 0
	for _, o := range orders {
		var err error
		switch {
		case o.Status == shop.StatusPending && !alive(status, o.Key):
			r.logger.Warn("an order's checkout will not run again; releasing it", "order_id", o.ID, "checkout", o.Key, "checkout_status", status[o.Key].Status)
			err = r.actions.Release(ctx, o.ID)
		case o.Status == shop.StatusPaid && !slices.ContainsFunc([]string{o.Key, shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID)}, func(id string) bool { return alive(status, id) }):
			if _, started := status[shop.RedispatchWorkflowID(o.ID)]; started {
				continue // dispatched once more already, and that one is dead too: an operator's to look at (Attention)
			}
			r.logger.Warn("a paid order's dispatch will not run again; dispatching it once more", "order_id", o.ID,
				"dispatch_status", status[shop.DispatchWorkflowID(o.ID)].Status)
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

// Stuck is how long an order may go without a change before the attention
// list shows it: a PAID order's dispatch writes a leg every second, and a
// refund is made within seconds unless the provider refuses it.
const Stuck = time.Minute

// Attention lists the orders and late payments an operator should look at
// (the internals panel shows them, with Retry and Cancel-and-refund): those
// the reconciler will not fix by itself, because the workflow it would
// start is dead too, or that have not moved for longer than they should.
// payWindow is the checkout's payment window (PAYMENT_TIMEOUT). It reads at
// most limit orders and limit late payments, oldest first.
func (r *Reconciler) Attention(ctx context.Context, payWindow time.Duration, limit int) ([]shop.Attention, error) {
	now := time.Now()
	orders, err := r.db.UnfinishedOrders(ctx, now.Add(-Grace), 0, limit)
	if err != nil {
		return nil, err
	}
	var out []shop.Attention
	if len(orders) > 0 {
		status, err := r.statuses(ctx, orders)
		if err != nil {
			return nil, err
		}
		// The forks an operator's Retry made of a paid order's dispatches:
		// looked up only for an order none of whose own workflows is alive
		// (orderAttention needs them only then), which is almost never.
		var forks []string
		for _, o := range orders {
			if o.Status == shop.StatusPaid && !slices.ContainsFunc([]string{o.Key, shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID)},
				func(id string) bool { return alive(status, id) }) {
				forks = append(forks, RetryIDs(shop.DispatchWorkflowID(o.ID))...)
				forks = append(forks, RetryIDs(shop.RedispatchWorkflowID(o.ID))...)
			}
		}
		if len(forks) > 0 {
			more, err := r.byID(ctx, forks)
			if err != nil {
				return nil, err
			}
			maps.Copy(status, more)
		}
		for _, o := range orders {
			if a, ok := orderAttention(o, status, now, payWindow); ok {
				out = append(out, a)
			}
		}
	}
	pids, err := r.db.UnrefundedLatePayments(ctx, limit)
	if err != nil || len(pids) == 0 {
		return out, err
	}
	ids := make([]string, len(pids))
	for i, pid := range pids {
		ids[i] = shop.RefundWorkflowID(pid)
	}
	// An operator's Retry of a failed refund forks it (RetryIDs): a live
	// fork is the refund in progress.
	for _, id := range ids {
		ids = append(ids, RetryIDs(id)...)
	}
	status, err := r.byID(ctx, ids)
	if err != nil {
		return nil, err
	}
	retrying := map[string]bool{}
	for _, st := range status {
		if st.ForkedFrom != "" && alive(status, st.ID) {
			retrying[st.ForkedFrom] = true
		}
	}
	for _, pid := range pids {
		st, ok := status[shop.RefundWorkflowID(pid)]
		if !ok || retrying[st.ID] || (!Dead(st.Status) && now.Sub(st.CreatedAt) < Stuck) {
			continue // being started (the reconciler starts a missing one), or in progress
		}
		o, err := r.db.OrderByKey(ctx, pid)
		if err != nil {
			return nil, err
		}
		a := shop.Attention{Order: o, PaymentID: pid, Workflows: []shop.WorkflowState{state(st)}}
		if Dead(st.Status) {
			a.Reason = "The refund of this payment stopped (" + string(st.Status) + "); the provider is called again with the same idempotency key on Retry."
			a.Retry = st.ID
		} else {
			a.Reason = "The refund of this payment has been retrying since " + st.CreatedAt.Local().Format("15:04:05") + ": the provider keeps refusing it."
		}
		out = append(out, a)
	}
	return out, nil
}

func state(st dbos.WorkflowStatus) shop.WorkflowState {
	s := shop.WorkflowState{ID: st.ID, Status: string(st.Status)}
	if st.Error != nil {
		s.Error = st.Error.Error()
	}
	return s
}

// orderAttention decides whether unfinished order o needs an operator.
func orderAttention(o shop.Order, status map[string]dbos.WorkflowStatus, now time.Time, payWindow time.Duration) (shop.Attention, bool) {
	a := shop.Attention{Order: o, CanCancel: true}
	ids := []string{o.Key, shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID), shop.ReleaseWorkflowID(o.ID), shop.CancelOrderWorkflowID(o.ID)}
	for _, id := range ids {
		if st, ok := status[id]; ok {
			a.Workflows = append(a.Workflows, state(st))
		}
	}
	if st, ok := status[shop.CancelOrderWorkflowID(o.ID)]; ok && !Dead(st.Status) {
		return a, false // an operator's cancel is on its way
	}
	idle := now.Sub(o.LastUpdate)
	switch o.Status {
	case shop.StatusPending:
		if st, ok := status[shop.ReleaseWorkflowID(o.ID)]; ok && Dead(st.Status) {
			a.Reason, a.Retry = "Its checkout will not take a payment and its release stopped ("+string(st.Status)+").", st.ID
			return a, true
		}
		if alive(status, o.Key) && now.Sub(o.CreatedAt) > payWindow+Stuck {
			a.Reason = "Waiting for its payment for longer than the payment window (" + payWindow.String() + ")."
			return a, true
		}
	case shop.StatusPaid:
		live := slices.Concat(ids[:3], RetryIDs(ids[1]), RetryIDs(ids[2]))
		if slices.ContainsFunc(live, func(id string) bool { return alive(status, id) }) {
			if idle > Stuck {
				a.Reason = "Paid, but its dispatch has not moved for " + idle.Round(time.Second).String() + "."
				return a, true
			}
			return a, false
		}
		// Nothing alive will dispatch it: the reconciler dispatches it once
		// more unless it already did, and that one stopped too.
		retry := ""
		for _, id := range ids[1:3] {
			if st, ok := status[id]; ok && Dead(st.Status) {
				retry = id // the latest dead dispatch: resume it
			}
		}
		if _, redispatched := status[shop.RedispatchWorkflowID(o.ID)]; redispatched && retry != "" {
			a.Reason, a.Retry = "Paid, but its dispatch stopped, and so did the second dispatch the reconciler started.", retry
			return a, true
		}
	}
	return a, false
}

// Live lists the workflows of order o that are still alive (PENDING or
// ENQUEUED): its checkout, dispatch, redispatch and release.
func (r *Reconciler) Live(ctx context.Context, o shop.Order) ([]string, error) {
	status, err := r.statuses(ctx, []shop.Order{o})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range []string{o.Key, shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID), shop.ReleaseWorkflowID(o.ID)} {
		if alive(status, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

// MaxRetries bounds the operator's Retry forks of one workflow.
const MaxRetries = 5

// RetryIDs are the IDs an operator's Retry gives the forks of workflow id,
// in order: id + "/retry-1" … "/retry-5". Fixed IDs make a double click fork
// once, and let the forks be found by primary key (DBOS has no index on
// forked_from).
func RetryIDs(id string) []string {
	out := make([]string, MaxRetries)
	for i := range out {
		out[i] = id + "/retry-" + strconv.Itoa(i+1)
	}
	return out
}
