package store

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/storetest"
)

// The names a real run records, as the tripwire's workflows use them.
const (
	tripwireApp     = "dbos-tables-test"
	tripwireVersion = "test"
	tripwireTopic   = "payment_status" // paywait.Topic
)

// TestDBOSTablesAsRelied is the tripwire for every statement the store makes
// on DBOS's own tables (dbos_tables.go). On a real DBOS system database of
// each kind (a SQLite file; Postgres with TEST_DATABASE_URL, required with
// CI) it checks that every column those statements name exists with the type
// dbosColumns says, then runs each statement once against the real tables and
// checks its result against what DBOS's own API says of the same workflows.
// If an SDK upgrade renames, retypes or reinterprets any of them, this fails,
// instead of checkouts silently waiting out their payment windows, retention
// keeping everything, an upgrade stranding orders, or the seeder writing rows
// DBOS cannot read.
func TestDBOSTablesAsRelied(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, ldb *loadgen.Database) {
		ctx := context.Background()
		db := openPagingDB(t, ldb, nil)
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg := dbos.Config{AppName: tripwireApp, ApplicationVersion: tripwireVersion, ExecutorID: "test", Logger: logger}
		db.ConfigureDBOS(&cfg)
		dctx, err := dbos.NewContext(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}

		t.Run("columns", func(t *testing.T) { checkDBOSColumns(t, db) })

		// receive waits for its payment status, as a checkout does.
		receive := func(ctx dbos.Context, _ string) (string, error) {
			return dbos.Recv[string](ctx, tripwireTopic, 30*time.Second)
		}
		dbos.RegisterWorkflow(dctx, receive, dbos.WithWorkflowName("receive"))
		// add returns n plus its one step's result (2n when it runs).
		add := func(ctx dbos.Context, n int) (int, error) {
			d, err := dbos.RunAsStep(ctx, func(context.Context) (int, error) { return 2 * n, nil }, dbos.WithStepName("double"))
			return n + d, err
		}
		dbos.RegisterWorkflow(dctx, add, dbos.WithWorkflowName("add"))
		// parked records a step, says so, and waits for "go".
		stepped := make(chan struct{})
		var once sync.Once
		parked := func(ctx dbos.Context, _ string) (string, error) {
			if _, err := dbos.RunAsStep(ctx, func(context.Context) (string, error) { return "done", nil }, dbos.WithStepName("old-name")); err != nil {
				return "", err
			}
			once.Do(func() { close(stepped) })
			return dbos.Recv[string](ctx, "go", 30*time.Second)
		}
		dbos.RegisterWorkflow(dctx, parked, dbos.WithWorkflowName("parked"))
		// seesItself reads, before any step, what LookBeforeCheckout says of
		// its own workflow ID: the row DBOS committed when it was started.
		seesItself := func(ctx dbos.Context, _ string) (bool, error) {
			id, err := dbos.GetWorkflowID(ctx)
			if err != nil {
				return false, err
			}
			b, err := db.LookBeforeCheckout(ctx, id, nil)
			return b.Started, err
		}
		dbos.RegisterWorkflow(dctx, seesItself, dbos.WithWorkflowName("sees-itself"))
		if err := dbos.Launch(dctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := dbos.Shutdown(dctx, 5*time.Second); err != nil {
				t.Logf("dbos shutdown: %v", err)
			}
		})

		t.Run("IndexDBOSTables", func(t *testing.T) {
			for range 2 { // idempotent: every start runs it
				if err := db.IndexDBOSTables(ctx); err != nil {
					t.Fatalf("index DBOS's tables (schema changed?): %v", err)
				}
			}
		})

		// UnfinishedOrdersToJudge, as the reconciler's pass walks the
		// unfinished orders: an order whose checkout is PENDING (waiting
		// for its payment) is not listed, and is once the checkout finished.
		t.Run("UnfinishedOrdersToJudge", func(t *testing.T) {
			const waiting, gone = "judge-waiting", "judge-no-workflow"
			for _, key := range []string{waiting, gone} {
				err := db.InTx(ctx, func(tx Tx) error {
					_, err := tx.Exec(ctx, `INSERT INTO orders (checkout_key, product_id, price_cents, created_at, last_update_time)
						VALUES ($1, 1, 9999, 0, 0)`, key)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			keys := func() []string {
				os, err := db.UnfinishedOrdersToJudge(ctx, time.Now(), 0, 100)
				if err != nil {
					t.Fatalf("the reconciler's read of orders and DBOS's workflow_status failed (schema changed?): %v", err)
				}
				var out []string
				for _, o := range os {
					if o.Key == waiting || o.Key == gone {
						out = append(out, o.Key)
					}
				}
				return out
			}
			h, err := dbos.RunWorkflow(dctx, receive, "", dbos.WithWorkflowID(waiting))
			if err != nil {
				t.Fatal(err)
			}
			if st, err := h.GetStatus(); err != nil || st.Status != dbos.WorkflowStatusPending {
				t.Fatalf("the waiting checkout's status: %v, %v; want PENDING", st.Status, err)
			}
			if got := keys(); !slices.Equal(got, []string{gone}) {
				t.Fatalf("with one checkout PENDING and one order without a workflow: %q; want only %q", got, gone)
			}
			if err := dbos.Send(dctx, waiting, "paid", tripwireTopic); err != nil {
				t.Fatal(err)
			}
			if _, err := h.GetResult(); err != nil {
				t.Fatal(err)
			}
			if got := keys(); !slices.Equal(got, []string{waiting, gone}) {
				t.Fatalf("after the checkout finished (its order still unfinished): %q; want both", got)
			}
		})

		// FinishedWorkflows lists what finished, in the order it did, with
		// the workflow a fork came from.
		// LookBeforeCheckout, as a checkout answered sold out from a read
		// relies on it (internal/checkout): a workflow's status row is there
		// from its start, before its first step, and the read sees it.
		t.Run("LookBeforeCheckout", func(t *testing.T) {
			const key = "checkout-key-look"
			b, err := db.LookBeforeCheckout(ctx, key, nil)
			if err != nil {
				t.Fatalf("the read of DBOS's workflow_status failed (schema changed?): %v", err)
			}
			if !b.Read || b.Started || b.Ordered || b.SoldOut {
				t.Fatalf("a key nobody used: %+v; want read, and nothing of it", b)
			}
			h, err := dbos.RunWorkflow(dctx, seesItself, "", dbos.WithWorkflowID(key))
			if err != nil {
				t.Fatal(err)
			}
			if saw, err := h.GetResult(); err != nil || !saw {
				t.Fatalf("the workflow's own read before its first step: started=%v, %v; want its status row seen "+
					"(a sold-out answer from a read would miss a checkout in flight)", saw, err)
			}
			if b, err := db.LookBeforeCheckout(ctx, key, nil); err != nil || !b.Started {
				t.Fatalf("after the workflow ran: %+v, %v; want started", b, err)
			}
			if st, err := dbos.ListWorkflows(dctx, dbos.WithFilterWorkflowIDs(key)); err != nil || len(st) != 1 {
				t.Fatalf("DBOS lists %d workflows with ID %s (%v), want 1", len(st), key, err)
			}
			b, err = db.LookBeforeCheckout(ctx, "another-key", []shop.Line{{ProductID: 999, Quantity: 1}, {ProductID: shop.ProductID, Quantity: 1 << 30}})
			if err != nil || !b.Read || b.Started || len(b.Unknown) != 1 || b.Unknown[0] != 999 || len(b.Short) != 2 {
				t.Fatalf("an unknown product and a line no stock fills: %+v, %v; want 999 unknown and both short", b, err)
			}
			if b, err := db.LookBeforeCheckout(ctx, key, []shop.Line{{ProductID: 999, Quantity: 1}}); err != nil || b.Read || len(b.Unknown) != 1 {
				t.Fatalf("only an unknown product: %+v, %v; want nothing read (no product row to carry the key's facts)", b, err)
			}
		})

		t.Run("FinishedWorkflows", func(t *testing.T) {
			before := time.Now().Add(-time.Hour)
			if got := runAdd(t, dctx, add, "add-1", 1); got != 3 {
				t.Fatalf("add(1) = %d, want 3", got)
			}
			if got, err := forkFromStep1(t, dctx, "add-1", "add-1-fork"); err != nil || got != 3 {
				t.Fatalf("the fork returned %d, %v; want 3", got, err)
			}
			list, err := db.FinishedWorkflows(ctx, time.Now().Add(time.Second), 0, 100)
			if err != nil {
				t.Fatalf("the query on DBOS's workflow_status failed (schema changed?): %v", err)
			}
			i, j := slices.Index(list, FinishedWorkflow{"add-1", "add", ""}), slices.Index(list, FinishedWorkflow{"add-1-fork", "add", "add-1"})
			if i < 0 || j < 0 || j < i {
				t.Fatalf("finished workflows %v: want add-1, then add-1-fork forked from it", list)
			}
			if list, err := db.FinishedWorkflows(ctx, before, 0, 100); err != nil || len(list) != 0 {
				t.Fatalf("finished an hour ago: %v, %v; want none", list, err)
			}
			if page, err := db.FinishedWorkflows(ctx, time.Now().Add(time.Second), i, 1); err != nil || len(page) != 1 || page[0] != list[i] {
				t.Fatalf("page at offset %d: %v, %v; want %v", i, page, err, list[i])
			}
		})

		// UpgradeWorkflows carries an unfinished workflow over to the next
		// version with its step renamed, and nothing else.
		t.Run("UpgradeWorkflows", func(t *testing.T) {
			h, err := dbos.RunWorkflow(dctx, parked, "", dbos.WithWorkflowID("parked-1"))
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-stepped:
			case <-time.After(30 * time.Second):
				t.Fatal("the parked workflow never recorded its step")
			}
			n, err := db.UpgradeWorkflows(ctx, tripwireVersion, "test-next", map[string]string{"old-name": "new-name"})
			if err != nil {
				t.Fatalf("the update of DBOS's workflow_status and operation_outputs failed (schema changed?): %v", err)
			}
			if n != 1 {
				t.Errorf("carried %d workflows over, want 1 (only the parked one is unfinished)", n)
			}
			if v := workflowVersion(t, dctx, "parked-1"); v != "test-next" {
				t.Errorf("parked-1 is of version %q after the upgrade, want test-next", v)
			}
			if v := workflowVersion(t, dctx, "add-1"); v != tripwireVersion {
				t.Errorf("the finished add-1 is of version %q after the upgrade, want it left at %s", v, tripwireVersion)
			}
			steps, err := dbos.GetWorkflowSteps(dctx, "parked-1")
			if err != nil {
				t.Fatal(err)
			}
			if len(steps) == 0 || steps[0].StepName != "new-name" {
				t.Errorf("parked-1's steps after the upgrade: %+v; want its first named new-name", steps)
			}
			if err := dbos.Send(dctx, "parked-1", "go", "go"); err != nil {
				t.Fatal(err)
			}
			if _, err := h.GetResult(); err != nil {
				t.Fatal(err)
			}
		})

		// DBOSHistory's rows, written by WriteBulk, read back by DBOS as
		// the workflows, steps and messages of a real run.
		t.Run("DBOSHistory", func(t *testing.T) {
			now := time.Now().UnixMilli()
			h := NewDBOSHistory(tripwireApp, tripwireVersion, "seeded")
			h.Workflow(HistoryWorkflow{ID: "seeded-1", Name: "add", Input: "21", Output: "1021", Created: now - 900, Completed: now - 100,
				CreatorXID: "6f1f9d1e-6c59-4c3b-9a0e-3c1b2a4d5e6f"})
			// A recorded step output unlike what the step computes: a fork
			// that returns it replayed the seeded checkpoint.
			h.Step(HistoryStep{Workflow: "seeded-1", ID: 0, Name: "double", Output: "1000", Started: now - 800, Completed: now - 700})
			h.Step(HistoryStep{Workflow: "seeded-1", ID: 1, Name: "add", Child: "seeded-2", Started: now - 600})
			h.Workflow(HistoryWorkflow{ID: "seeded-2", Name: "add", Parent: "seeded-1", Input: "1", Output: "3", Created: now - 600, Completed: now - 200,
				CreatorXID: "0c7e3b7a-1d2f-4e5a-8b9c-0d1e2f3a4b5c"})
			if err := db.WriteBulk(ctx, h.Tables()); err != nil {
				t.Fatalf("writing the seeder's rows into DBOS's tables failed (schema changed?): %v", err)
			}

			wfs, err := dbos.ListWorkflows(dctx, dbos.WithFilterWorkflowIDs("seeded-1", "seeded-2"))
			if err != nil {
				t.Fatal(err)
			}
			if len(wfs) != 2 {
				t.Fatalf("DBOS lists %d of the 2 seeded workflows", len(wfs))
			}
			for _, w := range wfs {
				if w.Status != dbos.WorkflowStatusSuccess || w.Name != "add" || w.ApplicationVersion != tripwireVersion || w.ExecutorID != "seeded" {
					t.Errorf("seeded workflow as DBOS sees it: %+v", w)
				}
				if wantParent := map[string]string{"seeded-2": "seeded-1"}[w.ID]; w.ParentWorkflowID != wantParent {
					t.Errorf("%s's parent: %q, want %q", w.ID, w.ParentWorkflowID, wantParent)
				}
			}
			res, err := dbos.RetrieveWorkflow[int](dctx, "seeded-1")
			if err != nil {
				t.Fatal(err)
			}
			if got, err := res.GetResult(); err != nil || got != 1021 {
				t.Errorf("seeded-1's result as DBOS decodes it: %d, %v; want 1021", got, err)
			}
			steps, err := dbos.GetWorkflowSteps(dctx, "seeded-1")
			if err != nil {
				t.Fatal(err)
			}
			if len(steps) != 2 || steps[0].StepName != "double" || steps[1].ChildWorkflowID != "seeded-2" {
				t.Errorf("seeded-1's steps as DBOS sees them: %+v", steps)
			}
			// A fork from step 1 runs add on the seeded input (21) with the
			// seeded checkpoint of its step 0 (1000).
			if got, err := forkFromStep1(t, dctx, "seeded-1", "seeded-1-fork"); err != nil || got != 1021 {
				t.Errorf("a fork of seeded-1 from its step 1 returned %d, %v; want 1021 (input 21 + the seeded step's 1000)", got, err)
			}
			list, err := db.FinishedWorkflows(ctx, time.Now().Add(time.Second), 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(list, FinishedWorkflow{"seeded-1", "add", ""}) {
				t.Errorf("finished workflows %v: want seeded-1 among them", list)
			}
			// DBOS's tables take rows only through DBOSHistory.
			if err := db.WriteBulk(ctx, []*BulkTable{NewBulkTable("notifications", "message_uuid")}); err == nil {
				t.Error("WriteBulk wrote into DBOS's notifications from a store table")
			}
		})
	})
}

