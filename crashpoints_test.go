package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"widget-store/internal/loadgen"
)

// TestCrashPoints kills the store at every named point: right after each
// step of both workflows commits and before the next (CRASH_AT=W:N makes the
// process exit with status 1 there). A careful client keeps retrying through
// the crash; the store restarts without CRASH_AT on the same database and
// port, and the order must reach its right final state with the stock
// conserved, one order for the key, and the same answers to repeated calls.
func TestCrashPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and crashes it at every step")
	}
	type crashCase struct{ point, status string }
	var cases []crashCase
	for n := 1; n <= 6; n++ {
		cases = append(cases, crashCase{fmt.Sprintf("checkout:%d", n), "paid"})
		if n != 5 { // step 5 starts the dispatch: paid orders only
			cases = append(cases, crashCase{fmt.Sprintf("checkout:%d", n), "failed"})
		}
	}
	for n := 1; n <= dispatchSteps; n++ {
		cases = append(cases, crashCase{fmt.Sprintf("dispatch:%d", n), "paid"})
	}
	if only := os.Getenv("CRASH_POINTS"); only != "" { // e.g. CRASH_POINTS=dispatch:3,checkout:4
		var some []crashCase
		for _, c := range cases {
			if slices.Contains(strings.Split(only, ","), c.point) {
				some = append(some, c)
			}
		}
		cases = some
	}
	bin := storeBinary(t)
	for _, db := range testDatabases(t) {
		t.Run(db.name, func(t *testing.T) {
			t.Parallel()
			// Databases are made here: newPostgresDB must run on the test goroutine.
			urls := make([]string, len(cases))
			for i := range cases {
				urls[i] = db.newURL(t)
			}
			// Most cases wait out a 10 s dispatch: run them side by side, but
			// few enough at once for a 2-core machine and Postgres's connection limit.
			sem := make(chan struct{}, 6)
			var wg sync.WaitGroup
			for i, c := range cases {
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					start := time.Now()
					if err := runCrashCase(t, bin, loadgenDB(t, urls[i]), c.point, c.status); err != nil {
						t.Errorf("CRASH_AT=%s, payment %s: %v", c.point, c.status, err)
						return
					}
					t.Logf("CRASH_AT=%s, payment %s: ok in %v", c.point, c.status, time.Since(start).Round(time.Millisecond))
				})
			}
			wg.Wait()
		})
	}
}

// runCrashCase is one named-point crash. It runs off the test goroutine, so
// it returns its failure instead of calling t.Fatal.
func runCrashCase(t *testing.T, bin string, db *loadgen.Database, point, status string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// PAYMENT_TIMEOUT=10s bounds a known stall (see TestPostgresWakeupRightAfterStart
	// in internal/loadgen): on Postgres, a payment sent in the first moments after
	// a start can miss DBOS's LISTEN and sleep until the payment window ends,
	// then complete correctly. With the default 120 s this test would time out.
	payWindow := "PAYMENT_TIMEOUT=10s"
	st := &loadgen.Store{Bin: bin, DB: db, Env: []string{"CRASH_AT=" + point, payWindow}, Log: prefixLog{t, point + " " + status + ": "}}
	defer st.Kill()
	if _, err := st.Start(ctx); err != nil {
		return err
	}
	const initialStock = 100 // the schema's seed

	// The shopper: the same key, then the same payment call, until answered.
	client := loadgen.NewClient(st.Base(), 2, 30*time.Second)
	key := "crash-" + strings.ReplaceAll(point, ":", "-") + "-" + status
	p := loadgen.Purchase{Key: key, Sent: status}
	bought := make(chan error, 1)
	go func() {
		var err error
		if p.Checkout, _, err = client.Checkout(ctx, key); err != nil {
			bought <- err
			return
		}
		if p.Checkout.Status != http.StatusOK {
			bought <- fmt.Errorf("checkout answered %v", p.Checkout)
			return
		}
		p.Payment, _, err = client.Pay(ctx, p.Checkout.Body, status)
		bought <- err
	}()

	code, err := st.WaitExit(45 * time.Second)
	if err != nil {
		st.Kill()
		snap, serr := loadgen.ReadSnapshot(ctx, db)
		return fmt.Errorf("the store did not exit at the crash point: %w; purchase so far %+v; database: orders %+v, workflows %v (%v)",
			err, p, snap.Orders, snap.Workflows, serr)
	}
	if code != 1 {
		return fmt.Errorf("the store exited with status %d at the crash point, want 1", code)
	}
	st.Env = []string{payWindow}
	if _, err := st.Start(ctx); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	select {
	case err := <-bought:
		if err != nil {
			return fmt.Errorf("purchase: %w", err)
		}
	case <-ctx.Done():
		return fmt.Errorf("purchase not answered: %w", ctx.Err())
	}
	if p.Payment.Status != http.StatusOK {
		return fmt.Errorf("payment %s answered %v, want 200 and the order id", status, p.Payment)
	}

	// Repeated calls give the same answers, before and after the order settles.
	replay := func() error {
		again, _, err := client.Checkout(ctx, key)
		if err != nil {
			return err
		}
		p.Replays = append(p.Replays, loadgen.Replay{Call: "checkout " + key, Got: again, Want: p.Checkout})
		again, _, err = client.Pay(ctx, p.Checkout.Body, status)
		if err != nil {
			return err
		}
		p.Replays = append(p.Replays, loadgen.Replay{Call: "payment " + status, Got: again, Want: p.Payment})
		return nil
	}
	if err := replay(); err != nil {
		return err
	}
	var reads atomic.Int64 // the sampler counts its requests; unused here
	sampler := loadgen.NewSampler(st.Base(), 100*time.Millisecond, &reads)
	_, settleErr := sampler.WaitSettled(ctx, 30*time.Second)
	if err := replay(); err != nil {
		return err
	}
	snap, err := loadgen.StopAndSnapshot(ctx, st, 5)
	if err != nil {
		return err
	}
	samples, _, _, violations := sampler.Result()
	checks := loadgen.CheckInvariants(initialStock, snap, []loadgen.Purchase{p},
		loadgen.Observed{Samples: samples, Violations: violations, SettleErr: settleErr})
	want := loadgen.StatusDispatched
	if status == "failed" {
		want = loadgen.StatusCancelled
	}
	if len(snap.Orders) != 1 || snap.Orders[0].Status != want || strconv.FormatInt(snap.Orders[0].ID, 10) != p.Payment.Body {
		checks = append(checks, loadgen.Check{Name: "final order", Detail: fmt.Sprintf("orders %+v, want one, %s, id %s", snap.Orders, loadgen.StatusName(want), p.Payment.Body)})
	}
	if !checks.OK() {
		var b strings.Builder
		checks.Print(&b)
		return fmt.Errorf("invariants:\n%s", b.String())
	}
	return nil
}

// prefixLog logs a store's output to the test log, each chunk prefixed with
// the case it belongs to (many stores run at once).
type prefixLog struct {
	t      *testing.T
	prefix string
}

func (w prefixLog) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
