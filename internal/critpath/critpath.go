// Package critpath counts what lies on a request's critical path: the
// statements the store and DBOS send to the database on behalf of a checkout
// request or a payment webhook between its arrival and its answer (each a
// network round trip on Postgres, a call into SQLite on SQLite), the commits
// among them, and the waits for the database: on SQLite for the process's
// write lock, on Postgres for a connection of the pool. /metrics
// publishes the sums per request kind (widget_critical_path_*), and the load
// tool prints them per request beside the timings: unlike a timing, a count
// is the same on a busy machine and a quiet one.
//
// # Attribution
//
// A request's work is spread over goroutines: the request's own (its reads,
// the webhook's Send), DBOS's start of the checkout workflow, and the
// workflow's (its steps, DBOS's checkpoints and Recv). All of it works for
// one checkout key, so the key is what a statement is attributed to: the
// request's context carries it (Begin), the workflow's DBOS context carries
// it (DBOS: the checkout tags the context it starts and runs under), and a
// statement with no key inside a transaction whose BEGIN had one (DBOS's own
// statements on a transaction it was handed) counts for that key. A
// statement counts for every request of its key that is open when it is
// sent: a statement after the answer is known (Answered: the checkout's
// hand-off of the payment id or the outcome, after which the workflow goes
// on concurrently with the answer, starting the dispatch, say) counts for
// nobody, and so does one of a key nobody waits on (a recovered
// checkout, the background passes).
//
// A commit is a transaction that wrote (INSERT, UPDATE, DELETE) and
// committed, or a write sent outside any transaction (its own commit): what
// the database must make durable before it answers. A read-only transaction
// is counted as statements only.
package critpath

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
)

// The request kinds, the values of the "kind" label.
const (
	Checkout = "checkout" // POST /checkout/{key} (and the pages' buy): arrival → payment id
	Webhook  = "webhook"  // POST /payment_webhook/{id}/{status} (and the pay page): arrival → order id
)

type keyCtx struct{}

// With returns ctx carrying checkout key: the statements sent under it
// count for the requests of key in flight.
func With(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyCtx{}, key)
}

// DBOS is With for a DBOS context: a workflow started, or a step run, under
// it inherits the key (DBOS derives every context it sends statements with
// from the one it was given).
func DBOS(dctx dbos.Context, key string) dbos.Context {
	return dbos.WithValue(dctx, keyCtx{}, key)
}

func keyOf(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	k, _ := ctx.Value(keyCtx{}).(string)
	return k
}

// Counts is what one request (or a sum of them) cost on its critical path.
type Counts struct {
	Statements int64 // statements sent, BEGIN and COMMIT included
	Commits    int64 // transactions that wrote and committed
	// Waits are the times a statement queued for the database: SQLite's
	// write lock (another transaction held it), Postgres's pool (every
	// connection was taken); Waited is how long they queued in all.
	Waits  int64
	Waited time.Duration
}

// Tracker counts. A nil *Tracker counts nothing: every method is a no-op.
type Tracker struct {
	done func(kind string, c Counts)

	mu   sync.Mutex
	open map[string][]*request // by key: the requests in flight
	tx   map[any]*txState      // by connection: its open transaction
}

type request struct {
	kind     string
	answered bool // its answer is known: what follows is not on its path
	Counts
}

type txState struct {
	key   string // "" when its BEGIN had none
	wrote bool
}

// New makes a tracker that hands each finished request's counts to done.
func New(done func(kind string, c Counts)) *Tracker {
	return &Tracker{done: done, open: map[string][]*request{}, tx: map[any]*txState{}}
}

// Begin opens the count of a request of kind for checkout key: call it at
// the request's arrival and the returned end at its answer. The returned
// context carries key.
func (t *Tracker) Begin(ctx context.Context, kind, key string) (context.Context, func()) {
	ctx = With(ctx, key)
	if t == nil {
		return ctx, func() {}
	}
	c := &request{kind: kind}
	t.mu.Lock()
	t.open[key] = append(t.open[key], c)
	t.mu.Unlock()
	return ctx, func() {
		t.mu.Lock()
		rs := t.open[key]
		for i, r := range rs {
			if r == c {
				rs = append(rs[:i], rs[i+1:]...)
				break
			}
		}
		if len(rs) == 0 {
			delete(t.open, key)
		} else {
			t.open[key] = rs
		}
		got := c.Counts
		t.mu.Unlock()
		t.done(kind, got)
	}
}

// Answered marks the answer of the requests of kind for key as known: the
// work that follows runs beside the answer, not before it. The checkout
// calls it at its hand-offs (internal/paywait).
func (t *Tracker) Answered(key, kind string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.open[key] {
		if c.kind == kind {
			c.answered = true
		}
	}
}

// Statement counts one statement sent on connection conn (any value that
// identifies it) under ctx. The database layer calls it for every
// statement, BEGIN and COMMIT included (internal/store).
func (t *Tracker) Statement(ctx context.Context, conn any, sql string) {
	if t == nil {
		return
	}
	verb := firstWord(sql)
	key := keyOf(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.tx[conn]
	commit := false
	switch verb {
	case "begin":
		t.tx[conn] = &txState{key: key}
	case "commit", "end", "rollback":
		if st != nil {
			delete(t.tx, conn)
			commit = verb != "rollback" && st.wrote
			if key == "" {
				key = st.key
			}
		}
	default:
		write := verb == "insert" || verb == "update" || verb == "delete"
		switch {
		case st != nil:
			st.wrote = st.wrote || write
			if key == "" {
				key = st.key
			}
		case write:
			commit = true // its own transaction
		}
	}
	for _, c := range t.open[key] {
		if c.answered {
			continue
		}
		c.Statements++
		if commit {
			c.Commits++
		}
	}
}

// Wait counts a wait for the database under ctx (SQLite's write lock,
// Postgres's pool), begun at since; use as defer t.Wait(ctx, time.Now()).
func (t *Tracker) Wait(ctx context.Context, since time.Time) {
	if t == nil {
		return
	}
	d := time.Since(since)
	key := keyOf(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.open[key] {
		if c.answered {
			continue
		}
		c.Waits++
		c.Waited += d
	}
}

// firstWord is a statement's verb, lower case.
func firstWord(sql string) string {
	sql = strings.TrimLeft(sql, " \t\r\n(")
	if i := strings.IndexAny(sql, " \t\r\n;("); i >= 0 {
		sql = sql[:i]
	}
	return strings.ToLower(sql)
}
