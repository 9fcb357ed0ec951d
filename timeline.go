package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/views"
)

// The workflow timeline shows the durable execution behind an order, read
// from DBOS's own records: dbos.ListWorkflows for each workflow's status,
// executor and recovery attempts, dbos.GetWorkflowSteps for its checkpointed
// steps with their start and completion times.
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

// processRun is one start of a store process.
type processRun struct {
	ID        int64
	Executor  string
	StartedAt time.Time
}

// recordRun notes this process's start in process_runs. It is a plain insert
// outside any workflow: it records a fact about this process, not a step of
// an order, and a crash right after it only leaves a run with no steps.
func (a *app) recordRun(ctx context.Context) error {
	a.startedAt = a.now()
	err := a.db.QueryRow(ctx, `INSERT INTO process_runs (executor_id, pid, started_at) VALUES ($1, $2, $3) RETURNING run_id`,
		a.cfg.ExecutorID, os.Getpid(), a.startedAt.UnixMilli()).Scan(&a.runID)
	if err != nil {
		return fmt.Errorf("record process run: %w", err)
	}
	return nil
}

// runsSince returns the runs of executor that could have executed a workflow
// created at created: the last run started before it, and every later one.
func (a *app) runsSince(ctx context.Context, executor string, created time.Time) ([]processRun, error) {
	rows, err := a.db.Query(ctx, `
		SELECT run_id, executor_id, started_at FROM process_runs
		WHERE executor_id = $1 AND started_at >= (
			SELECT COALESCE(MAX(started_at), 0) FROM process_runs WHERE executor_id = $1 AND started_at <= $2)
		ORDER BY started_at, run_id
		LIMIT 200`, executor, created.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("list process runs: %w", err)
	}
	defer rows.Close()
	var out []processRun
	for rows.Next() {
		var r processRun
		var ms int64
		if err := rows.Scan(&r.ID, &r.Executor, &ms); err != nil {
			return nil, fmt.Errorf("list process runs: %w", err)
		}
		r.StartedAt = time.UnixMilli(ms)
		out = append(out, r)
	}
	return out, rows.Err()
}

// orderTimeline reads the checkout and dispatch workflows of order o.
func (a *app) orderTimeline(ctx context.Context, o views.Order) (views.Timeline, error) {
	tl := views.Timeline{OrderID: o.ID, CurrentRun: a.runID}
	dctx := dbos.From(a.dbos, ctx)
	ids := []string{o.Key, dispatchWorkflowID(o.ID)}
	statuses, err := dbos.ListWorkflows(dctx, dbos.WithFilterWorkflowIDs(ids...),
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
			wt := views.WorkflowTimeline{Title: title, ID: id}
			switch {
			case i == 1 && o.Status == statusCancelled:
				wt.Waiting = "Never started: the order was cancelled."
			case i == 1:
				wt.Waiting = "Starts when the payment is in."
				final = final && o.Status != statusPaid && o.Status != statusDispatched
			default:
				wt.Waiting = "Not found in DBOS's records."
			}
			tl.Workflows = append(tl.Workflows, wt)
			continue
		}
		steps, err := dbos.GetWorkflowSteps(dctx, id, dbos.WithStepsLoadOutput(false))
		if err != nil {
			return tl, fmt.Errorf("steps of workflow %s: %w", id, err)
		}
		runs, err := a.runsSince(ctx, st.ExecutorID, st.CreatedAt)
		if err != nil {
			return tl, err
		}
		wt := buildWorkflowTimeline(title, st, steps, runs, a.now())
		final = final && wt.Terminal()
		tl.Workflows = append(tl.Workflows, wt)
	}
	tl.Final = final
	return tl, nil
}

// buildWorkflowTimeline turns DBOS's records of one workflow, and the process
// runs of its executor, into timeline rows: its steps in order, with a
// recovery row where a new run picked the workflow up.
func buildWorkflowTimeline(title string, st dbos.WorkflowStatus, steps []dbos.StepInfo, runs []processRun, now time.Time) views.WorkflowTimeline {
	wt := views.WorkflowTimeline{
		Title: title, ID: st.ID, Status: string(st.Status), ExecutorID: st.ExecutorID,
		Attempts: st.Attempts, CreatedAt: st.CreatedAt, UpdatedAt: st.UpdatedAt,
	}
	if st.Error != nil {
		wt.Error = st.Error.Error()
	}
	end := now
	if wt.Terminal() {
		end = st.UpdatedAt
		if !st.CompletedAt.IsZero() {
			end = st.CompletedAt
		}
	}
	// Runs that started while the workflow was unfinished recovered it.
	var recoveries []processRun
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
	recoveryRow := func(k int) views.TimelineRow {
		r := recoveries[k]
		row := views.TimelineRow{Recovery: true, At: r.StartedAt, Executor: r.Executor, Attempt: k + 2, Run: r.ID}
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
			wt.Rows = append(wt.Rows, recoveryRow(next))
			next++
		}
		row := views.TimelineRow{
			StepID: s.StepID, Title: stepTitle(st.Name, s, seen), Raw: s.StepName,
			StartedAt: s.StartedAt, CompletedAt: s.CompletedAt, Child: s.ChildWorkflowID,
		}
		if s.Error != nil {
			row.Error = s.Error.Error()
		}
		row.Run, row.RunIndex = runAt(at)
		wt.Rows = append(wt.Rows, row)
	}
	for ; next < len(recoveries); next++ {
		wt.Rows = append(wt.Rows, recoveryRow(next))
	}
	if len(recoveries) == 0 && st.Attempts > 1 && !st.StartedAt.IsZero() {
		// Recovered, but by no run we recorded (another executor took it
		// over, say): show DBOS's own record of the moment, placed by time.
		row := views.TimelineRow{Recovery: true, At: st.StartedAt, Executor: st.ExecutorID, Attempt: st.Attempts, FromDBOS: true}
		i := slices.IndexFunc(wt.Rows, func(r views.TimelineRow) bool { return !r.Recovery && r.CompletedAt.After(st.StartedAt) })
		if i < 0 {
			i = len(wt.Rows)
		}
		wt.Rows = slices.Insert(wt.Rows, i, row)
	}
	if !wt.Terminal() {
		wt.Waiting = waitingText(st.Name, steps)
	}
	return wt
}

