// Package cluster is dead-instance takeover (Postgres only).
//
// DBOS recovers a process's own PENDING workflows when it starts again with the
// same executor ID; nothing in the open-source SDK resumes the workflows of an
// instance that dies and never comes back. So every instance writes a
// heartbeat to the instances table, and a live instance that sees a peer
// silent for longer than Config.TakeoverAfter (TAKEOVER_AFTER) claims it and
// resumes its workflows:
//
//   - The claim is one guarded UPDATE (still silent, not claimed yet) in a
//     transaction that stays open until the resume is done: a second survivor
//     blocks on the row, then finds it claimed; a failed resume rolls the claim
//     back, to be tried again; a peer coming back blocks on the row until the
//     resume is done, then sees that it was taken over.
//   - The resume is dbos.ResumeWorkflows: it puts the workflows on DBOS's
//     internal queue (status ENQUEUED, ownership cleared), which the queue
//     runner of every live instance polls (about once a second); the one that
//     dequeues a workflow becomes its executor and replays it from its last
//     checkpoint. Dispatch workflows are workflows of their own, so they are
//     in the list as well as the checkouts.
//   - Nothing runs twice. The instance that comes back recovers, at launch,
//     only workflows still PENDING under its own executor ID: the resumed ones
//     are ENQUEUED or already owned by their new executor. And if the "dead"
//     instance was only stalled (a long pause, a network partition), DBOS's
//     ownership fence (owner_xid, checked in the same transaction as each
//     step's checkpoint and our writes) rolls back its stale step instead of
//     committing it twice.
//   - A database outage stops every heartbeat at once. An instance only
//     declares peers dead once its OWN heartbeats have been succeeding for
//     TakeoverAfter, so after an outage the peers get that long to beat again.
//
// Times are the database's clock (Unix ms), so instances on machines whose
// clocks disagree still agree on who is silent.
//
// The loop has a database connection of its own, outside the pool that
// workflows and requests share: an instance whose pool is saturated by load
// is busy, not dead, and its heartbeat must not queue behind that load.
//
// A Cluster's life follows the store's: Join before dbos.Launch, Start after
// it, Stop before dbos.Shutdown (a takeover in progress uses DBOS).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"widget-store/internal/metrics"
	"widget-store/internal/store"
)

const (
	// DefaultTakeoverAfter is TAKEOVER_AFTER when it is not set.
	DefaultTakeoverAfter = 10 * time.Second
	// MinTakeoverAfter is the shortest TAKEOVER_AFTER accepted (besides 0):
	// shorter, and a busy instance's missed beats would look like death.
	MinTakeoverAfter = time.Second

	maxHeartbeatInterval = 2 * time.Second
)

// dbNowMs is the Postgres server's clock in Unix milliseconds.
const dbNowMs = `(extract(epoch from clock_timestamp()) * 1000)::bigint`

// Config says who this instance is and when it takes a peer over.
type Config struct {
	// ExecutorID is this instance's DBOS executor ID, its row in instances.
	ExecutorID string
	// AppVersion is the DBOS application version: only workflows of this
	// version are counted at Join and resumed from a peer (DBOS would not run
	// another version's workflows on this binary anyway).
	AppVersion string
	// TakeoverAfter is how long a peer may stay silent before this instance
	// resumes its workflows; 0: never take over (the heartbeat still runs, so
	// the others can take this one over). New reads a negative value as 0
	// and a positive one below MinTakeoverAfter as MinTakeoverAfter.
	TakeoverAfter time.Duration
}

// pgDB is what the heartbeat and the claim need: the loop's own *pgx.Conn, or
// the pool.
type pgDB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Cluster is this instance's membership of the store's instances: its
// heartbeat and the takeover of silent peers.
type Cluster struct {
	cfg     Config
	db      *store.DB
	dctx    dbos.Context
	logger  *slog.Logger
	metrics *metrics.Metrics

	mu     sync.Mutex
	cancel context.CancelFunc // stops the running loop; nil when none runs
	done   chan struct{}      // closed when the running loop has returned
}

// New makes the cluster membership of the instance cfg describes. dctx is the
// instance's DBOS context: Join lists its workflows, a takeover resumes them.
func New(cfg Config, db *store.DB, dctx dbos.Context, logger *slog.Logger, m *metrics.Metrics) *Cluster {
	switch {
	case cfg.TakeoverAfter < 0:
		cfg.TakeoverAfter = 0
	case cfg.TakeoverAfter > 0 && cfg.TakeoverAfter < MinTakeoverAfter:
		cfg.TakeoverAfter = MinTakeoverAfter
	}
	return &Cluster{cfg: cfg, db: db, dctx: dctx, logger: logger, metrics: m}
}

