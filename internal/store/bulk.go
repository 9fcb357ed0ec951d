package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// BulkTable is rows for one table, for WriteBulk.
type BulkTable struct {
	name string
	dbos bool // one of DBOS's tables: only dbos_tables.go makes those
	cols []string
	rows [][]any
}

// NewBulkTable is an empty batch of rows for one of the store's own tables
// (schema.sql), with these columns. DBOS's tables take rows through
// DBOSHistory.
func NewBulkTable(name string, cols ...string) *BulkTable {
	return &BulkTable{name: name, cols: cols}
}

// Add appends a row: a value per column, in their order.
func (t *BulkTable) Add(row ...any) { t.rows = append(t.rows, row) }

// rowsPerInsert is the rows of one INSERT on SQLite. Few: modernc's bind
// costs grow with the square of a statement's parameters (500 rows spent 80%
// of the seeding's CPU binding them); 16 saves most of the per-statement
// cost.
const rowsPerInsert = 16

// WriteBulk writes tables, in their order, in one transaction: how the seeder
// (internal/seed) loads a store's history, some hundred thousand rows at a
// time. It is for a database that serves nobody yet.
//
// On Postgres each table is one COPY, with triggers and foreign-key checks
// off (session_replication_role = replica, for this transaction) when the
// role may turn them off: DBOS's trigger on notifications would otherwise
// NOTIFY once for every message, long consumed. Without the right it writes
// all the same, only slower. On SQLite each table is multi-row INSERTs of
// rowsPerInsert rows, statements the connection keeps prepared (sqlite.go):
// one or two distinct texts a table.
func (db *DB) WriteBulk(ctx context.Context, tables []*BulkTable) error {
	own := dbosColumns()
	for _, t := range tables {
		if _, isDBOS := own[t.name]; isDBOS && !t.dbos {
			return fmt.Errorf("write %s: one of DBOS's tables, written through DBOSHistory only", t.name)
		}
	}
	return db.InTx(ctx, func(tx Tx) error {
		if db.Dialect.Postgres {
			return copyBulk(ctx, tx.Raw.(pgx.Tx), tables)
		}
		return insertBulk(ctx, tx, tables)
	})
}

func copyBulk(ctx context.Context, tx pgx.Tx, tables []*BulkTable) error {
	// In a savepoint: a role that may not set it leaves the transaction
	// usable.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := sp.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
	} else if err := sp.Commit(ctx); err != nil {
		return err
	}
	for _, t := range tables {
		name := pgx.Identifier{t.name}
		if t.dbos {
			name = pgx.Identifier{"dbos", t.name}
		}
		if _, err := tx.CopyFrom(ctx, name, t.cols, pgx.CopyFromRows(t.rows)); err != nil {
			return fmt.Errorf("copy into %s: %w", t.name, err)
		}
	}
	return nil
}

func insertBulk(ctx context.Context, tx Tx, tables []*BulkTable) error {
	for _, t := range tables {
		one := "(" + strings.TrimSuffix(strings.Repeat("?,", len(t.cols)), ",") + ")"
		insert := func(rows int) string {
			return `INSERT INTO ` + t.name + ` (` + strings.Join(t.cols, ", ") + `) VALUES ` +
				strings.TrimSuffix(strings.Repeat(one+",", rows), ",")
		}
		full := insert(rowsPerInsert)
		args := make([]any, 0, rowsPerInsert*len(t.cols))
		for from := 0; from < len(t.rows); from += rowsPerInsert {
			rows := t.rows[from:min(len(t.rows), from+rowsPerInsert)]
			args = args[:0]
			for _, r := range rows {
				if len(r) != len(t.cols) {
					return fmt.Errorf("insert into %s: a row of %d values for %d columns", t.name, len(r), len(t.cols))
				}
				args = append(args, r...)
			}
			q := full
			if len(rows) < rowsPerInsert {
				q = insert(len(rows))
			}
			if _, err := tx.Exec(ctx, q, args...); err != nil {
				return fmt.Errorf("insert into %s: %w", t.name, err)
			}
		}
	}
	return nil
}
