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
// A remedy started before that is dead too (an operator cancelled the
// release/N or redispatch/N, or it failed) is not asked for again, since DBOS
// would answer with the dead workflow's error: the order goes to the
// attention list with a Retry. One function (judge) makes this decision for
// both the pass and the attention list. Each order's remedy is independent:
// one that fails is logged and the pass goes on, and the late payments are
// reconciled whatever happened to the orders. An order is read again just
// before its remedy starts, and one that changed since the page was read
// (its checkout finished it meanwhile) is left to the next pass.
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
// resumes it. Each instance runs a Reconciler, and they take turns
// (periodic.Turns): one pass per interval across all of them, however many
// there are. A pass that overlaps another all the same (one longer than the
// interval) is harmless: two that find the same order start the same
// workflow, which DBOS runs once.
//
// An order younger than Grace is left alone (its checkout is being started);
// a checkout still PENDING or ENQUEUED is alive, whoever runs it.
package reconcile

import (
	"context"
	"errors"
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

	// afterOrdersRead, when set (tests only), runs in a pass between the
	// read of a page of orders and the read of their workflows: the seam a
	// test uses to make a checkout finish in between.
	afterOrdersRead func(ctx context.Context)
}

// New makes a Reconciler that passes every interval.
func New(db *store.DB, dctx dbos.Context, a Actions, every time.Duration, logger *slog.Logger) *Reconciler {
	return &Reconciler{db: db, dctx: dctx, actions: a, every: every, logger: logger.With("component", "reconcile")}
}

// Start runs a pass now and then every interval, until Stop, on the
// instance whose turn it is: of all the instances on one database, one
// passes each interval (periodic.Turns, turn "reconcile").
func (r *Reconciler) Start() {
	turns := periodic.NewTurns(r.db, TurnName, r.dctx.GetExecutorID(), r.every)
	r.loop = periodic.StartTurns(turns, func(ctx context.Context) {
		r.logger.Debug("background pass", "pass", TurnName)
		if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.logger.Warn("reconciliation pass failed; trying again at the next", "err", err)
		}
	}, func(err error) {
		r.logger.Warn("could not claim the reconciliation pass's turn; trying again at the next", "err", err)
	})
}

// TurnName is the reconciler's row in background_turns.
const TurnName = "reconcile"

// Stop stops the service and waits for a pass in progress. Safe without Start.
func (r *Reconciler) Stop() { r.loop.Stop() }

// OnOrdersRead sets fn to run in each pass between the read of a page of
// orders and the read of their workflows' statuses. It is a test's seam
// (the store never sets it): a test makes a checkout finish between the two
// reads with it, deterministically. Set it before the pass runs.
func (r *Reconciler) OnOrdersRead(fn func(ctx context.Context)) { r.afterOrdersRead = fn }

// Pass reconciles once and returns how many orders and late payments it
// acted on. Each order's remedy and each refund is independent of the
// others: one that fails is logged and counted in the error returned, and
// the pass goes on; the late payments are reconciled whatever happened to
// the orders.
func (r *Reconciler) Pass(ctx context.Context) (int, error) {
	acted, errOrders := r.orders(ctx)
	refunds, errRefunds := r.refunds(ctx)
	return acted + refunds, errors.Join(errOrders, errRefunds)
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
	exists, err := r.byID(ctx, ids)
	if err != nil {
		return 0, err
	}
	acted := 0
	var errs []error
	for _, pid := range pids {
		if _, ok := exists[shop.RefundWorkflowID(pid)]; ok {
			continue
		}
		r.logger.Warn("a late payment has no refund workflow; starting it", "payment_id", pid)
		if err := r.actions.Refund(ctx, pid); err != nil {
			r.logger.Warn("could not start a late payment's refund; the next pass tries again", "payment_id", pid, "err", err)
			errs = append(errs, err)
			continue
		}
		acted++
	}
	return acted, errors.Join(errs...)
}

