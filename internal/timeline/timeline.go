// Package timeline reads the durable execution behind an order from DBOS's
// own records: dbos.ListWorkflows for each workflow's status, executor and
// recovery attempts, dbos.GetWorkflowSteps for its checkpointed steps with
// their start and completion times. The views render the result (model.go).
//
// DBOS does not record which process executed a step, nor every recovery: a
// workflow's status holds its current executor, its attempt count and, while
// it runs, when DBOS last (re)started it. So the store records its own process
// starts (process_runs, one row per start, written before DBOS launches and
// recovers anything), and the timeline labels each step with the run of the
// workflow's executor whose lifetime contains the step's completion. A run
// that started while a workflow was unfinished is a recovery of it: the
// timeline marks that moment. The label is exact for restarts of one
// executor (a crash, the supervisor's restart); after another executor takes
// a workflow over, steps from before the takeover are labelled by time
// against the new executor's runs, which is only an approximation.
//
// Steps are shown under the durable names the workflows give them with
// dbos.WithStepName ("reserve", "settle", "dispatch-leg", …) and the names
// DBOS gives its own operations ("DBOS.recv", "DBOS.sleep"), as recorded:
// those names are part of the data, so the timeline shows them rather than a
// translation that could drift from them. It only numbers a name that repeats
// within a workflow and marks the start of a child workflow.
package timeline

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// DBOS's names for its own operations (the workflows' own step names are in
// shop).
const (
	// recvStep is DBOS's Recv: in a checkout, the payment status arriving.
	recvStep = "DBOS.recv"
	// sleepStep is the deadline DBOS checkpoints before a Recv waits (and
	// the name of a durable sleep).
	sleepStep = "DBOS.sleep"
)

// expectedCount is how many times a workflow records a step name, where that
// is known, so that a repeated step reads "dispatch-leg 3/10"; 0 otherwise.
func expectedCount(workflow, step string) int {
	if workflow == shop.DispatchWorkflow && step == shop.StepDispatchLeg {
		return shop.DispatchLegs
	}
	return 0
}

// Reader reads the timelines of orders. It holds no state of its own beyond
// what it was made with, so one Reader serves every request.
type Reader struct {
	db         *store.DB
	dctx       dbos.Context
	currentRun int64
	now        func() time.Time
}

// NewReader makes a Reader. currentRun is this process's run (the timeline
// marks "this process" with it); now is the clock that tells how long an
// unfinished workflow has been running (time.Now if nil).
func NewReader(db *store.DB, dctx dbos.Context, currentRun int64, now func() time.Time) *Reader {
	if now == nil {
		now = time.Now
	}
	return &Reader{db: db, dctx: dctx, currentRun: currentRun, now: now}
}

// Order reads the checkout and dispatch workflows of order o, and its refund
// workflow when a payment came for it after it was cancelled.
func (r *Reader) Order(ctx context.Context, o shop.Order) (Timeline, error) {
	tl := Timeline{OrderID: o.ID, CurrentRun: r.currentRun}
	dctx := dbos.From(r.dctx, ctx)
	ids := []string{o.Key, shop.DispatchWorkflowID(o.ID)}
	refundID := shop.RefundWorkflowID(o.Key)
	statuses, err := dbos.ListWorkflows(dctx, dbos.WithFilterWorkflowIDs(append(ids, refundID)...),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return tl, fmt.Errorf("list workflows of order %d: %w", o.ID, err)
	}
	byID := make(map[string]dbos.WorkflowStatus, len(statuses))
	for _, s := range statuses {
		byID[s.ID] = s
	}
	final := o.Final()
	for i, id := range ids {
		title := [...]string{"Checkout", "Dispatch"}[i]
		st, ok := byID[id]
		if !ok {
			// Not started (yet): the dispatch starts once the order is paid.
			// Or gone: deleted by retention, or by an operator.
			w := Workflow{Title: title, ID: id}
			switch {
			case i == 1 && o.Status == shop.StatusCancelled:
				w.Waiting = "Never started: the order was cancelled."
			case i == 1 && o.Status != shop.StatusDispatched:
				w.Waiting = "Starts when the payment is in."
				final = final && o.Status != shop.StatusPaid
			default:
				if w.Waiting, err = r.gone(ctx, o); err != nil {
					return tl, err
				}
				w.Deleted = true
			}
			tl.Workflows = append(tl.Workflows, w)
			continue
		}
		steps, err := dbos.GetWorkflowSteps(dctx, id, dbos.WithStepsLoadOutput(false))
		if err != nil {
			return tl, fmt.Errorf("steps of workflow %s: %w", id, err)
		}
		if i == 1 {
			steps = dispatchLegs(o, st.CreatedAt)
		}
		runs, err := r.db.RunsSince(ctx, st.ExecutorID, st.CreatedAt)
		if err != nil {
			return tl, err
		}
		w := buildWorkflow(title, st, steps, runs, r.now())
		if i == 1 {
			w.Writes = true
			for k := range w.Rows {
				if !w.Rows[k].Recovery {
					w.Rows[k].Raw = "an idempotent write, not a checkpoint"
				}
			}
		}
		final = final && w.Terminal()
		tl.Workflows = append(tl.Workflows, w)
	}
	if st, ok := byID[refundID]; ok { // only a late payment has one
		steps, err := dbos.GetWorkflowSteps(dctx, refundID, dbos.WithStepsLoadOutput(false))
		if err != nil {
			return tl, fmt.Errorf("steps of workflow %s: %w", refundID, err)
		}
		runs, err := r.db.RunsSince(ctx, st.ExecutorID, st.CreatedAt)
		if err != nil {
			return tl, err
		}
		w := buildWorkflow("Refund", st, steps, runs, r.now())
		final = final && w.Terminal()
		tl.Workflows = append(tl.Workflows, w)
	}
	tl.Final = final
	return tl, nil
}

