package storetest

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
)

// The chaos and load tests drive the real binary with internal/loadgen, the
// engine of cmd/loadtest: concurrent shoppers that retry like careful
// clients, random SIGKILLs, then the invariants checked on the database.

// envInt reads a whole-number setting from the environment, or def.
func envInt(t *testing.T, key string, def int64) int64 {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: want a whole number", key, s)
	}
	return v
}

// TestChaos kills the store at random moments under load and checks every
// invariant afterwards. The short form (4 kills) runs in CI; the long one:
//
//	CHAOS_KILLS=20 go test -run TestChaos -v ./internal/storetest
//
// or go run ./cmd/loadtest -mode chaos. CHAOS_SEED replays a failed run.
func TestChaos(t *testing.T) { runChaos(t, false) }

// TestChaosCarts is TestChaos with carts: each purchase a random cart of 1–3
// lines (quantities 1–3) of the seeded catalog, every product with little
// stock, so lines sell out while the store is killed; the stock is checked
// per product.
func TestChaosCarts(t *testing.T) { runChaos(t, true) }

// TestChaosStripe is TestChaos with PAYMENT_PROVIDER=stripe: the store
// against stripe-mock (behind internal/stripetest's recording proxy), carts
// checked out as Checkout Sessions and paid with signed events (paid cards,
// async payments in and out of order, failures, expiries, payments after the
// store expired the session, redeliveries); besides the invariants, check 7
// holds what Stripe was asked: one session per key under one
// Idempotency-Key, expiries only of unpaid orders, at most one refund per
// key and only of late payments.
func TestChaosStripe(t *testing.T) { runChaosWith(t, true, "stripe") }

func runChaos(t *testing.T, carts bool) { runChaosWith(t, carts, "") }

func runChaosWith(t *testing.T, carts bool, provider string) {
	if testing.Short() {
		t.Skip("builds the binary and kills it repeatedly")
	}
	kills := int(envInt(t, "CHAOS_KILLS", 4))
	seed := envInt(t, "CHAOS_SEED", time.Now().UnixNano()%1_000_000)
	bin := Binary(t)
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		t.Logf("seed %d (CHAOS_SEED=%d replays it), %d kills", seed, seed, kills)
		var progress strings.Builder
		r, err := loadgen.Chaos(context.Background(), loadgen.Options{
			Bin: bin, DB: db, Concurrency: 4, Kills: kills, Seed: seed,
			Decline: 0.2, Abandon: 0.05, Replay: 0.2, PaymentTimeout: 5 * time.Second,
			// Little stock, so checkouts also sell out, and declined and
			// abandoned units come back, while the store is being killed.
			Stock: 150, Carts: carts, Provider: provider, LatePay: 0.1,
			StoreLog: LogWriter(t, ""), Progress: &progress,
		})
		if err != nil {
			t.Fatalf("chaos (seed %d): %v\n%s", seed, err, progress.String())
		}
		var out strings.Builder
		r.Print(&out)
		t.Log("\n" + out.String())
		if r.Kills != kills {
			t.Errorf("%d kills survived, want %d", r.Kills, kills)
		}
		if r.Tally.Paid == 0 {
			t.Errorf("no purchase was paid: the load did nothing")
		}
		if r.Tally.GaveUp != 0 {
			t.Errorf("%d purchases never answered", r.Tally.GaveUp)
		}
		if provider == "stripe" && len(r.Checks) != 7 {
			t.Errorf("%d checks, want 7: the Stripe calls were not checked", len(r.Checks))
		}
		if !r.Checks.OK() {
			t.Errorf("invariants violated (seed %d): see above", seed)
		}
	})
}