// orders acts on the unfinished orders no workflow will finish, a page of
// batch at a time, through all of them. The orders whose checkout is alive
// are not read (store.UnfinishedOrdersToJudge): judge leaves them anyway. A
// page whose reads fail ends the walk (the next pass starts again); a remedy
// that fails does not.
func (r *Reconciler) orders(ctx context.Context) (int, error) {
	acted := 0
	var errs []error
	before := time.Now().Add(-Grace)
	for after := int64(0); ; {
		orders, err := r.db.UnfinishedOrdersToJudge(ctx, before, after, batch)
		if err != nil || len(orders) == 0 {
			return acted, errors.Join(append(errs, err)...)
		}
		if r.afterOrdersRead != nil {
			r.afterOrdersRead(ctx)
		}
		n, err := r.ordersPage(ctx, orders)
		acted += n
		if err != nil {
			errs = append(errs, err)
		}
		if len(orders) < batch || ctx.Err() != nil {
			return acted, errors.Join(append(errs, ctx.Err())...)
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

// remedy is what the reconciler does for an unfinished order.
type remedy int

const (
	leave      remedy = iota // a workflow will finish it, or an operator must
	release                  // Actions.Release
	redispatch               // Actions.Redispatch
)

// verdict is the one reading of an unfinished order's workflows that both
// the reconciler (Pass) and the attention list (Attention) act on.
type verdict struct {
	// live are the workflows alive that will take the order on: its
	// checkout (PENDING order), or its checkout, dispatch, second dispatch
	// and an operator's retries of those (PAID order).
	live []string
	// cancelling: an operator's Cancel-and-refund of the order is on its
	// way; nothing else is to be done.
	cancelling bool
	// remedy is the workflow the reconciler starts, when nothing alive
	// will finish the order and it has not started it before.
	remedy remedy
	// stopped is the reconciler's remedy (or, for a PAID order, the latest
	// dispatch) when the remedy was started already and is dead too: the
	// workflow an operator's Retry resumes (a cancelled one) or forks from
	// its failed step (one in ERROR). The reconciler does not start
	// it again (DBOS would hand back the dead workflow and its error).
	stopped string
}

// judge decides, from one read of its workflows' statuses (status, which
// may hold the operator's Retry forks too), what unfinished order o needs.
func judge(o shop.Order, status map[string]dbos.WorkflowStatus) verdict {
	var v verdict
	if alive(status, shop.CancelOrderWorkflowID(o.ID)) {
		v.cancelling = true
		return v
	}
	var finishers []string
	switch o.Status {
	case shop.StatusPending:
		finishers = []string{o.Key}
	case shop.StatusPaid:
		dispatch, again := shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID)
		finishers = slices.Concat([]string{o.Key, dispatch, again}, RetryIDs(dispatch), RetryIDs(again))
	default:
		return v // final: nothing to do
	}
	for _, id := range finishers {
		if alive(status, id) {
			v.live = append(v.live, id)
		}
	}
	if len(v.live) > 0 {
		return v
	}
	switch o.Status {
	case shop.StatusPending:
		// A live release is on its way; one that finished found the order
		// not PENDING or released it, and asking again is answered from its
		// result. Only a dead one is an operator's.
		if st, ok := status[shop.ReleaseWorkflowID(o.ID)]; ok && Dead(st.Status) {
			v.stopped = st.ID
		} else if !alive(status, shop.ReleaseWorkflowID(o.ID)) {
			v.remedy = release
		}
	case shop.StatusPaid:
		if _, again := status[shop.RedispatchWorkflowID(o.ID)]; !again {
			v.remedy = redispatch
			return v
		}
		// Dispatched once more already, and that one is not alive either:
		// the latest dead dispatch is the one to retry.
		for _, id := range []string{shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID)} {
			if st, ok := status[id]; ok && Dead(st.Status) {
				v.stopped = id
			}
		}
	}
	return v
}

// ordersPage acts on one page of unfinished orders, each independently: a
// remedy that fails is logged and joined into the error returned, and the
// next order is looked at.
//
// The orders were read before their workflows' statuses, so an order's row
// may be older than its workflows' statuses: a checkout that cancelled its
// order (its payment window closed) and finished between the two reads
// looks like a PENDING order whose checkout will not run again. Before
// acting, the order is read once more, and only one still in the state the
// decision was made from gets its remedy: a finishing workflow commits its
// change to the order before DBOS marks it finished, so a status read that
// sees it finished and a later order read see the same history.
func (r *Reconciler) ordersPage(ctx context.Context, orders []shop.Order) (int, error) {
	status, err := r.statuses(ctx, orders)
	if err != nil {
		return 0, err
	}
	acted := 0
	var errs []error
	for _, o := range orders {
		v := judge(o, status)
		if v.remedy == leave {
			continue
		}
		now, err := r.db.OrderByID(ctx, o.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if now.Status != o.Status {
			r.logger.Debug("an order changed while the reconciler looked at it; leaving it to the next pass", "order_id", o.ID, "was", o.Status, "now", now.Status)
			continue
		}
		switch v.remedy {
		case release:
			r.logger.Warn("an order's checkout will not run again; releasing it", "order_id", o.ID, "checkout", o.Key, "checkout_status", status[o.Key].Status)
			err = r.actions.Release(ctx, o.ID)
		case redispatch:
			r.logger.Warn("a paid order's dispatch will not run again; dispatching it once more", "order_id", o.ID,
				"dispatch_status", status[shop.DispatchWorkflowID(o.ID)].Status)
			err = r.actions.Redispatch(ctx, o.ID)
		}
		if err != nil {
			r.logger.Warn("the remedy of an order failed; it is listed for an operator if its workflow stopped, and tried again at the next pass otherwise", "order_id", o.ID, "err", err)
			errs = append(errs, err)
			continue
		}
		acted++
	}
	return acted, errors.Join(errs...)
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
		// (the verdict needs them only then), which is almost never.
		var forks []string
		for _, o := range orders {
			if v := judge(o, status); o.Status == shop.StatusPaid && len(v.live) == 0 && !v.cancelling {
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

// orderAttention decides whether unfinished order o needs an operator, from
// the same verdict the reconciler acts on (judge).
func orderAttention(o shop.Order, status map[string]dbos.WorkflowStatus, now time.Time, payWindow time.Duration) (shop.Attention, bool) {
	a := shop.Attention{Order: o, CanCancel: true}
	for _, id := range []string{o.Key, shop.DispatchWorkflowID(o.ID), shop.RedispatchWorkflowID(o.ID), shop.ReleaseWorkflowID(o.ID), shop.CancelOrderWorkflowID(o.ID)} {
		if st, ok := status[id]; ok {
			a.Workflows = append(a.Workflows, state(st))
		}
	}
	v := judge(o, status)
	switch {
	case v.cancelling:
		return a, false // an operator's cancel is on its way
	case v.stopped != "" && o.Status == shop.StatusPending:
		a.Reason, a.Retry = "Its checkout will not take a payment and its release stopped ("+string(status[v.stopped].Status)+").", v.stopped
	case v.stopped != "":
		a.Reason, a.Retry = "Paid, but its dispatch stopped, and so did the second dispatch the reconciler started.", v.stopped
	case len(v.live) > 0 && o.Status == shop.StatusPending && now.Sub(o.CreatedAt) > payWindow+Stuck:
		a.Reason = "Waiting for its payment for longer than the payment window (" + payWindow.String() + ")."
	case len(v.live) > 0 && o.Status == shop.StatusPaid && now.Sub(o.LastUpdate) > Stuck:
		a.Reason = "Paid, but its dispatch has not moved for " + now.Sub(o.LastUpdate).Round(time.Second).String() + "."
	default:
		return a, false // alive and moving, or the reconciler's remedy is on its way
	}
	return a, true
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
