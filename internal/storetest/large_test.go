package storetest

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"widget-store/internal/loadgen"
	"widget-store/internal/seed"
	"widget-store/internal/store"
)

// The large-store benchmark: the pages a shopper and an operator load,
// measured on a store that has sold a million widgets.
//
//	go run ./cmd/seed -database-url sqlite:/var/tmp/big.db -orders 1000000
//	LARGE_DB=sqlite:/var/tmp/big.db go test -run '^$' -bench LargeStore -benchtime 1x ./internal/storetest
//
// LARGE_DB is the seeded database (sqlite:PATH or postgres://…); an empty one
// (a SQLite file that does not exist, an empty Postgres database) is seeded
// first with LARGE_ORDERS orders (default 1,000,000). LARGE_REQUESTS is the
// requests per page (default 2,000, after 50 to warm up), LARGE_CONCURRENCY
// how many at once (default 4). It starts the real binary
// (WIDGET_STORE_BIN, or this module built) on the database, prints p50/p90/
// p99 per page, and stops it. Numbers only: nothing here asserts a time.
func BenchmarkLargeStore(b *testing.B) {
	dbURL := os.Getenv("LARGE_DB")
	if dbURL == "" {
		b.Skip("LARGE_DB not set (see the comment above BenchmarkLargeStore)")
	}
	db, err := loadgen.DatabaseAt(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	requests, conc := largeEnvInt(b, "LARGE_REQUESTS", 2000), largeEnvInt(b, "LARGE_CONCURRENCY", 4)
	if n := seededOrders(b, db); n == 0 {
		res, err := seed.Run(context.Background(), seed.Config{Bin: Binary(b), DB: db, Orders: largeEnvInt(b, "LARGE_ORDERS", 1_000_000),
			Seed: 1, Progress: os.Stdout})
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("seeded %d orders in %v\n", res.Orders, res.Took.Round(time.Second))
	}
	newest, shopper := newestOrder(b, db)
	started := time.Now()
	st := StartWith(b, db, Options{Log: io.Discard})
	fmt.Printf("store started on %d orders (%s) in %v\n", newest, db.Kind, time.Since(started).Round(time.Millisecond))

	b.ResetTimer()
	for range b.N {
		fmt.Printf("%-36s %6s %9s %9s %9s %9s\n", "page", "n", "p50", "p90", "p99", "max")
		for _, p := range largePages(newest, shopper) {
			lat := measurePage(b, st, p, requests, conc)
			fmt.Printf("%-36s %6d %9s %9s %9s %9s\n", p.name, lat.N, msStr(lat.P50), msStr(lat.P90), msStr(lat.P99), msStr(lat.Max))
			b.ReportMetric(float64(lat.P50.Microseconds())/1000, p.metric+"-p50-ms")
		}
	}
}

// largePage is one page the benchmark loads: path makes each request's URL
// path (random existing order ids), cookie is the shopper cookie it sends.
type largePage struct {
	name, metric string
	path         func(r *rand.Rand) string
	cookie       string
	want         string // a piece of the body that says the seeded data is there
}

func largePages(newest int64, shopper string) []largePage {
	id := func(r *rand.Rand) string { return strconv.FormatInt(1+r.Int64N(newest), 10) }
	fixed := func(p string) func(*rand.Rand) string { return func(*rand.Rand) string { return p } }
	// A cursor made as internal/web/paging.go makes them (a client must not;
	// the benchmark does, to jump deep into the list): if the format changes
	// the page answers 400 and the benchmark fails.
	deep := func(r *rand.Rand) string {
		after := newest/2 + r.Int64N(newest/2)
		return "/orders?limit=100&after=" + base64.RawURLEncoding.EncodeToString([]byte("orders:"+strconv.FormatInt(after, 10)))
	}
	newestID := "#" + strconv.FormatInt(newest, 10)
	return []largePage{
		{name: "GET / (store page)", metric: "store", path: fixed("/"), cookie: shopper, want: newestID},
		{name: "GET /track/{id} (order page)", metric: "track", path: func(r *rand.Rand) string { return "/track/" + id(r) }},
		{name: "GET /partials/track/{id}", metric: "track-partial", path: func(r *rand.Rand) string { return "/partials/track/" + id(r) }},
		{name: "GET /partials/timeline/{id}", metric: "timeline", path: func(r *rand.Rand) string { return "/partials/timeline/" + id(r) }, want: "reserve"},
		{name: "GET /orders?limit=100 (first page)", metric: "orders-first", path: fixed("/orders?limit=100"), want: `"order_id":1,`},
		{name: "GET /orders?limit=100&after= (deep)", metric: "orders-deep", path: deep, want: `"order_id"`},
		{name: "GET /orders?limit=1000 (first page)", metric: "orders-1000", path: fixed("/orders?limit=1000"), want: `"order_id":1000,`},
		{name: "GET /partials/internals", metric: "internals", path: fixed("/partials/internals"), want: newestID},
		{name: "GET /partials/internals/timeline", metric: "internals-timeline", path: fixed("/partials/internals/timeline"), want: "reserve"},
		{name: "GET /partials/my-orders", metric: "my-orders", path: fixed("/partials/my-orders"), cookie: shopper, want: "#"},
	}
}

// measurePage loads page n times, conc at a time (after 50 warm-up loads),
// and returns the latencies; any answer but a 200 with the page's want in
// it fails the benchmark.
func measurePage(t testing.TB, st *Store, p largePage, n, conc int) loadgen.Percentiles {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	defer client.CloseIdleConnections()
	get := func(r *rand.Rand) (time.Duration, error) {
		path := p.path(r)
		req, err := http.NewRequest(http.MethodGet, st.URL(path), nil)
		if err != nil {
			return 0, err
		}
		if p.cookie != "" {
			req.AddCookie(&http.Cookie{Name: "shopper", Value: p.cookie})
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close() // read to the end: nothing left to lose
		d := time.Since(start)
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), p.want) {
			return 0, fmt.Errorf("GET %s: %s, want 200 with %q; body %.300q", path, resp.Status, p.want, body)
		}
		return d, nil
	}
	warm := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		if _, err := get(warm); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for range n / conc {
				d, err := get(r)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	slices.Sort(lat)
	at := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	return loadgen.Percentiles{N: len(lat), P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: lat[len(lat)-1]}
}

func msStr(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func largeEnvInt(t testing.TB, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive whole number", name, s)
	}
	return n
}

// seededOrders counts the orders in db: 0 for an empty database (no store
// tables yet, or no SQLite file).
func seededOrders(t testing.TB, db *loadgen.Database) int {
	t.Helper()
	if db.Kind == "sqlite" {
		if _, err := os.Stat(db.Path); err != nil {
			return 0
		}
	}
	exists := `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'orders'`
	if db.Kind == "postgres" {
		exists = `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'orders'`
	}
	var n int
	query(t, db, exists, func(scan func(...any) error) error { return scan(&n) })
	if n == 0 {
		return 0
	}
	query(t, db, `SELECT count(*) FROM orders`, func(scan func(...any) error) error { return scan(&n) })
	return n
}

// newestOrder reads the newest order's id and its shopper (the benchmark's
// "my orders"), with the store stopped.
func newestOrder(t testing.TB, db *loadgen.Database) (int64, string) {
	t.Helper()
	var id int64
	var shopper string
	query(t, db, `SELECT order_id, shopper FROM orders ORDER BY order_id DESC LIMIT 1`, func(scan func(...any) error) error {
		return scan(&id, &shopper)
	})
	if id == 0 {
		t.Fatal("no orders in the database")
	}
	return id, shopper
}

// TestLargeStoreSeed: the seeder (internal/seed, cmd/seed) makes a store the
// real binary runs on, with every invariant holding and the seeded orders,
// workflows and steps where the pages look for them; and every read the
// pages make finds its index on it (store.PageQueries, plus the two reads of
// DBOS's tables behind each timeline), so a dropped index or a query that
// stops using one fails here, long before a store with a million orders
// slows down. 20,000 orders, both databases.
func TestLargeStoreSeed(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		const orders = 20_000
		var res seed.Result
		phase(t, "seed", func(t *testing.T) {
			var err error
			res, err = seed.Run(context.Background(), seed.Config{Bin: Binary(t), DB: db, Orders: orders, Seed: 11, StoreLog: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("seeded %d orders (%d dispatched, %d cancelled) in %v", res.Orders, res.Dispatched, res.Cancelled, res.Took)
			if res.Dispatched == 0 || res.Cancelled == 0 || res.LatePayments == 0 {
				t.Fatalf("want dispatched and cancelled orders and late payments, got %d, %d and %d", res.Dispatched, res.Cancelled, res.LatePayments)
			}
		})
		phase(t, "invariants hold on the seeded database", func(t *testing.T) {
			snap, err := loadgen.ReadSnapshot(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			report(t, loadgen.CheckInvariants(res.InitialStock, snap, res.Purchases(), loadgen.Observed{}))
			want := map[string]int{"checkout SUCCESS": res.Orders, "dispatch SUCCESS": res.Dispatched, "refund SUCCESS": res.LatePayments}
			if !maps.Equal(snap.Workflows, want) {
				t.Errorf("workflows %v, want %v", snap.Workflows, want)
			}
		})
		phase(t, "every page read uses an index", func(t *testing.T) {
			for _, q := range pageQueries() {
				if bad := fullScans(t, db, q); bad != "" {
					t.Errorf("%s reads a whole table or index:\n%s\nplan:\n%s", q.name, q.sqlite, bad)
				}
			}
		})
		st := Start(t, db)
		phase(t, "the store serves the seeded orders", func(t *testing.T) {
			if got := Inventory(t, st.Base()); got != res.FinalStock {
				t.Errorf("stock %d, want %d", got, res.FinalStock)
			}
			all := Orders(t, st.Base())
			if len(all) != orders {
				t.Fatalf("GET /orders, followed to the end: %d orders, want %d", len(all), orders)
			}
			dispatched := 0
			for _, o := range all {
				if o.Status == "DISPATCHED" {
					dispatched++
				}
			}
			if dispatched != res.Dispatched {
				t.Errorf("%d orders DISPATCHED, want %d", dispatched, res.Dispatched)
			}
			// A dispatched order's timeline: its checkout's steps, under
			// its key, and its dispatch, read from DBOS's seeded records.
			var paid int64
			for _, o := range all {
				if o.Status == "DISPATCHED" {
					paid = o.OrderID
					break
				}
			}
			tl := MustCall(t, "GET", st.URL("/partials/timeline/"+strconv.FormatInt(paid, 10)), http.StatusOK)
			for _, want := range []string{res.Key(paid), "reserve", "settle", "dispatch/" + strconv.FormatInt(paid, 10), "SUCCESS"} {
				if !strings.Contains(tl, want) {
					t.Errorf("the timeline of order %d has no %q:\n%.2000s", paid, want, tl)
				}
			}
			late := LatePayments(t, st.Base())
			if len(late) != res.LatePayments {
				t.Errorf("GET /late_payments: %d, want %d", len(late), res.LatePayments)
			}
			for _, l := range late {
				if l.RefundStatus != "refunded" {
					t.Errorf("late payment %s: refund %s, want refunded", l.PaymentID, l.RefundStatus)
				}
			}
			newest := "#" + strconv.Itoa(orders)
			for _, p := range largePages(orders, res.Shopper) {
				lat := measurePage(t, st, p, 8, 2) // each page answers 200 with the seeded data in it
				if lat.N != 8 {
					t.Errorf("%s: %d answers, want 8", p.name, lat.N)
				}
			}
			if body := MustCall(t, "GET", st.URL("/partials/internals"), http.StatusOK); !strings.Contains(body, newest) {
				t.Errorf("the internals panel does not show the newest order %s", newest)
			}
		})
	})
}

// planQuery is a read to EXPLAIN, in each dialect's SQL (they differ for
// DBOS's queries, whose lists SQLite binds one parameter per item and
// Postgres as one array).
type planQuery struct {
	name             string
	sqlite, postgres string
	args, pgArgs     []any
	keyOrder         bool // store.PageQuery.KeyOrder
}

// pageQueries is store.PageQueries, store.BackgroundQueries and the reads of DBOS's tables behind
// every timeline and every start, as DBOS SDK v1.8.0 makes them
// (dbos.ListWorkflows by workflow IDs, and by status, executor and version
// as internal/cluster lists the workflows to recover; dbos.GetWorkflowSteps;
// see internal/sysdb of the SDK): if an SDK upgrade changes them, they are
// to be read again there.
func pageQueries() []planQuery {
	var out []planQuery
	for _, q := range store.PageQueries() {
		out = append(out, planQuery{name: q.Name, sqlite: q.SQL, postgres: q.SQL, args: q.Args, pgArgs: q.Args, keyOrder: q.KeyOrder})
	}
	pg := store.BackgroundQueries(store.Dialect{Name: "postgres", Postgres: true})
	for i, q := range store.BackgroundQueries(store.Dialect{Name: "sqlite"}) {
		out = append(out, planQuery{name: q.Name, sqlite: q.SQL, postgres: pg[i].SQL, args: q.Args, pgArgs: q.Args, keyOrder: q.KeyOrder})
	}
	const cols = `SELECT workflow_uuid, status, name, executor_id, created_at FROM `
	return append(out,
		planQuery{name: "DBOS: workflows by id",
			sqlite:   cols + `workflow_status WHERE workflow_uuid IN ($1, $2, $3) ORDER BY created_at ASC`,
			postgres: cols + `dbos.workflow_status WHERE workflow_uuid = ANY($1) ORDER BY created_at ASC`,
			args:     []any{"k", "dispatch/1", "refund/k"}, pgArgs: []any{[]string{"k", "dispatch/1", "refund/k"}}},
		planQuery{name: "DBOS: steps of a workflow",
			sqlite:   `SELECT function_id, function_name, output FROM operation_outputs WHERE workflow_uuid = $1 ORDER BY function_id ASC`,
			postgres: `SELECT function_id, function_name, output FROM dbos.operation_outputs WHERE workflow_uuid = $1 ORDER BY function_id ASC`,
			args:     []any{"k"}, pgArgs: []any{"k"}},
		planQuery{name: "DBOS: this executor's pending workflows (every start)",
			sqlite: cols + `workflow_status WHERE status IN ($1) AND application_version IN ($2) AND executor_id IN ($3)
				AND (application_name IN ($4) OR application_name IS NULL) ORDER BY created_at ASC`,
			postgres: cols + `dbos.workflow_status WHERE status = ANY($1) AND application_version = ANY($2) AND executor_id = ANY($3)
				AND (application_name = ANY($4) OR application_name IS NULL) ORDER BY created_at ASC`,
			args:   []any{"PENDING", "widget-store-3", "node-a", "widget-store"},
			pgArgs: []any{[]string{"PENDING"}, []string{"widget-store-3"}, []string{"node-a"}, []string{"widget-store"}}},
	)
}

// fullScans EXPLAINs q on db and returns its plan when it reads a whole
// table or a whole index (or sorts one), "" otherwise. A walk of a partial
// index (it holds only the few rows its condition selects, e.g. the
// unfinished orders) is no full read, nor is a q.keyOrder query's walk of its
// key, which stops at its LIMIT.
//
// SQLite: EXPLAIN QUERY PLAN, where a full read is a "SCAN t" line (of the
// table, or "USING INDEX i" of a whole index), and a sort of one "USE TEMP
// B-TREE" in a plan with no "SEARCH" (an index lookup, whose few rows may be
// sorted). Postgres: EXPLAIN (FORMAT JSON) with sequential scans disabled,
// so a "Seq Scan" means no index can serve the query whatever the planner's
// statistics say about a table this small; an index scan with no index
// condition is a whole index.
func fullScans(t *testing.T, db *loadgen.Database, q planQuery) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if db.Kind == "postgres" {
		return pgFullScans(ctx, t, db, q)
	}
	sdb, err := sql.Open("sqlite", "file:"+url.PathEscape(db.Path)+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	partial := partialIndexes(t, db)
	rows, err := sdb.QueryContext(ctx, `EXPLAIN QUERY PLAN `+q.sqlite, q.args...)
	if err != nil {
		t.Fatalf("EXPLAIN QUERY PLAN %s: %v", q.name, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	lookup := slices.ContainsFunc(plan, func(l string) bool { return strings.HasPrefix(l, "SEARCH ") })
	for _, l := range plan {
		full := strings.HasPrefix(l, "SCAN ") && !q.keyOrder
		if _, index, ok := strings.Cut(l, " INDEX "); ok && partial[strings.Fields(index)[0]] {
			full = false
		}
		if full || (strings.Contains(l, "TEMP B-TREE") && !lookup) {
			return strings.Join(plan, "\n")
		}
	}
	return ""
}

// partialIndexes names db's partial indexes (CREATE INDEX … WHERE …).
func partialIndexes(t *testing.T, db *loadgen.Database) map[string]bool {
	t.Helper()
	q := `SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'`
	if db.Kind == "postgres" {
		q = `SELECT indexname FROM pg_indexes WHERE indexdef LIKE '% WHERE %'`
	}
	partial := map[string]bool{}
	query(t, db, q, func(scan func(...any) error) error {
		var name string
		err := scan(&name)
		partial[strings.Trim(name, `"`)] = true
		return err
	})
	return partial
}

// pgPlan is a node of EXPLAIN (FORMAT JSON).
type pgPlan struct {
	NodeType  string   `json:"Node Type"`
	IndexName string   `json:"Index Name"`
	IndexCond string   `json:"Index Cond"`
	Plans     []pgPlan `json:"Plans"`
}

func pgFullScans(ctx context.Context, t *testing.T, db *loadgen.Database, q planQuery) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	partial := partialIndexes(t, db)
	var out []byte
	if err := conn.QueryRow(ctx, `EXPLAIN (FORMAT JSON) `+q.postgres, q.pgArgs...).Scan(&out); err != nil {
		t.Fatalf("EXPLAIN %s: %v", q.name, err)
	}
	var plans []struct {
		Plan pgPlan `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("EXPLAIN %s: %v: %s", q.name, err, out)
	}
	var walk func(p pgPlan) bool
	walk = func(p pgPlan) bool {
		switch {
		case p.NodeType == "Seq Scan":
			return true
		case (p.NodeType == "Index Scan" || p.NodeType == "Index Only Scan") && p.IndexCond == "" && !q.keyOrder && !partial[p.IndexName]:
			return true
		case p.NodeType == "Sort" && q.keyOrder:
			return true
		}
		return slices.ContainsFunc(p.Plans, walk)
	}
	if walk(plans[0].Plan) {
		return string(out)
	}
	return ""
}
