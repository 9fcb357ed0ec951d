package loadgen

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"widget-store/internal/shop"
)

// ----- many checkouts waiting for payment -----

// WaitingBuild is one store build the waiting scenario measures.
type WaitingBuild struct{ Name, Bin string }

// WaitingConfig says what the waiting scenario does.
type WaitingConfig struct {
	// Builds are measured on the same database: each idle first, then,
	// once N checkouts wait, restarted in turn (alternating when there are
	// two) Rounds times each.
	Builds []WaitingBuild
	N      int // checkouts started and left waiting for payment
	// Create is how many requests at once start the N checkouts (default 32).
	Create int
	// Shoppers buy and pay during each measurement (default 4): what a new
	// shopper sees.
	Shoppers int
	// Window is how long the shoppers' purchases are measured on an idle
	// store and on a store with N waiting (default 5s).
	Window time.Duration
	Rounds int // restarts per build (default 1)
	// RecoveryTimeout bounds the wait for every waiting checkout to wait
	// again after a restart (default 10m).
	RecoveryTimeout time.Duration
	// Profiles, when set, is a directory where the heap profile of each
	// steady state (N waiting, after a garbage collection) and a CPU
	// profile of the first CPUProfile of each recovery (from ready on) are
	// saved, for `go tool pprof`.
	Profiles string
}

// StoreState is a store's memory, goroutines and what a few shoppers saw.
type StoreState struct {
	RSS        int64 // VmRSS
	Heap       int64 // go_memstats_heap_inuse_bytes, after a garbage collection
	Goroutines int
	Waiting    int         // widget_checkouts_awaiting_payment, both executions
	Purchase   Percentiles // checkout → payment acknowledged, paid purchases
	// Path is what the store counted on the purchases' critical paths
	// meanwhile (nil for a build that does not count them).
	Path CriticalPath
}

// WaitingRound is one SIGKILL and restart of a build with N checkouts waiting.
type WaitingRound struct {
	Build string
	// From exec of the new process: /healthz answers 200; the first new
	// purchase is acknowledged (shoppers start at ready); every waiting
	// checkout waits again (widget_checkouts_awaiting_payment{execution=
	// "replayed"} reaches N), or RecoveryTimeout passed (Recovered 0).
	Ready, FirstPurchase, Recovered time.Duration
	RecoveredN                      int // the replayed gauge at the end of the recovery
	// AllStarted is when (from exec) DBOS had started every recovered
	// checkout: those at the store's recovery gate
	// (widget_checkouts_at_recovery_gate) and those past it reached N
	// (within the gate's few slots); 0 for a build without the gauge.
	AllStarted        time.Duration
	GatePeak          int // the most checkouts at the gate at once
	RSSPeak, HeapPeak int64
	GoroutinesPeak    int
	DuringRecovery    Percentiles // purchases started before the recovery ended
	// Phases are the purchases during the recovery by when they started:
	// in each PhaseLength from ready on.
	Phases []Percentiles
	// Slowest are the slowest paid purchases during the recovery: when
	// each started (from ready) and how long it took.
	Slowest [][2]time.Duration
	Steady  StoreState   // once recovered: N waiting
	Path    CriticalPath // the critical paths counted from the restart to the end of the recovery
}

// WaitingReport is what the waiting scenario measured.
type WaitingReport struct {
	DB         string
	N          int
	Created    int // checkouts answered with a payment id (the rest: an error)
	CreateTook time.Duration
	Idle       map[string]StoreState // by build, on the database before the N checkouts
	Loaded     StoreState            // the creating build, right after creating them (no restart yet)
	LoadedBy   string
	Rounds     []WaitingRound
	// Paid is the check at the end: of PaySample waiting checkouts paid
	// after the last recovery, how many were acknowledged with their order.
	PaySample, Paid int
	Shoppers        int
	Window          time.Duration
}

