package store

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"widget-store/internal/shop"
)

// DBOS's own tables, as the store uses them.
//
// DBOS keeps its system database in tables of its own, beside the store's:
// unqualified names in the store's SQLite file (workflow_status,
// operation_outputs, notifications, …), schema "dbos" on Postgres
// (Dialect.DBOSTable). DBOS's API covers most of what the store needs of
// them; where it does not, the store reads or writes them itself, and every
// such statement is in this file, so that an SDK upgrade has one place to
// check:
//
//   - LookBeforeCheckout (workflow_status): whether a checkout's workflow
//     exists, read with its order and the stock (internal/checkout, a
//     sold-out checkout answered without a workflow);
//   - UnfinishedOrdersToJudge (workflow_status): the reconciler's pass,
//     without the orders whose checkout is alive (internal/reconcile);
//   - FinishedWorkflows (workflow_status): retention's pages, in the order
//     the workflows finished (internal/retention);
//   - UpgradeWorkflows (workflow_status, operation_outputs): a build that
//     renames steps carries the unfinished workflows over (main.go, at start);
//   - IndexDBOSTables: the store's own indexes on DBOS's tables (at start);
//   - DBOSHistory: the rows of finished workflows the seeder writes
//     (internal/seed, through WriteBulk).
//
// dbosColumns lists every column of DBOS's that these statements name, with
// its type in SDK v1.8.0's schema on each database. TestDBOSTablesAsRelied
// (dbos_tables_test.go) is the tripwire: on a real DBOS system database of
// each kind it checks those columns and runs every statement here, checking
// the result against DBOS's own API, so that an SDK upgrade that renames,
// retypes or reinterprets any of them fails there, not in a store that
// silently waits out its checkouts' payment windows or keeps its history for
// ever.

// dbosColumn is a column of one of DBOS's tables, with its declared type on
// SQLite (PRAGMA table_info) and on Postgres (information_schema.columns).
type dbosColumn struct{ name, sqlite, postgres string }

// dbosColumns are the columns of DBOS's tables that this file names, by table
// (SDK v1.8.0).
func dbosColumns() map[string][]dbosColumn {
	text := func(name string) dbosColumn { return dbosColumn{name, "TEXT", "text"} }
	ms := func(name string) dbosColumn { return dbosColumn{name, "INTEGER", "bigint"} }
	flag := func(name string) dbosColumn { return dbosColumn{name, "BOOLEAN", "boolean"} }
	return map[string][]dbosColumn{
		"workflow_status": {
			text("workflow_uuid"), text("status"), text("name"), text("authenticated_roles"), text("executor_id"),
			ms("created_at"), ms("updated_at"), text("application_version"), ms("recovery_attempts"),
			{"priority", "INTEGER", "integer"}, text("parent_workflow_id"), text("serialization"),
			flag("was_forked_from"), text("forked_from"), flag("rate_limited"), {"completed_at", "BIGINT", "bigint"},
			flag("is_debounced"), text("application_name"), text("creator_xid"),
		},
		"workflow_input":  {text("workflow_uuid"), text("inputs"), ms("retention_timestamp")},
		"workflow_output": {text("workflow_uuid"), text("output"), ms("retention_timestamp")},
		"operation_outputs": {
			text("workflow_uuid"), {"function_id", "INTEGER", "integer"}, text("function_name"), text("output"),
			text("child_workflow_id"), ms("started_at_epoch_ms"), ms("completed_at_epoch_ms"), text("serialization"),
			text("application_name"), ms("retention_timestamp"),
		},
		"notifications": {
			text("message_uuid"), text("destination_uuid"), text("topic"), text("message"), ms("created_at_epoch_ms"),
			text("serialization"), flag("consumed"), {"consumed_by_function_id", "INTEGER", "integer"},
		},
	}
}

// ----- workflow_status: a checkout answered from reads -----

// BeforeCheckout is what one read says about checkout key before anything
// starts (internal/checkout, Service.Start): what the key's checkout
// recorded, whether its workflow exists, and which lines of its cart the
// stock cannot fill now.
type BeforeCheckout struct {
	// Read: the key's facts below were read; false only when the catalog
	// has none of the cart's products (the facts come with the products'
	// rows), and then nothing may be answered from this read.
	Read    bool
	Ordered bool // the key made an order
	SoldOut bool // the key's checkout found a line short and recorded it (sold_out_checkouts)
	// Started: a workflow with the key as its ID exists in DBOS's
	// workflow_status, in any instance, finished or not (its first step may
	// not have run yet).
	Started bool
	// Short are the cart's lines the stock cannot fill now, with the stock
	// found; Unknown the cart's products the catalog does not have (short
	// too, with 0 left).
	Short   []shop.Shortage
	Unknown []int
}