// TestLoadToolSmoke runs cmd/loadtest's load mode for a few seconds so the
// tool cannot rot. It asserts what the tool measured is correct, never how
// fast: the machine is shared.
func TestLoadToolSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and loads the binary")
	}
	bin := Binary(t)
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		r, err := loadgen.Load(context.Background(), loadgen.Options{
			Bin: bin, DB: db, Concurrency: 4, Duration: 3 * time.Second, Seed: 1, StoreLog: LogWriter(t, ""),
		})
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		r.Print(&out)
		t.Log("\n" + out.String())
		if r.Tally.Paid == 0 || r.Checkout.N < r.Tally.Paid || r.Webhook.N < r.Tally.Paid {
			t.Errorf("paid %d, checkout latencies %d, webhook latencies %d: want purchases, each timed", r.Tally.Paid, r.Checkout.N, r.Webhook.N)
		}
		if r.Tally.GaveUp != 0 || r.Tally.SoldOut != 0 {
			t.Errorf("tally %s: want every purchase answered and none sold out", r.Tally)
		}
		if r.RSSIdle <= 0 || r.RSSLoad <= 0 || r.StartupFresh <= 0 || r.StartupExisting <= 0 {
			t.Errorf("RSS %d/%d, startup %v/%v: not measured", r.RSSIdle, r.RSSLoad, r.StartupFresh, r.StartupExisting)
		}
		if db.Kind == "postgres" && r.Commits < int64(r.Tally.Paid) {
			t.Errorf("%d commits for %d paid purchases: each purchase commits several times", r.Commits, r.Tally.Paid)
		}
		if !r.Checks.OK() {
			t.Errorf("invariants violated under load")
		}
		// The critical path is counted for every request; the webhook's
		// answer is its own commit (the order read and settled in one
		// transaction, internal/paywait): not the checkout's settle step or
		// the dispatch's start, which follow it (workflow.go).
		if r.CriticalErr != nil {
			t.Fatalf("critical path not counted: %v", r.CriticalErr)
		}
		for _, kind := range loadgen.PathKinds {
			if n := r.Critical[kind].Requests; n < float64(r.Tally.Paid) {
				t.Errorf("critical path of %d %s requests counted, want at least the %d paid purchases'", int(n), kind, r.Tally.Paid)
			}
		}
		if _, commits, _, _, _ := r.Critical.PerRequest("checkout"); commits < 1.99 || commits > 2.5 {
			t.Errorf("%.2f commits per checkout, want 2 (DBOS's start of the workflow, the reserve)", commits)
		}
		if _, commits, _, _, _ := r.Critical.PerRequest("webhook"); commits < 0.99 || commits > 1.5 {
			t.Errorf("%.2f commits per webhook, want 1 (the order read and settled, one transaction; not the checkout's settle step or the dispatch's start)", commits)
		}
	})
}

// TestWaitingModeSmoke runs cmd/loadtest's waiting mode small (200 checkouts
// left waiting, SIGKILL, restart) so the tool cannot rot, and holds the
// recovery to what a user would notice: every waiting checkout waits again
// after the crash (the store's gauge says so) and those paid afterwards are
// acknowledged with their orders.
func TestWaitingModeSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and restarts it")
	}
	bin := Binary(t)
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		r, err := loadgen.Waiting(context.Background(), loadgen.Options{Bin: bin, DB: db, Seed: 1, StoreLog: LogWriter(t, "")},
			loadgen.WaitingConfig{Builds: []loadgen.WaitingBuild{{Name: "this", Bin: bin}}, N: 200, Create: 8, Shoppers: 2,
				Window: time.Second, RecoveryTimeout: 2 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		r.Print(&out)
		t.Log("\n" + out.String())
		if r.Created != 200 || r.Loaded.Waiting < 200 {
			t.Errorf("%d checkouts started, %d waiting: want 200 each", r.Created, r.Loaded.Waiting)
		}
		for _, wr := range r.Rounds {
			if wr.Recovered <= 0 || wr.RecoveredN < 200 || wr.Steady.Waiting < 200 {
				t.Errorf("after the SIGKILL: %d of 200 waiting again (recovered after %v), %d waiting once steady", wr.RecoveredN, wr.Recovered, wr.Steady.Waiting)
			}
			if wr.Ready <= 0 || wr.FirstPurchase <= 0 || wr.RSSPeak <= 0 {
				t.Errorf("ready %v, first purchase %v, RSS peak %d: not measured", wr.Ready, wr.FirstPurchase, wr.RSSPeak)
			}
		}
		if r.Paid != r.PaySample || r.PaySample == 0 {
			t.Errorf("%d of %d waiting checkouts paid after the recovery acknowledged: want all", r.Paid, r.PaySample)
		}
	})
}
