package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ----- flash sale -----

// FlashReport is what a flash sale looked like: a little stock, many
// shoppers, and after the last unit every checkout answered "sold out".
type FlashReport struct {
	DB          string
	Seed        int64
	Units       int
	Concurrency int
	Kills       int
	Elapsed     time.Duration
	Tally       Tally
	// SoldOutAt is when the store first answered "sold out", since the
	// sale opened; SoldOut counts those answers (checkouts, replays
	// included), SoldOutRate per second from SoldOutAt to the end of the
	// sale.
	SoldOutAt   time.Duration
	SoldOut     int
	SoldOutRate float64
	// Purchase is checkout-to-payment-acknowledged of the purchases that got
	// a unit; SoldOutCheckout the answer time of the sold-out checkouts.
	Purchase        Percentiles
	SoldOutCheckout Percentiles
	RSSPeak         int64
	// CheckoutWorkflows counts the checkout workflows DBOS recorded, and
	// Orders the orders: every checkout workflow beyond the orders is a
	// sold-out checkout that started one (a count, not a timing).
	CheckoutWorkflows, Orders int
	// After is flashAfter of sold-out checkouts alone, once every order of
	// the sale settled: what a sold-out answer costs with nothing else
	// running (no purchase, no dispatch leg).
	After  AfterSale
	Errors map[string]int
	Settle time.Duration
	Checks Checks
}

// flashAfter is how long the sold-out checkouts alone run after the sale.
const flashAfter = 3 * time.Second

// AfterSale is what the sold-out checkouts alone cost.
type AfterSale struct {
	Elapsed       time.Duration
	Answers       int  // sold-out answers (409)
	Other         int  // any other answer, or none: with no stock left (a hold a kill orphaned may come back), few or none
	Cost          Cost // the store's CPU and, on Postgres, its round trips (Postgres's CPU is the machine's, not read here)
	Postgres, Ran bool
}

// Flash opens a sale of Units (o.Stock) to o.Concurrency shoppers for
// o.Duration, SIGKILLing the store o.Kills times at even intervals (0: none)
// and restarting it at once; then it waits for every order to settle and
// checks the invariants (exactly Units sold when every unit was paid).
func Flash(ctx context.Context, o Options) (*FlashReport, error) {
	o.defaults()
	if o.PaymentTimeout == 0 {
		o.PaymentTimeout = 5 * time.Second // a hold a kill orphaned settles fast
	}
	r := &FlashReport{DB: o.DB.Kind, Seed: o.Seed, Units: o.Stock, Concurrency: o.Concurrency}
	st := o.store(false)
	defer st.Kill()
	rg, err := startStocked(ctx, st, o)
	if err != nil {
		return nil, err
	}
	saleCtx, stopSale := context.WithTimeout(ctx, o.Duration)
	defer stopSale()
	bg, stopBG := context.WithCancel(ctx)
	var rss RSSSampler
	var wg sync.WaitGroup
	wg.Go(func() { rg.sampler.Run(bg) })
	wg.Go(func() { rss.Run(bg, st, 100*time.Millisecond) })
	shoppersDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(shoppersDone)
		Shoppers(saleCtx, rg.client, ShopperConfig{
			Concurrency: o.Concurrency, Decline: o.Decline, Abandon: o.Abandon, Replay: o.Replay,
			Seed: o.Seed, KeyPrefix: "flash-" + strconv.FormatInt(o.Seed, 10) + "-",
		}, rg.ledger)
	}()
	for k := 1; k <= o.Kills; k++ {
		select {
		case <-time.After(o.Duration / time.Duration(o.Kills+1)):
		case <-saleCtx.Done():
		}
		if saleCtx.Err() != nil {
			break
		}
		killedAt := time.Now()
		st.Kill()
		if _, err := st.Start(ctx); err != nil {
			stopBG()
			return nil, fmt.Errorf("restart after kill %d: %w", k, err)
		}
		r.Kills++
		fmt.Fprintf(o.Progress, "kill %d/%d at %v, back in %v\n", k, o.Kills, killedAt.Sub(start).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))
	}
	<-shoppersDone
	r.Elapsed = time.Since(start)
	stopBG()
	wg.Wait()
	r.RSSPeak = rss.Max()

	purchases, soldOut := NewStats(), NewStats()
	first := time.Time{}
	end := start.Add(o.Duration)
	for _, p := range rg.ledger.Purchases() {
		switch p.Checkout.Status {
		case http.StatusOK:
			if p.Payment.Status == http.StatusOK && !p.Finished.IsZero() {
				purchases.latency("purchase", p.Finished.Sub(p.Started))
			}
		case http.StatusConflict:
			if p.Finished.IsZero() {
				continue
			}
			r.SoldOut++
			soldOut.latency("checkout", p.Finished.Sub(p.Started))
			if first.IsZero() || p.Finished.Before(first) {
				first = p.Finished
			}
		}
	}
	r.Purchase, r.SoldOutCheckout = purchases.Latency("purchase"), soldOut.Latency("checkout")
	if !first.IsZero() {
		r.SoldOutAt = first.Sub(start)
		if window := end.Sub(first); window > 0 {
			r.SoldOutRate = float64(r.SoldOut) / window.Seconds()
		}
	}
	// Once every order settled (which finish would wait for anyway), the
	// sold-out checkouts alone; a store that does not settle is finish's to
	// report.
	settled, settleErr := rg.sampler.WaitSettled(ctx, o.settleTimeout())
	if settleErr == nil && r.SoldOut > 0 { // a sale that never sold out has nothing to measure here
		if r.After, err = afterSale(ctx, st, rg, o); err != nil {
			return nil, err
		}
	}
	var snap Snapshot
	var settle time.Duration
	r.Tally, settle, r.Checks, snap, err = finishSnapshot(ctx, &o, st, rg.sampler, rg.ledger, nil)
	if err != nil {
		return nil, err
	}
	r.Settle = settled + settle
	r.Orders = len(snap.Orders)
	for k, n := range snap.Workflows {
		if strings.HasPrefix(k, "checkout ") {
			r.CheckoutWorkflows += n
		}
	}
	r.Errors = rg.stats.Errors()
	return r, nil
}

