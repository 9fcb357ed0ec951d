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

// TestRoomToWriteAsksStatfsOnlyWhenItMatters: a statfs that found plenty of
// room (roomyBytes) is trusted for statfsFresh, so a flash sale's sold-out
// answers do not each make the system call; below roomyBytes every call
// asks, so a filesystem filling towards minFreeBytes is seen at the next
// request, and a refused write is seen at once whatever statfs said.
func TestRoomToWriteAsksStatfsOnlyWhenItMatters(t *testing.T) {
	clock := time.Unix(1_800_000_000, 0)
	var free uint64 = 1 << 30
	asked := 0
	sw := &spaceWatch{path: filepath.Join(t.TempDir(), "x.db"), now: func() time.Time { return clock },
		free: func(string) (uint64, error) { asked++; return free, nil }}
	for range 3 {
		if err := sw.roomToWrite(); err != nil {
			t.Fatal(err)
		}
	}
	if asked != 1 {
		t.Fatalf("statfs asked %d times in one instant with 1 GiB free, want 1", asked)
	}
	// Full now, but the roomy answer is still fresh: the next call trusts it;
	// once it is statfsFresh old, the full disk is seen.
	free = 0
	clock = clock.Add(statfsFresh - time.Millisecond)
	if err := sw.roomToWrite(); err != nil {
		t.Fatalf("within statfsFresh of a roomy statfs: %v, want nil (cached)", err)
	}
	clock = clock.Add(time.Millisecond)
	if err := sw.roomToWrite(); !IsNoSpace(err) {
		t.Fatalf("statfsFresh after a roomy statfs, disk full: %v, want a *NoSpaceError", err)
	}
	// Below roomyBytes, every call asks.
	free, asked = roomyBytes-1, 0
	for range 3 {
		if err := sw.roomToWrite(); err != nil {
			t.Fatal(err)
		}
	}
	if asked != 3 {
		t.Fatalf("statfs asked %d times for 3 calls with less than roomyBytes free, want 3", asked)
	}
	free = 0
	if err := sw.roomToWrite(); !IsNoSpace(err) {
		t.Fatalf("disk full after a statfs below roomyBytes: %v, want a *NoSpaceError at once", err)
	}
	// A refused write is seen at once, even with a fresh roomy statfs.
	free = 1 << 30
	if err := sw.roomToWrite(); err != nil {
		t.Fatal(err)
	}
	sw.refused.Store(clock.UnixNano())
	if err := sw.roomToWrite(); !IsNoSpace(err) {
		t.Fatalf("right after SQLITE_FULL, with a fresh roomy statfs: %v, want a *NoSpaceError", err)
	}
}
