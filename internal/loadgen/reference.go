package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// The reference store: DBOS's own Go widget store (golang/widget-store in
// github.com/dbos-inc/dbos-demo-apps), which issue 20 measures this store
// against. Its HTTP API is the one this store kept (POST /checkout/{key},
// POST /payment_webhook/{id}/{status}, GET /product, GET /order/{id}), so the
// same shoppers drive it. Nothing of it is in this repository: -reference
// names a checkout of its directory, built there (docs/BENCHMARKS.md says how),
// and LoadReference runs it as it ships:
//
//   - its binary DIR/widget-store, in DIR (it serves ./html from there), with
//     DBOS_SYSTEM_DATABASE_URL, its only setting, pointing at a fresh Postgres
//     database (it runs on Postgres only);
//   - its tables made from DIR/migrations/*.up.sql (what its README runs
//     golang-migrate for), its one product's stock then set to Options.Stock
//     (its /restock sets 100, which 8 shoppers sell in a second; once sold out
//     it answers 500, which a careful shopper retries for ever);
//   - it listens on :8080, fixed in its code: the port must be free.
//
// It is measured as the store is in Load: purchases/s, the latencies of both
// calls, CPU per paid purchase from the first purchase until every order is
// DISPATCHED (its process and every Postgres process), its RSS. It has no
// /metrics, so neither round trips nor the critical path are counted. The
// invariants are this store's and read its schema; for the reference two
// are checked from its tables: every paid purchase's order DISPATCHED, and
// the stock conserved.

// referencePort is the port the reference store listens on (its main.go).
const referencePort = 8080

// Reference order statuses (its models.go).
const (
	referenceCancelled  = -1
	referenceDispatched = 1
)

// LoadReference runs o's shoppers against the reference store built in dir,
// on o.DB, which must be a fresh Postgres database.
func LoadReference(ctx context.Context, o Options, dir string) (*LoadReport, error) {
	o.defaults()
	if o.DB.Kind != "postgres" {
		return nil, errors.New("the reference store runs on Postgres only")
	}
	if o.Carts {
		return nil, errors.New("the reference store sells one product: no carts")
	}
	r := &LoadReport{DB: "postgres (reference)", Concurrency: o.Concurrency}
	if err := referenceSchema(ctx, dir, o.DB.URL, o.Stock); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(referencePort), time.Second); err == nil {
		c.Close() // only a probe
		return nil, fmt.Errorf("port %d is taken: the reference store listens there and nowhere else", referencePort)
	}
	log := o.StoreLog
	if log == nil {
		log = io.Discard
	}
	cmd := exec.Command(filepath.Join(dir, "widget-store"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DBOS_SYSTEM_DATABASE_URL="+o.DB.URL)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the reference store: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // its exit status says nothing here: we kill it
		close(exited)
	}()
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // already gone is fine
		<-exited
	}()
	base := "http://127.0.0.1:" + strconv.Itoa(referencePort)
	for {
		resp, err := http.Get(base + "/product")
		if err == nil {
			resp.Body.Close() // only the status matters
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			return nil, errors.New("the reference store exited at start (its log has why)")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(began) > 60*time.Second {
			return nil, errors.New("the reference store did not answer GET /product within 60 s")
		}
	}
	r.StartupFresh = time.Since(began)
	time.Sleep(500 * time.Millisecond) // idle, as Load lets the store be
	pid := cmd.Process.Pid
	var err error
	if r.RSSIdle, err = readRSS(pid); err != nil {
		return nil, err
	}

	fmt.Fprintf(o.Progress, "load: the reference store, C=%d for %v…\n", o.Concurrency, o.Duration)
	stats := NewStats()
	client := NewClient(base, o.Concurrency, o.RequestTimeout)
	client.Stats = stats
	ledger := &Ledger{}
	var rssMax int64
	var mu sync.Mutex
	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := readRSS(pid); err == nil {
				mu.Lock()
				rssMax = max(rssMax, v)
				mu.Unlock()
			}
			select {
			case <-bg.Done():
				return
			case <-t.C:
			}
		}
	})
	cost0, costErr := referenceCost(ctx, pid, o.DB.URL)
	loadCtx, cancel := context.WithTimeout(ctx, o.Duration)
	start := time.Now()
	Shoppers(loadCtx, client, ShopperConfig{
		Concurrency: o.Concurrency, MaxPurchases: o.MaxPurchases, Decline: o.Decline, Abandon: o.Abandon,
		Seed: o.Seed, KeyPrefix: "ref-" + strconv.FormatInt(o.Seed, 10) + "-",
	}, ledger)
	r.Elapsed = time.Since(start)
	cancel()
	stopBG()
	wg.Wait()
	r.RSSLoad = rssMax

	settleStart := time.Now()
	ps := ledger.Purchases()
	r.Tally = tally(ps)
	r.Checks, err = referenceSettle(ctx, o.DB.URL, o.Stock, ps, 60*time.Second)
	if err != nil {
		return nil, err
	}
	r.Settle = time.Since(settleStart)
	cost1, err := referenceCost(ctx, pid, o.DB.URL)
	r.Cost, r.CostErr = cost1.Sub(cost0), errors.Join(costErr, err)
	r.Checkout, r.Webhook, r.Errors = stats.Latency("checkout"), stats.Latency("webhook"), stats.Errors()
	r.CriticalErr = errors.New("the reference store has no /metrics")
	return r, nil
}