// Waiting measures a store with N checkouts waiting for payment: it starts
// them over HTTP (the store's own path: real DBOS workflows waiting in the
// real store) with a payment window far longer than the run, measures
// memory, goroutines and a few shoppers' purchases, then SIGKILLs and
// restarts the store and measures its recovery. Every build in cfg is
// measured on the same database, alternating. The database is left with
// the checkouts still waiting: the caller drops it.
func Waiting(ctx context.Context, o Options, cfg WaitingConfig) (*WaitingReport, error) {
	o.defaults()
	if cfg.Create == 0 {
		cfg.Create = 32
	}
	if cfg.Shoppers == 0 {
		cfg.Shoppers = 4
	}
	if cfg.Window == 0 {
		cfg.Window = 5 * time.Second
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 1
	}
	if cfg.RecoveryTimeout == 0 {
		cfg.RecoveryTimeout = 10 * time.Minute
	}
	if o.PaymentTimeout == 0 {
		o.PaymentTimeout = 6 * time.Hour // they wait through the whole run
	}
	if len(cfg.Builds) == 0 || cfg.N < 1 {
		return nil, errors.New("waiting: want at least one build and N ≥ 1")
	}
	r := &WaitingReport{DB: o.DB.Kind, N: cfg.N, Idle: map[string]StoreState{}, Shoppers: cfg.Shoppers, Window: cfg.Window}
	st := o.store(false)
	defer st.Kill()
	var purchaseSeq atomic.Int64
	prefix := func() string { return fmt.Sprintf("w%d-%d-", o.Seed, purchaseSeq.Add(1)) }

	// Idle: each build on the database before any checkout waits.
	for i, b := range cfg.Builds {
		st.Kill()
		st.Bin = b.Bin
		if _, err := st.Start(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name, err)
		}
		if i == 0 {
			// 1,000,000 is the most a restock sets.
			if err := restock(ctx, st.Base(), 1, min(o.Stock+cfg.N, 1_000_000), new(atomic.Int64)); err != nil {
				return nil, err
			}
		}
		s, err := measureState(ctx, st, o, cfg, prefix(), "")
		if err != nil {
			return nil, fmt.Errorf("%s idle: %w", b.Name, err)
		}
		r.Idle[b.Name] = s
		// Let the purchases' dispatches end, so that the next build's idle
		// figures do not include their recovery.
		time.Sleep((shop.DispatchLegs + 1) * time.Second)
		fmt.Fprintf(o.Progress, "%s idle: %s\n", b.Name, s)
	}

	// The N checkouts, started by the last build, left waiting.
	r.LoadedBy = cfg.Builds[len(cfg.Builds)-1].Name
	fmt.Fprintf(o.Progress, "starting %d checkouts (%d at a time)…\n", cfg.N, cfg.Create)
	began := time.Now()
	var err error
	if r.Created, err = startWaiting(ctx, st, o, cfg); err != nil {
		return nil, err
	}
	r.CreateTook = time.Since(began)
	fmt.Fprintf(o.Progress, "%d checkouts waiting after %v (%.0f/s)\n", r.Created, r.CreateTook.Round(time.Millisecond), float64(r.Created)/r.CreateTook.Seconds())
	if r.Loaded, err = measureState(ctx, st, o, cfg, prefix(), filepath.Join(cfg.Profiles, "loaded-"+r.LoadedBy+".heap")); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "%s with %d waiting: %s\n", r.LoadedBy, r.Created, r.Loaded)

	// SIGKILL and restart, alternating the builds.
	for round := 1; round <= cfg.Rounds; round++ {
		order := cfg.Builds
		if round%2 == 0 && len(order) == 2 {
			order = []WaitingBuild{order[1], order[0]}
		}
		for _, b := range order {
			wr, err := recoverWaiting(ctx, st, b, o, cfg, r.Created, prefix, fmt.Sprintf("round%d-%s.heap", round, b.Name))
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", b.Name, round, err)
			}
			r.Rounds = append(r.Rounds, *wr)
			fmt.Fprintf(o.Progress, "round %d %s: ready %v, first purchase %v, recovered %v (%d), during recovery %s\n",
				round, b.Name, wr.Ready.Round(time.Millisecond), wr.FirstPurchase.Round(time.Millisecond),
				wr.Recovered.Round(time.Millisecond), wr.RecoveredN, wr.DuringRecovery)
		}
	}

	// They really wait: pay a few and expect their orders.
	r.PaySample = min(20, r.Created)
	c := NewClient(st.Base(), r.PaySample, o.RequestTimeout)
	var wg sync.WaitGroup
	var paid atomic.Int64
	for i := range r.PaySample {
		wg.Go(func() {
			a, _, err := c.Pay(ctx, waitingKey(o.Seed, i*max(1, r.Created/r.PaySample)), "paid")
			if err == nil && a.Status == http.StatusOK {
				paid.Add(1)
			}
		})
	}
	wg.Wait()
	r.Paid = int(paid.Load())
	return r, nil
}

func waitingKey(seed int64, i int) string {
	return "waiting-" + strconv.FormatInt(seed, 10) + "-" + strconv.Itoa(i)
}

