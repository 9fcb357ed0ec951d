package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
)

// Options configure a run. Zero values take the defaults noted.
type Options struct {
	Bin string    // the store binary (Build)
	DB  *Database // a fresh database
	Env []string  // extra environment for the store

	Concurrency  int           // shoppers (default 8)
	Duration     time.Duration // load: how long shoppers start purchases (default 10s)
	MaxPurchases int           // stop after this many purchases (0: no limit)
	Decline      float64       // fraction of payments declined
	Abandon      float64       // fraction of checkouts never paid
	Replay       float64       // fraction of purchases whose calls are repeated
	Seed         int64         // seeds shoppers and kills; print it so a failure replays
	Stock        int           // initial stock (default 1,000,000: never sells out), of each product with Carts
	// Carts: shoppers buy random carts (1–3 lines of CartProducts,
	// quantities 1–3) and every product is stocked with Stock; the
	// invariants are checked per product.
	Carts bool
	// PaymentTimeout is the store's PAYMENT_TIMEOUT: how long an abandoned
	// checkout holds its unit. Chaos runs use a short one (default 5s) so
	// abandoned checkouts settle fast; load runs keep the store's 120s.
	PaymentTimeout time.Duration

	// Provider is the store's PAYMENT_PROVIDER for a chaos run: "" or
	// "standin" (payments through the stand-in's calls), or "stripe" (the
	// store against stripe-mock, payments as signed events: StripePayer).
	Provider string
	// LatePay: Stripe chaos: fraction of purchases paid only after the
	// store expired their session (default 0.05; negative: none).
	LatePay float64

	Kills            int           // chaos: SIGKILLs (default 20)
	KillGapMin       time.Duration // chaos: shortest time between a restart and the next kill (default 200ms; one kill in five comes within 50ms instead)
	KillGapMax       time.Duration // chaos: longest (default 1.5s)
	SettleExtra      time.Duration // time allowed for settling beyond payment window + dispatch (default 60s)
	StoreLog         io.Writer     // the store's log; nil discards it
	Progress         io.Writer     // progress lines while running; nil discards them
	RequestTimeout   time.Duration // per HTTP request (default 30s)
	SampleEvery      time.Duration // sampler period (default 250ms)
	RestartWarmup    time.Duration // restart: load before the crash (default 1s)
	RestartAfterCrsh time.Duration // restart: load after the in-flight purchases finish (default 1s)

	stripe *stripetest.Mock // Stripe mode: what the store talks to, read by finish
}