// waitingText says what a workflow does between checkpoints, from the steps
// it has recorded so far.
func waitingText(workflow string, steps []dbos.StepInfo) string {
	switch workflow {
	case "checkout":
		for _, s := range steps {
			if s.StepName == "DBOS.recv" || s.StepName == "DBOS.getEvent" {
				return "Running the next step."
			}
		}
		if len(steps) >= 2 {
			return "Waiting, durably, for the payment: the deadline is checkpointed."
		}
	case "dispatch":
		if len(steps) < dispatchSteps {
			return "Waiting for leg " + strconv.Itoa(len(steps)+1) + " of " + strconv.Itoa(dispatchSteps) +
				": each leg's checkpoint records when the next one is due, so the wait survives a crash."
		}
	}
	return "Running the next step."
}

// stepTitle names a step for people. DBOS records a step under its function
// name (ours are stable method values such as
// "main.checkoutTx.reserveAndCreateOrder-fm"), its own operations as
// "DBOS.setEvent", "DBOS.recv", …, and the start of a child workflow under
// the child's registered name. seen counts names already met, to number the
// repeated ones.
func stepTitle(workflow string, s dbos.StepInfo, seen map[string]int) string {
	seen[s.StepName]++
	n := seen[s.StepName]
	if s.ChildWorkflowID != "" {
		return "Start the " + s.StepName + " workflow"
	}
	switch ownMethod(s.StepName) {
	case "checkoutTx.reserveAndCreateOrder":
		return "Reserve a widget and create the order"
	case "orderTx.markPaid":
		return "Mark the order paid"
	case "orderTx.cancel":
		return "Cancel the order and put the widget back"
	case "progressTx.apply":
		return "Dispatch leg " + strconv.Itoa(n) + " of " + strconv.Itoa(dispatchSteps)
	}
	switch s.StepName {
	case "DBOS.setEvent":
		switch {
		case workflow == "checkout" && n == 1:
			return "Publish the payment id"
		case workflow == "checkout":
			return "Publish the outcome"
		case workflow == "payment":
			return "Publish the payment status"
		}
		return "Publish an event"
	case "DBOS.recv", "DBOS.getEvent":
		if workflow == "checkout" {
			return "Receive the payment status"
		}
		return "Wait for a message"
	case "DBOS.sleep":
		if workflow == "checkout" {
			return "Payment deadline (the wait's durable timer)"
		}
		return "Durable sleep"
	}
	return prettifyFuncName(s.StepName)
}

// ownMethod is "type.method" for the name of a method value of ours:
// "main.progressTx.apply-fm" (the binary) or "widget-store.progressTx.apply-fm"
// (a test binary, where package main has its import path); "" otherwise.
func ownMethod(name string) string {
	rest, ok := strings.CutSuffix(name, "-fm")
	if !ok {
		return ""
	}
	pkg, method, ok := strings.Cut(rest, ".")
	if !ok || (pkg != "main" && pkg != "widget-store") {
		return ""
	}
	return method
}

// prettifyFuncName makes a readable phrase of a Go function name:
// "main.shipTx.notifyCourier-fm" → "Notify courier",
// "DBOS.getWorkflowSteps" → "Get workflow steps".
func prettifyFuncName(name string) string {
	name = strings.TrimSuffix(name, "-fm")
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	var words []string
	start := 0
	for i, r := range name {
		if i > start && (unicode.IsUpper(r) || r == '_') {
			words = append(words, name[start:i])
			start = i
		}
	}
	words = append(words, name[start:])
	for i := range words {
		words[i] = strings.ToLower(strings.Trim(words[i], "_"))
	}
	s := strings.Join(slices.DeleteFunc(words, func(w string) bool { return w == "" }), " ")
	if s == "" {
		return "Step"
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// newestOrderID is the order the internals panel follows when none is chosen.
func (a *app) newestOrderID(ctx context.Context) (int64, error) {
	var id int64
	if err := a.db.QueryRow(ctx, `SELECT COALESCE(MAX(order_id), 0) FROM orders`).Scan(&id); err != nil {
		return 0, fmt.Errorf("newest order: %w", err)
	}
	return id, nil
}
