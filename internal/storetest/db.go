package storetest

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the store's own pure-Go driver

	"widget-store/internal/loadgen"
)

// PostgresEnv names the Postgres server the tests create their databases on,
// e.g. postgres://postgres:postgres@127.0.0.1:5432/postgres.
const PostgresEnv = "TEST_DATABASE_URL"

// Flavour is one kind of database the store runs on.
type Flavour struct {
	Name string // "sqlite" or "postgres"
	// New returns a fresh, empty database of this flavour, removed when the
	// test ends. It may skip the test (see NewPostgresDB).
	New func(t testing.TB) *loadgen.Database
}

// Flavours is every database the store supports, SQLite first.
func Flavours() []Flavour {
	return []Flavour{{"sqlite", NewSQLiteDB}, {"postgres", NewPostgresDB}}
}

// ForEachDB runs f once per database flavour, as parallel subtests named
// after the flavour, each on a fresh database of its own.
func ForEachDB(t *testing.T, f func(t *testing.T, db *loadgen.Database)) {
	t.Helper()
	for _, fl := range Flavours() {
		t.Run(fl.Name, func(t *testing.T) {
			t.Parallel()
			f(t, fl.New(t))
		})
	}
}

// NewSQLiteDB names a fresh SQLite file in the test's temporary directory
// (the store creates it; the directory goes when the test ends).
func NewSQLiteDB(t testing.TB) *loadgen.Database {
	return loadgen.NewSQLiteDB(t.TempDir())
}

// NewPostgresDB creates an empty database on the $TEST_DATABASE_URL server
// and drops it (WITH (FORCE)) when the test ends. Without TEST_DATABASE_URL
// it skips the test, unless CI is set: then it fails it, since CI must test
// Postgres.
func NewPostgresDB(t testing.TB) *loadgen.Database {
	t.Helper()
	admin := os.Getenv(PostgresEnv)
	if admin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal(PostgresEnv + " is not set: CI must test Postgres")
		}
		t.Skip(PostgresEnv + " not set; skipping Postgres")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := loadgen.NewPostgresDB(ctx, admin)
	if err != nil {
		t.Fatalf("Postgres database on %s: %v", PostgresEnv, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.Drop(ctx); err != nil {
			t.Logf("drop the test database %s: %v", db.URL, err)
		}
	})
	return db
}

// RecordedStep is one step DBOS checkpointed, read from its
// operation_outputs table.
type RecordedStep struct {
	WorkflowID string
	Workflow   string // the workflow's registered name, e.g. "checkout"
	StepID     int
	Name       string // function_name: the step's recorded name
}

// RecordedSteps reads every step DBOS has checkpointed in db, by workflow ID
// and step ID. It may run beside the store (see WorkflowCount).
func RecordedSteps(t testing.TB, db *loadgen.Database) []RecordedStep {
	t.Helper()
	var steps []RecordedStep
	schema := dbosSchema(db)
	query(t, db, `SELECT o.workflow_uuid, s.name, o.function_id, o.function_name FROM `+schema+`operation_outputs o
		JOIN `+schema+`workflow_status s ON s.workflow_uuid = o.workflow_uuid
		ORDER BY o.workflow_uuid, o.function_id`, func(scan func(...any) error) error {
		var s RecordedStep
		if err := scan(&s.WorkflowID, &s.Workflow, &s.StepID, &s.Name); err != nil {
			return err
		}
		steps = append(steps, s)
		return nil
	})
	return steps
}

// WorkflowCount counts the DBOS workflows in db (rows of workflow_status).
// It may run while the store does: on SQLite it opens a short-lived
// read-only handle beside the store's (WAL lets a reader run beside the
// writer) and reads one statement's snapshot.
func WorkflowCount(t testing.TB, db *loadgen.Database) int {
	t.Helper()
	var n int
	query(t, db, `SELECT count(*) FROM `+dbosSchema(db)+`workflow_status`, func(scan func(...any) error) error {
		return scan(&n)
	})
	return n
}

// dbosSchema is the prefix of DBOS's tables: their own schema on Postgres,
// the main database on SQLite.
func dbosSchema(db *loadgen.Database) string {
	if db.Kind == "postgres" {
		return "dbos."
	}
	return ""
}

// query runs q on db, read-only, and calls row for each result row.
func query(t testing.TB, db *loadgen.Database, q string, row func(scan func(...any) error) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// rows is what both drivers' results offer.
	var rows interface {
		Next() bool
		Scan(dest ...any) error
		Err() error
	}
	if db.Kind == "postgres" {
		conn, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			t.Fatalf("connect to %s: %v", db.URL, err)
		}
		defer conn.Close(ctx)
		pgRows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer pgRows.Close()
		rows = pgRows
	} else {
		sdb, err := sql.Open("sqlite", "file:"+url.PathEscape(db.Path)+"?mode=ro&_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		sqlRows, err := sdb.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer sqlRows.Close()
		rows = sqlRows
	}
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
