package store

import (
	"container/list"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"
	"time"

	"widget-store/internal/critpath"
)

// The SQLite handle: one writer, statements prepared once.
//
// SQLite lets one transaction write at a time. A writer that finds the write
// lock taken sleeps in SQLite's busy handler and retries, with pauses that
// grow to 100 ms; under load that sleeping, not the work, was the store's
// latency (checkout p99 250–700 ms at 8 shoppers). So the handle's
// connections queue for the write lock in the process instead: every write
// transaction (they all begin IMMEDIATE) and every write outside one first
// takes writerLock, whose waiters are served in the order they came (but for
// background work, which waits behind them: writelock.go), and only then
// asks SQLite. The writer then never finds the
// lock taken (no other process writes the file), and nobody sleeps. Reads
// take no part in it: in WAL mode they run beside the writer. DBOS's writes
// go through the same connector, since DBOS uses this very handle.
//
// modernc's driver parses a statement anew every time it is run through the
// connection (about 28% of the store's CPU under load, measured), although
// its statement objects can be run again and again. So each connection keeps
// the statements it ran, by their text, and runs them again: the store's and
// DBOS's alike, a few dozen distinct texts in all. The cache is bounded
// (stmtCacheSize, least recently used out) and a statement busy with open
// rows is never shared: a second use while the first is open gets a fresh,
// uncached one.

// stmtCacheSize bounds the statements each connection keeps prepared. The
// store and DBOS run about 60 distinct texts; this leaves room.
const stmtCacheSize = 256

// sqliteConnector opens modernc connections that share one write lock.
type sqliteConnector struct {
	dsn        string
	driver     driver.Driver
	writerLock *writeLock
	space      *spaceWatch // SQLITE_FULL becomes a *NoSpaceError (nospace.go)
	trace      *critpath.Tracker
}

// openSQLite opens a *sql.DB on dsn through the connector.
func openSQLite(dsn string, space *spaceWatch, trace *critpath.Tracker) (*sql.DB, error) {
	// sql.Open connects to nothing; it finds modernc's registered driver,
	// which the connector opens its connections with.
	probe, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	drv := probe.Driver()
	if err := probe.Close(); err != nil {
		return nil, err
	}
	return sql.OpenDB(&sqliteConnector{dsn: dsn, driver: drv, writerLock: &writeLock{}, space: space, trace: trace}), nil
}

func (c *sqliteConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.driver.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	inner, ok := conn.(sqliteDriverConn)
	if !ok {
		conn.Close() // the type error is the one to report
		return nil, errors.New("sqlite: the driver's connection lacks the context methods the store needs")
	}
	return &sqliteConn{inner: inner, writerLock: c.writerLock, space: c.space, trace: c.trace, stmts: map[string]*list.Element{}, lru: list.New()}, nil
}

func (c *sqliteConnector) Driver() driver.Driver { return c.driver }

// sqliteDriverConn is what the store needs of a modernc connection.
type sqliteDriverConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// sqliteConn is one connection; database/sql uses it from one goroutine at
// a time.
type sqliteConn struct {
	inner      sqliteDriverConn
	writerLock *writeLock
	space      *spaceWatch
	trace      *critpath.Tracker // counts statements and lock waits (internal/critpath)
	inTx       bool              // a transaction is open: it holds writerLock (unless read-only)

	stmts map[string]*list.Element // of *cachedStmt, by query text
	lru   *list.List               // front: most recently used
}

type cachedStmt struct {
	query string
	stmt  driver.Stmt
	busy  bool // rows from it are open
}

// lockWait bounds the wait for the write lock. A writer that waits longer
// goes ahead without it and meets SQLite's own lock and busy timeout, as it
// would without the queue: a transaction that needs a second write
// connection while it holds the lock (a bug) then fails after the busy
// timeout, as before, instead of waiting for ever.
const lockWait = 10 * time.Second

// lock takes the process's write lock, waiting in line (its context's:
// writelock.go); it reports whether it holds it (false after lockWait). It
// fails only when ctx ends.
func (c *sqliteConn) lock(ctx context.Context) (bool, error) {
	start := time.Now()
	held, waited, err := c.writerLock.lock(ctx, background(ctx), lockWait)
	if waited {
		c.trace.Wait(ctx, start)
	}
	return held, err
}

func (c *sqliteConn) unlock(held bool) {
	if held {
		c.writerLock.unlock()
	}
}

func (c *sqliteConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	// A read-only transaction begins DEFERRED (modernc) and takes no write
	// lock; every other begins IMMEDIATE (_txlock=immediate) and does.
	held := false
	if !opts.ReadOnly {
		var err error
		if held, err = c.lock(ctx); err != nil {
			return nil, err
		}
	}
	c.trace.Statement(ctx, c, "BEGIN")
	tx, err := c.inner.BeginTx(ctx, opts)
	if err != nil {
		c.trace.Statement(ctx, c, "ROLLBACK")
		c.unlock(held)
		return nil, c.space.check(err)
	}
	c.inTx = true
	return &sqliteTx{inner: tx, conn: c, held: held}, nil
}

// sqliteTx releases the write lock when its transaction ends.
type sqliteTx struct {
	inner driver.Tx
	conn  *sqliteConn
	held  bool
}

func (t *sqliteTx) Commit() error {
	t.conn.trace.Statement(context.Background(), t.conn, "COMMIT")
	return t.end(t.conn.space.check(t.inner.Commit()))
}

