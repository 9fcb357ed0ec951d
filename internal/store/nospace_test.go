package store

import (
	"context"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFullSQLiteIsTemporary: a write SQLite refuses for lack of room
// (SQLITE_FULL; here its max_page_count, which a PRAGMA raises at run time
// to give the room back) is a *NoSpaceError, which DBOS counts as
// transient (it has net.Error's methods), and RoomToWrite refuses new writes
// for noSpaceHold after it; with room again, the same write succeeds.
func TestFullSQLiteIsTemporary(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "full.db")
	clock := time.Unix(1_800_000_000, 0)
	space := &spaceWatch{path: path, now: func() time.Time { return clock }}
	sqldb, err := openSQLite("file:"+url.PathEscape(path)+"?_txlock=immediate&_pragma=journal_mode(WAL)", space, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sqldb.Close()
	sqldb.SetMaxOpenConns(1) // one connection: the PRAGMAs below hold for every statement
	db := &DB{Dialect: Dialect{Name: "sqlite"}, SQL: sqldb, q: sqlQuerier{sqldb}, now: space.now, space: space}
	if _, err := sqldb.ExecContext(ctx, `CREATE TABLE t (b BLOB)`); err != nil {
		t.Fatal(err)
	}
	var pages int
	if err := sqldb.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := sqldb.ExecContext(ctx, `PRAGMA max_page_count = `+strconv.Itoa(pages+2)); err != nil {
		t.Fatal(err)
	}
	if err := db.RoomToWrite(); err != nil {
		t.Fatalf("RoomToWrite before any refused write: %v", err)
	}

	write := func() error {
		return db.InTx(ctx, func(tx Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO t VALUES (zeroblob(20000))`)
			return err
		})
	}
	err = write()
	var ns *NoSpaceError
	var netErr net.Error
	if !errors.As(err, &ns) || !IsNoSpace(err) || !errors.As(err, &netErr) || !netErr.Temporary() || !IsUnavailable(err) {
		t.Fatalf("write on a full database: %v (%T), want a temporary *NoSpaceError", err, err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "SQLITE_FULL") {
		t.Fatalf("error %q does not name the file and SQLITE_FULL", err)
	}
	if err := db.RoomToWrite(); !IsNoSpace(err) {
		t.Fatalf("RoomToWrite right after a refused write: %v, want a *NoSpaceError", err)
	}
	if err := db.CheckWritable(ctx); !IsNoSpace(err) {
		t.Fatalf("CheckWritable right after a refused write: %v, want a *NoSpaceError", err)
	}

	clock = clock.Add(noSpaceHold)
	if err := db.RoomToWrite(); err != nil {
		t.Fatalf("RoomToWrite %v after the refused write: %v, want nil", noSpaceHold, err)
	}
	if _, err := sqldb.ExecContext(ctx, `PRAGMA max_page_count = 1000000`); err != nil {
		t.Fatal(err)
	}
	if err := write(); err != nil {
		t.Fatalf("the same write with room again: %v", err)
	}
}