// LookBeforeCheckout reads, in one statement (one snapshot on both
// databases), key's order, its sold-out record, its workflow's status row,
// and the stock of cart's products (nil: one unit of product 1): a
// primary-key lookup each, no write.
//
// The workflow's row is DBOS's: dbos.RunWorkflow commits it before the
// workflow's first step runs, so a snapshot without it holds no step of that
// checkout either (and no order of the key's, unless retention or an
// operator deleted its records, which Ordered still shows). That is what
// lets a checkout be answered "sold out" from this read alone: nothing of
// the key's can commit after it except through a checkout started later.
func (db *DB) LookBeforeCheckout(ctx context.Context, key string, cart []shop.Line) (BeforeCheckout, error) {
	if len(cart) == 0 {
		cart = shop.DefaultCart()
	}
	q, args := lookBeforeCheckoutSQL(db.Dialect, key, cart)
	rows, err := db.q.Query(ctx, q, args...)
	if err != nil {
		return BeforeCheckout{}, fmt.Errorf("look at checkout %s: %w", key, err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	var b BeforeCheckout
	stock := map[int]int{}
	for rows.Next() {
		var product, inventory int
		if err := rows.Scan(&product, &inventory, &b.Ordered, &b.SoldOut, &b.Started); err != nil {
			return BeforeCheckout{}, fmt.Errorf("look at checkout %s: %w", key, err)
		}
		stock[product] = inventory
		b.Read = true
	}
	if err := rows.Err(); err != nil {
		return BeforeCheckout{}, fmt.Errorf("look at checkout %s: %w", key, err)
	}
	for _, l := range cart {
		left, ok := stock[l.ProductID]
		if !ok {
			b.Unknown = append(b.Unknown, l.ProductID)
		}
		if left < l.Quantity {
			b.Short = append(b.Short, shop.Shortage{ProductID: l.ProductID, Quantity: l.Quantity, Available: left})
		}
	}
	return b, nil
}

// lookBeforeCheckoutSQL is LookBeforeCheckout's statement and arguments: a
// row per product of the cart that exists, each with the key's three facts
// (uncorrelated subqueries, which both databases evaluate once). Every part
// is a primary-key or unique-index lookup (the large-store test EXPLAINs it).
func lookBeforeCheckoutSQL(d Dialect, key string, cart []shop.Line) (string, []any) {
	args := []any{key}
	in := make([]string, 0, len(cart))
	for _, l := range cart {
		args = append(args, l.ProductID)
		in = append(in, "$"+strconv.Itoa(len(args)))
	}
	return `SELECT p.product_id, p.inventory,
			EXISTS (SELECT 1 FROM orders WHERE checkout_key = $1),
			EXISTS (SELECT 1 FROM sold_out_checkouts WHERE checkout_key = $1),
			EXISTS (SELECT 1 FROM ` + d.DBOSTable("workflow_status") + ` WHERE workflow_uuid = $1)
		FROM products p WHERE p.product_id IN (` + strings.Join(in, ", ") + `)`, args
}

// ----- workflow_status: the reconciler -----

// UnfinishedOrdersToJudge is UnfinishedOrders (PENDING or PAID, created
// before before, ids above afterID, ascending, at most limit) without the
// orders whose checkout workflow is PENDING or ENQUEUED: a checkout that
// will still run, in this process or another, whatever it is waiting for.
// The reconciler leaves every such order alone anyway (reconcile.judge: the
// checkout is among the order's live finishers), so it need not read their
// workflows' statuses: with 100,000 checkouts waiting for payment, a pass
// is one read that returns nothing, instead of 200 pages of orders, each
// with a dbos.ListWorkflows of 2,500 IDs, every interval (docs/BENCHMARKS.md,
// Many waiting checkouts). A checkout that stops being alive after this
// read is found by the next pass, as one that stopped after the statuses'
// read always was.
func (db *DB) UnfinishedOrdersToJudge(ctx context.Context, before time.Time, afterID int64, limit int) ([]shop.Order, error) {
	return db.orders(ctx, "list unfinished orders to judge", unfinishedOrdersToJudgeSQL(db.Dialect), before.UnixMilli(), afterID, limit)
}

// unfinishedOrdersToJudgeSQL walks the unfinished orders as
// sqlUnfinishedOrders does, with one primary-key lookup in workflow_status
// per order.
func unfinishedOrdersToJudgeSQL(d Dialect) string {
	return `SELECT ` + orderColumns + ` FROM orders o
		WHERE order_status IN (0, 2) AND created_at < $1 AND order_id > $2
		AND NOT EXISTS (SELECT 1 FROM ` + d.DBOSTable("workflow_status") + ` w
			WHERE w.workflow_uuid = o.checkout_key AND w.status IN ('PENDING', 'ENQUEUED'))
		ORDER BY order_id LIMIT $3`
}

// ----- workflow_status: retention -----

// FinishedWorkflow is a workflow that finished (SUCCESS, ERROR or CANCELLED),
// as retention sees it.
type FinishedWorkflow struct {
	ID, Name, ForkedFrom string
}

// FinishedWorkflows lists up to limit workflows that finished before cutoff,
// in the order they finished, skipping the first offset.
//
// It reads workflow_status directly (completed_at is set, in Unix ms, when a
// workflow reaches SUCCESS, ERROR or CANCELLED) and retention deletes through
// DBOS's API: dbos.ListWorkflows can filter on completed_at but always sorts
// by created_at, and on SQLite that made every page sort every workflow older
// than the cutoff (0.9 s a page at a million orders). Ordered by
// completed_at, a page is one walk of DBOS's own index on it
// (idx_workflow_status_completed_at) on both databases.
func (db *DB) FinishedWorkflows(ctx context.Context, cutoff time.Time, offset, limit int) ([]FinishedWorkflow, error) {
	rows, err := db.q.Query(ctx, finishedWorkflowsSQL(db.Dialect), cutoff.UnixMilli(), limit, offset)
	if err != nil {
		return nil, fmt.Errorf("list finished workflows: %w", err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	var out []FinishedWorkflow
	for rows.Next() {
		var w FinishedWorkflow
		if err := rows.Scan(&w.ID, &w.Name, &w.ForkedFrom); err != nil {
			return nil, fmt.Errorf("list finished workflows: %w", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list finished workflows: %w", err)
	}
	return out, nil
}

func finishedWorkflowsSQL(d Dialect) string {
	return `SELECT workflow_uuid, name, COALESCE(forked_from, '') FROM ` + d.DBOSTable("workflow_status") + `
		WHERE completed_at <= $1 AND status IN ('SUCCESS', 'ERROR', 'CANCELLED')
		ORDER BY completed_at LIMIT $2 OFFSET $3`
}

// ----- workflow_status and operation_outputs: an upgrade -----

// UpgradeWorkflows carries the unfinished workflows of application version
// from (PENDING, or ENQUEUED by a takeover) over to version to, renaming the
// step names their checkpoints recorded as renames says (old → new), in one
// transaction. It returns how many workflows it carried over.
//
// DBOS recovers only the workflows of its own application version, and when
// it replays a checkpoint it checks that the step asking for it has the name
// the checkpoint recorded. So a build that renames steps must do both, or an
// order in flight under the previous build would be stranded PENDING (or fail
// its replay) when the new build starts. This writes
// workflow_status.application_version and operation_outputs.function_name,
// which is why it exists only for an upgrade whose steps keep their order and
// their inputs and outputs, only their names changing; the upgrade test in
// internal/storetest runs the previous build, stops it mid-checkout and
// mid-dispatch, and checks every order finishes under the new one.
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

// ----- the store's indexes on DBOS's tables -----

// dbosIndex is one of the store's indexes on DBOS's tables.
type dbosIndex struct {
	table, name, columns string
	sqliteOnly           bool
}

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
func dbosIndexes() []dbosIndex {
	return []dbosIndex{
		{"workflow_status", "widget_store_workflow_status_executor", "executor_id, status, created_at", true},
	}
}

// IndexDBOSTables creates the store's indexes on DBOS's tables if they are
// missing. Run it after dbos.NewContext (which creates DBOS's tables) and
// before dbos.Launch. On a store that already holds many workflows the first
// start of the build that adds an index builds it (SQLite: about 4–5 s per
// million orders, holding the write lock, before the store serves anything).
func (db *DB) IndexDBOSTables(ctx context.Context) error {
	for _, ix := range dbosIndexes() {
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

// ----- the seeder's rows -----

// DBOSHistory is rows of DBOS's tables for workflows that ran to SUCCESS, as
// DBOS writes them: each workflow's status, input and output, and its steps.
// The seeder (internal/seed) makes a store's past
// with it, without running it; WriteBulk writes its Tables with the store's
// own rows of the same orders, in one transaction.
//
// Values are recorded in DBOS's default serialization, DBOS_JSON: the
// base64 of the value's JSON text. The tripwire test reads seeded rows back
// through DBOS's API (the status, the typed output, the steps) and through
// the store's own statements.
type DBOSHistory struct {
	app, version, executor       string
	status, input, output, steps *BulkTable
}

// dbosJSON is the name DBOS records for its default serialization.
const dbosJSON = "DBOS_JSON"

// encodeDBOSJSON is a value's JSON text as DBOS_JSON records it.
func encodeDBOSJSON(jsonText string) string {
	return base64.StdEncoding.EncodeToString([]byte(jsonText))
}

// NewDBOSHistory starts an empty history of workflows that ran under
// application app, version version, on executor executor.
func NewDBOSHistory(app, version, executor string) *DBOSHistory {
	dbosTable := func(name string, cols ...string) *BulkTable {
		t := NewBulkTable(name, cols...)
		t.dbos = true
		return t
	}
	return &DBOSHistory{
		app: app, version: version, executor: executor,
		status: dbosTable("workflow_status", "workflow_uuid", "status", "name", "authenticated_roles",
			"executor_id", "created_at", "updated_at", "application_version", "recovery_attempts", "priority", "parent_workflow_id",
			"serialization", "was_forked_from", "rate_limited", "completed_at", "is_debounced", "application_name", "creator_xid"),
		input:  dbosTable("workflow_input", "workflow_uuid", "inputs", "retention_timestamp"),
		output: dbosTable("workflow_output", "workflow_uuid", "output", "retention_timestamp"),
		steps: dbosTable("operation_outputs", "workflow_uuid", "function_id", "function_name", "output",
			"child_workflow_id", "started_at_epoch_ms", "completed_at_epoch_ms", "serialization", "application_name", "retention_timestamp"),
	}
}

// HistoryWorkflow is a workflow that ran to SUCCESS, at its first attempt.
type HistoryWorkflow struct {
	ID, Name string
	Parent   string // the id of the workflow that started it as a child; "" for none
	// Input and Output are the JSON text of its input and its result.
	Input, Output string
	// Created and Completed are Unix ms.
	Created, Completed int64
	// CreatorXID is the UUID DBOS records of the transaction that created
	// it (random; the seeder draws it from its seed).
	CreatorXID string
}

// Workflow adds a workflow: its status, its input and its output.
func (h *DBOSHistory) Workflow(w HistoryWorkflow) {
	var parent any // NULL for none
	if w.Parent != "" {
		parent = w.Parent
	}
	h.status.Add(w.ID, "SUCCESS", w.Name, "null", h.executor, w.Created, w.Completed, h.version, 1, 0, parent,
		dbosJSON, false, false, w.Completed, false, h.app, w.CreatorXID)
	h.input.Add(w.ID, encodeDBOSJSON(w.Input), w.Created)
	h.output.Add(w.ID, encodeDBOSJSON(w.Output), w.Completed)
}

// HistoryStep is a step a workflow recorded.
type HistoryStep struct {
	Workflow string
	ID       int // DBOS's function id: its place in the workflow, from 0
	Name     string
	// Output is the JSON text of its result; "" records none (a child
	// workflow's start).
	Output string
	Child  string // the child workflow it started; "" for none
	// Started and Completed are Unix ms; Completed 0 records none (a child
	// workflow's start).
	Started, Completed int64
}

// Step adds a step.
func (h *DBOSHistory) Step(s HistoryStep) {
	var out, ser, child, done any // NULL for none
	if s.Output != "" {
		out, ser = encodeDBOSJSON(s.Output), dbosJSON
	}
	if s.Child != "" {
		child = s.Child
	}
	if s.Completed != 0 {
		done = s.Completed
	}
	h.steps.Add(s.Workflow, s.ID, s.Name, out, child, s.Started, done, ser, h.app, s.Started)
}

// Tables are the history's rows, a table each, in an order that writes every
// workflow before the rows that refer to it.
func (h *DBOSHistory) Tables() []*BulkTable {
	return []*BulkTable{h.status, h.input, h.output, h.steps}
}