// checkDBOSColumns checks every column in dbosColumns against the real
// table, and that the seeder's rows name only those.
func checkDBOSColumns(t *testing.T, db *DB) {
	ctx := context.Background()
	want := dbosColumns()
	for table, cols := range want {
		q := `SELECT name, type FROM pragma_table_info('` + table + `')`
		if db.Dialect.Postgres {
			q = `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'dbos' AND table_name = '` + table + `'`
		}
		got := map[string]string{}
		rows, err := db.Q().Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name, typ string
			if err := rows.Scan(&name, &typ); err != nil {
				t.Fatal(err)
			}
			got[name] = typ
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			t.Errorf("DBOS has no table %s", db.Dialect.DBOSTable(table))
			continue
		}
		for _, c := range cols {
			typ, ok := got[c.name]
			wantType := c.sqlite
			if db.Dialect.Postgres {
				wantType = c.postgres
			}
			switch {
			case !ok:
				t.Errorf("DBOS's %s has no column %s", table, c.name)
			case typ != wantType:
				t.Errorf("DBOS's %s.%s is %s, want %s", table, c.name, typ, wantType)
			}
		}
	}
	for _, bt := range NewDBOSHistory("", "", "").Tables() {
		for _, c := range bt.cols {
			if !slices.ContainsFunc(want[bt.name], func(d dbosColumn) bool { return d.name == c }) {
				t.Errorf("DBOSHistory writes %s.%s, which dbosColumns does not list", bt.name, c)
			}
		}
	}
}

// runAdd runs workflow add on n as workflow id and returns its result.
func runAdd(t *testing.T, dctx dbos.Context, add dbos.Workflow[int, int], id string, n int) int {
	t.Helper()
	h, err := dbos.RunWorkflow(dctx, add, n, dbos.WithWorkflowID(id))
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.GetResult()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// forkFromStep1 forks workflow original (an add) from its step 1 as
// workflow forked and returns the fork's result.
func forkFromStep1(t *testing.T, dctx dbos.Context, original, forked string) (int, error) {
	t.Helper()
	fork, err := dbos.ForkWorkflow[int](dctx, dbos.ForkWorkflowInput{OriginalWorkflowID: original, ForkedWorkflowID: forked, StartStep: 1})
	if err != nil {
		t.Fatal(err)
	}
	return fork.GetResult()
}

// workflowVersion is the application version DBOS lists workflow id under.
func workflowVersion(t *testing.T, dctx dbos.Context, id string) string {
	t.Helper()
	wfs, err := dbos.ListWorkflows(dctx, dbos.WithFilterWorkflowIDs(id))
	if err != nil || len(wfs) != 1 {
		t.Fatalf("list workflow %s: %v, %v", id, wfs, err)
	}
	return wfs[0].ApplicationVersion
}
