package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/jackc/pgx/v5"

	"widget-store/internal/shop"
	"widget-store/internal/storetest"
)

// Benchmarks of the purchase path, in-process, over real HTTP on 127.0.0.1,
// against a real SQLite file and a real Postgres database (TEST_DATABASE_URL).
// They print numbers; they assert only correctness, never timings. Run e.g.
//
//	TEST_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres \
//	  go test -run '^$' -bench . -benchtime 200x
//
// BenchmarkCommitsPerPurchase and BenchmarkCheckoutDuringDispatches wait for
// dispatches to finish (10 s or more each); -benchtime Nx sets the purchases.
// Set BENCH_SQL=1 to log each statement shape Postgres saw per purchase.
//
// The machine these were written on has 2 cores shared with other work: read
// the latencies as medians of one noisy run, the counts as exact.

// benchStore is a store under benchmark: the store's own services, so a
// benchmark can count its Postgres statements, start workflows directly and
// stop it, served by the store's own handler over real HTTP.
type benchStore struct {
	s      *services
	base   string
	client *http.Client
	stmts  *stmtCounter // Postgres statements the store sent
	stop   func()       // stops HTTP and DBOS; idempotent
}

func startBenchStore(b testing.TB, dbURL string) *benchStore {
	b.Helper()
	vars := map[string]string{
		"DATABASE_URL": dbURL, "EXECUTOR_ID": "bench-" + benchKey(),
		"LOG_LEVEL": "warn", "SUPERVISE": "0", "PORT": "0",
	}
	cfg, err := parseConfig([]string{"widget-store"}, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	counter := newStmtCounter()
	cfg.pgTracer = counter
	logger := newLogger(cfg, storetest.LogWriter(b, ""))
	svc, err := startServices(context.Background(), cfg, logger)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(svc.handler(cfg, logger))
	svc.ready.Store(true)
	s := &benchStore{
		s: svc, base: srv.URL, stmts: counter,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}},
		stop: sync.OnceFunc(func() {
			srv.Close()
			svc.shutdown(logger)
		}),
	}
	b.Cleanup(s.stop)
	return s
}

// benchKey is a fresh random key.
func benchKey() string {
	buf := make([]byte, 8)
	rand.Read(buf) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(buf)
}

