package loadgen

// Several instances on one Postgres: a client that spreads calls over them
// and fails over as a client behind a load balancer would, a sampler that
// watches the database rather than one instance, settling read across
// instances, and a Postgres server of the caller's own that it may stop and
// start.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"widget-store/internal/shop"
)

// ----- a client of several instances -----

// Failover is a careful client of several instances of the store: each
// checkout goes to the next instance round-robin and its payment through
// the instance after the one that answered the checkout, so payments cross
// processes. A call that fails (refused or reset connection, 5xx, timeout)
// is made again with the same key on the next instance, until a definitive
// answer or ctx ends. It records which instance answered each call.
type Failover struct {
	Nodes []*Client // one per instance, in a fixed order
	// Stats receives the latencies of answered calls and the failed
	// attempts; nil records nothing.
	Stats *Stats
	// MaxBackoff caps the wait between attempts (default 100ms).
	MaxBackoff time.Duration

	next   atomic.Int64
	mu     sync.Mutex
	served map[string]*Served // by checkout key
	byPID  map[string]string  // payment id → checkout key
}

// Served is which instance answered a purchase's calls (-1: none).
type Served struct {
	CheckoutNode, PayNode int
	PayLatency            time.Duration // of the answered payment call
}

// NewFailover returns a client of the instances at bases, sharing one
// connection pool of conns connections per instance.
func NewFailover(bases []string, conns int, timeout time.Duration) *Failover {
	h := &http.Client{Timeout: timeout, Transport: &http.Transport{
		MaxIdleConns: conns * len(bases), MaxIdleConnsPerHost: conns, IdleConnTimeout: 30 * time.Second,
	}}
	f := &Failover{served: map[string]*Served{}, byPID: map[string]string{}}
	for _, b := range bases {
		f.Nodes = append(f.Nodes, &Client{Base: b, HTTP: h})
	}
	return f
}

// Checkout is POST /checkout/{key} on the next instance round-robin, moving
// on to the next one until a definitive answer.
func (f *Failover) Checkout(ctx context.Context, key string) (Answer, int, error) {
	a, node, _, attempts, err := f.call(ctx, "checkout", int(f.next.Add(1)-1), "/checkout/"+key)
	if err != nil {
		return a, attempts, err
	}
	f.mu.Lock()
	f.record(key).CheckoutNode = node
	if a.Status == http.StatusOK {
		f.byPID[a.Body] = key
	}
	f.mu.Unlock()
	return a, attempts, nil
}

// Pay is POST /payment_webhook/{pid}/{status} on the instance after the one
// that answered the checkout, moving on until a definitive answer.
func (f *Failover) Pay(ctx context.Context, pid, status string) (Answer, int, error) {
	f.mu.Lock()
	key, known := f.byPID[pid]
	var start int
	if known {
		start = f.served[key].CheckoutNode + 1
	} else {
		start = int(f.next.Add(1) - 1)
	}
	f.mu.Unlock()
	a, node, took, attempts, err := f.call(ctx, "webhook", start, "/payment_webhook/"+pid+"/"+status)
	if err != nil || !known {
		return a, attempts, err
	}
	f.mu.Lock()
	s := f.record(key)
	s.PayNode, s.PayLatency = node, took
	f.mu.Unlock()
	return a, attempts, nil
}

// record is key's entry; f.mu must be held.
func (f *Failover) record(key string) *Served {
	s, ok := f.served[key]
	if !ok {
		s = &Served{CheckoutNode: -1, PayNode: -1}
		f.served[key] = s
	}
	return s
}

