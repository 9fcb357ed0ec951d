// Package durable runs a workflow's steps the one way the store runs them:
// each under its durable name (internal/shop), checkpointed by DBOS on the
// workflow's own DBOS context (the ctx every function here takes), timed for
// the metrics (widget_step_duration_seconds{workflow, step}) each time its
// work runs, and then past its crash point (CRASH_AT, internal/crashpoint).
// A step replayed from its checkpoint does not run, and is not timed.
//
// The root's workflows run theirs through it (steps.go: step and call), and
// so do the payment's steps (internal/payment), so a step is the same thing
// wherever its code lives. It is a package of its own, rather than those two
// helpers in the root, because a package under internal/ cannot import the
// root.
package durable

import (
	"context"
	"log/slog"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/crashpoint"
	"widget-store/internal/metrics"
)

// Runner is what running a step needs; the root builds one at start.
type Runner struct {
	// DS is the store's one handle as DBOS's data source: a Tx step's
	// writes commit in one transaction with its checkpoint.
	DS      *dbos.DataSource
	Metrics *metrics.Metrics
	Crash   crashpoint.Point // CRASH_AT, for tests; the zero value never crashes
	Logger  *slog.Logger     // the store's logger (it carries executor_id)
}

// Tx runs the transactional step name of workflow wf: fn, by
// dbos.RunAsTransaction on r.DS, then the step's crash point
// (CRASH_AT=wf:name).
func Tx[R any](ctx dbos.Context, r *Runner, wf, name string, fn func(context.Context, dbos.Tx) (R, error)) (R, error) {
	out, err := dbos.RunAsTransaction(ctx, r.DS, func(ctx context.Context, tx dbos.Tx) (R, error) {
		defer r.Metrics.Step(wf, name, time.Now())
		return fn(ctx, tx)
	}, dbos.WithStepName(name))
	if err == nil {
		r.CrashAfter(wf, name)
	}
	return out, err
}

// Call is Tx for a step that calls something other than the database
// (dbos.RunAsStep, with opts: its retries).
func Call[R any](ctx dbos.Context, r *Runner, wf, name string, fn func(context.Context) (R, error), opts ...dbos.StepOption) (R, error) {
	out, err := dbos.RunAsStep(ctx, func(ctx context.Context) (R, error) {
		defer r.Metrics.Step(wf, name, time.Now())
		return fn(ctx)
	}, append(opts, dbos.WithStepName(name))...)
	if err == nil {
		r.CrashAfter(wf, name)
	}
	return out, err
}

// CrashAfter exits the process if CRASH_AT names point of workflow wf: a
// step, the child workflow a step starts, or a hand-off.
func (r *Runner) CrashAfter(wf, point string) { r.Crash.After(r.Logger, wf, point) }

// Log is the logger for a line about a workflow: the store's logger plus the
// workflow's ID and the order it works on.
func (r *Runner) Log(ctx dbos.Context, orderID int64) *slog.Logger {
	id, err := dbos.GetWorkflowID(ctx)
	if err != nil {
		id = "" // not inside a workflow: the line still has the order id
	}
	return r.Logger.With("workflow_id", id, "order_id", orderID)
}