func (o *Options) defaults() {
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Stock == 0 {
		o.Stock = 1_000_000
	}
	if o.KillGapMin == 0 {
		o.KillGapMin = 200 * time.Millisecond
	}
	if o.KillGapMax == 0 {
		o.KillGapMax = 1500 * time.Millisecond
	}
	if o.SettleExtra == 0 {
		o.SettleExtra = 60 * time.Second
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.SampleEvery == 0 {
		o.SampleEvery = 250 * time.Millisecond
	}
	if o.RestartWarmup == 0 {
		o.RestartWarmup = time.Second
	}
	if o.RestartAfterCrsh == 0 {
		o.RestartAfterCrsh = time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

func (o *Options) store(supervise bool) *Store {
	env := slices.Clone(o.Env)
	if o.PaymentTimeout > 0 {
		env = append(env, "PAYMENT_TIMEOUT="+o.PaymentTimeout.String())
	}
	return &Store{Bin: o.Bin, DB: o.DB, Env: env, Log: o.StoreLog, Supervise: supervise}
}

func (o *Options) settleTimeout() time.Duration {
	pt := o.PaymentTimeout
	if pt == 0 {
		pt = 120 * time.Second
	}
	return pt + (shop.DispatchLegs+1)*time.Second + o.SettleExtra // the payment window, a dispatch and a second, recovery
}

// CartProducts are the products of the seeded catalog (schema.sql), which
// the cart shoppers buy.
var CartProducts = []int{1, 2, 3, 4}

// initialStocks is the stock a run starts with, by product.
func (o *Options) initialStocks() map[int]int {
	if !o.Carts {
		return map[int]int{shop.ProductID: o.Stock}
	}
	m := map[int]int{}
	for _, id := range CartProducts {
		m[id] = o.Stock
	}
	return m
}

// restockAll sets the run's initial stocks over HTTP.
func restockAll(ctx context.Context, base string, o Options, reads *atomic.Int64) error {
	for id, n := range o.initialStocks() {
		if err := restock(ctx, base, id, n, reads); err != nil {
			return err
		}
	}
	return nil
}

// restock sets product id's stock over HTTP (demo mode: no admin token).
func restock(ctx context.Context, base string, id, n int, reads *atomic.Int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/restock?product_id="+strconv.Itoa(id)+"&inventory="+strconv.Itoa(n), nil)
	if err != nil {
		return err
	}
	reads.Add(1)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("restock: %s", resp.Status)
	}
	return nil
}

// Tally counts purchases by outcome.
type Tally struct {
	Keys, PaymentIDs, SoldOut, Paid, Declined, PaidTooLate, Abandoned, GaveUp int
	// NoPayment: checkouts answered 409 after their order was made: the
	// provider (Stripe) opened no payment before the order's window closed.
	NoPayment int
	PaidUnits int // units in the paid purchases (one each without a cart)
}

func tally(ps []Purchase) Tally {
	var t Tally
	for _, p := range ps {
		t.Keys++
		switch {
		case p.GaveUp != "":
			t.GaveUp++
		case p.Checkout.Status == http.StatusConflict:
			t.SoldOut++
		}
		if p.Checkout.Status == http.StatusOK {
			t.PaymentIDs++
			if p.Sent == "" {
				t.Abandoned++
			}
		}
		switch {
		case p.Late && p.Payment.Status/100 == 2: // Stripe mode: paid after the store expired the session
			t.PaidTooLate++
		case p.Sent == shop.PaymentPaid && p.Payment.Status == http.StatusOK:
			t.Paid++
			t.PaidUnits += max(1, shop.Units(p.Cart))
		case p.Sent == shop.PaymentPaid && p.Payment.Status == http.StatusConflict:
			t.PaidTooLate++
		case p.Sent == shop.PaymentFailed && p.Payment.Status == http.StatusOK:
			t.Declined++
		}
	}
	return t
}

func (t Tally) String() string {
	s := fmt.Sprintf("%d keys: %d paid, %d declined, %d paid too late (refunded), %d abandoned, %d sold out, %d gave up",
		t.Keys, t.Paid, t.Declined, t.PaidTooLate, t.Abandoned, t.SoldOut, t.GaveUp)
	if t.NoPayment > 0 {
		s += fmt.Sprintf(", %d refused for want of a payment opened in time", t.NoPayment)
	}
	return s
}

// finish settles the run, stops the store and checks the invariants.
func finish(ctx context.Context, o *Options, st *Store, sampler *Sampler, ledger *Ledger) (Tally, time.Duration, Checks, error) {
	return finishWith(ctx, o, st, sampler, ledger, nil)
}

// finishWith is finish, calling settled (when not nil) once every order is
// final, before the store stops.
func finishWith(ctx context.Context, o *Options, st *Store, sampler *Sampler, ledger *Ledger, settled func()) (Tally, time.Duration, Checks, error) {
	fmt.Fprintf(o.Progress, "waiting for every order to settle (at most %v)…\n", o.settleTimeout())
	settle, settleErr := sampler.WaitSettled(ctx, o.settleTimeout())
	if settled != nil {
		settled()
	}
	snap, err := StopAndSnapshot(ctx, st, 5)
	if err != nil {
		return Tally{}, settle, nil, fmt.Errorf("read the database: %w", err)
	}
	samples, _, _, violations := sampler.Result()
	ps := ledger.Purchases()
	obs := Observed{Samples: samples, Violations: violations, SettleErr: settleErr}
	if o.stripe != nil {
		obs.Stripe = &StripeObserved{Requests: o.stripe.Requests()} // the store has stopped: complete
	}
	checks := CheckInvariantsStocks(o.initialStocks(), snap, ps, obs)
	t := tally(ps)
	status := map[string]shop.Status{}
	for _, o := range snap.Orders {
		status[o.Key] = o.Status
	}
	for _, p := range ps {
		st, ordered := status[p.Key]
		switch {
		case p.Checkout.Status == http.StatusConflict && ordered:
			t.SoldOut-- // not sold out: its order was made, and cancelled (check 2)
			t.NoPayment++
		case p.Sent == shop.PaymentPaid && p.Payment.Status == http.StatusOK && !p.Late && st == shop.StatusCancelled:
			// Stripe answers 200 to a payment that came as the window
			// closed: it was too late after all (refunded, check 6).
			t.Paid--
			t.PaidUnits -= max(1, shop.Units(p.Cart))
			t.PaidTooLate++
		}
	}
	return t, settle, checks, nil
}

// ----- load -----

// LoadReport is what a load run measured.
type LoadReport struct {
	DB              string
	Concurrency     int
	Elapsed         time.Duration // from the first purchase until the last in flight finished
	StartupFresh    time.Duration // exec to the first 200 /healthz, empty database
	StartupExisting time.Duration // the same on the database the first start made
	RSSIdle         int64
	RSSLoad         int64 // highest seen under load
	Tally           Tally
	Checkout        Percentiles
	Webhook         Percentiles
	Errors          map[string]int
	// Postgres: xact_commit delta from before the measured start until after
	// the store stopped (so every dispatch is in), minus the tool's own reads.
	Commits   int64
	ToolReads int64
	// IdleCommitsPerSec is what the store commits doing nothing (DBOS's
	// pollers), measured over 3 s idle; RunWall is the measured window's length.
	IdleCommitsPerSec float64
	RunWall           time.Duration
	Settle            time.Duration
	Checks            Checks
	// Cost is what the measured purchases cost, from the first until every
	// order was final (so every dispatch is in); CostErr why it could not be
	// read, if so.
	Cost    Cost
	CostErr error
}

// PerPurchase is the cost per paid purchase.
func (r *LoadReport) PerPurchase() (storeCPU, postgresCPU time.Duration, roundTrips float64) {
	n := max(r.Tally.Paid, 1)
	return r.Cost.StoreCPU / time.Duration(n), r.Cost.PostgresCPU / time.Duration(n), r.Cost.RoundTrips / float64(n)
}

// PurchasesPerSec is paid purchases per second of load.
func (r *LoadReport) PurchasesPerSec() float64 {
	return float64(r.Tally.Paid) / r.Elapsed.Seconds()
}

// rig is what every scenario drives the store with: a client that counts
// its answers, a sampler of /orders and /product, and the ledger of what
// the shoppers were told.
type rig struct {
	stats   *Stats
	client  *Client
	sampler *Sampler
	ledger  *Ledger
}

func newRig(st *Store, o Options, sampleEvery time.Duration, reads *atomic.Int64) rig {
	stats := NewStats()
	client := NewClient(st.Base(), o.Concurrency, o.RequestTimeout)
	client.Stats = stats
	return rig{stats: stats, client: client, sampler: NewSampler(st.Base(), sampleEvery, reads), ledger: &Ledger{}}
}

// startStocked starts the store, sets its stock for the run and returns the
// rig that drives it (sampling every o.SampleEvery).
func startStocked(ctx context.Context, st *Store, o Options) (rig, error) {
	reads := new(atomic.Int64) // the rig's reads are not reported
	if _, err := st.Start(ctx); err != nil {
		return rig{}, err
	}
	if err := restockAll(ctx, st.Base(), o, reads); err != nil {
		return rig{}, err
	}
	return newRig(st, o, o.SampleEvery, reads), nil
}

// Load runs C shoppers for Duration against a fresh store and measures it.
func Load(ctx context.Context, o Options) (*LoadReport, error) {
	o.defaults()
	r := &LoadReport{DB: o.DB.Kind, Concurrency: o.Concurrency}
	var reads atomic.Int64
	st := o.store(false)
	defer st.Kill()

	var err error
	if r.StartupFresh, err = st.Start(ctx); err != nil {
		return nil, err
	}
	if err := restockAll(ctx, st.Base(), o, &reads); err != nil {
		return nil, err
	}
	if err := st.Stop(20 * time.Second); err != nil {
		return nil, err
	}
	var commits0 int64
	if o.DB.Kind == "postgres" {
		if r.IdleCommitsPerSec, err = idleCommitRate(ctx, st); err != nil {
			return nil, err
		}
		if commits0, err = settledCommits(ctx, o.DB); err != nil {
			return nil, err
		}
	}
	reads.Store(0)
	wallStart := time.Now()
	if r.StartupExisting, err = st.Start(ctx); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond) // let the fresh process go idle before measuring its memory
	if r.RSSIdle, err = st.RSS(); err != nil {
		return nil, err
	}

	fmt.Fprintf(o.Progress, "load: %s, C=%d for %v…\n", o.DB.Kind, o.Concurrency, o.Duration)
	rg := newRig(st, o, 500*time.Millisecond, &reads)
	var rss RSSSampler
	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { rss.Run(bg, st, 100*time.Millisecond) })
	wg.Go(func() { rg.sampler.Run(bg) })
	cost0, costErr := ReadCost(ctx, st)
	loadCtx, cancel := context.WithTimeout(ctx, o.Duration)
	start := time.Now()
	Shoppers(loadCtx, rg.client, ShopperConfig{
		Concurrency: o.Concurrency, MaxPurchases: o.MaxPurchases, Decline: o.Decline, Abandon: o.Abandon,
		Replay: o.Replay, Seed: o.Seed, KeyPrefix: "load-" + strconv.FormatInt(o.Seed, 10) + "-",
		Carts: o.Carts, CartProducts: CartProducts,
	}, rg.ledger)
	r.Elapsed = time.Since(start)
	cancel()
	stopBG()
	wg.Wait()
	r.RSSLoad = rss.Max()

	var checks Checks
	r.Tally, r.Settle, checks, err = finishWith(ctx, &o, st, rg.sampler, rg.ledger, func() {
		cost1, err := ReadCost(ctx, st)
		r.Cost, r.CostErr = cost1.Sub(cost0), errors.Join(costErr, err)
	})
	if err != nil {
		return nil, err
	}
	r.RunWall = time.Since(wallStart)
	r.Checks = checks
	r.Checkout, r.Webhook, r.Errors = rg.stats.Latency("checkout"), rg.stats.Latency("webhook"), rg.stats.Errors()
	if o.DB.Kind == "postgres" {
		c1, err := settledCommits(ctx, o.DB)
		if err != nil {
			return nil, err
		}
		r.ToolReads = reads.Load()
		r.Commits = c1 - commits0 - r.ToolReads
	}
	return r, nil
}

