// Package periodic runs the store's background passes (the reconciler's and
// retention's): now, and then at a fixed interval until stopped (Loop), once
// per interval across every instance on one database (Turns), and a wait a
// context can cut short (Sleep).
//
// # Once per cluster: a turn claimed in the store's database, not a DBOS schedule
//
// DBOS v1.8 has database-backed schedules (dbos.ApplySchedules,
// CreateSchedule, …): each instance's cron fires every tick, and the tick
// is made one workflow, "sched-<schedule>-<tick time>", that one instance
// runs. They do not fit these passes, for three reasons read in the SDK's
// scheduler.go:
//
//   - A schedule is a cron expression, and a tick is deduplicated across
//     instances only by its time, to the second (RFC 3339 in the workflow
//     ID). RECONCILE_EVERY is any duration of at least 100 ms (the tests run
//     300 ms) and retention's interval is a tenth of RETENTION (4.5 s for
//     45s): below a second, ticks would collide into one ID, and an interval
//     that does not divide a minute, an hour or a day has no cron expression
//     that fires at that interval ("*/7" in the seconds field fires at :56
//     and again at :00). The one form that takes any duration, "@every d"
//     (robfig/cron's ConstantDelaySchedule), truncates d to whole seconds and
//     counts from the moment each instance installed the schedule, so two
//     instances tick at different times, make different IDs and both run:
//     once per instance again, the very thing to remove.
//   - Every tick leaves a workflow in DBOS's workflow_status: at the
//     default 10 s, 8,640 rows a day, kept for ever with RETENTION off (its
//     default), and none of them the store's (they belong to no order, so
//     retention keeps them too).
//   - A schedule is one row for the whole application (ApplySchedules
//     upserts it by name), while RECONCILE_EVERY and RETENTION are each
//     process's setting: instances started with different values would
//     overwrite each other's schedule at every start.
//
// The passes themselves would have run well enough inside a scheduled
// workflow, as one step given a context without the workflow's values (so
// that their DBOS calls, ListWorkflows and the release, redispatch and
// refund workflows they start, are made as from outside any workflow, as
// now): they are idempotent and their effects are workflows with fixed IDs,
// so a step re-run after a crash does no harm. It is the tick that does not
// fit.
//
// So each instance runs its own Loop, as before, and every tick first claims
// the pass's turn: one row per pass in background_turns says when the last
// turn was taken, and one statement (an upsert whose WHERE is "the last turn
// was taken at least nine tenths of my interval ago") moves it to now and
// tells the instance that moved it to run the pass. Of instances ticking at
// the same interval in any phase, exactly one claims each turn; a pass
// begins at most once per 0.9 × interval across all of them and, while any
// instance runs, at least once per interval plus a tick. Nine tenths, not
// the whole interval, because the claimer's own next tick comes one
// interval after its claim, and with the whole interval it would find its
// turn a few milliseconds short. The row records when, not when next: each
// instance measures from it with its own interval, so a store restarted
// with a shorter RECONCILE_EVERY passes at its new pace at once. The time is
// the database's clock, so instances whose clocks disagree still agree on
// the turn.
//
// A turn is not a lease: nothing is held while the pass runs, so an instance
// that dies mid-pass delays the next pass by nothing, and a pass longer than
// the interval may overlap the next one on another instance. Both passes
// are safe to overlap (the reconciler's actions are workflows with fixed
// IDs; retention's deletes are idempotent); they are claimed so as not to
// do every instance's work N times, not for correctness. On SQLite there is
// one process, and the turn is its alone.
package periodic

import (
	"context"
	"fmt"
	"time"

	"widget-store/internal/store"
)

// Loop is a running pass loop.
type Loop struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs pass at once and then every interval, each time with a context
// that Stop cancels. A pass that runs longer than the interval delays the
// next one; passes never overlap.
func Start(every time.Duration, pass func(ctx context.Context)) *Loop {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Loop{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			pass(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return l
}

// StartTurns is Start for a pass every instance runs once between them:
// each tick runs pass only if this instance claims the turn (Turns.Claim).
// A claim that fails (the database unreachable, say) is given to failed,
// unless Stop caused it, and the tick is skipped.
func StartTurns(t *Turns, pass func(ctx context.Context), failed func(error)) *Loop {
	return Start(t.every, func(ctx context.Context) {
		mine, err := t.Claim(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			failed(err)
		case mine:
			pass(ctx)
		}
	})
}

// Stop cancels the pass in progress, if any, and waits for it. Safe on a nil
// Loop (a service never started).
func (l *Loop) Stop() {
	if l == nil {
		return
	}
	l.cancel()
	<-l.done
}

// Turns are the turns of one background pass, shared by every instance on
// db (see the package comment).
type Turns struct {
	db     *store.DB
	pass   string // its row in background_turns: "reconcile", "retention"
	holder string // this instance's executor ID, recorded with a claim
	every  time.Duration
}

// NewTurns makes the turns of the pass named pass, run every interval, for
// the instance holder.
func NewTurns(db *store.DB, pass, holder string, every time.Duration) *Turns {
	return &Turns{db: db, pass: pass, holder: holder, every: every}
}

// nowMs is the database's clock in Unix milliseconds.
func nowMs(d store.Dialect) string {
	if d.Postgres {
		return `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`
	}
	return `CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)`
}

// Claim takes the pass's turn if the last one was taken at least nine
// tenths of the interval ago, by any instance, and reports whether this
// instance took it.
//
// The first claim of a pass inserts its row. Otherwise the row is updated
// only where the turn is due (taken_at ≤ now − hold, written with the new
// taken_at, so that the clock is read once); a row not due is left as it is
// and the statement changes nothing.
func (t *Turns) Claim(ctx context.Context) (bool, error) {
	hold := (t.every - t.every/10).Milliseconds()
	q := `INSERT INTO background_turns (pass, taken_at, holder) VALUES ($1, ` + nowMs(t.db.Dialect) + `, $3)
		ON CONFLICT (pass) DO UPDATE SET taken_at = excluded.taken_at, holder = excluded.holder
		WHERE background_turns.taken_at <= excluded.taken_at - $2`
	res, err := t.db.Q().Exec(ctx, q, t.pass, hold, t.holder)
	if err != nil {
		return false, fmt.Errorf("claim the %s pass's turn: %w", t.pass, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim the %s pass's turn: %w", t.pass, err)
	}
	return n == 1, nil
}

// Sleep waits d, or until ctx ends, and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
