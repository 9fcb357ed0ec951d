package web

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"widget-store/internal/store"
)

// adminURL is the test Postgres server, or the test skips (fails in CI).
func adminURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("TEST_DATABASE_URL is not set: CI must test Postgres")
		}
		t.Skip("TEST_DATABASE_URL not set")
	}
	return u
}

// closedPort is a TCP port on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // closed on purpose: the port is now free
	return addr
}

// realUnavailableErrors makes, against real servers, the errors a failover
// produces: no server to connect to, a connection terminated by the server
// (57P01, as a leader shutting down does), and a write refused by a
// read-only server (25006, as a standby answers).
func realUnavailableErrors(t *testing.T) map[string]error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := map[string]error{}
	_, err := pgx.Connect(ctx, "postgres://postgres:postgres@"+closedPort(t)+","+closedPort(t)+"/postgres?target_session_attrs=read-write&connect_timeout=2")
	errs["no server accepts a connection"] = err

	admin := adminURL(t)
	victim, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(ctx)
	killer, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer killer.Close(ctx)
	if _, err := killer.Exec(ctx, "SELECT pg_terminate_backend($1)", victim.PgConn().PID()); err != nil {
		t.Fatal(err)
	}
	_, err = victim.Exec(ctx, "SELECT 1")
	errs["connection terminated by the server"] = err

	ro, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close(ctx)
	_, err = ro.Exec(ctx, "BEGIN READ ONLY; CREATE TEMP TABLE t (x int); COMMIT")
	errs["a write on a read-only server"] = err
	return errs
}

func TestUnavailableDatabaseIs503(t *testing.T) {
	for name, err := range realUnavailableErrors(t) {
		t.Run(name, func(t *testing.T) {
			if err == nil {
				t.Fatal("the operation succeeded; want an error")
			}
			t.Logf("error: %v", err)
			if !store.IsUnavailable(err) {
				t.Fatalf("store.IsUnavailable(%v) = false", err)
			}
			rec, log := serve(t, failWith(err), httptest.NewRequest("POST", "/checkout/k", nil))
			if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != retryAfterSeconds {
				t.Errorf("status %d, Retry-After %q; want 503, %q", rec.Code, rec.Header().Get("Retry-After"), retryAfterSeconds)
			}
			if !strings.Contains(rec.Body.String(), unavailableMessage) || strings.Contains(rec.Body.String(), "postgres") {
				t.Errorf("body %q: want %q and no driver detail", rec.Body.String(), unavailableMessage)
			}
			if !strings.Contains(log, "request failed") {
				t.Errorf("not logged: %q", log)
			}
			// A page: the readable error page, reloaded by the browser.
			req := httptest.NewRequest("GET", "/track/1", nil)
			req.Header.Set("Accept", "text/html")
			rec, _ = serve(t, failWith(err), req)
			if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Header().Get("Content-Type"), "text/html") ||
				!strings.Contains(strings.ToLower(rec.Body.String()), "the database is unavailable, retrying") || rec.Header().Get("Refresh") == "" {
				t.Errorf("page: %d %q, Refresh %q; want 503, the HTML page saying the database is unavailable, a Refresh; page:\n%s",
					rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("Refresh"), rec.Body.String())
			}
		})
	}
	// The caller's own cancellation is not the database's unavailability.
	if store.IsUnavailable(context.Canceled) {
		t.Error("context.Canceled counted as the database being unavailable")
	}
}

// healthz asks h for /healthz.
func healthz(h http.Handler) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	return rec.Code, rec.Body.String()
}

func TestHealthzSaysWhenTheDatabaseIsNotWritable(t *testing.T) {
	ctx := context.Background()
	admin := adminURL(t)
	ready := func() bool { return true }
	var now atomic.Int64 // the test's clock, Unix ns
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }

	var statements atomic.Int64
	db, err := store.Open(ctx, admin, store.Options{OnStatement: func() { statements.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h := handleHealthz(ready, db, clock)
	if code, body := healthz(h); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("writable database: %d %q, want 200 ok", code, body)
	}
	// Cached: probes within a second cost no query; the next second one.
	before := statements.Load()
	for range 20 {
		healthz(h)
	}
	if got := statements.Load() - before; got != 0 {
		t.Errorf("20 probes within a second sent %d statements, want 0", got)
	}
	now.Add(int64(healthCacheFor))
	healthz(h)
	if got := statements.Load() - before; got != 1 {
		t.Errorf("a probe a second later sent %d statements, want 1", got)
	}
	if code, body := healthz(handleHealthz(func() bool { return false }, db, clock)); code != http.StatusServiceUnavailable || body != "starting\n" {
		t.Errorf("not ready: %d %q, want 503 starting", code, body)
	}

	// A server that takes no writes (every session read-only, as on a standby).
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	// pgx reads "+" as itself, so the space is %20.
	q := u.Query()
	q.Set("options", "-c default_transaction_read_only=on")
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	ro, err := store.Open(ctx, u.String(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	code, body := healthz(handleHealthz(ready, ro, clock))
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "database not writable: ") || !strings.Contains(body, "read-only") {
		t.Errorf("read-only server: %d %q, want 503 \"database not writable: … read-only …\"", code, body)
	}

	// No server at all: the one that answered is gone.
	gone, err := store.Open(ctx, admin, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	code, body = healthz(handleHealthz(ready, gone, clock))
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "database not writable: ") {
		t.Errorf("closed pool: %d %q, want 503 \"database not writable: …\"", code, body)
	}
}
