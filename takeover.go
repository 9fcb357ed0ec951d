package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgDB is what the heartbeat and the claim need: a *pgx.Conn or the pool.
type pgDB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Dead-instance takeover (Postgres only).
//
// DBOS recovers a process's own PENDING workflows when it starts again with the
// same executor ID; nothing in the open-source SDK resumes the workflows of an
// instance that dies and never comes back. So every instance writes a
// heartbeat to the instances table, and a live instance that sees a peer
// silent for longer than TAKEOVER_AFTER claims it and resumes its workflows:
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
//     TAKEOVER_AFTER, so after an outage the peers get that long to beat again.
//
// Times are the database's clock (Unix ms), so instances on machines whose
// clocks disagree still agree on who is silent.
//
// The loop has a database connection of its own, outside the pool that
// workflows and requests share: an instance whose pool is saturated by load
// is busy, not dead, and its heartbeat must not queue behind that load.

const (
	defaultTakeoverAfter = 10 * time.Second
	minTakeoverAfter     = time.Second
	maxHeartbeatInterval = 2 * time.Second
)

// dbNowMs is the Postgres server's clock in Unix milliseconds.
const dbNowMs = `(extract(epoch from clock_timestamp()) * 1000)::bigint`

// heartbeatInterval is how often this instance beats (and looks for silent
// peers): a quarter of TAKEOVER_AFTER, at most 2 s, so a live instance misses
// several beats before anyone may declare it dead.
func (a *app) heartbeatInterval() time.Duration {
	if a.cfg.TakeoverAfter == 0 {
		return maxHeartbeatInterval
	}
	return min(maxHeartbeatInterval, a.cfg.TakeoverAfter/4)
}

// joinCluster runs before dbos.Launch: it records this instance's first
// heartbeat (clearing a takeover mark from a previous life), then counts the
// PENDING workflows DBOS is about to recover for it.
//
// The order matters: if a survivor is resuming our workflows right now, the
// heartbeat write waits for its claim to commit, and the resumed workflows are
// no longer PENDING under our ID by the time we count (or launch).
func (a *app) joinCluster(ctx context.Context) error {
	if a.dialect.postgres {
		if err := a.heartbeat(ctx, a.pgPool, true); err != nil {
			return fmt.Errorf("first heartbeat: %w", err)
		}
	}
	pending, err := dbos.ListWorkflows(a.dbos,
		dbos.WithFilterStatus(dbos.WorkflowStatusPending),
		dbos.WithFilterExecutorIDs(a.cfg.ExecutorID),
		dbos.WithFilterAppVersion(appVersion),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return fmt.Errorf("list workflows to recover: %w", err)
	}
	a.metrics.recovered.Add(float64(len(pending)))
	if len(pending) > 0 {
		a.logger.Info("recovering this instance's pending workflows", "count", len(pending))
	}
	return nil
}