func (s *benchStore) post(path string) (int, string, error) {
	resp, err := s.client.Post(s.base+path, "", nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// purchase is one shopper: checkout, then a "paid" webhook. It returns the
// latency of each call and the order id.
func (s *benchStore) purchase() (checkout, webhook time.Duration, orderID int64, err error) {
	key := "b-" + benchKey()
	t0 := time.Now()
	code, pid, err := s.post("/checkout/" + key)
	checkout = time.Since(t0)
	if err != nil || code != http.StatusOK {
		return 0, 0, 0, fmt.Errorf("checkout: %d %q %v", code, pid, err)
	}
	t1 := time.Now()
	code, body, err := s.post("/payment_webhook/" + pid + "/paid")
	webhook = time.Since(t1)
	if err != nil || code != http.StatusOK {
		return 0, 0, 0, fmt.Errorf("webhook: %d %q %v", code, body, err)
	}
	orderID, err = strconv.ParseInt(body, 10, 64)
	return checkout, webhook, orderID, err
}

func (s *benchStore) restock(b testing.TB) {
	if err := s.s.db.Restock(context.Background(), shop.ProductID, 1_000_000); err != nil {
		b.Fatal(err)
	}
}

// latencies collects durations from several goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// ms returns the q-quantile (0..1) in milliseconds.
func (l *latencies) ms(q float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	d := slices.Clone(l.d)
	slices.Sort(d)
	i := int(q * float64(len(d)-1))
	return float64(d[i]) / float64(time.Millisecond)
}

type benchDB struct {
	name string
	url  func(b testing.TB) string
}

func benchDatabases() []benchDB {
	return []benchDB{
		{"sqlite", func(b testing.TB) string { return storetest.NewSQLiteDB(b).URL }},
		{"postgres", func(b testing.TB) string { return storetest.NewPostgresDB(b).URL }},
	}
}

// runPurchases makes n purchases with c concurrent shoppers and records the
// latencies; it returns the order ids.
func runPurchases(b testing.TB, s *benchStore, n, c int, co, wh *latencies) []int64 {
	var next atomic.Int64
	var mu sync.Mutex
	var ids []int64
	var firstErr error
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				dc, dw, id, err := s.purchase()
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				ids = append(ids, id)
				mu.Unlock()
				co.add(dc)
				wh.add(dw)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return ids
}

// BenchmarkPurchaseC1 is one shopper at a time: checkout → payment id and
// webhook → order id latencies.
func BenchmarkPurchaseC1(b *testing.B) {
	for _, db := range benchDatabases() {
		b.Run(db.name, func(b *testing.B) {
			s := startBenchStore(b, db.url(b))
			s.restock(b)
			var warmC, warmW latencies
			runPurchases(b, s, 5, 1, &warmC, &warmW)
			var co, wh latencies
			b.ResetTimer()
			runPurchases(b, s, b.N, 1, &co, &wh)
			b.StopTimer()
			b.ReportMetric(co.ms(0.5), "checkout-p50-ms")
			b.ReportMetric(co.ms(0.9), "checkout-p90-ms")
			b.ReportMetric(wh.ms(0.5), "webhook-p50-ms")
			b.ReportMetric(wh.ms(0.9), "webhook-p90-ms")
		})
	}
}

// BenchmarkPurchaseC8 is eight shoppers at once: purchases per second.
func BenchmarkPurchaseC8(b *testing.B) {
	for _, db := range benchDatabases() {
		b.Run(db.name, func(b *testing.B) {
			s := startBenchStore(b, db.url(b))
			s.restock(b)
			var warmC, warmW latencies
			runPurchases(b, s, 16, 8, &warmC, &warmW)
			var co, wh latencies
			b.ResetTimer()
			start := time.Now()
			runPurchases(b, s, b.N, 8, &co, &wh)
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "purchases/s")
			b.ReportMetric(co.ms(0.5), "checkout-p50-ms")
			b.ReportMetric(wh.ms(0.5), "webhook-p50-ms")
			b.ReportMetric(wh.ms(0.99), "webhook-p99-ms")
		})
	}
}

// BenchmarkCommitsPerPurchase counts Postgres transactions per paid purchase,
// dispatch included: the delta of pg_stat_database.xact_commit (read-only
// autocommit statements count too) over b.N purchases made by 4 shoppers,
// until every order is DISPATCHED.
//
// The counter is read from another database on the server, so reading it
// costs the store's database nothing. A backend publishes its counts when it
// goes idle or exits, so the store is stopped (its connections close) before
// each reading. Its start and stop cost is measured by a start/stop with no
// purchases and subtracted; so are the benchmark's own polls for DISPATCHED.
func BenchmarkCommitsPerPurchase(b *testing.B) {
	dbURL := storetest.NewPostgresDB(b).URL
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(ctx)
	u, err := url.Parse(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/") // a query string (?sslmode=…) is not part of the name
	commits := func() int64 {
		// Settled when two readings 300 ms apart agree.
		var last int64 = -1
		for {
			var n int64
			if _, err := admin.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
				b.Fatal(err)
			}
			if err := admin.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", dbName).Scan(&n); err != nil {
				b.Fatal(err)
			}
			if n == last {
				return n
			}
			last = n
			time.Sleep(300 * time.Millisecond)
		}
	}
	startBenchStore(b, dbURL).stop() // fresh schema: not counted
	c0 := commits()
	startBenchStore(b, dbURL).stop()
	c1 := commits()
	startStop := c1 - c0

	s := startBenchStore(b, dbURL)
	s.restock(b) // one autocommit write; subtracted below
	var co, wh latencies
	s.stmts.reset()
	b.ResetTimer()
	ids := runPurchases(b, s, b.N, 4, &co, &wh)
	paidStmts := s.stmts.snapshot()
	// Wait for the dispatches: they take 10 s, so sleep through most of that
	// and then poll with one query per 200 ms; each poll is one commit.
	time.Sleep(10 * time.Second)
	poller, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	polls := 0
	deadline := time.Now().Add(60 * time.Second)
	for {
		var left int
		polls++
		if err := poller.QueryRow(ctx, "SELECT count(*) FROM orders WHERE order_status <> $1", shop.StatusDispatched).Scan(&left); err != nil {
			b.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d orders not DISPATCHED after 70 s", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
	poller.Close(ctx)
	allStmts := s.stmts.snapshot()
	s.stop()
	c2 := commits()
	b.StopTimer()
	if len(ids) != b.N {
		b.Fatalf("%d orders, want %d", len(ids), b.N)
	}
	perPurchase := float64(c2-c1-startStop-int64(polls)-1) / float64(b.N)
	b.ReportMetric(perPurchase, "commits/purchase")
	b.ReportMetric(float64(startStop), "commits/start+stop")
	b.ReportMetric(float64(allStmts.total)/float64(b.N), "stmts/purchase")
	b.ReportMetric(float64(allStmts.autocommit)/float64(b.N), "autocommit-stmts/purchase")
	b.ReportMetric(float64(allStmts.begins)/float64(b.N), "tx-blocks/purchase")
	b.ReportMetric(float64(paidStmts.total)/float64(b.N), "stmts-until-webhook-answers/purchase")
	if os.Getenv("BENCH_SQL") != "" {
		b.Logf("statements per purchase (all, dispatch included):\n%s", allStmts.table(b.N))
	}
}

// BenchmarkCheckoutDuringDispatches measures checkout and webhook latency at
// C=1 before and while 1,000 dispatch workflows run (each 10 one-second
// legs, i.e. up to 1,000 progress transactions a second), and how long the
// 1,000 dispatches take to finish (it stops waiting after 90 s and reports
// how many were still not DISPATCHED).
func BenchmarkCheckoutDuringDispatches(b *testing.B) {
	const dispatches = 1000
	for _, db := range benchDatabases() {
		b.Run(db.name, func(b *testing.B) {
			s := startBenchStore(b, db.url(b))
			s.restock(b)
			ctx := context.Background()
			var quietC, quietW latencies
			runPurchases(b, s, 5, 1, &quietC, &quietW) // warm up
			quietC, quietW = latencies{}, latencies{}
			runPurchases(b, s, 30, 1, &quietC, &quietW)

			// 1,000 PAID orders, inserted directly (test setup), each with its
			// dispatch workflow started the way checkout starts it.
			now := time.Now().UnixMilli()
			ids := make([]int64, dispatches)
			for i := range ids {
				err := s.s.db.Q().QueryRow(ctx, `
					INSERT INTO orders (checkout_key, product_id, price_cents, order_status, progress_remaining, created_at, last_update_time)
					VALUES ($1, 1, 9999, $2, 10, $3, $3) RETURNING order_id`,
					"d-"+benchKey(), shop.StatusPaid, now).Scan(&ids[i])
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			start := time.Now()
			for _, id := range ids {
				in := dispatchInput{OrderID: id, FirstDueMs: time.Now().UnixMilli() + time.Second.Milliseconds()}
				if _, err := dbos.RunWorkflow(s.s.dctx, s.s.workflows.dispatch, in, dbos.WithWorkflowID(shop.DispatchWorkflowID(id))); err != nil {
					b.Fatal(err)
				}
			}
			startedIn := time.Since(start)
			// Shop while they run (10 s), then wait for the 1,000 to finish.
			var busyC, busyW latencies
			for time.Since(start) < 10*time.Second {
				runPurchases(b, s, 1, 1, &busyC, &busyW)
			}
			var left int
			for {
				if err := s.s.db.Q().QueryRow(ctx, `SELECT count(*) FROM orders WHERE order_status <> $1 AND checkout_key LIKE 'd-%'`, shop.StatusDispatched).Scan(&left); err != nil {
					b.Fatal(err)
				}
				if left == 0 || time.Since(start) > 90*time.Second {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			b.StopTimer()
			// Not a failure: how far behind the dispatches fell is the result.
			b.ReportMetric(float64(left), "orders-not-dispatched-at-end")
			b.ReportMetric(startedIn.Seconds(), "s-to-start-1000")
			b.ReportMetric(time.Since(start).Seconds(), "s-until-all-dispatched")
			b.ReportMetric(quietC.ms(0.5), "quiet-checkout-p50-ms")
			b.ReportMetric(busyC.ms(0.5), "busy-checkout-p50-ms")
			b.ReportMetric(busyC.ms(0.9), "busy-checkout-p90-ms")
			b.ReportMetric(quietW.ms(0.5), "quiet-webhook-p50-ms")
			b.ReportMetric(busyW.ms(0.5), "busy-webhook-p50-ms")
			b.ReportMetric(busyW.ms(0.9), "busy-webhook-p90-ms")
		})
	}
}

// BenchmarkStartupExistingDB is startServices (migrations, DBOS launch and
// recovery) on a database that already has its schema and some history.
func BenchmarkStartupExistingDB(b *testing.B) {
	for _, db := range benchDatabases() {
		b.Run(db.name, func(b *testing.B) {
			dbURL := db.url(b)
			s := startBenchStore(b, dbURL)
			runPurchases(b, s, 3, 1, &latencies{}, &latencies{})
			s.stop()
			b.ResetTimer()
			for range b.N {
				startBenchStore(b, dbURL).stop()
			}
		})
	}
}

// stmtCounter is a pgx tracer that counts the statements the store sends:
// transaction blocks (BEGIN), statements outside any (autocommit round
// trips, each its own transaction) and every statement by its shape.
type stmtCounter struct {
	mu    sync.Mutex
	inTx  map[*pgx.Conn]bool
	shape map[string]int
	stmtCounts
}

type stmtCounts struct {
	total, begins, autocommit int
	shapes                    map[string]int
}

func newStmtCounter() *stmtCounter {
	return &stmtCounter{inTx: map[*pgx.Conn]bool{}, shape: map[string]int{}}
}

func (c *stmtCounter) TraceQueryStart(ctx context.Context, conn *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	sql := strings.Join(strings.Fields(d.SQL), " ")
	verb := strings.ToLower(strings.SplitN(sql, " ", 2)[0])
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total++
	switch verb {
	case "begin":
		c.begins++
		c.inTx[conn] = true
	case "commit", "rollback":
		c.inTx[conn] = false
	default:
		if !c.inTx[conn] {
			c.autocommit++
			sql = "(autocommit) " + sql
		}
	}
	if len(sql) > 110 {
		sql = sql[:110] + "…"
	}
	c.shape[sql]++
	return ctx
}

func (c *stmtCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *stmtCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stmtCounts = stmtCounts{}
	c.shape = map[string]int{}
}

func (c *stmtCounter) snapshot() stmtCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stmtCounts
	s.shapes = maps.Clone(c.shape)
	return s
}

func (s stmtCounts) table(n int) string {
	type row struct {
		sql string
		n   int
	}
	var rows []row
	for k, v := range s.shapes {
		rows = append(rows, row{k, v})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].n > rows[j].n })
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%6.2f  %s\n", float64(r.n)/float64(n), r.sql)
	}
	return b.String()
}