// gone says why a workflow of order o is not in DBOS's records: a
// retention pass deleted it (the first whose cutoff is after the order's
// last change), or someone else did.
func (r *Reader) gone(ctx context.Context, o shop.Order) (string, error) {
	ran, ok, err := r.db.RetentionPassAfter(ctx, o.LastUpdate)
	if err != nil || !ok {
		return "Not in DBOS's records: deleted by an operator (dbos workflow delete), or never recorded. The order above is the store's own record.", err
	}
	return "Deleted by retention on " + ran.Local().Format("2006-01-02 15:04") + ": DBOS's records of a finished purchase are kept for RETENTION, then removed. The order above is the store's own record.", nil
}

// dispatchLegs stands for the legs of the dispatch of order o, started at
// started, in the shape of DBOS's step records. DBOS records none of them:
// a leg is an idempotent write on a schedule fixed by the workflow's input
// (see dispatch in workflow.go). The order's progress says how many are
// written; the schedule says when (leg N is due N seconds after the
// payment, which the dispatch's start follows by a few milliseconds).
func dispatchLegs(o shop.Order, started time.Time) []dbos.StepInfo {
	written := shop.DispatchLegs - o.ProgressRemaining
	if o.Status == shop.StatusDispatched {
		written = shop.DispatchLegs
	}
	var legs []dbos.StepInfo
	for k := 1; k <= written; k++ {
		at := started.Add(time.Duration(k) * time.Second)
		if k == written && o.LastUpdate.After(started) {
			at = o.LastUpdate // the latest write's own time
		}
		legs = append(legs, dbos.StepInfo{StepID: k - 1, StepName: shop.StepDispatchLeg, StartedAt: at, CompletedAt: at})
	}
	return legs
}

