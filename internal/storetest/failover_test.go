package storetest

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// TestFailoverHA: the store on a replicated Postgres (Patroni, synchronous
// replication, scripts/ha-cluster.sh) loses the leader's machine under load,
// twice, and loses nothing.
//
// Two store instances share one DATABASE_URL naming the three nodes with
// target_session_attrs=read-write; careful shoppers (any error → the same
// key or payment again, on the other instance) buy all along. The leader is
// SIGKILLed (its Patroni and every Postgres process) mid-load; Patroni
// promotes the synchronous replica; the shoppers go on; the old leader is
// started again and rejoins as a replica (pg_rewind); then the new leader is
// killed as well, and one store instance with it, whose workflows the other
// must take over. Afterwards, read from the database: loadgen's invariants
// hold, and every purchase a shopper was told succeeded is there, as told.
// MEASURED lines: kill → promotion, kill → first acknowledged purchase, the
// purchases in flight at each kill and when each was answered, the errors the
// shoppers saw by kind.
func TestFailoverHA(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node Patroni cluster and two store processes")
	}
	ha := StartHA(t)
	db := ha.NewDatabase(t)
	c := StartCluster(t, db, clusterEnv(clusterPaymentTimeout), "ha-0", "ha-1")
	c.SetStock(t, clusterStock)
	client := loadgen.NewFailover(c.Bases(), 6, 30*time.Second)
	client.Stats = loadgen.NewStats()
	shoppers := StartShoppers(t, client, clusterShoppers(t, 6, "ha-"))

	phase(t, "load", func(t *testing.T) {
		began := time.Now()
		WaitUntil(t, 60*time.Second, "20 purchases done", func() bool { return shoppers.Ledger.FinishedSince(began) >= 20 })
	})

	failover(t, "first failover", ha, c, shoppers, nil)

	phase(t, "the old leader comes back as a replica", func(t *testing.T) {
		began := time.Now()
		ha.Run(t, "start")
		t.Logf("MEASURED old leader back, streaming, after %v", time.Since(began).Round(100*time.Millisecond))
		WaitUntil(t, 60*time.Second, "10 more purchases done", func() bool { return shoppers.Ledger.FinishedSince(began) >= 10 })
	})

	victim := c.Node(t, "ha-1")
	failover(t, "second failover, with a store instance killed", ha, c, shoppers, func(t *testing.T) {
		victim.Kill()
		t.Logf("SIGKILLed store instance %s", victim.ExecutorID())
	})

	phase(t, "the survivor takes the dead instance over", func(t *testing.T) {
		WaitUntil(t, 60*time.Second, "ha-0 claims ha-1", func() bool { return c.TakenOverBy(t, "ha-1") == "ha-0" })
		WaitUntil(t, 30*time.Second, "no workflow left PENDING under ha-1", func() bool { return len(pendingUnder(t, c, "ha-1")) == 0 })
		t.Logf("MEASURED ha-0 resumed %v of ha-1's workflows", MetricValue(t, c.Node(t, "ha-0").Base(), workflowsTakenOver, ""))
		ha.Run(t, "start") // the second failover's old leader comes back too
		victim.Restart(t)
		began := time.Now()
		WaitUntil(t, 60*time.Second, "10 more purchases done", func() bool { return shoppers.Ledger.FinishedSince(began) >= 10 })
	})

	phase(t, "nothing lost", func(t *testing.T) {
		bought := shoppers.Stop()
		snap := c.CheckInvariants(t, clusterStock, bought, clusterSettle)
		byKey := map[string]loadgen.Order{}
		for _, o := range snap.Orders {
			byKey[o.Key] = o
		}
		var paid, declined, lost int
		for _, p := range bought {
			if p.Checkout.Status != http.StatusOK {
				continue
			}
			o, ok := byKey[p.Key]
			if !ok {
				lost++
				t.Errorf("purchase %s: checkout answered 200 (payment id %s) but there is no order", p.Key, p.Checkout.Body)
				continue
			}
			if p.Payment.Status != http.StatusOK {
				continue
			}
			want := shop.StatusDispatched
			if p.Sent == shop.PaymentFailed {
				want = shop.StatusCancelled
				declined++
			} else {
				paid++
			}
			if strconv.FormatInt(o.ID, 10) != p.Payment.Body || o.Status != want {
				lost++
				t.Errorf("purchase %s: told order %s, %s; the database has order %d, %s", p.Key, p.Payment.Body, p.Sent, o.ID, o.Status)
			}
		}
		t.Logf("MEASURED %d purchases: %d acknowledged paid (order DISPATCHED), %d acknowledged declined (CANCELLED); %d acknowledged purchases lost",
			len(bought), paid, declined, lost)
		if paid == 0 {
			t.Error("no purchase was acknowledged paid: the test proved nothing")
		}
		errs := client.Stats.Errors()
		kinds := make([]string, 0, len(errs))
		for k := range errs {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		var b strings.Builder
		for _, k := range kinds {
			fmt.Fprintf(&b, "\n  %6d  %s", errs[k], k)
		}
		t.Logf("MEASURED errors the shoppers saw (each retried), by kind:%s", b.String())
	})
}