// Print writes the measurement table.
func (r *LoadReport) Print(w io.Writer) {
	fmt.Fprintf(w, "== load: %s, C=%d, %v (store and tool on the same machine: %d CPUs)\n", r.DB, r.Concurrency, r.Elapsed.Round(time.Millisecond), runtime.NumCPU())
	fmt.Fprintf(w, "  purchases          %s\n", r.Tally)
	fmt.Fprintf(w, "  purchases/s        %.1f (paid, acknowledged)\n", r.PurchasesPerSec())
	if r.Tally.PaidUnits != r.Tally.Paid {
		fmt.Fprintf(w, "  units/s            %.1f (%.2f units per paid cart)\n", float64(r.Tally.PaidUnits)/r.Elapsed.Seconds(), float64(r.Tally.PaidUnits)/float64(max(1, r.Tally.Paid)))
	}
	fmt.Fprintf(w, "  POST /checkout     %s\n", r.Checkout)
	fmt.Fprintf(w, "  POST /payment_...  %s\n", r.Webhook)
	fmt.Fprintf(w, "  errors (retried)   %s\n", formatErrors(r.Errors))
	fmt.Fprintf(w, "  RSS                idle %.1f MB, under load (max) %.1f MB\n", mb(r.RSSIdle), mb(r.RSSLoad))
	fmt.Fprintf(w, "  startup            %v on an empty database, %v on an existing one (exec → first 200 /healthz)\n",
		r.StartupFresh.Round(100*time.Microsecond), r.StartupExisting.Round(100*time.Microsecond))
	if r.DB == "postgres" && r.Tally.Paid > 0 {
		idle := r.IdleCommitsPerSec * r.RunWall.Seconds()
		fmt.Fprintf(w, "  commits/purchase   %.1f (%d xact_commit over the run incl. startup, settling and every dispatch, minus %d reads by this tool; %d paid)\n",
			float64(r.Commits)/float64(r.Tally.Paid), r.Commits, r.ToolReads, r.Tally.Paid)
		fmt.Fprintf(w, "                     %.1f without the idle background: the idle store commits %.1f/s (DBOS pollers), ≈%.0f over the %v run\n",
			(float64(r.Commits)-idle)/float64(r.Tally.Paid), r.IdleCommitsPerSec, idle, r.RunWall.Round(time.Second))
	}
	if r.CostErr != nil {
		fmt.Fprintf(w, "  cost               not measured: %v\n", r.CostErr)
	} else if r.Tally.Paid > 0 {
		storeCPU, pgCPU, trips := r.PerPurchase()
		fmt.Fprintf(w, "  CPU/purchase       store %.2f ms", millis(storeCPU))
		if r.DB == "postgres" {
			fmt.Fprintf(w, ", Postgres server %.2f ms; round trips/purchase %.1f", millis(pgCPU), trips)
		}
		fmt.Fprintf(w, " (first purchase until every order final, dispatches included)\n")
	}
	fmt.Fprintf(w, "  settled            %v after the load\n", r.Settle.Round(time.Millisecond))
	fmt.Fprintln(w, "  invariants:")
	r.Checks.Print(w)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func formatErrors(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s ×%d", k, m[k])
	}
	return s
}