// buildWorkflow turns DBOS's records of one workflow, and the process runs of
// its executor, into timeline rows: its steps in order, with a recovery row
// where a new run picked the workflow up. It reads nothing itself, so tests
// feed it records shaped like DBOS's.
func buildWorkflow(title string, st dbos.WorkflowStatus, steps []dbos.StepInfo, runs []store.ProcessRun, now time.Time) Workflow {
	w := Workflow{
		Title: title, ID: st.ID, Status: string(st.Status), ExecutorID: st.ExecutorID,
		Attempts: st.Attempts, CreatedAt: st.CreatedAt, UpdatedAt: st.UpdatedAt,
	}
	if st.Error != nil {
		w.Error = st.Error.Error()
	}
	end := now
	if w.Terminal() {
		end = st.UpdatedAt
		if !st.CompletedAt.IsZero() {
			end = st.CompletedAt
		}
	}
	// Runs that started while the workflow was unfinished recovered it.
	var recoveries []store.ProcessRun
	for _, r := range runs {
		if r.StartedAt.After(st.CreatedAt) && !r.StartedAt.After(end) {
			recoveries = append(recoveries, r)
		}
	}
	runAt := func(t time.Time) (int64, int) {
		idx := -1
		for i, r := range runs {
			if !r.StartedAt.After(t) {
				idx = i
			}
		}
		if idx < 0 {
			return 0, 0
		}
		return runs[idx].ID, idx
	}
	recoveryRow := func(k int) Row {
		r := recoveries[k]
		row := Row{Recovery: true, At: r.StartedAt, Executor: r.Executor, Attempt: k + 2, Run: r.ID}
		_, row.RunIndex = runAt(r.StartedAt)
		// DBOS keeps the time and count of the latest (re)start: prefer them.
		if k == len(recoveries)-1 && st.Attempts > 1 {
			row.Attempt = st.Attempts
			if !st.StartedAt.IsZero() && !st.StartedAt.Before(r.StartedAt) {
				row.At = st.StartedAt
				row.FromDBOS = true
			}
		}
		return row
	}

	slices.SortFunc(steps, func(x, y dbos.StepInfo) int { return x.StepID - y.StepID })
	seen := map[string]int{}
	next := 0 // the next recovery to place
	for _, s := range steps {
		at := s.CompletedAt
		if at.IsZero() {
			at = s.StartedAt
		}
		for next < len(recoveries) && !recoveries[next].StartedAt.After(at) {
			w.Rows = append(w.Rows, recoveryRow(next))
			next++
		}
		row := Row{
			StepID: s.StepID, Title: stepTitle(st.Name, s, seen), Raw: s.StepName,
			StartedAt: s.StartedAt, CompletedAt: s.CompletedAt, Child: s.ChildWorkflowID,
		}
		if s.Error != nil {
			row.Error = s.Error.Error()
		}
		row.Run, row.RunIndex = runAt(at)
		w.Rows = append(w.Rows, row)
	}
	for ; next < len(recoveries); next++ {
		w.Rows = append(w.Rows, recoveryRow(next))
	}
	if len(recoveries) == 0 && st.Attempts > 1 && !st.StartedAt.IsZero() {
		// Recovered, but by no run we recorded (another executor took it
		// over, say): show DBOS's own record of the moment, placed by time.
		row := Row{Recovery: true, At: st.StartedAt, Executor: st.ExecutorID, Attempt: st.Attempts, FromDBOS: true}
		i := slices.IndexFunc(w.Rows, func(r Row) bool { return !r.Recovery && r.CompletedAt.After(st.StartedAt) })
		if i < 0 {
			i = len(w.Rows)
		}
		w.Rows = slices.Insert(w.Rows, i, row)
	}
	if !w.Terminal() {
		w.Waiting = waitingText(st.Name, steps)
	}
	return w
}

// stepTitle is the title of step s of a workflow named workflow: its recorded
// name as is, numbered when the name repeats ("dispatch-leg 3/10" where the
// workflow's count of it is known, "DBOS.sleep #2" otherwise), and marked as
// the start of a child workflow, which DBOS records under the child's name.
// seen counts the names already met in this workflow.
func stepTitle(workflow string, s dbos.StepInfo, seen map[string]int) string {
	seen[s.StepName]++
	n := seen[s.StepName]
	title := s.StepName
	switch want := expectedCount(workflow, s.StepName); {
	case want > 0:
		title += " " + strconv.Itoa(n) + "/" + strconv.Itoa(want)
	case n > 1:
		title += " #" + strconv.Itoa(n)
	}
	if s.ChildWorkflowID != "" {
		title += " (starts the workflow)"
	}
	return title
}

// waitingText says what a workflow does between checkpoints, from the steps
// it has recorded so far.
//
// A checkout that recorded its reserve and nothing after it (no settle) is
// waiting for its payment: the deadline it waits for is the reserve's
// checkpoint. One started by the build before this one took its payment
// with a Recv, which checkpoints its deadline ("DBOS.sleep") before it waits
// and the status ("DBOS.recv") once it is in: a deadline without a status is
// such a checkout waiting. (DBOS gives the Recv the lower step ID, so
// presence counts here, not order.)
func waitingText(workflow string, steps []dbos.StepInfo) string {
	has := func(name string) bool {
		return slices.ContainsFunc(steps, func(s dbos.StepInfo) bool { return s.StepName == name })
	}
	switch workflow {
	case shop.CheckoutWorkflow:
		if !has(recvStep) && has(sleepStep) {
			return "Waiting, durably, for the payment: the deadline is checkpointed."
		}
		if has(shop.StepReserve) && !has(shop.StepSettle) && !has(recvStep) && has(shop.StepPaymentCreate) == has(shop.StepPaymentRecord) {
			return "Waiting, durably, for the payment: the deadline is the reserve step's checkpoint."
		}
	case shop.DispatchWorkflow:
		if len(steps) < shop.DispatchLegs {
			return "Waiting for leg " + strconv.Itoa(len(steps)+1) + " of " + strconv.Itoa(shop.DispatchLegs) +
				": the legs' schedule is the workflow's recorded input and each leg is an idempotent write, so the wait survives a crash without a checkpoint."
		}
	}
	return "Running the next step."
}