// heartbeatInterval is how often this instance beats (and looks for silent
// peers): a quarter of TakeoverAfter, at most 2 s, so a live instance misses
// several beats before anyone may declare it dead.
func (c *Cluster) heartbeatInterval() time.Duration {
	if c.cfg.TakeoverAfter == 0 {
		return maxHeartbeatInterval
	}
	return min(maxHeartbeatInterval, c.cfg.TakeoverAfter/4)
}

// Join runs before dbos.Launch: on Postgres it records this instance's first
// heartbeat (clearing a takeover mark from a previous life); then it counts
// the PENDING workflows of cfg.AppVersion that Launch is about to recover for
// this executor (metrics.Recovered, and a log line when there are any).
//
// The order matters: if a survivor is resuming our workflows right now, the
// heartbeat write waits for its claim to commit, and the resumed workflows are
// no longer PENDING under our ID by the time we count (or launch).
func (c *Cluster) Join(ctx context.Context) error {
	if c.db.Dialect.Postgres {
		if err := c.heartbeat(ctx, c.db.Pool, true); err != nil {
			return fmt.Errorf("first heartbeat: %w", err)
		}
	}
	pending, err := dbos.ListWorkflows(dbos.From(c.dctx, ctx),
		dbos.WithFilterStatus(dbos.WorkflowStatusPending),
		dbos.WithFilterExecutorIDs(c.cfg.ExecutorID),
		dbos.WithFilterAppVersion(c.cfg.AppVersion),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return fmt.Errorf("list workflows to recover: %w", err)
	}
	c.metrics.Recovered(len(pending))
	if len(pending) > 0 {
		c.logger.Info("recovering this instance's pending workflows", "count", len(pending))
	}
	return nil
}

