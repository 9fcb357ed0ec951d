package storetest

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"widget-store/internal/loadgen"
)

// Cluster is several instances of the store on one Postgres database, as
// the cluster tests run them, with the test's own view of that database: a
// connection pool for direct reads, and a sampler that watches every order
// while the instances come and go (loadgen.NewDBSampler).
type Cluster struct {
	DB    *loadgen.Database
	Nodes []*Store      // in the order of their names
	Pool  *pgxpool.Pool // the test's own connections
	watch *loadgen.Sampler
	logs  []*capturedLog // by node
}

// StartCluster starts one instance per name on db, one after the other (the
// first creates the schema), each with EXECUTOR_ID=name and env, its log in
// the test log prefixed with its name (and kept: LogLines). It then watches
// every order in the database, every 100 ms, until the test ends.
//
// t must be the whole test, not a phase: the instances and the watch live
// until the test ends.
func StartCluster(t *testing.T, db *loadgen.Database, env []string, names ...string) *Cluster {
	t.Helper()
	c := &Cluster{DB: db}
	pool, err := pgxpool.New(context.Background(), db.URL)
	if err != nil {
		t.Fatalf("connect to the cluster's database: %v", err)
	}
	t.Cleanup(pool.Close)
	c.Pool = pool
	for _, name := range names {
		e := append([]string{"EXECUTOR_ID=" + name}, env...)
		lg := &capturedLog{}
		c.logs = append(c.logs, lg)
		c.Nodes = append(c.Nodes, StartWith(t, db, Options{Env: e, Log: io.MultiWriter(LogWriter(t, name+": "), lg)}))
	}
	c.watch = loadgen.NewDBSampler(pool, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.watch.Run(ctx)
	}()
	t.Cleanup(func() { // before the pool closes (cleanups run last first)
		cancel()
		<-done
	})
	return c
}

// Node is the instance whose executor ID is name.
func (c *Cluster) Node(t testing.TB, name string) *Store {
	t.Helper()
	for _, n := range c.Nodes {
		if n.ExecutorID() == name {
			return n
		}
	}
	t.Fatalf("no instance %q in the cluster", name)
	return nil
}

// LogLines is the lines instance n has logged so far, over all its runs,
// that contain every one of words, compared without case.
func (c *Cluster) LogLines(n *Store, words ...string) []string {
	i := slices.Index(c.Nodes, n)
	if i < 0 {
		return nil
	}
	var out []string
	for line := range strings.SplitSeq(c.logs[i].String(), "\n") {
		lower := strings.ToLower(line)
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(lower, strings.ToLower(w)) }) {
			out = append(out, line)
		}
	}
	return out
}

// Bases is every instance's URL, in the order of Nodes; an instance keeps
// its URL across restarts.
func (c *Cluster) Bases() []string {
	bases := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		bases[i] = n.Base()
	}
	return bases
}

// SetStock sets the product's inventory.
func (c *Cluster) SetStock(t testing.TB, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Pool.Exec(ctx, `UPDATE products SET inventory = $1`, n); err != nil {
		t.Fatalf("set the stock: %v", err)
	}
}

// Row is one row of a query on the cluster's database; Scan fails the test
// on any error, no row included.
type Row struct {
	t      testing.TB
	q      string
	row    pgx.Row
	cancel context.CancelFunc
}

// QueryRow runs a query that returns one row.
func (c *Cluster) QueryRow(t testing.TB, q string, args ...any) Row {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	return Row{t: t, q: q, row: c.Pool.QueryRow(ctx, q, args...), cancel: cancel}
}

// Scan reads the row into dest.
func (r Row) Scan(dest ...any) {
	r.t.Helper()
	defer r.cancel()
	if err := r.row.Scan(dest...); err != nil {
		r.t.Fatalf("%s: %v", strings.Join(strings.Fields(r.q), " "), err)
	}
}

// TakenOverBy is the executor ID that claimed instance id, or "".
func (c *Cluster) TakenOverBy(t testing.TB, id string) string {
	t.Helper()
	var by *string
	c.QueryRow(t, `SELECT taken_over_by FROM instances WHERE executor_id = $1`, id).Scan(&by)
	if by == nil {
		return ""
	}
	return *by
}

// SumMetric is the sum of a metric over the given instances (see MetricValue).
func SumMetric(t testing.TB, name, match string, nodes ...*Store) float64 {
	t.Helper()
	sum := 0.0
	for _, n := range nodes {
		sum += MetricValue(t, n.Base(), name, match)
	}
	return sum
}

// CheckInvariants waits, for at most settle, until every workflow of the
// cluster has finished and every order is final, with the instances
// running, then checks loadgen's six invariants against that snapshot, the
// purchases as their clients were told, and what the watch saw so far. A
// violation fails the test with every check's verdict. It returns the
// snapshot.
func (c *Cluster) CheckInvariants(t testing.TB, initialStock int, purchases []loadgen.Purchase, settle time.Duration) loadgen.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle+30*time.Second)
	defer cancel()
	snap, settleErr := loadgen.SettledSnapshot(ctx, c.DB, settle)
	if settleErr != nil { // check what is there, unsettled (invariant 5 fails)
		var err error
		if snap, err = loadgen.ReadSnapshot(ctx, c.DB); err != nil {
			t.Fatalf("read the cluster's database: %v (settling: %v)", err, settleErr)
		}
	}
	samples, _, _, violations := c.watch.Result()
	report(t, loadgen.CheckInvariants(initialStock, snap, purchases, loadgen.Observed{Samples: samples, Violations: violations, SettleErr: settleErr}))
	return snap
}

// WaitUntil polls cond (every 20 ms) until it holds, and fails the test
// with what if timeout passes first. cond runs on the test's goroutine, so
// it may fail the test itself.
func WaitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // the polling interval
	}
}

// Shopping is shoppers running in the background (loadgen.Shoppers).
type Shopping struct {
	Ledger *loadgen.Ledger
	stop   context.CancelFunc
	done   chan struct{}
}

// StartShoppers runs cfg's shoppers on c until Stop, or the end of the test.
func StartShoppers(t testing.TB, c loadgen.Caller, cfg loadgen.ShopperConfig) *Shopping {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Shopping{Ledger: &loadgen.Ledger{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		loadgen.Shoppers(ctx, c, cfg, s.Ledger)
	}()
	t.Cleanup(func() { s.Stop() }) // before the instances stop: they were started first
	return s
}

// Stop starts no new purchase, waits until those in flight have their
// answers (or their clients give up: loadgen.ShopperConfig.RetryFor), and
// returns every purchase.
func (s *Shopping) Stop() []loadgen.Purchase {
	s.stop()
	<-s.done
	return s.Ledger.Purchases()
}

// StartPrivatePostgres initialises and starts a Postgres server of the
// test's own (loadgen.PrivatePostgres), which the test may stop and start
// without disturbing anyone else's databases; it is stopped and removed
// when the test ends. Where no server can run (no server binaries, or root
// without a postgres user) it skips the test, unless CI is set: then it
// fails it, since CI must run it.
func StartPrivatePostgres(t testing.TB) *loadgen.PrivatePostgres {
	t.Helper()
	pg, err := loadgen.NewPrivatePostgres()
	if errors.Is(err, loadgen.ErrNoPostgresServer) {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: CI must run this test", err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("private Postgres: %v", err)
	}
	t.Cleanup(func() {
		if err := pg.Close(); err != nil {
			t.Errorf("private Postgres: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pg.Start(ctx); err != nil {
		t.Fatalf("private Postgres: %v", err)
	}
	return pg
}