// heartbeat records that this instance is alive. The common case is one
// UPDATE; when it matches nothing (first start, or we were taken over), a
// transaction reads the takeover mark, logs it, and clears it.
func (a *app) heartbeat(ctx context.Context, db pgDB, starting bool) error {
	if !starting {
		tag, err := db.Exec(ctx, `UPDATE instances SET heartbeat_at = `+dbNowMs+`
			WHERE executor_id = $1 AND taken_over_by IS NULL`, a.cfg.ExecutorID)
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
	err = tx.QueryRow(ctx, `SELECT taken_over_by, taken_over_at FROM instances WHERE executor_id = $1 FOR UPDATE`, a.cfg.ExecutorID).Scan(&by, &at)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO instances (executor_id, heartbeat_at, started_at) VALUES ($1, `+dbNowMs+`, `+dbNowMs+`)
		ON CONFLICT (executor_id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at,
			started_at = CASE WHEN $2 THEN EXCLUDED.started_at ELSE instances.started_at END,
			taken_over_by = NULL, taken_over_at = NULL`, a.cfg.ExecutorID, starting); err != nil {
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
			a.logger.Warn("this instance's workflows were taken over while it was down; it does not run them again",
				"taken_over_by", *by, "taken_over_at", when)
		} else {
			a.logger.Warn("this instance was declared dead and taken over while running (stalled or cut off from the database); "+
				"its workflows then in flight continue on the other instances, and DBOS fences off its own stale executions",
				"taken_over_by", *by, "taken_over_at", when)
		}
	}
	return nil
}

// startInstanceLoop starts the heartbeat and takeover loop (Postgres only).
// a.stopInstanceLoop stops it and waits for it, before DBOS shuts down.
func (a *app) startInstanceLoop() {
	if !a.dialect.postgres {
		a.stopInstanceLoop = func() {}
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.instanceLoop(ctx)
	}()
	a.stopInstanceLoop = func() {
		cancel()
		<-done
	}
}

func (a *app) instanceLoop(ctx context.Context) {
	interval := a.heartbeatInterval()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var conn *pgx.Conn // the loop's own connection, (re)opened when needed
	defer func() {
		if conn != nil {
			conn.Close(context.Background()) // an error closing a connection we drop anyway is moot
		}
	}()
	healthySince := time.Now() // joinCluster's heartbeat just succeeded
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		beatCtx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		var err error
		if conn == nil {
			conn, err = pgx.ConnectConfig(beatCtx, a.pgPool.Config().ConnConfig.Copy())
		}
		if err == nil {
			err = a.heartbeat(beatCtx, conn, false)
		}
		cancel()
		if err != nil && conn != nil {
			// A timed-out or failed statement leaves the connection in doubt: start afresh.
			conn.Close(context.Background()) // best effort, see above
			conn = nil
		}
		if err != nil {
			a.metrics.heartbeats.WithLabelValues("error").Inc()
			if ctx.Err() != nil {
				return
			}
			if !healthySince.IsZero() {
				a.logger.Warn("heartbeat failed; not judging peers until heartbeats succeed again for TAKEOVER_AFTER", "err", err)
			}
			healthySince = time.Time{}
			continue
		}
		a.metrics.heartbeats.WithLabelValues("ok").Inc()
		if healthySince.IsZero() {
			a.logger.Info("heartbeat restored")
			healthySince = time.Now()
		}
		if a.cfg.TakeoverAfter == 0 || time.Since(healthySince) < a.cfg.TakeoverAfter {
			continue
		}
		if err := a.takeOverSilentPeers(ctx, conn); err != nil && ctx.Err() == nil {
			a.logger.Warn("takeover of silent peers failed; retrying at the next heartbeat", "err", err)
		}
	}
}

// takeOverSilentPeers claims and resumes every peer silent for longer than
// TAKEOVER_AFTER that nobody has claimed yet.
func (a *app) takeOverSilentPeers(ctx context.Context, db pgDB) error {
	rows, err := db.Query(ctx, `SELECT executor_id FROM instances
		WHERE executor_id <> $1 AND taken_over_by IS NULL AND heartbeat_at < `+dbNowMs+` - $2`,
		a.cfg.ExecutorID, a.cfg.TakeoverAfter.Milliseconds())
	if err != nil {
		return err
	}
	peers, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	var errs []error
	for _, peer := range peers {
		if _, err := a.takeOver(ctx, db, peer); err != nil {
			errs = append(errs, fmt.Errorf("take over %s: %w", peer, err))
		}
	}
	return errors.Join(errs...)
}

// takeOver claims peer, if it is still silent and unclaimed, and resumes its
// PENDING workflows of this application version. It returns how many it
// resumed; 0 and no error when another instance won the claim or the peer
// came back. The claim runs on db; DBOS's calls use the pool.
func (a *app) takeOver(ctx context.Context, db pgDB, peer string) (int, error) {
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
		a.cfg.ExecutorID, peer, a.cfg.TakeoverAfter.Milliseconds()).Scan(&silentMs)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil // claimed by another instance, or the peer is back
	}
	if err != nil {
		return 0, err
	}
	// The claim's row lock is held until Commit, through the resume below.
	dctx := dbos.From(a.dbos, ctx)
	pending, err := dbos.ListWorkflows(dctx,
		dbos.WithFilterStatus(dbos.WorkflowStatusPending),
		dbos.WithFilterExecutorIDs(peer),
		dbos.WithFilterAppVersion(appVersion),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return 0, fmt.Errorf("list its workflows: %w", err)
	}
	ids := make([]string, len(pending))
	for i, w := range pending {
		ids[i] = w.ID
	}
	if len(ids) > 0 {
		if _, err := dbos.ResumeWorkflows[any](dctx, ids); err != nil {
			return 0, fmt.Errorf("resume its workflows: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		// The resume stands (the workflows run); the claim is retried and then
		// finds nothing left to resume.
		return 0, fmt.Errorf("commit claim: %w", err)
	}
	a.metrics.peersTaken.Inc()
	a.metrics.takenOver.Add(float64(len(ids)))
	a.logger.Warn("took over a silent instance: its pending workflows are resumed on the live instances",
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
