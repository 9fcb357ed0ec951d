package web

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"widget-store/internal/store"
)

// The store without a writable database: /healthz says so, and every other
// answer that failed for that reason is a 503 with Retry-After instead of a
// 500.
//
// On a replicated Postgres (Patroni, deploy/HA.md) the leader's loss leaves
// the store without a writable database for the few seconds until a replica
// is promoted: new connections find no server that takes writes, and those
// open to the old leader break. Nothing is wrong with the request, and
// nothing in the store needs a restart (the pool, DBOS and the payment
// channel reconnect by themselves), so the client is told to try again:
// store.IsUnavailable recognises such errors and statusOf maps them to 503.
//
// A full disk under SQLite is the same to a client (store/nospace.go): the
// workflows in flight wait for room and resume by themselves, new writes
// are refused at once (responder.refuseWrite) with a 503 that says the store
// cannot write right now, and /healthz says "database not writable" until
// there is room again.

// unavailableMessage is what a client learns when the database cannot be
// reached or cannot take writes.
const unavailableMessage = "the database is unavailable, retrying; try again in a moment"

// noSpaceMessage is what a client learns when the database has no room to
// write.
const noSpaceMessage = "the store cannot write right now (no space left for its database); try again in a moment"

// retryAfterSeconds is the Retry-After of every 503: a failover takes
// seconds, and a careful client that retries sooner costs little.
const retryAfterSeconds = "1"

// healthCacheFor is how long one writability check answers /healthz: a load
// balancer probing every instance often costs the database at most one
// query a second per instance.
const healthCacheFor = time.Second

// healthCheckTimeout bounds one check: a database that does not answer in
// this long is not one to send traffic to.
const healthCheckTimeout = 2 * time.Second

// writability caches store.DB.CheckWritable for healthCacheFor. Concurrent
// probes wait for the one check in progress instead of starting their own.
type writability struct {
	db  *store.DB
	now func() time.Time

	mu  sync.Mutex
	at  time.Time // when err was found; zero before the first check
	err error
}

func (wr *writability) check(ctx context.Context) error {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	if !wr.at.IsZero() && wr.now().Sub(wr.at) < healthCacheFor {
		return wr.err
	}
	// Not the probe's context: a probe that gives up must not leave the
	// next one a cached "context canceled".
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthCheckTimeout)
	defer cancel()
	wr.err = wr.db.CheckWritable(ctx)
	wr.at = wr.now()
	return wr.err
}

// handleHealthz answers GET /healthz: 200 "ok" once the store is ready and
// its database takes writes; 503 "starting" before that; 503 "database not
// writable: …" while the database cannot be reached or is read-only (during
// a failover, say), so a load balancer sends the traffic elsewhere (or, when
// every instance says so, the clients hear at once that they must wait).
func handleHealthz(ready func() bool, db *store.DB, now func() time.Time) http.Handler {
	wr := &writability{db: db, now: now}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A failed write means the client left: nobody to tell.
		if !ready() {
			_ = writeText(w, http.StatusServiceUnavailable, "starting\n")
			return
		}
		if err := wr.check(r.Context()); err != nil {
			w.Header().Set("Retry-After", retryAfterSeconds)
			_ = writeText(w, http.StatusServiceUnavailable, fmt.Sprintf("database not writable: %v\n", err))
			return
		}
		_ = writeText(w, http.StatusOK, "ok\n")
	})
}

// setRetryHeaders marks a 503 as temporary: Retry-After for every client
// and, for a page a browser loaded with GET, a Refresh that loads it again
// by itself once the database is back (a POST is not repeated behind the
// user's back).
func setRetryHeaders(w http.ResponseWriter, r *http.Request, html bool) {
	w.Header().Set("Retry-After", retryAfterSeconds)
	if html && r.Method == http.MethodGet && r.Header.Get("HX-Request") == "" {
		w.Header().Set("Refresh", "2")
	}
}
