package storetest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// Several instances on one Postgres, as real processes of the built binary:
// one SIGKILLed under load and kept down (the survivors take over exactly
// what it held, once), then brought back (nothing runs twice); two
// survivors racing to claim one dead peer; an instance frozen (SIGSTOP) past
// TAKEOVER_AFTER and thawed; and Postgres itself restarted under load.

const (
	// takeoverAfter is TAKEOVER_AFTER in these tests, short to keep them short.
	takeoverAfter = 3 * time.Second
	// clusterPaymentTimeout is PAYMENT_TIMEOUT: abandoned checkouts end after it.
	clusterPaymentTimeout = 12 * time.Second
	// clusterStock is the inventory the tests start from, enough not to sell out.
	clusterStock = 1_000_000
	// clusterSettle bounds the wait for every order to end once the load
	// stops: a payment window, a dispatch, and room for a slow machine.
	clusterSettle = 60 * time.Second
)

// Metrics the tests read.
const (
	peersTakenOver     = "widget_peers_taken_over_total"
	workflowsTakenOver = "widget_workflows_taken_over_total"
	workflowsRecovered = "widget_workflows_recovered_total"
	heartbeats         = "widget_heartbeats_total"
	checkoutsStarted   = "widget_checkouts_total"
)

// clusterEnv is every instance's environment beyond its executor ID.
func clusterEnv(paymentTimeout time.Duration) []string {
	return []string{"TAKEOVER_AFTER=" + takeoverAfter.String(), "PAYMENT_TIMEOUT=" + paymentTimeout.String()}
}

// clusterShoppers is n careful shoppers: one payment in 8 declined, one
// checkout in 16 abandoned (it waits out its payment window).
func clusterShoppers(t *testing.T, n int, prefix string) loadgen.ShopperConfig {
	seed := time.Now().UnixNano() % 1_000_000
	t.Logf("shoppers: %d, seed %d", n, seed)
	return loadgen.ShopperConfig{Concurrency: n, Decline: 1.0 / 8, Abandon: 1.0 / 16, Seed: seed, KeyPrefix: prefix}
}

// checkout is POST /checkout/{key} on st, which must answer 200 with the
// payment id, in one call.
func checkout(t testing.TB, st *Store, key string) string {
	t.Helper()
	return strings.TrimSpace(MustCall(t, "POST", st.URL("/checkout/"+key), http.StatusOK))
}

// payOn is the payment webhook for pid on st, which must answer 200 with
// the order id, in one call.
func payOn(t testing.TB, st *Store, pid string) string {
	t.Helper()
	return strings.TrimSpace(MustCall(t, "POST", st.URL("/payment_webhook/"+pid+"/paid"), http.StatusOK))
}

// paid and abandoned are the records of purchases the test made call by
// call, for the invariants.
func paid(key, pid, orderID string) loadgen.Purchase {
	return loadgen.Purchase{Key: key, Checkout: loadgen.Answer{Status: http.StatusOK, Body: pid},
		Sent: "paid", Payment: loadgen.Answer{Status: http.StatusOK, Body: orderID}}
}

func abandoned(key, pid string) loadgen.Purchase {
	return loadgen.Purchase{Key: key, Checkout: loadgen.Answer{Status: http.StatusOK, Body: pid}}
}

// heldWorkflow is a workflow PENDING under a given executor.
type heldWorkflow struct {
	id, name string
}

func pendingUnder(t testing.TB, c *Cluster, executor string) []heldWorkflow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := c.Pool.Query(ctx, `SELECT workflow_uuid, name FROM dbos.workflow_status WHERE executor_id = $1 AND status = 'PENDING'`, executor)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var held []heldWorkflow
	for rows.Next() {
		var h heldWorkflow
		if err := rows.Scan(&h.id, &h.name); err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return held
}

