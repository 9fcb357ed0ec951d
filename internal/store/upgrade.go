package store

import (
	"context"
	"fmt"
)

// UpgradeWorkflows carries the unfinished workflows of application version
// from (PENDING, or ENQUEUED by a takeover) over to version to, renaming the
// step names their checkpoints recorded as renames says (old → new), in one
// transaction. It returns how many workflows it carried over.
//
// DBOS recovers only the workflows of its own application version, and when
// it replays a checkpoint it checks that the step asking for it has the name
// the checkpoint recorded. So a build that renames steps must do both, or an
// order in flight under the previous build would be stranded PENDING (or fail
// its replay) when the new build starts. This writes to DBOS's own tables
// (workflow_status.application_version, operation_outputs.function_name in
// SDK v1.8.0's schema), which is why it exists only for an upgrade whose
// steps keep their order and their inputs and outputs, only their names
// changing; the upgrade test in internal/storetest runs the previous build,
// stops it mid-checkout and mid-dispatch, and checks every order finishes
// under the new one.
//
// Run it before dbos.Launch, with every instance of the previous build
// stopped: a previous-build instance still running would go on recording the
// old names.
func (db *DB) UpgradeWorkflows(ctx context.Context, from, to string, renames map[string]string) (int, error) {
	status, outputs := db.Dialect.DBOSTable("workflow_status"), db.Dialect.DBOSTable("operation_outputs")
	var n int64
	// The unfinished workflows are read through DBOS's partial index of
	// them (idx_workflow_status_in_flight_v2, WHERE status IN ('ENQUEUED',
	// 'PENDING')): SQLite uses a partial index only when the query repeats
	// its condition, in its order, and without it every start read all of
	// workflow_status once per rename (about 2 s of every start at a million
	// orders).
	const inFlight = `status IN ('ENQUEUED', 'PENDING')`
	err := db.InTx(ctx, func(tx Tx) error {
		unfinished := `SELECT workflow_uuid FROM ` + status + ` WHERE application_version = $1 AND ` + inFlight
		for old, name := range renames {
			if _, err := tx.Exec(ctx, `UPDATE `+outputs+` SET function_name = $2
				WHERE function_name = $3 AND workflow_uuid IN (`+unfinished+`)`, from, name, old); err != nil {
				return fmt.Errorf("rename step %s: %w", old, err)
			}
		}
		res, err := tx.Exec(ctx, `UPDATE `+status+` SET application_version = $2
			WHERE application_version = $1 AND `+inFlight, from, to)
		if err != nil {
			return fmt.Errorf("carry workflows over: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("upgrade workflows of %s to %s: %w", from, to, err)
	}
	return int(n), nil
}