// referenceSchema makes the reference's tables from its migrations and sets
// its product's stock.
func referenceSchema(ctx context.Context, dir, dbURL string, stock int) error {
	files, err := filepath.Glob(filepath.Join(dir, "migrations", "*.up.sql"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no migrations in %s/migrations (is -reference the reference's golang/widget-store directory?): %v", dir, err)
	}
	sort.Strings(files)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, f := range files {
		sql, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, string(sql)); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	_, err = conn.Exec(ctx, `UPDATE products SET inventory = $1`, stock)
	return err
}

// referenceSettle waits until no order is PENDING or PAID (every dispatch
// done), then checks the reference's two invariants.
func referenceSettle(ctx context.Context, dbURL string, stock int, ps []Purchase, timeout time.Duration) (Checks, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(timeout)
	for {
		var open int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM orders WHERE order_status NOT IN ($1, $2)`, referenceDispatched, referenceCancelled).Scan(&open); err != nil {
			return nil, err
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			return Checks{{Name: "reference: every order settled", OK: false, Detail: fmt.Sprintf("%d orders PENDING or PAID after %v", open, timeout)}}, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	status := map[int64]int{}
	rows, err := conn.Query(ctx, `SELECT order_id, order_status FROM orders`)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([2]int64, error) {
		var v [2]int64
		err := row.Scan(&v[0], &v[1])
		return v, err
	})
	if err != nil {
		return nil, err
	}
	held := 0
	for _, v := range ids {
		status[v[0]] = int(v[1])
		if v[1] != referenceCancelled {
			held++
		}
	}
	var inventory int
	if err := conn.QueryRow(ctx, `SELECT inventory FROM products WHERE product_id = 1`).Scan(&inventory); err != nil {
		return nil, err
	}
	var notShipped []string
	paid := 0
	for _, p := range ps {
		if p.Sent != "paid" || p.Payment.Status != http.StatusOK {
			continue
		}
		paid++
		id, err := strconv.ParseInt(strings.TrimSpace(p.Payment.Body), 10, 64)
		if err != nil || status[id] != referenceDispatched {
			notShipped = append(notShipped, p.Key+" → "+p.Payment.Body)
		}
	}
	slices.Sort(notShipped)
	return Checks{
		{Name: "reference: stock conserved", OK: stock-inventory == held,
			Detail: fmt.Sprintf("initial %d − final %d = %d; orders not cancelled %d", stock, inventory, stock-inventory, held)},
		{Name: "reference: every paid purchase's order DISPATCHED", OK: len(notShipped) == 0,
			Detail: fmt.Sprintf("%d paid; not dispatched: %v", paid, notShipped[:min(len(notShipped), 5)])},
	}, nil
}

// referenceCost reads the reference process's CPU, the Postgres server's
// and its database's backends'.
func referenceCost(ctx context.Context, pid int, dbURL string) (Cost, error) {
	var c Cost
	var err error
	if c.StoreCPU, err = procCPU(pid); err != nil {
		return c, err
	}
	if c.PostgresCPU, err = postgresCPU(); err != nil {
		return c, err
	}
	c.BackendCPU, err = backendCPU(ctx, dbURL)
	return c, err
}
