// Package legs writes the dispatch workflows' legs in batches.
//
// A paid order's dispatch (workflow.go) counts its progress down in ten legs
// a second apart, and each leg is one idempotent write of the order's row
// (steps.go, dispatchLeg): a set of progress_remaining that only goes down,
// never a DBOS step. Written one by one, a leg is a commit of its own: ten of
// a purchase's two dozen commits, and on a busy store (100 purchases/s keep
// about 1,000 dispatches running) a thousand commits a second, each a round
// trip and a WAL flush on Postgres, a turn at the one write lock on SQLite,
// queued with the checkouts and webhooks that buyers wait for.
//
// A Writer gathers the legs that fall due within one window (Window, a few
// milliseconds, nothing a progress bar polled every second can show) and
// writes them in one statement, one commit: the same conditional UPDATE as a
// single leg, joined to the batch's (order, remaining) pairs. Write returns
// only after that commit, so what the dispatch does next (its crash point, the
// next leg, its end) still comes after its leg is durable: a crash anywhere
// loses no leg a workflow went past, and a recovered dispatch writes the leg
// due then again, which changes nothing (the write is a set that only goes
// down). An order whose row the batch did not change (it was written before,
// by a recovered or second dispatch, or is in a state no leg may write) is
// reported as not written, and the caller decides with the single-leg path,
// which reads the row; a batch that fails is reported to each of its legs,
// whose dispatch retries as it would a single write.
//
// An order appears once in a batch (a second dispatch of the same order, the
// reconciler's redispatch beside the original, goes into the next batch), so
// the join never gives one row two values.
package legs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// Window is how long a Writer waits, from the first leg of a batch, for more
// legs to join it. Legs fall due a second apart per order and spread over the
// second across orders, so at N dispatches in flight a batch holds about
// N × Window / 1 s legs.
const Window = 20 * time.Millisecond

// MaxBatch bounds a batch: the statement's JSON argument and the rows one
// commit locks.
const MaxBatch = 500

// ErrStopped is Write's error once the Writer has stopped: the process is
// shutting down, and the dispatch stops with it (it stays PENDING and DBOS
// resumes it at the next start).
var ErrStopped = errors.New("dispatch legs: the writer has stopped")

// Writer batches leg writes; it runs as a background service (Start, Stop).
type Writer struct {
	db      dbos.Querier
	query   string
	now     func() time.Time
	window  time.Duration
	logger  *slog.Logger
	batched func(legs int) // counts each batch written (metrics)

	reqs chan request
	stop context.CancelFunc
	done chan struct{}
}

// request is one leg waiting for its batch's commit.
type request struct {
	orderID   int64
	remaining int
	reply     chan result // buffered: the writer never blocks on a caller gone
}

type result struct {
	written bool
	err     error
}

// New makes a Writer of the legs of db's orders; batched, if not nil, is
// told the size of every batch written.
func New(db *store.DB, now func() time.Time, logger *slog.Logger, batched func(legs int)) *Writer {
	w := &Writer{db: db.Q(), query: batchSQLite, now: now, window: Window, logger: logger, batched: batched,
		reqs: make(chan request, MaxBatch), done: make(chan struct{})}
	if db.Dialect.Postgres {
		w.query = batchPostgres
	}
	return w
}

// Start starts the writer's goroutine. Start it before DBOS's Launch: the
// dispatches Launch recovers write legs at once.
func (w *Writer) Start() {
	// Background work on SQLite's write lock (store.BackgroundKey): no
	// request waits for a leg, and a batch gives way to the checkouts and
	// webhooks that buyers wait for.
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), store.BackgroundKey{}, store.Backgrounder(store.BackgroundWork{})))
	w.stop = cancel
	go w.run(ctx)
}

// Stop stops the writer once the batch being written, if any, has been
// answered; legs still waiting get ErrStopped. Stop it after DBOS's
// Shutdown, which stops the dispatches that write legs.
func (w *Writer) Stop() {
	if w.stop == nil {
		return
	}
	w.stop()
	<-w.done
}