// heartbeat records that this instance is alive. The common case is one
// UPDATE; when it matches nothing (first start, or we were taken over), a
// transaction reads the takeover mark, logs it, and clears it.
func (c *Cluster) heartbeat(ctx context.Context, db pgDB, starting bool) error {
	if !starting {
		tag, err := db.Exec(ctx, `UPDATE instances SET heartbeat_at = `+dbNowMs+`
			WHERE executor_id = $1 AND taken_over_by IS NULL`, c.cfg.ExecutorID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) // after Commit it does nothing; its error then is ErrTxClosed
	var by *string
	var at *int64
	err = tx.QueryRow(ctx, `SELECT taken_over_by, taken_over_at FROM instances WHERE executor_id = $1 FOR UPDATE`, c.cfg.ExecutorID).Scan(&by, &at)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO instances (executor_id, heartbeat_at, started_at) VALUES ($1, `+dbNowMs+`, `+dbNowMs+`)
		ON CONFLICT (executor_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at,
			started_at = CASE WHEN $2 THEN EXCLUDED.started_at ELSE instances.started_at END,
			taken_over_by = NULL, taken_over_at = NULL`, c.cfg.ExecutorID, starting); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	if by != nil {
		when := ""
		if at != nil {
			when = time.UnixMilli(*at).UTC().Format(time.RFC3339Nano)
		}
		if starting {
			c.logger.Warn("this instance's workflows were taken over while it was down; it does not run them again",
				"taken_over_by", *by, "taken_over_at", when)
		} else {
			c.logger.Warn("this instance was declared dead and taken over while running (stalled or cut off from the database); "+
				"its workflows then in flight continue on the other instances, and DBOS fences off its own stale executions",
				"taken_over_by", *by, "taken_over_at", when)
		}
	}
	return nil
}

// Start starts the heartbeat and takeover loop, after Join and dbos.Launch.
// It does nothing on SQLite (one process owns the file: there are no peers)
// or when the loop already runs.
func (c *Cluster) Start() {
	if !c.db.Dialect.Postgres {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.cancel, c.done = cancel, done
	go func() {
		defer close(done)
		c.loop(ctx)
	}()
}

// Stop stops the loop and waits for it to return, so that no takeover is
// half done when DBOS shuts down. It is safe to call when Start was never
// called, on SQLite, and more than once.
func (c *Cluster) Stop() {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.cancel, c.done = nil, nil
	c.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// loop beats every heartbeatInterval on its own connection and, once its own
// beats have succeeded for TakeoverAfter, takes over the silent peers.
func (c *Cluster) loop(ctx context.Context) {
	interval := c.heartbeatInterval()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var conn *pgx.Conn // the loop's own connection, (re)opened when needed
	defer func() {
		if conn != nil {
			conn.Close(context.Background()) // an error closing a connection we drop anyway is moot
		}
	}()
	healthySince := time.Now() // Join's heartbeat just succeeded
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		beatCtx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		var err error
		if conn == nil {
			conn, err = pgx.ConnectConfig(beatCtx, c.db.Pool.Config().ConnConfig.Copy())
		}
		if err == nil {
			err = c.heartbeat(beatCtx, conn, false)
		}
		cancel()
		if err != nil && conn != nil {
			// A timed-out or failed statement leaves the connection in doubt: start afresh.
			conn.Close(context.Background()) // best effort, see above
			conn = nil
		}
		if err != nil {
			c.metrics.Heartbeat(false)
			if ctx.Err() != nil {
				return
			}
			if !healthySince.IsZero() {
				c.logger.Warn("heartbeat failed; not judging peers until heartbeats succeed again for TAKEOVER_AFTER", "err", err)
			}
			healthySince = time.Time{}
			continue
		}
		c.metrics.Heartbeat(true)
		if healthySince.IsZero() {
			c.logger.Info("heartbeat restored")
			healthySince = time.Now()
		}
		if c.cfg.TakeoverAfter == 0 || time.Since(healthySince) < c.cfg.TakeoverAfter {
			continue
		}
		if err := c.takeOverSilentPeers(ctx, conn); err != nil && ctx.Err() == nil {
			c.logger.Warn("takeover of silent peers failed; retrying at the next heartbeat", "err", err)
		}
	}
}

// takeOverSilentPeers claims and resumes every peer silent for longer than
// TakeoverAfter that nobody has claimed yet.
func (c *Cluster) takeOverSilentPeers(ctx context.Context, db pgDB) error {
	rows, err := db.Query(ctx, `SELECT executor_id FROM instances
		WHERE executor_id <> $1 AND taken_over_by IS NULL AND heartbeat_at < `+dbNowMs+` - $2`,
		c.cfg.ExecutorID, c.cfg.TakeoverAfter.Milliseconds())
	if err != nil {
		return err
	}
	peers, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	var errs []error
	for _, peer := range peers {
		if _, err := c.takeOver(ctx, db, peer); err != nil {
			errs = append(errs, fmt.Errorf("take over %s: %w", peer, err))
		}
	}
	return errors.Join(errs...)
}

// TakeOver claims peer, if it has been silent for longer than TakeoverAfter
// and nobody has claimed it yet, and resumes its PENDING workflows of
// cfg.AppVersion, as the loop does for each silent peer it finds, but on the
// shared pool. It returns how many workflows it resumed; 0 and no error when
// another instance won the claim or the peer is alive. Tests race it between
// instances; the store itself leaves takeovers to the loop. Postgres only.
func (c *Cluster) TakeOver(ctx context.Context, peer string) (int, error) {
	if !c.db.Dialect.Postgres {
		return 0, errors.New("takeover needs Postgres: on SQLite one process owns the database")
	}
	return c.takeOver(ctx, c.db.Pool, peer)
}

// takeOver is TakeOver with the claim on db; DBOS's calls use the pool.
func (c *Cluster) takeOver(ctx context.Context, db pgDB, peer string) (int, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) // after Commit it does nothing; its error then is ErrTxClosed
	var silentMs int64
	err = tx.QueryRow(ctx, `
		UPDATE instances SET taken_over_by = $1, taken_over_at = `+dbNowMs+`
		WHERE executor_id = $2 AND taken_over_by IS NULL AND heartbeat_at < `+dbNowMs+` - $3
		RETURNING `+dbNowMs+` - heartbeat_at`,
		c.cfg.ExecutorID, peer, c.cfg.TakeoverAfter.Milliseconds()).Scan(&silentMs)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil // claimed by another instance, or the peer is back
	}
	if err != nil {
		return 0, err
	}
	// The claim's row lock is held until Commit, through the resume below.
	dctx := dbos.From(c.dctx, ctx)
	pending, err := dbos.ListWorkflows(dctx,
		dbos.WithFilterStatus(dbos.WorkflowStatusPending),
		dbos.WithFilterExecutorIDs(peer),
		dbos.WithFilterAppVersion(c.cfg.AppVersion),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return 0, fmt.Errorf("list its workflows: %w", err)
	}
	ids := make([]string, len(pending))
	for i, w := range pending {
		ids[i] = w.ID
	}
	if len(ids) > 0 {
		// The handles are not needed: the workflows run on whichever live
		// instance dequeues them, not here.
		if _, err := dbos.ResumeWorkflows[any](dctx, ids); err != nil {
			return 0, fmt.Errorf("resume its workflows: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		// The resume stands (the workflows run); the claim is retried and then
		// finds nothing left to resume.
		return 0, fmt.Errorf("commit claim: %w", err)
	}
	c.metrics.TookOver(len(ids))
	c.logger.Warn("took over a silent instance: its pending workflows are resumed on the live instances",
		"peer", peer, "silent_ms", silentMs, "workflows", len(ids), "workflow_ids", sample(ids, 20))
	return len(ids), nil
}

// sample keeps a log line short: at most n items.
func sample(ids []string, n int) []string {
	if len(ids) <= n {
		return ids
	}
	return append(ids[:n:n], fmt.Sprintf("… %d more", len(ids)-n))
}
