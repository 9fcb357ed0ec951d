package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// Operations are the operator's actions of the internals panel
// (web.Operations): the list of what needs attention, Retry and
// Cancel-and-refund. They sit beside the Reconciler because they act on its
// verdicts: the attention list is what it will not fix by itself, Retry
// offers only what that list offers, and a cancel stops the workflows it
// counts as alive.
type Operations struct {
	r         *Reconciler
	db        *store.DB
	dctx      dbos.Context
	workflows Workflows
	payWindow time.Duration
	logger    *slog.Logger
}

// Workflows is the workflow start the operator's actions need beyond DBOS's
// own APIs; the root package's workflows satisfy it.
type Workflows interface {
	// CancelOrder runs (or finds) the cancel-order workflow of order id
	// (shop.CancelOrderWorkflowID) and waits for it.
	CancelOrder(ctx context.Context, orderID int64) (Cancelled, error)
}

// Cancelled is what the cancel-order workflow did.
type Cancelled struct {
	Cancelled bool        // it cancelled the order; false when it was final already
	Status    shop.Status // the order's status after it
	WasPaid   bool        // it was PAID: its payment is being refunded
}

// NewOperations makes the operator's actions on r's verdicts. payWindow is
// the checkout's payment window (PAYMENT_TIMEOUT).
func NewOperations(r *Reconciler, w Workflows, payWindow time.Duration, logger *slog.Logger) *Operations {
	return &Operations{r: r, db: r.db, dctx: r.dctx, workflows: w, payWindow: payWindow, logger: logger}
}

// attentionLimit bounds the orders and late payments one attention list
// reads (the internals panel polls it every second).
const attentionLimit = 50

// Attention lists what an operator should look at (Reconciler.Attention).
func (o *Operations) Attention(ctx context.Context) ([]shop.Attention, error) {
	return o.r.Attention(ctx, o.payWindow, attentionLimit)
}

// Retry runs the stopped workflow behind order id that the attention list
// offers to retry again, and returns the ID of the execution that does.
//
// A workflow stopped by a cancel (or a crash loop), with no failed step, is
// resumed (dbos.ResumeWorkflow: it runs on, under its own ID, from its last
// completed step). One that failed at a step cannot be resumed usefully:
// DBOS checkpoints the step's error with it, so a resumed execution replays
// the same error. It is forked from that step instead (dbos.ForkWorkflow: a
// new execution under a new ID, with the checkpoints before the step, that
// runs the step again). That is safe for every workflow offered here: a
// dispatch's legs are idempotent, and a refund's provider call carries the
// payment id as its idempotency key. The fork's ID is the original's plus
// "/retry-N" (RetryIDs), N counting the forks, so two clicks at once fork
// once.
func (o *Operations) Retry(ctx context.Context, id int64) (string, error) {
	list, err := o.Attention(ctx)
	if err != nil {
		return "", err
	}
	i := slices.IndexFunc(list, func(a shop.Attention) bool { return a.Order.ID == id && a.Retry != "" })
	if i < 0 {
		return "", shop.Errorf(shop.Conflict, "order %d has no stopped workflow to retry (it may have moved on; reload)", id)
	}
	wid := list[i].Retry
	dctx := dbos.From(o.dctx, ctx)
	steps, err := dbos.GetWorkflowSteps(dctx, wid, dbos.WithStepsLoadOutput(false))
	if err != nil {
		return "", fmt.Errorf("steps of %s: %w", wid, err)
	}
	failed := slices.IndexFunc(steps, func(s dbos.StepInfo) bool { return s.Error != nil })
	if failed < 0 {
		if _, err := dbos.ResumeWorkflow[any](o.dctx, wid); err != nil {
			return "", fmt.Errorf("resume %s: %w", wid, err)
		}
		o.logger.Warn("an operator resumed a workflow", "workflow_id", wid, "order_id", id)
		return wid, nil
	}
	retries := RetryIDs(wid)
	forks, err := dbos.ListWorkflows(dctx, dbos.WithFilterWorkflowIDs(retries...), dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return "", fmt.Errorf("forks of %s: %w", wid, err)
	}
	if len(forks) >= len(retries) {
		return "", shop.Errorf(shop.Conflict, "workflow %s was retried %d times already; look at its error (dbos workflow steps) before forking it again with DBOS's CLI", wid, len(forks))
	}
	fork := retries[len(forks)]
	if _, err := dbos.ForkWorkflow[any](o.dctx, dbos.ForkWorkflowInput{
		OriginalWorkflowID: wid, ForkedWorkflowID: fork, StartStep: uint(steps[failed].StepID),
	}); err != nil {
		return "", fmt.Errorf("fork %s from step %d: %w", wid, steps[failed].StepID, err)
	}
	o.logger.Warn("an operator retried a failed workflow from its failed step", "workflow_id", wid, "fork", fork,
		"step", steps[failed].StepName, "order_id", id)
	return fork, nil
}

// CancelOrder cancels unfinished order id and refunds its payment if it was
// paid: it cancels the order's live workflows with DBOS (so none of them goes
// on: their next step finds them cancelled), then runs the cancel-order
// workflow and waits for it. A final order is a shop.Conflict.
func (o *Operations) CancelOrder(ctx context.Context, id int64) (shop.Order, error) {
	ord, err := o.db.OrderByID(ctx, id)
	if err != nil {
		return ord, err
	}
	if ord.Final() {
		return ord, shop.Errorf(shop.Conflict, "order %d is already %s: nothing to cancel", id, ord.Status)
	}
	live, err := o.r.Live(ctx, ord)
	if err != nil {
		return ord, err
	}
	for _, wid := range live {
		if err := dbos.CancelWorkflow(o.dctx, wid); err != nil {
			return ord, fmt.Errorf("cancel workflow %s of order %d: %w", wid, id, err)
		}
	}
	c, err := o.workflows.CancelOrder(ctx, id)
	if err != nil {
		return ord, err
	}
	if ord, err = o.db.OrderByID(ctx, id); err != nil {
		return ord, err
	}
	if !c.Cancelled {
		return ord, shop.Errorf(shop.Conflict, "order %d became %s before it could be cancelled", id, c.Status)
	}
	o.logger.Warn("an operator cancelled an order", "order_id", id, "was_paid", c.WasPaid)
	return ord, nil
}