// failover kills the HA cluster's leader mid-load (and runs during right
// after, if set), waits for Patroni to promote a replica, then for the
// shoppers to be served again and every purchase in flight at the kill to
// be answered, and logs how long each took.
func failover(t *testing.T, name string, ha *HACluster, c *Cluster, shoppers *Shopping, during func(t *testing.T)) {
	phase(t, name, func(t *testing.T) {
		killed := ha.KillLeader(t)
		killedAt := time.Now() // within milliseconds of the kill: the script returns once the processes are gone
		inFlight := map[string]bool{}
		for _, p := range shoppers.Ledger.Purchases() {
			if p.Finished.IsZero() {
				inFlight[p.Key] = true
			}
		}
		if during != nil {
			during(t)
		}
		// The test's own connections to the dead leader are broken; new
		// ones find the new leader.
		c.Pool.Reset()
		var leader string
		WaitUntil(t, 60*time.Second, "a replica promoted", func() bool {
			leader = ha.Leader()
			return leader != "" && leader != killed
		})
		promoted := time.Since(killedAt)

		var firstAck, firstNew time.Duration
		WaitUntil(t, 90*time.Second, "a purchase started after the kill acknowledged paid", func() bool {
			for _, p := range shoppers.Ledger.Purchases() {
				if p.Sent != shop.PaymentPaid || p.Payment.Status != http.StatusOK || !p.Finished.After(killedAt) {
					continue
				}
				if d := p.Finished.Sub(killedAt); firstAck == 0 || d < firstAck {
					firstAck = d
				}
				if d := p.Finished.Sub(killedAt); p.Started.After(killedAt) && (firstNew == 0 || d < firstNew) {
					firstNew = d
				}
			}
			return firstNew > 0
		})
		var answered, open []string
		deadline := time.Now().Add(90 * time.Second)
		WaitUntil(t, 100*time.Second, "every purchase in flight at the kill answered", func() bool {
			answered, open = answered[:0], open[:0]
			for _, p := range shoppers.Ledger.Purchases() {
				if !inFlight[p.Key] {
					continue
				}
				if p.Finished.IsZero() {
					open = append(open, fmt.Sprintf("%s (checkout %d %q, sent %q)", p.Key, p.Checkout.Status, p.Checkout.Body, p.Sent))
					continue
				}
				outcome := fmt.Sprintf("checkout %d, %s %d", p.Checkout.Status, p.Sent, p.Payment.Status)
				if p.GaveUp != "" {
					outcome = "gave up: " + p.GaveUp
				}
				answered = append(answered, fmt.Sprintf("%s +%v (%s)", p.Key, p.Finished.Sub(killedAt).Round(time.Millisecond), outcome))
			}
			if len(open) > 0 && time.Now().After(deadline) {
				t.Fatalf("purchases in flight at the kill still unanswered after 90 s:\n  %s\ntheir workflows:\n  %s",
					strings.Join(open, "\n  "), strings.Join(workflowsOf(t, c, open), "\n  "))
			}
			return len(open) == 0
		})
		slices.Sort(answered)
		t.Logf("MEASURED %s: killed %s; %s promoted %v after the kill; first purchase acknowledged paid %v after it, first purchase started after it acknowledged %v after it",
			name, killed, leader, promoted.Round(10*time.Millisecond), firstAck.Round(10*time.Millisecond), firstNew.Round(10*time.Millisecond))
		t.Logf("MEASURED %s: %d purchases in flight at the kill, answered at (since the kill):\n  %s", name, len(answered), strings.Join(answered, "\n  "))
	})
}

// workflowsOf describes the workflows and orders of the purchases described
// by keys ("key (…)"), for a failure message.
func workflowsOf(t *testing.T, c *Cluster, keys []string) []string {
	t.Helper()
	var out []string
	for _, k := range keys {
		key, _, _ := strings.Cut(k, " ")
		var workflow, order string
		c.QueryRow(t, `SELECT coalesce((SELECT status || ' on ' || coalesce(executor_id, '?') || ', recovery attempts ' || recovery_attempts
				FROM dbos.workflow_status WHERE workflow_uuid = $1), 'none'),
			coalesce((SELECT order_id || ' status ' || order_status || ' progress ' || progress_remaining FROM orders WHERE checkout_key = $1), 'none')`,
			key).Scan(&workflow, &order)
		out = append(out, fmt.Sprintf("%s: workflow %s; order %s", key, workflow, order))
	}
	return out
}