func (t *sqliteTx) Rollback() error {
	t.conn.trace.Statement(context.Background(), t.conn, "ROLLBACK")
	return t.end(t.inner.Rollback())
}

func (t *sqliteTx) end(err error) error {
	t.conn.inTx = false
	t.conn.unlock(t.held)
	return err
}

func (c *sqliteConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *sqliteConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if !c.inTx { // a write in a transaction of its own: take its turn
		held, err := c.lock(ctx)
		if err != nil {
			return nil, err
		}
		defer c.unlock(held)
	}
	c.trace.Statement(ctx, c, query)
	cs, err := c.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	var res driver.Result
	if cs == nil { // the cached statement is busy: run the text uncached
		res, err = c.inner.ExecContext(ctx, query, args)
	} else {
		res, err = cs.stmt.(driver.StmtExecContext).ExecContext(ctx, args)
		c.release(cs)
	}
	return res, c.space.check(err)
}

func (c *sqliteConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	held := false
	if !c.inTx && writes(query) { // INSERT … RETURNING and the like
		var err error
		if held, err = c.lock(ctx); err != nil {
			return nil, err
		}
	}
	// The statement's write (and SQLite's write lock) lasts until its rows
	// are closed: so does the write lock taken for it.
	c.trace.Statement(ctx, c, query)
	cs, err := c.prepared(ctx, query)
	if err != nil {
		c.unlock(held)
		return nil, err
	}
	var rows driver.Rows
	if cs == nil {
		rows, err = c.inner.QueryContext(ctx, query, args)
	} else {
		rows, err = cs.stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	}
	if err != nil {
		c.release(cs)
		c.unlock(held)
		return nil, c.space.check(err)
	}
	return &sqliteRows{Rows: rows, space: c.space, done: func() { c.release(cs); c.unlock(held) }}, nil
}

// writes reports a statement outside a transaction that may write (and so
// takes the write lock); a wrong "no" only costs a sleep in the busy handler.
func writes(query string) bool {
	q := strings.TrimLeft(query, " \t\r\n(")
	if len(q) > 7 {
		q = q[:7]
	}
	q = strings.ToUpper(q)
	for _, w := range []string{"INSERT", "UPDATE", "DELETE", "REPLACE"} {
		if strings.HasPrefix(q, w) {
			return true
		}
	}
	return false
}

// prepared returns the cached statement for query, preparing and caching it
// if need be, marked busy; nil (and no error) when the cached one is busy:
// the caller then runs the text uncached. A script of several statements is
// cached too: modernc's statement runs it statement by statement each time.
func (c *sqliteConn) prepared(ctx context.Context, query string) (*cachedStmt, error) {
	if e, ok := c.stmts[query]; ok {
		cs := e.Value.(*cachedStmt)
		if cs.busy {
			return nil, nil
		}
		c.lru.MoveToFront(e)
		cs.busy = true
		return cs, nil
	}
	stmt, err := c.inner.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	_, execs := stmt.(driver.StmtExecContext)
	_, queries := stmt.(driver.StmtQueryContext)
	if !execs || !queries {
		stmt.Close() // closing a statement we never ran cannot lose anything
		return nil, errors.New("sqlite: the driver's statements lack the context methods the store needs")
	}
	cs := &cachedStmt{query: query, stmt: stmt, busy: true}
	c.stmts[query] = c.lru.PushFront(cs)
	for c.lru.Len() > stmtCacheSize {
		old := c.lru.Back()
		ocs := old.Value.(*cachedStmt)
		if ocs.busy {
			break // in use: evicted when it next comes up last
		}
		c.lru.Remove(old)
		delete(c.stmts, ocs.query)
		ocs.stmt.Close() // finalizing a statement fails only on a closed connection
	}
	return cs, nil
}

// release makes a cached statement available again; nil is no statement.
func (c *sqliteConn) release(cs *cachedStmt) {
	if cs != nil {
		cs.busy = false
	}
}

// sqliteRows frees its cached statement for the next use, and the write
// lock if it took one, when closed.
type sqliteRows struct {
	driver.Rows
	space *spaceWatch
	done  func()
}

// Next reports SQLITE_FULL as a *NoSpaceError: the write of an INSERT …
// RETURNING happens as its rows are read.
func (r *sqliteRows) Next(dest []driver.Value) error {
	return r.space.check(r.Rows.Next(dest))
}

func (r *sqliteRows) Close() error {
	err := r.Rows.Close() // resets the statement for its next use
	if r.done != nil {
		r.done()
		r.done = nil // database/sql closes once; this makes sure
	}
	return err
}

func (c *sqliteConn) Prepare(query string) (driver.Stmt, error) {
	return c.inner.PrepareContext(context.Background(), query)
}

func (c *sqliteConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.inner.PrepareContext(ctx, query)
}

func (c *sqliteConn) Close() error {
	for e := c.lru.Front(); e != nil; e = e.Next() {
		e.Value.(*cachedStmt).stmt.Close() // the connection closes next; its error is the one that matters
	}
	c.stmts, c.lru = nil, nil
	return c.inner.Close()
}

func (c *sqliteConn) Ping(ctx context.Context) error         { return c.inner.Ping(ctx) }
func (c *sqliteConn) ResetSession(ctx context.Context) error { return c.inner.ResetSession(ctx) }
func (c *sqliteConn) IsValid() bool                          { return c.inner.IsValid() }
