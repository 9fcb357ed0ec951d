package main

import (
	"log/slog"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
)

// wfLogger is the logger for a line about a workflow: the app's logger (which
// carries executor_id, see newLogger) plus the workflow's ID and the order it
// works on (0 before the order exists, or when the product sold out).
func (a *app) wfLogger(ctx dbos.Context, orderID int64) *slog.Logger {
	id, err := dbos.GetWorkflowID(ctx)
	if err != nil {
		id = "" // not inside a workflow: the line still has the order id
	}
	return a.logger.With("workflow_id", id, "order_id", orderID)
}