// afterSale runs o.Concurrency shoppers for flashAfter against the sold-out
// store, fresh keys each (recorded in the ledger, so the invariants cover
// them), and reads the store's cost around them.
func afterSale(ctx context.Context, st *Store, rg rig, o Options) (AfterSale, error) {
	a := AfterSale{Postgres: st.DB.Kind == "postgres", Ran: true}
	before, err := ReadCost(ctx, st)
	if err != nil {
		return a, err
	}
	prefix := "flash-" + strconv.FormatInt(o.Seed, 10) + "-after-"
	start := time.Now()
	burst, cancel := context.WithTimeout(ctx, flashAfter)
	Shoppers(burst, rg.client, ShopperConfig{Concurrency: o.Concurrency, Seed: o.Seed, KeyPrefix: prefix}, rg.ledger)
	cancel()
	a.Elapsed = time.Since(start)
	after, err := ReadCost(ctx, st)
	if err != nil {
		return a, err
	}
	a.Cost = after.Sub(before)
	for _, p := range rg.ledger.Purchases() {
		switch {
		case !strings.HasPrefix(p.Key, prefix):
		case p.Checkout.Status == http.StatusConflict:
			a.Answers++
		default:
			a.Other++
		}
	}
	return a, nil
}

// Print writes the flash sale's report and the invariants.
func (r *FlashReport) Print(w io.Writer) {
	fmt.Fprintf(w, "== flash sale: %s, %d units, C=%d, %v, %d SIGKILLs, seed %d\n", r.DB, r.Units, r.Concurrency, r.Elapsed.Round(time.Millisecond), r.Kills, r.Seed)
	fmt.Fprintf(w, "  purchases          %s\n", r.Tally)
	fmt.Fprintf(w, "  sold out from      %v after the sale opened\n", r.SoldOutAt.Round(time.Millisecond))
	fmt.Fprintf(w, "  sold-out answers   %d, %.0f/s (from the first to the end of the sale)\n", r.SoldOut, r.SoldOutRate)
	fmt.Fprintf(w, "  sold-out checkout  %s\n", r.SoldOutCheckout)
	fmt.Fprintf(w, "  purchase           %s (checkout to payment acknowledged)\n", r.Purchase)
	fmt.Fprintf(w, "  RSS peak           %.1f MB\n", mb(r.RSSPeak))
	fmt.Fprintf(w, "  checkout workflows %d for %d orders: %d sold-out checkouts started one (of %d sold-out answers, the sale's and after it)\n",
		r.CheckoutWorkflows, r.Orders, max(r.CheckoutWorkflows-r.Orders, 0), r.SoldOut+r.After.Answers)
	if a := r.After; a.Ran && a.Answers > 0 {
		fmt.Fprintf(w, "  after the sale     %v of sold-out checkouts alone: %d answers, %.0f/s, store CPU %.1f µs per answer",
			a.Elapsed.Round(time.Millisecond), a.Answers, float64(a.Answers)/a.Elapsed.Seconds(), float64(a.Cost.StoreCPU.Microseconds())/float64(a.Answers))
		if a.Postgres {
			fmt.Fprintf(w, ", %.2f round trips per answer", a.Cost.RoundTrips/float64(a.Answers))
		}
		fmt.Fprintf(w, " (%d other answers)\n", a.Other)
	}
	fmt.Fprintf(w, "  errors (retried)   %s\n", formatErrors(r.Errors))
	fmt.Fprintf(w, "  settled            %v after the sale\n", r.Settle.Round(time.Millisecond))
	printInvariants(w, r.Checks, r.Seed)
}
