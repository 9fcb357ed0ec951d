package store

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// openTestSQLite opens a fresh file through the store's connector with
// SQLite's busy timeout at 0: a writer that met SQLite's lock taken would
// fail at once with SQLITE_BUSY instead of sleeping, so any collision the
// connector's queue fails to prevent shows as an error.
func openTestSQLite(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := openSQLite("file:"+url.PathEscape(path)+"?_txlock=immediate&_pragma=busy_timeout(0)&_pragma=journal_mode(WAL)", &spaceWatch{path: path, now: time.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(8)
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE n (id INTEGER PRIMARY KEY, v INTEGER NOT NULL); INSERT INTO n VALUES (1, 0);`); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestSQLiteWritersQueueInsteadOfColliding runs many concurrent write
// transactions and autocommit writes, beside readers, with no busy timeout:
// every one must succeed (they took turns in the process) and none be lost.
func TestSQLiteWritersQueueInsteadOfColliding(t *testing.T) {
	db := openTestSQLite(t)
	ctx := context.Background()
	const writers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if w%2 == 0 || i%2 == 0 {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						errs <- err
						continue
					}
					var v int
					if err := tx.QueryRow(`SELECT v FROM n WHERE id = 1`).Scan(&v); err != nil {
						errs <- errors.Join(err, tx.Rollback())
						continue
					}
					if _, err := tx.Exec(`UPDATE n SET v = $1 WHERE id = 1`, v+1); err != nil {
						errs <- errors.Join(err, tx.Rollback())
						continue
					}
					if err := tx.Commit(); err != nil {
						errs <- err
					}
				} else if _, err := db.Exec(`UPDATE n SET v = v + 1 WHERE id = 1`); err != nil {
					errs <- err
				}
				var v int
				if err := db.QueryRow(`SELECT v FROM n WHERE id = 1`).Scan(&v); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a write collided or failed: %v", err)
	}
	var v int
	if err := db.QueryRow(`SELECT v FROM n WHERE id = 1`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != writers*each {
		t.Errorf("counter %d after %d increments: some were lost", v, writers*each)
	}
}

// TestSQLiteStatementsPreparedOnce checks the connection's statement cache:
// a text run again reuses its prepared statement, and a text run again while
// its rows are still open (a nested query) runs uncached, correctly.
func TestSQLiteStatementsPreparedOnce(t *testing.T) {
	db := openTestSQLite(t)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const q = `SELECT v FROM n WHERE id = $1`
	cached := func() (n int, has bool) {
		err := conn.Raw(func(dc any) error {
			c := dc.(*sqliteConn)
			_, has = c.stmts[q]
			n = len(c.stmts)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n, has
	}
	before, _ := cached()
	for range 3 {
		var v int
		if err := conn.QueryRowContext(ctx, q, 1).Scan(&v); err != nil {
			t.Fatal(err)
		}
	}
	if after, has := cached(); !has || after != before+1 {
		t.Errorf("three runs of one text: the cache went from %d to %d statements (has it: %v), want one more", before, after, has)
	}
	rows, err := conn.QueryContext(ctx, q, 1)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var outer, inner int
		if err := rows.Scan(&outer); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(ctx, q, 1).Scan(&inner); err != nil || inner != outer {
			t.Fatalf("nested run of the same text: %d, %v; want %d", inner, err, outer)
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
}