// Write writes the leg of order orderID that leaves remaining legs to go,
// together with the other legs due now, and returns after their commit.
// written is false when the batch did not change the order's row: the leg
// was written before, or the order is in a state no leg may write (the
// caller reads the row to tell which). An error means the leg may or may not
// be written; writing it again is harmless.
func (w *Writer) Write(ctx context.Context, orderID int64, remaining int) (written bool, err error) {
	r := request{orderID: orderID, remaining: remaining, reply: make(chan result, 1)}
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-w.done:
		return false, ErrStopped
	}
	select {
	case res := <-r.reply:
		return res.written, res.err
	case <-ctx.Done():
		return false, ctx.Err()
	case <-w.done:
		return false, ErrStopped
	}
}

// run gathers batches and writes them, one at a time, until stopped.
func (w *Writer) run(ctx context.Context) {
	defer close(w.done)
	var carried []request // legs of orders already in the last batch
	for {
		batch := carried
		carried = nil
		if len(batch) == 0 {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			case <-ctx.Done():
				return
			}
		}
		timer := time.NewTimer(w.window)
	gather:
		for len(batch) < MaxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			case <-timer.C:
				break gather
			case <-ctx.Done():
				timer.Stop()
				for _, r := range batch {
					r.reply <- result{err: ErrStopped}
				}
				return
			}
		}
		timer.Stop()
		batch, carried = once(batch)
		w.write(ctx, batch)
	}
}

// once splits batch into legs of distinct orders, in arrival order, and the
// rest, which wait for the next batch.
func once(batch []request) (distinct, rest []request) {
	seen := make(map[int64]bool, len(batch))
	for _, r := range batch {
		if seen[r.orderID] {
			rest = append(rest, r)
			continue
		}
		seen[r.orderID] = true
		distinct = append(distinct, r)
	}
	return distinct, rest
}

// write writes one batch in one statement and answers each of its legs.
func (w *Writer) write(ctx context.Context, batch []request) {
	written, err := w.update(ctx, batch)
	if err != nil {
		w.logger.Warn("dispatch: writing a batch of legs failed; each dispatch retries its leg", "legs", len(batch), "err", err)
	} else if w.batched != nil {
		w.batched(len(batch))
	}
	for _, r := range batch {
		r.reply <- result{written: written[r.orderID], err: err}
	}
}

// The batch statement: the single leg's conditional UPDATE (steps.go,
// writeLeg), joined to the batch's pairs, given as a JSON array of
// [order_id, remaining]. A row changes only if its order is PAID and further
// from the end than its leg; it becomes DISPATCHED at 0. RETURNING names the
// rows changed: the legs written. The two texts differ only in how they read
// the JSON and in how they name the updated table's columns.
const (
	batchPostgres = `
		UPDATE orders AS o
		SET progress_remaining = v.remaining,
		    order_status = CASE WHEN v.remaining = 0 THEN CAST($2 AS INTEGER) ELSE CAST($3 AS INTEGER) END,
		    last_update_time = $4
		FROM (SELECT (e->>0)::bigint AS order_id, (e->>1)::int AS remaining
		      FROM jsonb_array_elements(CAST($1 AS jsonb)) AS e) AS v
		WHERE o.order_id = v.order_id AND o.order_status = $3 AND o.progress_remaining > v.remaining
		RETURNING o.order_id`
	batchSQLite = `
		UPDATE orders
		SET progress_remaining = v.remaining,
		    order_status = CASE WHEN v.remaining = 0 THEN CAST($2 AS INTEGER) ELSE CAST($3 AS INTEGER) END,
		    last_update_time = $4
		FROM (SELECT json_extract(value, '$[0]') AS order_id, json_extract(value, '$[1]') AS remaining
		      FROM json_each($1)) AS v
		WHERE orders.order_id = v.order_id AND orders.order_status = $3 AND orders.progress_remaining > v.remaining
		RETURNING orders.order_id`
)

// update runs the batch statement and returns the orders it changed.
func (w *Writer) update(ctx context.Context, batch []request) (map[int64]bool, error) {
	pairs := make([][2]int64, len(batch))
	for i, r := range batch {
		pairs[i] = [2]int64{r.orderID, int64(r.remaining)}
	}
	arg, err := json.Marshal(pairs)
	if err != nil {
		return nil, fmt.Errorf("dispatch legs: %w", err)
	}
	rows, err := w.db.Query(ctx, w.query, string(arg), shop.StatusDispatched, shop.StatusPaid, w.now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("dispatch legs: %w", err)
	}
	defer rows.Close()
	written := make(map[int64]bool, len(batch))
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("dispatch legs: %w", err)
		}
		written[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dispatch legs: %w", err)
	}
	return written, nil
}