// idleCommitRate measures what the stopped store st commits per second
// doing nothing: a start-and-stop, then a start, 3 s idle and a stop; the
// difference is the idle seconds' commits.
func idleCommitRate(ctx context.Context, st *Store) (float64, error) {
	cycle := func(idle time.Duration) (int64, error) {
		c0, err := settledCommits(ctx, st.DB)
		if err != nil {
			return 0, err
		}
		if _, err := st.Start(ctx); err != nil {
			return 0, err
		}
		time.Sleep(idle)
		if err := st.Stop(20 * time.Second); err != nil {
			return 0, err
		}
		c1, err := settledCommits(ctx, st.DB)
		return c1 - c0, err
	}
	base, err := cycle(0)
	if err != nil {
		return 0, err
	}
	const idle = 3 * time.Second
	withIdle, err := cycle(idle)
	if err != nil {
		return 0, err
	}
	return max(0, float64(withIdle-base)) / idle.Seconds(), nil
}

// settledCommits waits until no session is left on the store's database (a
// backend publishes its statistics when it exits) and reads xact_commit.
// The read connects to the admin database when there is one, so it does
// not count itself; otherwise it adds one commit of its own.
func settledCommits(ctx context.Context, db *Database) (int64, error) {
	connURL := db.URL
	if db.adminURL != "" {
		connURL = db.adminURL
	}
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, db.name).Scan(&n); err != nil {
			return 0, err
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d sessions still on %s 10s after the store stopped", n, db.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A backend's statistics reach the shared counters as it exits, just
	// after it leaves pg_stat_activity: read until the counter holds still.
	var last int64 = -1
	for range 50 {
		var v int64
		if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			return 0, err
		}
		if err := conn.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = $1`, db.name).Scan(&v); err != nil {
			return 0, err
		}
		if v == last {
			return v, nil
		}
		last = v
		time.Sleep(100 * time.Millisecond)
	}
	return last, nil
}

// ----- chaos -----

// ChaosReport is what a chaos run did and found.
type ChaosReport struct {
	DB        string
	Provider  string // "stripe", or "" for the stand-in
	Seed      int64
	Kills     int
	Downtime  Percentiles // SIGKILL → first 200 /healthz of the restarted store
	Elapsed   time.Duration
	Tally     Tally
	Errors    map[string]int
	Settle    time.Duration
	Checks    Checks
	Checkout  Percentiles
	Webhook   Percentiles
	KillTimes []time.Duration // since the load started
}

// Chaos runs shoppers while SIGKILLing the store Kills times at seeded random
// moments, restarting it at once on the same port and database; then it
// waits for every order to settle and checks the invariants.
func Chaos(ctx context.Context, o Options) (*ChaosReport, error) {
	o.defaults()
	if o.PaymentTimeout == 0 {
		o.PaymentTimeout = 5 * time.Second
	}
	if o.Kills == 0 {
		o.Kills = 20
	}
	r := &ChaosReport{DB: o.DB.Kind, Seed: o.Seed}
	var payer *StripePayer
	switch o.Provider {
	case "", "standin":
	case "stripe":
		r.Provider = "stripe"
		if o.LatePay == 0 {
			o.LatePay = 0.05
		}
		m, err := startStripe(ctx, &o, o.StoreLog)
		if err != nil {
			return nil, err
		}
		defer m.Close()
		o.stripe = m
	default:
		return nil, fmt.Errorf("provider %q: want standin or stripe", o.Provider)
	}
	st := o.store(false)
	defer st.Kill()
	rg, err := startStocked(ctx, st, o)
	if err != nil {
		return nil, err
	}
	if o.stripe != nil {
		payer = &StripePayer{Client: rg.client, Mock: o.stripe, Secret: stripetest.WebhookSecret, LatePay: o.LatePay}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Go(func() { rg.sampler.Run(loadCtx) })
	shoppersDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(shoppersDone)
		Shoppers(loadCtx, rg.client, ShopperConfig{
			Concurrency: o.Concurrency, MaxPurchases: o.MaxPurchases, Decline: o.Decline, Abandon: o.Abandon,
			Replay: o.Replay, Seed: o.Seed, KeyPrefix: "chaos-" + strconv.FormatInt(o.Seed, 10) + "-",
			Carts: o.Carts, CartProducts: CartProducts, Stripe: payer,
		}, rg.ledger)
	}()

	rng := rand.New(rand.NewPCG(uint64(o.Seed), 0xc4a05))
	var downtimes []time.Duration
	for k := 1; k <= o.Kills; k++ {
		gap := o.KillGapMin + time.Duration(rng.Int64N(int64(o.KillGapMax-o.KillGapMin)+1))
		if rng.IntN(5) == 0 {
			// One kill in five lands within 50 ms of the restart: while the
			// store is still recovering what the previous kill interrupted.
			gap = time.Duration(rng.Int64N(int64(50 * time.Millisecond)))
		}
		select {
		case <-time.After(gap):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		killedAt := time.Now()
		st.Kill()
		r.KillTimes = append(r.KillTimes, killedAt.Sub(start))
		if _, err := st.Start(ctx); err != nil {
			return nil, fmt.Errorf("restart after kill %d: %w", k, err)
		}
		downtimes = append(downtimes, time.Since(killedAt))
		fmt.Fprintf(o.Progress, "kill %d/%d at %v, back in %v\n", k, o.Kills, killedAt.Sub(start).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))
	}
	r.Kills = len(downtimes)
	time.Sleep(time.Second) // some load on the last restarted store too
	stopLoad()
	<-shoppersDone
	wg.Wait()
	r.Elapsed = time.Since(start)
	r.Downtime = percentiles(downtimes)

	r.Tally, r.Settle, r.Checks, err = finish(ctx, &o, st, rg.sampler, rg.ledger)
	if err != nil {
		return nil, err
	}
	r.Errors = rg.stats.Errors()
	r.Checkout, r.Webhook = rg.stats.Latency("checkout"), rg.stats.Latency("webhook")
	return r, nil
}

func percentiles(l []time.Duration) Percentiles {
	s := NewStats()
	for _, d := range l {
		s.latency("x", d)
	}
	return s.Latency("x")
}

// Print writes the chaos report and the invariants.
func (r *ChaosReport) Print(w io.Writer) {
	provider := ""
	if r.Provider == "stripe" {
		provider = ", payments through Stripe (stripe-mock, signed events)"
	}
	fmt.Fprintf(w, "== chaos: %s%s, seed %d: %d SIGKILLs survived in %v\n", r.DB, provider, r.Seed, r.Kills, r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "  purchases          %s\n", r.Tally)
	fmt.Fprintf(w, "  kill → ready       %s\n", r.Downtime)
	fmt.Fprintf(w, "  POST /checkout     %s (answered attempts)\n", r.Checkout)
	if r.Provider == "stripe" {
		fmt.Fprintf(w, "  POST /webhooks/... %s (events, answered attempts)\n", r.Webhook)
	} else {
		fmt.Fprintf(w, "  POST /payment_...  %s\n", r.Webhook)
	}
	fmt.Fprintf(w, "  errors (retried)   %s\n", formatErrors(r.Errors))
	fmt.Fprintf(w, "  settled            %v after the load\n", r.Settle.Round(time.Millisecond))
	printInvariants(w, r.Checks, r.Seed)
}

// printInvariants writes the checks of a seeded run and how many failed.
func printInvariants(w io.Writer, checks Checks, seed int64) {
	fmt.Fprintln(w, "  invariants:")
	checks.Print(w)
	violations := 0
	for _, c := range checks {
		if !c.OK {
			violations++
		}
	}
	fmt.Fprintf(w, "  violations: %d (replay with -seed %d)\n", violations, seed)
}

// ----- restart under the supervisor -----

// RestartReport is what a crash-button restart looked like to clients.
type RestartReport struct {
	DB            string
	FirstSuccess  time.Duration // POST /crash_application → first 200 from the new process
	Refused       int           // connection refused, by the prober and the shoppers
	ProbeErrors   map[string]int
	InFlight      int           // purchases started before the crash and not finished at it
	InFlightDone  time.Duration // crash → the last of them acknowledged
	ShopperErrors map[string]int
	Tally         Tally
	Checks        Checks
}

// Restart runs the store under its supervisor (SUPERVISE=1) with shoppers,
// presses the crash button, and measures what clients saw.
func Restart(ctx context.Context, o Options) (*RestartReport, error) {
	o.defaults()
	r := &RestartReport{DB: o.DB.Kind, ProbeErrors: map[string]int{}}
	st := o.store(true)
	defer st.Kill()
	rg, err := startStocked(ctx, st, o)
	if err != nil {
		return nil, err
	}
	rg.client.MaxBackoff = 20 * time.Millisecond
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Go(func() { rg.sampler.Run(loadCtx) })
	shoppersDone := make(chan struct{})
	go func() {
		defer close(shoppersDone)
		Shoppers(loadCtx, rg.client, ShopperConfig{
			Concurrency: o.Concurrency, Decline: o.Decline, Seed: o.Seed,
			KeyPrefix: "restart-" + strconv.FormatInt(o.Seed, 10) + "-",
		}, rg.ledger)
	}()
	time.Sleep(o.RestartWarmup)

	// The prober: one new connection per request, as fast as answers come.
	type probe struct {
		end time.Time
		ok  bool
	}
	var probeMu sync.Mutex
	var probes []probe
	probeCtx, stopProbe := context.WithCancel(ctx)
	probeClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var probeWG sync.WaitGroup
	probeWG.Go(func() {
		for probeCtx.Err() == nil {
			req, _ := http.NewRequestWithContext(probeCtx, http.MethodGet, st.Base()+"/product", nil) // a constant, valid URL
			resp, err := probeClient.Do(req)
			ok := false
			if err == nil {
				resp.Body.Close()
				ok = resp.StatusCode == http.StatusOK
			}
			probeMu.Lock()
			probes = append(probes, probe{time.Now(), ok})
			if err != nil && probeCtx.Err() == nil {
				r.ProbeErrors[errorKind(err, Answer{})]++
			} else if err == nil && !ok {
				r.ProbeErrors[fmt.Sprintf("http %d", resp.StatusCode)]++
			}
			probeMu.Unlock()
		}
	})
	time.Sleep(100 * time.Millisecond)

	crashClient := &http.Client{Timeout: 10 * time.Second}
	crashed := time.Now()
	resp, err := crashClient.Post(st.Base()+"/crash_application", "", nil)
	if err == nil {
		resp.Body.Close()
		stopProbe()
		return nil, fmt.Errorf("crash_application answered %s; the store should have exited", resp.Status)
	}
	dead := time.Now()
	var inflight []*Purchase
	rg.ledger.mu.Lock()
	for _, p := range rg.ledger.purchases {
		if p.Started.Before(crashed) && (p.Finished.IsZero() || p.Finished.After(crashed)) {
			inflight = append(inflight, p)
		}
	}
	rg.ledger.mu.Unlock()
	r.InFlight = len(inflight)

	deadline := time.Now().Add(30 * time.Second)
	for r.FirstSuccess == 0 && time.Now().Before(deadline) {
		probeMu.Lock()
		for _, p := range probes {
			if p.ok && p.end.After(dead) {
				r.FirstSuccess = p.end.Sub(crashed)
				break
			}
		}
		probeMu.Unlock()
		time.Sleep(time.Millisecond)
	}
	for time.Now().Before(deadline) {
		rg.ledger.mu.Lock()
		var last time.Time
		done := true
		for _, p := range inflight {
			if p.Finished.IsZero() {
				done = false
				break
			}
			if p.Finished.After(last) {
				last = p.Finished
			}
		}
		rg.ledger.mu.Unlock()
		if done {
			if !last.IsZero() {
				r.InFlightDone = last.Sub(crashed)
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
	stopProbe()
	probeWG.Wait()
	time.Sleep(o.RestartAfterCrsh)
	stopLoad()
	<-shoppersDone
	wg.Wait()
	if r.FirstSuccess == 0 {
		return nil, errors.New("no request succeeded within 30s of the crash")
	}

	r.Tally, _, r.Checks, err = finish(ctx, &o, st, rg.sampler, rg.ledger)
	if err != nil {
		return nil, err
	}
	r.ShopperErrors = rg.stats.Errors()
	r.Refused = r.ProbeErrors["connection refused"] + rg.stats.ErrorCount("connection refused")
	return r, nil
}

// Print writes the restart report.
func (r *RestartReport) Print(w io.Writer) {
	fmt.Fprintf(w, "== crash-button restart under the supervisor: %s (store and tool on the same machine: %d CPUs)\n", r.DB, runtime.NumCPU())
	fmt.Fprintf(w, "  crash → first 200          %v (GET /product on a new connection each)\n", r.FirstSuccess.Round(100*time.Microsecond))
	fmt.Fprintf(w, "  refused connections        %d\n", r.Refused)
	fmt.Fprintf(w, "  in flight at the crash     %d purchases, all acknowledged %v after it\n", r.InFlight, r.InFlightDone.Round(100*time.Microsecond))
	fmt.Fprintf(w, "  prober errors              %s\n", formatErrors(r.ProbeErrors))
	fmt.Fprintf(w, "  shopper errors (retried)   %s\n", formatErrors(r.ShopperErrors))
	fmt.Fprintf(w, "  purchases                  %s\n", r.Tally)
	fmt.Fprintln(w, "  invariants:")
	r.Checks.Print(w)
}