// TestClusterTakeover: three instances, round-robin shoppers; one instance
// is SIGKILLed mid-load and stays down; the survivors take over what it
// held, exactly once. Then it comes back and must run nothing twice.
func TestClusterTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three store processes")
	}
	c := StartCluster(t, NewPostgresDB(t), clusterEnv(clusterPaymentTimeout), "node-0", "node-1", "node-2")
	c.SetStock(t, clusterStock)
	const victimID = "node-1"
	n0, victim, n2 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	survivors := []*Store{n0, n2}
	var direct []loadgen.Purchase // what the test bought itself, call by call

	phase(t, "a checkout on node-0 paid on the same instance and across instances", func(t *testing.T) {
		// The webhook answers once the checkout has published the order's
		// outcome: through node-1, the checkout is woken across processes.
		lat := map[bool][]time.Duration{}
		for i := range 40 {
			cross := i%2 == 0
			key := "lat-" + RandomHex(6)
			pid := checkout(t, n0, key)
			on := n0
			if cross {
				on = victim
			}
			began := time.Now()
			orderID := payOn(t, on, pid)
			lat[cross] = append(lat[cross], time.Since(began))
			direct = append(direct, paid(key, pid, orderID))
		}
		same, across := loadgen.PercentilesOf(lat[false]), loadgen.PercentilesOf(lat[true])
		t.Logf("MEASURED checkout on node-0 → pay: same instance p50 %v p90 %v; across instances p50 %v p90 %v",
			same.P50, same.P90, across.P50, across.P90)
	})

	var (
		fo       *loadgen.Failover
		bought   []loadgen.Purchase // the shoppers'
		killedAt time.Time
		held     []heldWorkflow
		victimAb []string // abandoned checkouts the test made on the victim
	)
	phase(t, "node-1 SIGKILLed under load while it holds checkouts and dispatches", func(t *testing.T) {
		// Each shopper checks out on the next instance and pays through
		// the one after it; a call that fails moves on to the next.
		fo = loadgen.NewFailover(c.Bases(), 9, 90*time.Second)
		shoppers := StartShoppers(t, fo, clusterShoppers(t, 9, "c-"))
		WaitUntil(t, 30*time.Second, "node-1 holds 2 checkouts awaiting payment and 3 dispatches at once", func() bool {
			var checkouts, dispatches int
			c.QueryRow(t, `SELECT count(*) FILTER (WHERE name = 'checkout'), count(*) FILTER (WHERE name = 'dispatch')
				FROM dbos.workflow_status WHERE executor_id = $1 AND status = 'PENDING'`, victimID).Scan(&checkouts, &dispatches)
			return checkouts >= 2 && dispatches >= 3
		})
		// Abandoned checkouts on the victim: their payment deadline must
		// hold on the survivor that takes them over.
		for range 2 {
			key := "ab-" + RandomHex(6)
			direct = append(direct, abandoned(key, checkout(t, victim, key)))
			victimAb = append(victimAb, key)
		}
		victim.Kill()
		killedAt = time.Now()
		held = pendingUnder(t, c, victimID)
		t.Logf("node-1 SIGKILLed holding %d pending workflows", len(held))
		// The load goes on through the takeover, and a while after it.
		WaitUntil(t, takeoverAfter+15*time.Second, "a survivor claims node-1", func() bool { return c.TakenOverBy(t, victimID) != "" })
		claimed := time.Now()
		WaitUntil(t, 30*time.Second, "9 purchases complete after the claim", func() bool { return shoppers.Ledger.FinishedSince(claimed) >= 9 })
		bought = shoppers.Stop()
	})

	phase(t, "every workflow node-1 held resumes on a survivor and ends on schedule", func(t *testing.T) {
		// Each must be running on a survivor within TAKEOVER_AFTER + 5 s of
		// the kill, and end as soon as its own schedule then allows: a
		// checkout whose shopper pays or declines (retrying on another
		// instance) right away; an abandoned one when its payment window
		// closes; a dispatch after its remaining legs (one second each,
		// counted from the previous leg, so a dispatch resumed late ends
		// late).
		takeoverBound := killedAt.Add(takeoverAfter + 5*time.Second)
		ab := slices.Clone(victimAb)
		for _, p := range bought {
			if p.Checkout.Status == http.StatusOK && p.Sent == "" {
				ab = append(ab, p.Key)
			}
		}
		var lastStart, lastEnd, lastDispatchEnd time.Time
		for _, h := range held {
			bound := takeoverBound
			switch {
			case h.name == "dispatch":
				bound = takeoverBound.Add(shop.DispatchLegs * time.Second)
			case slices.Contains(ab, h.id):
				// The payment window is durable from the moment the wait
				// began: before the kill, or at the latest on the survivor.
				bound = takeoverBound.Add(clusterPaymentTimeout)
			}
			var status, executor string
			var startedMs, updatedMs *int64
			for {
				c.QueryRow(t, `SELECT status, coalesce(executor_id, ''), started_at_epoch_ms, updated_at FROM dbos.workflow_status WHERE workflow_uuid = $1`, h.id).
					Scan(&status, &executor, &startedMs, &updatedMs)
				if status == "SUCCESS" || time.Now().After(bound.Add(time.Second)) {
					break
				}
				time.Sleep(50 * time.Millisecond) // the polling interval
			}
			if status != "SUCCESS" {
				t.Fatalf("held workflow %s (%s): %s on %q, not done %v after the kill (bound %v)", h.id, h.name, status, executor,
					time.Since(killedAt).Round(time.Millisecond), bound.Sub(killedAt).Round(time.Millisecond))
			}
			end := time.UnixMilli(*updatedMs)
			if executor == victimID {
				// A COMMIT the victim sent just before SIGKILL may reach
				// Postgres after the snapshot saw the workflow PENDING: it then
				// ends under the victim, stamped (by the victim's clock)
				// before the kill.
				if !end.After(killedAt) {
					t.Logf("held workflow %s was completed by the victim's last commit, in flight at the kill", h.id)
					continue
				}
				t.Errorf("held workflow %s finished under the dead executor", h.id)
			}
			if end.After(bound) {
				t.Errorf("held workflow %s (%s) ended %v after the kill; bound %v", h.id, h.name,
					end.Sub(killedAt).Round(time.Millisecond), bound.Sub(killedAt).Round(time.Millisecond))
			}
			if startedMs == nil || time.UnixMilli(*startedMs).After(takeoverBound) {
				t.Errorf("held workflow %s (%s) was not running on a survivor within %v of the kill (started %v)", h.id, h.name, takeoverBound.Sub(killedAt), startedMs)
			} else {
				lastStart = later(lastStart, time.UnixMilli(*startedMs))
			}
			switch {
			case h.name == "dispatch":
				lastDispatchEnd = later(lastDispatchEnd, end)
			case !slices.Contains(ab, h.id):
				lastEnd = later(lastEnd, end)
			}
		}
		t.Logf("MEASURED takeover (TAKEOVER_AFTER %v): kill → last held workflow running on a survivor %v; → last held paid/declined checkout final %v; → last held dispatch DISPATCHED %v",
			takeoverAfter, lastStart.Sub(killedAt).Round(time.Millisecond), lastEnd.Sub(killedAt).Round(time.Millisecond), lastDispatchEnd.Sub(killedAt).Round(time.Millisecond))
	})

	phase(t, "exactly one survivor claimed node-1 and resumed what it held", func(t *testing.T) {
		by := c.TakenOverBy(t, victimID)
		if by != n0.ExecutorID() && by != n2.ExecutorID() {
			t.Errorf("node-1 taken over by %q, want a survivor", by)
		}
		// The snapshot of what node-1 held was taken right after the kill,
		// and a COMMIT it sent just before dying (a workflow start) can
		// reach Postgres after that snapshot: the resumed count may exceed
		// it by such a straggler.
		peers := SumMetric(t, peersTakenOver, "", survivors...)
		taken := SumMetric(t, workflowsTakenOver, "", survivors...)
		if peers != 1 || int(taken) < len(held) || int(taken) > len(held)+2 {
			t.Errorf("survivors claimed %v peers and resumed %v workflows; want 1 and %d (+ at most 2 commits in flight at the kill)", peers, taken, len(held))
		} else if int(taken) != len(held) {
			t.Logf("resumed %v workflows, %d in the snapshot: %v committed by node-1 as it died", taken, len(held), int(taken)-len(held))
		}
		if by != "" {
			if got := MetricValue(t, c.Node(t, by).Base(), peersTakenOver, ""); got != 1 {
				t.Errorf("%s holds the claim but counted %v peers taken over", by, got)
			}
		}
	})

	phase(t, "with node-1 down: every purchase ends right", func(t *testing.T) {
		// The shoppers spread over all three instances: each one answered
		// checkouts (node-1's include those of the dispatches it held), and
		// each survivor payments.
		var payLat []time.Duration
		for _, p := range bought {
			if s, ok := fo.Served(p.Key); ok && p.Payment.Status == http.StatusOK {
				payLat = append(payLat, s.PayLatency)
			}
		}
		l := loadgen.PercentilesOf(payLat)
		t.Logf("MEASURED under load (9 shoppers, 3→2 instances): webhook latency p50 %v p90 %v max %v", l.P50, l.P90, l.Max)
		for i, n := range fo.PerNode() {
			t.Logf("%s answered %d checkouts and %d payments", c.Nodes[i].ExecutorID(), n.Checkouts, n.Payments)
			if n.Checkouts == 0 || (n.Payments == 0 && c.Nodes[i] != victim) {
				t.Errorf("%s answered %d checkouts and %d payments: the shoppers did not spread over the instances", c.Nodes[i].ExecutorID(), n.Checkouts, n.Payments)
			}
		}
		c.CheckInvariants(t, clusterStock, append(slices.Clone(direct), bought...), clusterSettle)
	})

	phase(t, "node-1 comes back: it recovers nothing and serves again", func(t *testing.T) {
		victim.Restart(t)
		if got := MetricValue(t, victim.Base(), workflowsRecovered, ""); got != 0 {
			t.Errorf("node-1 recovered %v workflows after the takeover, want 0", got)
		}
		if by := c.TakenOverBy(t, victimID); by != "" {
			t.Errorf("node-1's takeover mark not cleared: %s", by)
		}
		// It serves again, across instances.
		for i := range 3 {
			key := "back-" + RandomHex(6)
			pid := checkout(t, victim, key)
			direct = append(direct, paid(key, pid, payOn(t, c.Nodes[(i+2)%3], pid)))
		}
	})

	phase(t, "after node-1's return: nothing ran twice", func(t *testing.T) {
		c.CheckInvariants(t, clusterStock, append(slices.Clone(direct), bought...), clusterSettle)
		if got := MetricValue(t, victim.Base(), checkoutsStarted, `outcome="started"`); got != 3 {
			t.Errorf("node-1 started %v checkouts after coming back, want exactly the 3 new ones", got)
		}
	})
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TestTakeoverClaimedOnce: two live instances race to take over a dead one:
// the test holds the dead one's row until both are blocked claiming it, then
// lets them go. Exactly one wins, the checkout it resumes completes once,
// and the dead one coming back recovers nothing and is not claimed again.
func TestTakeoverClaimedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three store processes")
	}
	t.Parallel()
	// The default payment window: the checkout waits through the takeover.
	c := StartCluster(t, NewPostgresDB(t), clusterEnv(2*time.Minute), "ghost", "live-a", "live-b")
	c.SetStock(t, clusterStock)
	ghost, a, b := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	live := []*Store{a, b}
	key := "once-" + RandomHex(6)
	var pid string

	phase(t, "a checkout on the ghost awaits payment", func(t *testing.T) {
		pid = checkout(t, ghost, key)
		var status, executor string
		c.QueryRow(t, `SELECT status, executor_id FROM dbos.workflow_status WHERE workflow_uuid = $1`, key).Scan(&status, &executor)
		if status != "PENDING" || executor != "ghost" {
			t.Fatalf("checkout %s: %s on %s, want PENDING on ghost", key, status, executor)
		}
	})

	var winner, loser *Store
	phase(t, "the ghost is SIGKILLed and both survivors race to claim it", func(t *testing.T) {
		ghost.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Hold the ghost's row, before either survivor may judge it silent
		// (TAKEOVER_AFTER), until both are blocked on it in their claim.
		tx, err := c.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) // after Commit it does nothing
		var by *string
		if err := tx.QueryRow(ctx, `SELECT taken_over_by FROM instances WHERE executor_id = 'ghost' FOR UPDATE`).Scan(&by); err != nil {
			t.Fatal(err)
		}
		if by != nil {
			t.Fatalf("the ghost was claimed by %s before the race", *by)
		}
		WaitUntil(t, takeoverAfter+10*time.Second, "both survivors blocked claiming the ghost", func() bool {
			var waiting int
			c.QueryRow(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
				AND wait_event_type = 'Lock' AND query LIKE '%SET taken_over_by%'`).Scan(&waiting)
			return waiting == 2
		})
		// Each survivor's loop is stuck in its claim: a heartbeat after
		// the release means its claim has returned.
		beats := []float64{MetricValue(t, a.Base(), heartbeats, `result="ok"`), MetricValue(t, b.Base(), heartbeats, `result="ok"`)}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		WaitUntil(t, 10*time.Second, "both claims returned", func() bool {
			return MetricValue(t, a.Base(), heartbeats, `result="ok"`) > beats[0] && MetricValue(t, b.Base(), heartbeats, `result="ok"`) > beats[1]
		})
	})

	phase(t, "exactly one survivor won the claim and resumed the checkout", func(t *testing.T) {
		by := c.TakenOverBy(t, "ghost")
		for _, n := range live {
			peers := MetricValue(t, n.Base(), peersTakenOver, "")
			wfs := MetricValue(t, n.Base(), workflowsTakenOver, "")
			switch {
			case peers == 1 && wfs == 1 && winner == nil:
				winner = n
			case peers == 0 && wfs == 0:
				loser = n
			default:
				t.Errorf("%s claimed %v peers and resumed %v workflows", n.ExecutorID(), peers, wfs)
			}
		}
		if winner == nil || loser == nil {
			t.Fatalf("want exactly one winner resuming the one checkout")
		}
		if by != winner.ExecutorID() {
			t.Errorf("the ghost is marked taken over by %q, but %s won", by, winner.ExecutorID())
		}
		// The winner logs the takeover (a warning, as documented); losing is
		// no error: the loser's claim matched no row.
		if lines := c.LogLines(winner, "took over a silent instance", "peer=ghost"); len(lines) != 1 {
			t.Errorf("%s logged the takeover %d times, want once: %q", winner.ExecutorID(), len(lines), lines)
		}
		for _, n := range live {
			if lines := c.LogLines(n, "takeover", "fail"); len(lines) > 0 {
				t.Errorf("%s: a takeover failed: %s", n.ExecutorID(), lines[0])
			}
		}
	})

	var orderID string
	phase(t, "the resumed checkout takes its payment on a survivor", func(t *testing.T) {
		orderID = payOn(t, loser, pid)
		// The webhook settles the order at its own commit, which may come
		// before the winner's queue runner has dequeued the resumed
		// checkout (it is ENQUEUED, alive, until then): the checkout then
		// runs on a survivor and finds its order PAID.
		var executor string
		WaitUntil(t, 15*time.Second, "the resumed checkout runs on a survivor", func() bool {
			c.QueryRow(t, `SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid = $1`, key).Scan(&executor)
			return executor == a.ExecutorID() || executor == b.ExecutorID()
		})
		o := GetJSON[Order](t, loser.URL("/order/"+orderID))
		if o.OrderStatus != shop.StatusPaid && o.OrderStatus != shop.StatusDispatched {
			t.Fatalf("order %s after the takeover: %+v; want PAID", orderID, o)
		}
	})

	phase(t, "the ghost comes back: nothing of its own to recover, its mark cleared", func(t *testing.T) {
		ghost.Restart(t)
		if got := MetricValue(t, ghost.Base(), workflowsRecovered, ""); got != 0 {
			t.Errorf("ghost recovered %v workflows after being taken over, want 0", got)
		}
		if by := c.TakenOverBy(t, "ghost"); by != "" {
			t.Errorf("ghost's takeover mark not cleared: %s", by)
		}
	})

	phase(t, "nobody claims the ghost while it is alive", func(t *testing.T) {
		// Two more heartbeats on each survivor: each has judged its peers
		// at least once since the ghost came back.
		beats := []float64{MetricValue(t, a.Base(), heartbeats, `result="ok"`), MetricValue(t, b.Base(), heartbeats, `result="ok"`)}
		WaitUntil(t, 10*time.Second, "two more heartbeats on each survivor", func() bool {
			return MetricValue(t, a.Base(), heartbeats, `result="ok"`) >= beats[0]+2 && MetricValue(t, b.Base(), heartbeats, `result="ok"`) >= beats[1]+2
		})
		if by := c.TakenOverBy(t, "ghost"); by != "" {
			t.Errorf("live ghost claimed by %s", by)
		}
		if got := SumMetric(t, peersTakenOver, "", a, b); got != 1 {
			t.Errorf("survivors claimed %v peers in all, want the one claim", got)
		}
	})

	phase(t, "the order ends once: invariants", func(t *testing.T) {
		c.CheckInvariants(t, clusterStock, []loadgen.Purchase{paid(key, pid, orderID)}, clusterSettle)
	})
}

// TestClusterStalledInstance: an instance frozen (SIGSTOP) for longer than
// TAKEOVER_AFTER is taken over while its workflows are mid-flight, then
// thaws and carries on with them: DBOS's ownership fence must stop its stale
// executions from committing, so every order still ends exactly once.
func TestClusterStalledInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two store processes")
	}
	c := StartCluster(t, NewPostgresDB(t), clusterEnv(clusterPaymentTimeout), "st-0", "st-1")
	c.SetStock(t, clusterStock)
	st0, st1 := c.Nodes[0], c.Nodes[1]
	var direct []loadgen.Purchase
	var frozenOrders []int64

	phase(t, "st-1 holds paid orders mid-dispatch", func(t *testing.T) {
		for range 4 {
			key := "frozen-" + RandomHex(6)
			pid := checkout(t, st1, key)
			orderID := payOn(t, st0, pid)
			direct = append(direct, paid(key, pid, orderID))
			id, err := strconv.ParseInt(orderID, 10, 64)
			if err != nil {
				t.Fatalf("order id %q: %v", orderID, err)
			}
			frozenOrders = append(frozenOrders, id)
		}
	})

	// Shoppers talk to st-0 only: the frozen instance would hold their
	// requests, not refuse them.
	shoppers := StartShoppers(t, loadgen.NewClient(st0.Base(), 4, 90*time.Second), clusterShoppers(t, 4, "s-"))
	progress := func(t *testing.T) map[int64]int {
		m := map[int64]int{}
		for _, id := range frozenOrders {
			var p int
			c.QueryRow(t, `SELECT progress_remaining FROM orders WHERE order_id = $1`, id).Scan(&p)
			m[id] = p
		}
		return m
	}
	var frozen time.Time
	phase(t, "st-1 frozen (SIGSTOP) until st-0 takes it over and runs its dispatches", func(t *testing.T) {
		if err := st1.Store.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		frozen = time.Now()
		WaitUntil(t, takeoverAfter+10*time.Second, "st-0 takes the frozen st-1 over", func() bool { return c.TakenOverBy(t, "st-1") == "st-0" })
		atClaim := progress(t)
		var moving []int64
		for id, p := range atClaim {
			if p > 0 {
				moving = append(moving, id)
			}
		}
		if len(moving) == 0 {
			t.Fatalf("every order st-1 held was dispatched before the takeover (%v): nothing left to fence", atClaim)
		}
		// st-1 is frozen: a leg that commits now is st-0's.
		WaitUntil(t, 15*time.Second, "st-0 runs a leg of every dispatch it took over", func() bool {
			now := progress(t)
			for _, id := range moving {
				if now[id] >= atClaim[id] {
					return false
				}
			}
			return true
		})
	})

	phase(t, "st-1 thaws, finds itself taken over and runs on beside st-0", func(t *testing.T) {
		if err := st1.Store.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		t.Logf("st-1 frozen for %v", time.Since(frozen).Round(time.Millisecond))
		WaitUntil(t, 10*time.Second, "the thawed st-1 clears its takeover mark", func() bool { return c.TakenOverBy(t, "st-1") == "" })
		// Its stale executions of the dispatches st-0 took over wake up
		// with it; st-0 finishes them meanwhile, under load.
		beats := MetricValue(t, st1.Base(), heartbeats, `result="ok"`)
		WaitUntil(t, 20*time.Second, "two more heartbeats on st-1, and every order it held dispatched", func() bool {
			if MetricValue(t, st1.Base(), heartbeats, `result="ok"`) < beats+2 {
				return false
			}
			for _, p := range progress(t) {
				if p > 0 {
					return false
				}
			}
			return true
		})
	})

	phase(t, "every order ends exactly once", func(t *testing.T) {
		bought := shoppers.Stop()
		c.CheckInvariants(t, clusterStock, append(slices.Clone(direct), bought...), clusterSettle)
		if got := MetricValue(t, st0.Base(), peersTakenOver, ""); got != 1 {
			t.Errorf("st-0 claimed %v peers, want st-1 once", got)
		}
		if got := MetricValue(t, st1.Base(), peersTakenOver, ""); got != 0 {
			t.Errorf("st-1 claimed %v peers, want none", got)
		}
		if st1.Exited() {
			t.Error("the thawed instance exited")
		}
	})
}

// TestClusterSurvivesPostgresRestart: two instances under load while their
// Postgres server is stopped for longer than TAKEOVER_AFTER and started
// again: they reconnect, lose no order, and do not take each other over.
// The server is the test's own, so restarting it disturbs no other test.
func TestClusterSurvivesPostgresRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Postgres server and two store processes")
	}
	t.Parallel()
	pg := StartPrivatePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	db, err := pg.CreateDatabase(ctx, "store")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	c := StartCluster(t, db, clusterEnv(clusterPaymentTimeout), "pg-0", "pg-1")
	c.SetStock(t, clusterStock)
	shoppers := StartShoppers(t, loadgen.NewFailover(c.Bases(), 6, 90*time.Second), clusterShoppers(t, 6, "r-"))

	phase(t, "load until orders are in every state", func(t *testing.T) {
		WaitUntil(t, 30*time.Second, "2 pending and 3 paid orders at once", func() bool {
			var pending, paid int
			c.QueryRow(t, `SELECT count(*) FILTER (WHERE order_status = $1), count(*) FILTER (WHERE order_status = $2) FROM orders`,
				shop.StatusPending, shop.StatusPaid).Scan(&pending, &paid)
			return pending >= 2 && paid >= 3
		})
	})

	var back time.Time
	phase(t, "Postgres stopped for longer than TAKEOVER_AFTER, then started again", func(t *testing.T) {
		var errs []float64 // failed heartbeats before the outage, by instance
		for _, n := range c.Nodes {
			errs = append(errs, MetricValue(t, n.Base(), heartbeats, `result="error"`))
		}
		c.Pool.Reset() // its connections die with the server
		down := time.Now()
		if err := pg.Stop(); err != nil {
			t.Fatal(err)
		}
		// The outage outlasts TAKEOVER_AFTER (the point of the test: no
		// instance may take another over), and each instance notices it.
		outage := takeoverAfter + time.Second
		WaitUntil(t, outage+10*time.Second, fmt.Sprintf("%v down, and a failed heartbeat on each instance", outage), func() bool {
			if time.Since(down) < outage {
				return false
			}
			for i, n := range c.Nodes {
				if MetricValue(t, n.Base(), heartbeats, `result="error"`) <= errs[i] {
					return false
				}
			}
			return true
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		back = time.Now()
		t.Logf("Postgres down for %v", back.Sub(down).Round(time.Millisecond))
	})

	phase(t, "a dozen purchases complete after it came back", func(t *testing.T) {
		WaitUntil(t, 60*time.Second, "12 purchases complete after Postgres came back", func() bool { return shoppers.Ledger.FinishedSince(back) >= 12 })
		t.Logf("MEASURED a dozen purchases completed %v after Postgres came back", time.Since(back).Round(time.Millisecond))
	})

	phase(t, "no order lost, no instance taken over", func(t *testing.T) {
		bought := shoppers.Stop()
		c.CheckInvariants(t, clusterStock, bought, clusterSettle)
		for _, n := range c.Nodes {
			if got := MetricValue(t, n.Base(), peersTakenOver, ""); got != 0 {
				t.Errorf("%s took over %v peers during a database outage; want none", n.ExecutorID(), got)
			}
			if n.Exited() {
				t.Errorf("%s exited during the outage", n.ExecutorID())
			}
		}
		var marked int
		c.QueryRow(t, `SELECT count(*) FROM instances WHERE taken_over_by IS NOT NULL`).Scan(&marked)
		if marked != 0 {
			t.Errorf("%d instances marked taken over after a database outage; want 0", marked)
		}
	})
}