// call posts path to instance start, then to the next ones in turn, until a
// 2xx or 4xx answer or ctx ends; it returns the answer, the instance that
// gave it, how long that attempt took, and the number of attempts.
func (f *Failover) call(ctx context.Context, op string, start int, path string) (Answer, int, time.Duration, int, error) {
	backoff := 2 * time.Millisecond
	maxBackoff := f.MaxBackoff
	if maxBackoff == 0 {
		maxBackoff = 100 * time.Millisecond
	}
	for attempt := 1; ; attempt++ {
		node := (start + attempt - 1) % len(f.Nodes)
		began := time.Now()
		a, err := f.Nodes[node].post(ctx, path, "")
		if err == nil && a.Status < 500 {
			took := time.Since(began)
			f.Stats.latency(op, took)
			return a, node, took, attempt, nil
		}
		if ctx.Err() != nil {
			return Answer{}, node, 0, attempt, fmt.Errorf("%s %s: gave up after %d attempts over %d instances: %w (last: %v)",
				op, path, attempt, len(f.Nodes), ctx.Err(), errOrStatus(err, a))
		}
		f.Stats.errorKind(op, errorKind(err, a))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// Served returns which instances answered key's calls.
func (f *Failover) Served(key string) (Served, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.served[key]
	if !ok {
		return Served{CheckoutNode: -1, PayNode: -1}, false
	}
	return *s, true
}

// NodeCalls counts the calls one instance answered.
type NodeCalls struct{ Checkouts, Payments int }

// PerNode counts the answered calls by instance, in the order of Nodes.
func (f *Failover) PerNode() []NodeCalls {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]NodeCalls, len(f.Nodes))
	for _, s := range f.served {
		if s.CheckoutNode >= 0 {
			out[s.CheckoutNode].Checkouts++
		}
		if s.PayNode >= 0 {
			out[s.PayNode].Payments++
		}
	}
	return out
}

// FinishedSince counts the purchases that got all their answers after t.
func (l *Ledger) FinishedSince(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, p := range l.purchases {
		if p.GaveUp == "" && p.Finished.After(t) {
			n++
		}
	}
	return n
}

// PercentilesOf is the percentiles of a list of durations.
func PercentilesOf(ds []time.Duration) Percentiles { return percentiles(ds) }

// ----- watching the database of several instances -----

// NewDBSampler returns a sampler that reads every order and the stock
// straight from a Postgres database, in one read-only snapshot per sample,
// so it watches all the instances on that database at once and none of
// them need be up. A failed read (the server restarting) skips a sample.
// Run, Sample, WaitSettled and Result work as for NewSampler; with
// instances running, SettledSnapshot is the end-of-run read (it also waits
// for the workflows).
func NewDBSampler(pool *pgxpool.Pool, every time.Duration) *Sampler {
	s := &Sampler{Every: every, orders: map[int64]seenOrder{}, minInv: 1 << 62}
	s.read = func(ctx context.Context) (orders []apiOrder, stock int, stockOK bool, err error) {
		tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return nil, 0, false, err
		}
		defer tx.Rollback(ctx) // read-only: nothing to keep
		if err := tx.QueryRow(ctx, `SELECT inventory FROM products WHERE product_id = 1`).Scan(&stock); err != nil {
			return nil, 0, false, err
		}
		rows, err := tx.Query(ctx, `SELECT order_id, order_status, progress_remaining FROM orders`)
		if err != nil {
			return nil, 0, false, err
		}
		orders, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (apiOrder, error) {
			var o apiOrder
			err := r.Scan(&o.OrderID, &o.OrderStatus, &o.ProgressRemaining)
			return o, err
		})
		return orders, stock, true, err
	}
	return s
}

