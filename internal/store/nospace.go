package store

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	sqlite "modernc.org/sqlite"
)

// A full disk.
//
// When the filesystem that holds the SQLite file fills up, SQLite refuses
// the write that needs room with SQLITE_FULL and writes nothing of it: the
// statement (outside a transaction, the whole implicit transaction) or the
// transaction is rolled back, so the same write tried again once there is
// room is as good as the first. Nothing is wrong with the request or the
// workflow: the store waits for room and carries on, and says so.
//
//   - Workflows in flight wait. DBOS v1.8 retries, with growing pauses (up to
//     30 s), what fails with an error it counts as transient: on SQLite only
//     SQLITE_BUSY and SQLITE_LOCKED, and on every database an error that has
//     net.Error's methods (sysdb's IsRetryable). So the SQLite connections
//     (sqlite.go) turn SQLITE_FULL into a *NoSpaceError, which has them
//     (Temporary: true). DBOS then retries a step's transaction in a fresh
//     one, its checkpoints, its Recv and SetEvent and the recording of a
//     workflow's outcome, instead of failing the step and recording the
//     workflow ERROR (which would leave its order behind). When room comes
//     back, each resumes at its next try, by itself. The dispatch legs, plain
//     writes, retry on their own (steps.go).
//   - New writes are refused at once: while RoomToWrite reports an error,
//     the web layer answers every write request 503 with Retry-After ("the
//     store cannot write right now") before it starts anything, and /healthz
//     answers 503 "database not writable". A new checkout must not get as
//     far as DBOS: DBOS would retry recording its start until there is room,
//     and the shopper's request would hang meanwhile.
//
// RoomToWrite knows two things: the filesystem's free space (statfs), below
// minFreeBytes, which sees a full disk before a write fails; and a write
// refused with SQLITE_FULL within the last noSpaceHold, which sees what
// statfs cannot (a quota, SQLite's max_page_count).
//
// statfs is a system call, and RoomToWrite runs before every write request:
// in a flash sale, where a sold-out answer is one read, it was about 8% of
// the store's CPU per answer. So a statfs that found plenty of room
// (roomyBytes, 64 MiB) is trusted for statfsFresh (100 ms) without asking
// again; below roomyBytes every call asks. The guarantee (a new write is
// refused cleanly, 503, once the disk is full) is unchanged unless more
// than 63 MiB fill within 100 ms (over 600 MB/s, from outside the store):
// then the writes that come in that moment reach SQLite, whose SQLITE_FULL
// closes the door at once (noSpaceHold), and the workflow those writes
// started waits for room as the ones in flight do. A refused write is
// never cached: it is read on every call.

// minFreeBytes is the free space below which the store takes no new writes;
// what is left is for the workflows in flight.
const minFreeBytes = 1 << 20

// noSpaceHold is how long a refused write keeps new writes out.
const noSpaceHold = 2 * time.Second

// roomyBytes and statfsFresh: a statfs that found at least roomyBytes free
// holds for statfsFresh (see above).
const (
	roomyBytes  = 64 << 20
	statfsFresh = 100 * time.Millisecond
)

// NoSpaceError is a write refused, or not attempted, for lack of room on the
// filesystem of the database. It is temporary: the same write succeeds once
// there is room.
type NoSpaceError struct {
	Path   string // the database file
	Detail string // what showed it
	Err    error  // the driver's error, if a write failed
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("no space left for the database %s: %s", e.Path, e.Detail)
}

func (e *NoSpaceError) Unwrap() error { return e.Err }

// Temporary and Timeout give NoSpaceError net.Error's methods: DBOS retries
// such errors (see above); it is no timeout.
func (e *NoSpaceError) Temporary() bool { return true }
func (e *NoSpaceError) Timeout() bool   { return false }

// IsNoSpace reports a write refused for lack of room: a *NoSpaceError on
// SQLite, disk_full (53100) on Postgres.
func IsNoSpace(err error) bool {
	var ns *NoSpaceError
	if errors.As(err, &ns) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "53100"
}

// sqliteFullCode is SQLITE_FULL, the primary result code (the low byte).
const sqliteFullCode = 13

// spaceWatch is what the SQLite connections and RoomToWrite share: the file
// and when a write was last refused for lack of room.
type spaceWatch struct {
	path    string
	now     func() time.Time
	refused atomic.Int64 // Unix ns of the last SQLITE_FULL; 0: none
	// roomyAt is when statfs last found roomyBytes free (Unix ns; 0:
	// never, or the last one found less).
	roomyAt atomic.Int64
	// free is the filesystem's free space (freeBytes; a test's stand-in
	// when set).
	free func(path string) (uint64, error)
}

// check turns SQLITE_FULL into a *NoSpaceError, noting the time.
func (sw *spaceWatch) check(err error) error {
	var se *sqlite.Error
	if err == nil || !errors.As(err, &se) || se.Code()&0xff != sqliteFullCode {
		return err
	}
	sw.refused.Store(sw.now().UnixNano())
	return &NoSpaceError{Path: sw.path, Detail: "a write was refused (SQLITE_FULL)", Err: err}
}

// roomToWrite reports whether the store can take a new write (see above).
func (sw *spaceWatch) roomToWrite() error {
	if at := sw.refused.Load(); at != 0 {
		if ago := sw.now().Sub(time.Unix(0, at)); ago < noSpaceHold {
			return &NoSpaceError{Path: sw.path, Detail: fmt.Sprintf("a write was refused (SQLITE_FULL) %v ago", ago.Round(time.Millisecond))}
		}
	}
	now := sw.now().UnixNano()
	if at := sw.roomyAt.Load(); at != 0 && now-at < int64(statfsFresh) && now >= at {
		return nil // plenty of room a moment ago (see above)
	}
	freeOf := sw.free
	if freeOf == nil {
		freeOf = freeBytes
	}
	free, err := freeOf(sw.path)
	if err != nil {
		sw.roomyAt.Store(0)
		return fmt.Errorf("free space for the database %s: %w", sw.path, err)
	}
	if free >= roomyBytes {
		sw.roomyAt.Store(now)
	} else {
		sw.roomyAt.Store(0)
	}
	if free < minFreeBytes {
		return &NoSpaceError{Path: sw.path, Detail: fmt.Sprintf("%d KiB free on its filesystem, %d KiB needed", free>>10, minFreeBytes>>10)}
	}
	return nil
}

// RoomToWrite reports a *NoSpaceError while the store should take no new
// writes for lack of room (SQLite; on Postgres the server says so itself,
// with disk_full, and this is nil).
func (db *DB) RoomToWrite() error {
	if db.space == nil {
		return nil
	}
	return db.space.roomToWrite()
}