// startWaiting starts cfg.N checkouts, cfg.Create at a time, and pays none.
func startWaiting(ctx context.Context, st *Store, o Options, cfg WaitingConfig) (int, error) {
	c := NewClient(st.Base(), cfg.Create, o.RequestTimeout)
	var next, ok atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	step := max(cfg.N/10, 1)
	for range cfg.Create {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.N || ctx.Err() != nil {
					return
				}
				a, _, err := c.Checkout(ctx, waitingKey(o.Seed, i))
				if err == nil && a.Status != http.StatusOK {
					err = fmt.Errorf("checkout %d: %s", i, a)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					continue
				}
				if n := ok.Add(1); n%int64(step) == 0 {
					fmt.Fprintf(o.Progress, "  %d waiting\n", n)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() == 0 && firstErr != nil {
		return 0, firstErr
	}
	return int(ok.Load()), nil
}

// measureState lets the store settle, measures its memory after a garbage
// collection (saving the heap profile to profile, when set and the
// directory is), then a few shoppers' purchases for cfg.Window.
func measureState(ctx context.Context, st *Store, o Options, cfg WaitingConfig, keyPrefix, profile string) (StoreState, error) {
	var s StoreState
	time.Sleep(time.Second)
	if err := heapProfile(ctx, st.Base(), profile, cfg.Profiles != ""); err != nil {
		return s, err
	}
	m, err := readMetrics(ctx, st.Base())
	if err != nil {
		return s, err
	}
	if s.RSS, err = st.RSS(); err != nil {
		return s, err
	}
	s.Heap, s.Goroutines, s.Waiting = int64(m["go_memstats_heap_inuse_bytes"]), int(m["go_goroutines"]), int(m[awaitingNew]+m[awaitingReplayed])
	before, err := ReadCriticalPath(ctx, st.Base())
	s.Purchase = purchases(ctx, st, o, cfg, keyPrefix, nil)
	if err == nil {
		if after, err := ReadCriticalPath(ctx, st.Base()); err == nil {
			s.Path = after.Sub(before)
		}
	}
	return s, nil
}

// purchases runs cfg.Shoppers shoppers until ctx ends or, when until is
// nil, for cfg.Window, and returns the latencies of the paid purchases.
func purchases(ctx context.Context, st *Store, o Options, cfg WaitingConfig, keyPrefix string, ledger *Ledger) Percentiles {
	if ledger == nil {
		ledger = &Ledger{}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Window)
		defer cancel()
	}
	c := NewClient(st.Base(), cfg.Shoppers, o.RequestTimeout)
	Shoppers(ctx, c, ShopperConfig{Concurrency: cfg.Shoppers, Seed: o.Seed, KeyPrefix: keyPrefix}, ledger)
	return paidLatencies(ledger.Purchases(), time.Time{})
}

// paidLatencies are the purchase times of the paid purchases started before
// `before` (zero: all).
func paidLatencies(ps []Purchase, before time.Time) Percentiles {
	var l []time.Duration
	for _, p := range ps {
		if p.Payment.Status == http.StatusOK && !p.Finished.IsZero() && (before.IsZero() || p.Started.Before(before)) {
			l = append(l, p.Finished.Sub(p.Started))
		}
	}
	return percentiles(l)
}

const (
	awaitingNew      = `widget_checkouts_awaiting_payment{execution="new"}`
	awaitingReplayed = `widget_checkouts_awaiting_payment{execution="replayed"}`
	atGate           = `widget_checkouts_at_recovery_gate`
)

// recoverWaiting SIGKILLs the store, starts build b on the same database,
// and measures the recovery of the n waiting checkouts while shoppers buy.
func recoverWaiting(ctx context.Context, st *Store, b WaitingBuild, o Options, cfg WaitingConfig, n int, prefix func() string, profile string) (*WaitingRound, error) {
	wr := &WaitingRound{Build: b.Name}
	st.Kill()
	st.Bin = b.Bin
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	var rss RSSSampler
	var wg sync.WaitGroup
	wg.Go(func() { rss.Run(bg, st, 50*time.Millisecond) })
	exec := time.Now()
	var err error
	if wr.Ready, err = st.Start(ctx); err != nil {
		return nil, err
	}
	if cfg.Profiles != "" {
		wg.Go(func() {
			path := filepath.Join(cfg.Profiles, strings.TrimSuffix(profile, ".heap")+".cpu")
			body, err := get(ctx, fmt.Sprintf("%s/admin/debug/pprof/cpu?seconds=%d", st.Base(), int(CPUProfile.Seconds())))
			if err == nil {
				err = os.WriteFile(path, body, 0o644)
			}
			if err != nil {
				fmt.Fprintf(o.Progress, "CPU profile of the recovery: %v\n", err)
			}
		})
	}
	ledger := &Ledger{}
	shopCtx, stopShopping := context.WithCancel(ctx)
	shopped := make(chan struct{})
	go func() {
		defer close(shopped)
		purchases(shopCtx, st, o, cfg, prefix(), ledger)
	}()
	deadline := time.Now().Add(cfg.RecoveryTimeout)
	var recoveredAt time.Time
	for recoveredAt.IsZero() && time.Now().Before(deadline) && ctx.Err() == nil {
		m, err := readMetrics(ctx, st.Base())
		if err == nil {
			wr.HeapPeak = max(wr.HeapPeak, int64(m["go_memstats_heap_inuse_bytes"]))
			wr.GoroutinesPeak = max(wr.GoroutinesPeak, int(m["go_goroutines"]))
			wr.RecoveredN = int(m[awaitingReplayed])
			gate, ok := m[atGate]
			wr.GatePeak = max(wr.GatePeak, int(gate))
			if ok && wr.AllStarted == 0 && int(gate)+wr.RecoveredN >= n-4 {
				wr.AllStarted = time.Since(exec)
			}
			if wr.RecoveredN >= n {
				recoveredAt = time.Now()
				wr.Recovered = recoveredAt.Sub(exec)
			}
		}
		if recoveredAt.IsZero() {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if recoveredAt.IsZero() {
		recoveredAt = time.Now()
	}
	stopShopping()
	<-shopped
	if cp, err := ReadCriticalPath(ctx, st.Base()); err == nil {
		wr.Path = cp
	}
	stopBG()
	wg.Wait()
	wr.RSSPeak = rss.Max()
	ps := ledger.Purchases()
	wr.DuringRecovery = paidLatencies(ps, recoveredAt)
	ready := exec.Add(wr.Ready)
	for from := ready; from.Before(recoveredAt); from = from.Add(PhaseLength) {
		var in []Purchase
		for _, p := range ps {
			if !p.Started.Before(from) && p.Started.Before(from.Add(PhaseLength)) {
				in = append(in, p)
			}
		}
		wr.Phases = append(wr.Phases, paidLatencies(in, recoveredAt))
	}
	for _, p := range ps {
		if p.Payment.Status == http.StatusOK && !p.Finished.IsZero() && p.Started.Before(recoveredAt) {
			wr.Slowest = append(wr.Slowest, [2]time.Duration{p.Started.Sub(ready), p.Finished.Sub(p.Started)})
		}
	}
	slices.SortFunc(wr.Slowest, func(a, b [2]time.Duration) int { return cmp.Compare(b[1], a[1]) })
	wr.Slowest = wr.Slowest[:min(len(wr.Slowest), 8)]
	for _, p := range ps {
		if p.Payment.Status == http.StatusOK && (wr.FirstPurchase == 0 || p.Finished.Sub(exec) < wr.FirstPurchase) {
			wr.FirstPurchase = p.Finished.Sub(exec)
		}
	}
	if cfg.Profiles != "" {
		profile = filepath.Join(cfg.Profiles, profile)
	}
	if wr.Steady, err = measureState(ctx, st, o, cfg, prefix(), profile); err != nil {
		return nil, err
	}
	return wr, nil
}

// PhaseLength is the span of each of WaitingRound.Phases; CPUProfile how
// long the CPU profile of a recovery lasts.
const (
	PhaseLength = 5 * time.Second
	CPUProfile  = 15 * time.Second
)

// readMetrics reads the store's /metrics into a map by series (name with
// its labels, as printed).
func readMetrics(ctx context.Context, base string) (map[string]float64, error) {
	body, err := get(ctx, base+"/metrics")
	if err != nil {
		return nil, err
	}
	return parseMetrics(body), nil
}

// heapProfile fetches the store's heap profile after a garbage collection
// (which is what makes the heap figure that follows a live one), and saves
// it to path when save is set.
func heapProfile(ctx context.Context, base, path string, save bool) error {
	body, err := get(ctx, base+"/admin/debug/pprof/heap?gc=1")
	if err != nil || !save || path == "" {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

func get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() // read to the end below
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, err
}

func parseMetrics(b []byte) map[string]float64 {
	m := map[string]float64{}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if sp := bytes.LastIndexByte(line, ' '); sp > 0 {
			if v, err := strconv.ParseFloat(string(line[sp+1:]), 64); err == nil {
				m[string(line[:sp])] = v
			}
		}
	}
	return m
}

func (s StoreState) String() string {
	return fmt.Sprintf("RSS %.1f MB, heap %.1f MB, %d goroutines, %d waiting; purchase %s", mb(s.RSS), mb(s.Heap), s.Goroutines, s.Waiting, s.Purchase)
}

// Print writes the waiting scenario's report.
func (r *WaitingReport) Print(w io.Writer) {
	fmt.Fprintf(w, "== %d checkouts waiting for payment: %s, %d shoppers buying during each %v measurement\n", r.N, r.DB, r.Shoppers, r.Window)
	fmt.Fprintf(w, "  started            %d in %v (%.0f/s)\n", r.Created, r.CreateTook.Round(time.Millisecond), float64(r.Created)/r.CreateTook.Seconds())
	for name, s := range r.Idle {
		fmt.Fprintf(w, "  idle %-13s %s\n", name, s)
	}
	fmt.Fprintf(w, "  loaded %-11s %s\n", r.LoadedBy, r.Loaded)
	perCheckout(w, r.Loaded, r.Idle[r.LoadedBy], r.Created)
	for i, wr := range r.Rounds {
		idle := r.Idle[wr.Build]
		fmt.Fprintf(w, "  restart %d, %s (SIGKILL with %d waiting):\n", i+1, wr.Build, r.Created)
		fmt.Fprintf(w, "    exec → ready                %v\n", wr.Ready.Round(100*time.Microsecond))
		fmt.Fprintf(w, "    exec → first new purchase   %v\n", wr.FirstPurchase.Round(100*time.Microsecond))
		if wr.Recovered > 0 {
			fmt.Fprintf(w, "    exec → all waiting again    %v\n", wr.Recovered.Round(time.Millisecond))
		} else {
			fmt.Fprintf(w, "    exec → all waiting again    NOT within the timeout (%d of %d)\n", wr.RecoveredN, r.Created)
		}
		if wr.AllStarted > 0 {
			fmt.Fprintf(w, "    exec → DBOS started all     %v (at the gate at most %d)\n", wr.AllStarted.Round(time.Millisecond), wr.GatePeak)
		}
		fmt.Fprintf(w, "    peak during recovery        RSS %.1f MB, heap %.1f MB, %d goroutines\n", mb(wr.RSSPeak), mb(wr.HeapPeak), wr.GoroutinesPeak)
		fmt.Fprintf(w, "    purchases during recovery   %s\n", wr.DuringRecovery)
		for i, p := range wr.Phases {
			fmt.Fprintf(w, "      started ready+%3ds        %s\n", i*int(PhaseLength.Seconds()), p)
		}
		for _, sl := range wr.Slowest {
			fmt.Fprintf(w, "      slow: started ready+%-8s took %s\n", ms(sl[0]), ms(sl[1]))
		}
		wr.Path.Print(w, r.DB == "sqlite")
		fmt.Fprintf(w, "    idle store's purchases      %s\n", idle.Purchase)
		idle.Path.Print(w, r.DB == "sqlite")
		if idle.Purchase.P99 > 0 && wr.DuringRecovery.N > 0 {
			fmt.Fprintf(w, "    p99 during recovery ÷ idle  %.2f×\n", float64(wr.DuringRecovery.P99)/float64(idle.Purchase.P99))
		}
		fmt.Fprintf(w, "    recovered, steady           %s\n", wr.Steady)
		perCheckout(w, wr.Steady, idle, r.Created)
	}
	fmt.Fprintf(w, "  paid after the last recovery: %d of %d waiting checkouts acknowledged with their order\n", r.Paid, r.PaySample)
}

func perCheckout(w io.Writer, s, idle StoreState, n int) {
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "    per waiting checkout         RSS %.1f KB, heap %.1f KB, %.2f goroutines; purchase p50 %.2f×, p99 %.2f× the idle store's\n",
		float64(s.RSS-idle.RSS)/1024/float64(n), float64(s.Heap-idle.Heap)/1024/float64(n), float64(s.Goroutines-idle.Goroutines)/float64(n),
		ratio(s.Purchase.P50, idle.Purchase.P50), ratio(s.Purchase.P99, idle.Purchase.P99))
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