// SettledSnapshot polls a Postgres database that instances are running on
// until no workflow is PENDING or ENQUEUED and every order is final
// (DISPATCHED or CANCELLED), and returns that snapshot. When timeout passes
// first it returns the last snapshot read and an error saying what is left.
// (A workflow in ERROR is final too: CheckInvariants reports it.)
func SettledSnapshot(ctx context.Context, db *Database, timeout time.Duration) (Snapshot, error) {
	deadline := time.Now().Add(timeout)
	var snap Snapshot
	for {
		s, err := ReadSnapshot(ctx, db)
		left := ""
		if err == nil {
			snap = s
			open := 0
			for _, o := range s.Orders {
				if o.Status == shop.StatusPending || o.Status == shop.StatusPaid {
					open++
				}
			}
			if s.unfinished() == 0 && open == 0 {
				return s, nil
			}
			left = fmt.Sprintf("%d workflows PENDING or ENQUEUED, %d orders PENDING or PAID", s.unfinished(), open)
		} else {
			left = "read: " + err.Error()
		}
		if time.Now().After(deadline) {
			return snap, fmt.Errorf("not settled within %v: %s", timeout, left)
		}
		select {
		case <-ctx.Done():
			return snap, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ----- signals -----

// Signal sends sig to the running process: SIGSTOP freezes it (it keeps its
// connections and answers nothing), SIGCONT lets it run on.
func (s *Store) Signal(sig os.Signal) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return errors.New("store not running")
	}
	select {
	case <-done:
		return errors.New("store not running")
	default:
	}
	return cmd.Process.Signal(sig)
}

// ----- a Postgres server of one's own -----

// ErrNoPostgresServer means PrivatePostgres cannot run a server here: no
// server binaries under /usr/lib/postgresql, or running as root without a
// postgres user to run one as.
var ErrNoPostgresServer = errors.New("cannot run a private Postgres server")

// PrivatePostgres is a Postgres server in a temporary directory, on a port
// of its own, that its owner may stop and start at will without disturbing
// anyone else's databases.
type PrivatePostgres struct {
	Port int

	bin  string              // directory of initdb and postgres
	dir  string              // data directory, socket and log
	cred *syscall.Credential // the postgres user's when running as root (Postgres refuses root)
	log  *os.File

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// NewPrivatePostgres initialises a server (initdb, trust authentication,
// fsync off) with the newest server binaries installed. Start runs it;
// Close stops it and removes its directory.
func NewPrivatePostgres() (*PrivatePostgres, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb") // the pattern is valid
	if len(bins) == 0 {
		return nil, fmt.Errorf("%w: no server binaries in /usr/lib/postgresql", ErrNoPostgresServer)
	}
	sort.Strings(bins)
	pg := &PrivatePostgres{bin: filepath.Dir(bins[len(bins)-1])}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("%w: running as root and no postgres user to run it as: %v", ErrNoPostgresServer, err)
		}
		uid, _ := strconv.Atoi(u.Uid) // numeric on Linux
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// Not under a test's TempDir: the postgres user must reach it, and
	// TempDir's parents are private to the test's user.
	dir, err := os.MkdirTemp("", "ws-pg-")
	if err != nil {
		return nil, err
	}
	pg.dir = dir
	fail := func(err error) (*PrivatePostgres, error) {
		os.RemoveAll(dir) // best effort: it is a fresh temporary directory
		return nil, err
	}
	if pg.cred != nil {
		if err := os.Chown(dir, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			return fail(err)
		}
	}
	if pg.log, err = os.Create(filepath.Join(dir, "server.log")); err != nil {
		return fail(err)
	}
	initdb := pg.command("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		pg.log.Close()
		return fail(fmt.Errorf("initdb: %v\n%s", err, out))
	}
	if pg.Port, err = freePort(); err != nil {
		pg.log.Close()
		return fail(err)
	}
	return pg, nil
}

func (pg *PrivatePostgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pg.bin, name), args...)
	cmd.Dir = pg.dir
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	}
	return cmd
}

// URL is the server's URL for database db.
func (pg *PrivatePostgres) URL(db string) string {
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(pg.Port) + "/" + db + "?sslmode=disable"
}

// Start runs the server and waits until it accepts connections.
func (pg *PrivatePostgres) Start(ctx context.Context) error {
	pg.mu.Lock()
	if pg.cmd != nil {
		pg.mu.Unlock()
		return errors.New("private Postgres already running")
	}
	cmd := pg.command("postgres", "-D", filepath.Join(pg.dir, "data"), "-p", strconv.Itoa(pg.Port), "-k", pg.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = pg.log, pg.log
	if err := cmd.Start(); err != nil {
		pg.mu.Unlock()
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // Stop checks that it exited; how does not matter
		close(exited)
	}()
	pg.cmd, pg.exited = cmd, exited
	pg.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, pg.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("private Postgres exited at start:\n%s", pg.Log())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("private Postgres not ready within 30s: %v\n%s", err, pg.Log())
		}
	}
}

// Stop shuts the server down as pg_ctl -m fast does (SIGINT: sessions are
// cut, everything committed is kept) and waits until it has exited.
func (pg *PrivatePostgres) Stop() error {
	pg.mu.Lock()
	cmd, exited := pg.cmd, pg.exited
	pg.cmd = nil
	pg.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(syscall.SIGINT) // fails only if it exited already
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill() // it ignored a fast shutdown
		<-exited
		return errors.New("private Postgres ignored a fast shutdown for 30s; killed it")
	}
}

// CreateDatabase creates database name on the server.
func (pg *PrivatePostgres) CreateDatabase(ctx context.Context, name string) (*Database, error) {
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, err
	}
	return DatabaseAt(pg.URL(name))
}

// Log is the server's log so far.
func (pg *PrivatePostgres) Log() string {
	b, _ := os.ReadFile(pg.log.Name()) // diagnostics only
	return string(b)
}

// Close stops the server and removes its directory.
func (pg *PrivatePostgres) Close() error {
	err := pg.Stop()
	pg.log.Close()
	return errors.Join(err, os.RemoveAll(pg.dir))
}
