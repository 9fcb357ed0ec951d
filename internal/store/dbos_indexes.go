package store

import (
	"context"
	"fmt"
)

// dbosIndexes are the store's own indexes on DBOS's tables, for DBOS's own
// queries that the store makes at every start. They cannot live in
// schema.sql, which runs before DBOS creates its tables; IndexDBOSTables
// creates them once DBOS has (after dbos.NewContext). Names carry the
// store's prefix so that no DBOS migration can collide with them.
//
// widget_store_workflow_status_executor serves "the PENDING workflows of
// this executor and version, oldest first" (dbos.ListWorkflows with
// WithFilterStatus, WithFilterExecutorIDs: internal/cluster at every start,
// and a takeover of a dead instance). DBOS binds the status as a parameter,
// and SQLite can use a partial index (DBOS's idx_workflow_status_pending,
// WHERE status = 'PENDING') only for a literal, so without this it walked
// all of workflow_status in created_at order: 1.5 s of every start at a
// million orders, linear in the store's age. Postgres plans the query with
// the parameter's value and uses DBOS's partial index, so the index is
// SQLite's only.
var dbosIndexes = []struct {
	table, name, columns string
	sqliteOnly           bool
}{
	{"workflow_status", "widget_store_workflow_status_executor", "executor_id, status, created_at", true},
}

// IndexDBOSTables creates the store's indexes on DBOS's tables if they are
// missing. Run it after dbos.NewContext (which creates DBOS's tables) and
// before dbos.Launch. On a store that already holds many workflows the first
// start of the build that adds an index builds it (SQLite: about 4–5 s per
// million orders, holding the write lock, before the store serves anything).
func (db *DB) IndexDBOSTables(ctx context.Context) error {
	for _, ix := range dbosIndexes {
		if ix.sqliteOnly && db.Dialect.Postgres {
			continue
		}
		q := `CREATE INDEX IF NOT EXISTS ` + ix.name + ` ON ` + db.Dialect.DBOSTable(ix.table) + ` (` + ix.columns + `)`
		if _, err := db.q.Exec(ctx, q); err != nil {
			return fmt.Errorf("index DBOS's %s: %w", ix.table, err)
		}
	}
	return nil
}
