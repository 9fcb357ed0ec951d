package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
)

// Several instances on one Postgres: real processes of the built binary,
// round-robin shoppers, one instance SIGKILLed and kept down (its workflows
// must be taken over), then brought back (nothing may run twice); and
// Postgres itself restarted under load.

// clusterTakeoverAfter is TAKEOVER_AFTER in these tests, short to keep them short.
const clusterTakeoverAfter = 3 * time.Second

// clusterPaymentTimeout is PAYMENT_TIMEOUT: abandoned checkouts end after it.
const clusterPaymentTimeout = 12 * time.Second

// clusterStock is the inventory the tests start from, enough not to sell out.
const clusterStock = 1000

// startNode starts one instance of the cluster under executor ID name.
func startNode(t *testing.T, dbURL, name, port string) *storeProc {
	t.Helper()
	return startProc(t, dbURL, port, "EXECUTOR_ID="+name,
		"TAKEOVER_AFTER="+clusterTakeoverAfter.String(), "PAYMENT_TIMEOUT="+clusterPaymentTimeout.String())
}

// openPool opens a pool on the test database, for the test's own checks.
func openPool(t *testing.T, dbURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// ----- shoppers -----

// Shopper intents.
const (
	intentPay     = "paid"
	intentDecline = "failed"
	intentAbandon = "abandon" // never pays: the checkout times out
)

// purchase is one shopper's checkout and what came of it.
type purchase struct {
	key          string
	intent       string
	soldOut      bool
	orderID      string // from the webhook; "" when abandoned or sold out
	payCode      int    // the webhook's final status code
	checkoutNode int
	payNode      int
	payLatency   time.Duration // of the successful webhook call
}

// shoppers drive a cluster: each one checks out on the next node round-robin
// and pays through the node after it. A request that fails (node down, 5xx)
// is retried with the same key on the next node, as a client behind a load
// balancer would.
type shoppers struct {
	nodes  func() []string // current base URLs, one per node (a dead one refuses connections)
	client *http.Client
	next   atomic.Int64
	mu     sync.Mutex
	done   []purchase
	errs   []error
}

func newShoppers(nodes func() []string) *shoppers {
	return &shoppers{nodes: nodes, client: &http.Client{Timeout: 90 * time.Second}}
}

// post sends POST path to node start, moving on to the next node on a network
// error or a 5xx, until a 2xx/4xx answer or the deadline.
func (s *shoppers) post(start int, path string) (code int, body string, node int, took time.Duration, err error) {
	deadline := time.Now().Add(90 * time.Second)
	for i := start; time.Now().Before(deadline); i++ {
		nodes := s.nodes()
		node = i % len(nodes)
		began := time.Now()
		resp, err := s.client.Post(nodes[node]+path, "", nil)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr != nil || resp.StatusCode >= 500 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		return resp.StatusCode, string(b), node, time.Since(began), nil
	}
	return 0, "", node, 0, fmt.Errorf("POST %s: no node answered within 90s", path)
}

// count is how many purchases are complete.
func (s *shoppers) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.done)
}

// shop makes one purchase with the given intent.
func (s *shoppers) shop(intent string) {
	n := int(s.next.Add(1))
	p := purchase{key: "c-" + randomHex(8), intent: intent}
	code, pid, node, _, err := s.post(n, "/checkout/"+p.key)
	p.checkoutNode = node
	switch {
	case err != nil:
	case code == http.StatusConflict:
		p.soldOut = true
	case code != http.StatusOK:
		err = fmt.Errorf("checkout %s: status %d: %s", p.key, code, pid)
	case intent != intentAbandon:
		var body string
		p.payCode, body, p.payNode, p.payLatency, err = s.post(node+1, "/payment_webhook/"+pid+"/"+intent)
		if err == nil && p.payCode == http.StatusOK {
			p.orderID = body
		} else if err == nil && p.payCode != http.StatusConflict {
			err = fmt.Errorf("pay %s: status %d: %s", p.key, p.payCode, body)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = append(s.done, p)
	if err != nil {
		s.errs = append(s.errs, err)
	}
}

// run starts n shoppers that shop until stop is closed; wait for them with
// the returned function. One purchase in 8 is declined, one in 16 abandoned.
func (s *shoppers) run(n int, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			for i := g; ; i += n {
				select {
				case <-stop:
					return
				default:
				}
				intent := intentPay
				switch {
				case i%16 == 5:
					intent = intentAbandon
				case i%8 == 3:
					intent = intentDecline
				}
				s.shop(intent)
			}
		})
	}
	return wg.Wait
}

// ----- watching the database -----

// progressWatch samples every order until stopped and records any step back:
// a status that regresses, or progress_remaining that goes back up, would
// mean a transition ran twice or out of order.
func progressWatch(t *testing.T, pool *pgxpool.Pool) (stop func() []string) {
	type state struct{ status, progress int }
	// rank orders the statuses along the allowed paths PENDING → PAID →
	// DISPATCHED and PENDING → CANCELLED.
	rank := map[int]int{statusPending: 0, statusPaid: 1, statusDispatched: 2, statusCancelled: 2}
	seen := map[int64]state{}
	var problems []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			rows, err := pool.Query(ctx, `SELECT order_id, order_status, progress_remaining FROM orders`)
			if err == nil {
				for rows.Next() {
					var id int64
					var st state
					if rows.Scan(&id, &st.status, &st.progress) != nil {
						continue
					}
					if old, ok := seen[id]; ok {
						if rank[st.status] < rank[old.status] || (old.status != st.status && rank[old.status] == 2) || st.progress > old.progress {
							problems = append(problems, fmt.Sprintf("order %d went from %+v to %+v", id, old, st))
						}
					}
					seen[id] = st
				}
				rows.Close()
			} // an error (Postgres restarting) just skips a sample
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		cancel()
		<-done
		return problems
	}
}

// checkInvariants checks the store after the load: every workflow finished
// successfully, every order is final, one order per key, paid ⇔ PAID or
// DISPATCHED (a 409 to a payment means CANCELLED and recorded for refund),
// declined and abandoned ⇔ CANCELLED, and stock + sold = the starting stock.
func checkInvariants(t *testing.T, pool *pgxpool.Pool, bought []purchase) {
	t.Helper()
	ctx := context.Background()
	// Every workflow ends, successfully: an ERROR would be a step that found
	// its transition already applied (run twice) or a lost database call.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var notDone int
		var sample string
		err := pool.QueryRow(ctx, `SELECT count(*), coalesce(min(workflow_uuid || ' ' || status), '') FROM dbos.workflow_status WHERE status <> 'SUCCESS'`).Scan(&notDone, &sample)
		if err != nil {
			t.Fatal(err)
		}
		if notDone == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workflows not SUCCESS within 60s, e.g. %s", notDone, sample)
		}
		time.Sleep(200 * time.Millisecond)
	}
	type order struct {
		id       int64
		status   int
		progress int
	}
	byKey := map[string]order{}
	rows, err := pool.Query(ctx, `SELECT checkout_key, order_id, order_status, progress_remaining FROM orders`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		var o order
		if err := rows.Scan(&k, &o.id, &o.status, &o.progress); err != nil {
			t.Fatal(err)
		}
		byKey[k] = o
	}
	rows.Close()
	late := map[string]bool{}
	rows, err = pool.Query(ctx, `SELECT payment_id FROM late_payments`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		late[k] = true
	}
	rows.Close()

	sold, withOrder := 0, 0
	for _, p := range bought {
		o, ok := byKey[p.key]
		if p.soldOut {
			if ok {
				t.Errorf("%s: sold out, yet has order %d", p.key, o.id)
			}
			continue
		}
		withOrder++
		if !ok {
			t.Errorf("%s (%s): no order", p.key, p.intent)
			continue
		}
		switch {
		case p.intent == intentPay && p.payCode == http.StatusOK:
			if o.status != statusDispatched || o.progress != 0 || p.orderID != strconv.FormatInt(o.id, 10) {
				t.Errorf("%s: paid (order %s), but order %d is status %d progress %d", p.key, p.orderID, o.id, o.status, o.progress)
			}
		case p.intent == intentPay: // 409: the payment came after the checkout gave up
			if o.status != statusCancelled || !late[p.key] {
				t.Errorf("%s: payment refused with %d, but order %d is status %d (late payment recorded: %v)", p.key, p.payCode, o.id, o.status, late[p.key])
			}
		default:
			if o.status != statusCancelled {
				t.Errorf("%s: %s, but order %d is status %d", p.key, p.intent, o.id, o.status)
			}
		}
		if o.status == statusDispatched {
			sold++
		}
	}
	if len(byKey) != withOrder {
		t.Errorf("%d orders for %d checkouts that got one: one order per key", len(byKey), withOrder)
	}
	var inv int
	if err := pool.QueryRow(ctx, `SELECT inventory FROM products WHERE product_id = 1`).Scan(&inv); err != nil {
		t.Fatal(err)
	}
	if inv+sold != clusterStock {
		t.Errorf("inventory %d + sold %d = %d, want %d: stock not conserved", inv, sold, inv+sold, clusterStock)
	}
	t.Logf("%d purchases: %d orders, %d dispatched, %d late payments refunded; inventory %d", len(bought), len(byKey), sold, len(late), inv)
}

// metricValue reads one sample of a metric from a node's /metrics (the sum
// over all label sets whose text contains match).
func metricValue(t *testing.T, base, name, match string) float64 {
	t.Helper()
	body := mustCall(t, "GET", base+"/metrics", http.StatusOK)
	sum := 0.0
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, name) || !strings.Contains(line, match) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer name that starts with this one
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// ----- tests -----

// TestClusterTakeover: three instances, round-robin shoppers; one instance is
// SIGKILLed mid-load and stays down; the survivors take over what it held.
// Then it comes back and must run nothing twice.
func TestClusterTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three store processes")
	}
	dbURL := newPostgresDB(t)
	names := []string{"node-0", "node-1", "node-2"}
	procs := make([]*storeProc, 3)
	procs[0] = startNode(t, dbURL, names[0], "0") // creates the schema
	var wg sync.WaitGroup
	for i := 1; i < 3; i++ {
		wg.Go(func() { procs[i] = startNode(t, dbURL, names[i], "0") })
	}
	wg.Wait()
	pool := openPool(t, dbURL)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `UPDATE products SET inventory = $1`, clusterStock); err != nil {
		t.Fatal(err)
	}
	var nodesMu sync.Mutex
	nodes := func() []string {
		nodesMu.Lock()
		defer nodesMu.Unlock()
		return []string{procs[0].base, procs[1].base, procs[2].base}
	}

	// Latency: checkout on node 0, payment through node 1 (the checkout is
	// woken across processes) or node 0 (same process). The webhook answers
	// once the checkout has published the order's outcome.
	var all []purchase
	lat := map[bool][]time.Duration{}
	for i := range 40 {
		cross := i%2 == 0
		key := "lat-" + randomHex(6)
		pid := mustCall(t, "POST", procs[0].base+"/checkout/"+key, http.StatusOK)
		payOn := procs[0].base
		if cross {
			payOn = procs[1].base
		}
		began := time.Now()
		orderID := mustCall(t, "POST", payOn+"/payment_webhook/"+pid+"/paid", http.StatusOK)
		lat[cross] = append(lat[cross], time.Since(began))
		all = append(all, purchase{key: key, intent: intentPay, payCode: 200, orderID: orderID})
	}
	t.Logf("MEASURED checkout on node-0 → pay: same instance p50 %v p90 %v; across instances p50 %v p90 %v",
		percentile(lat[false], .5), percentile(lat[false], .9), percentile(lat[true], .5), percentile(lat[true], .9))

	watch := progressWatch(t, pool)
	sh := newShoppers(nodes)
	stop := make(chan struct{})
	waitShoppers := sh.run(9, stop)

	// Kill node-1 once it holds work of every kind: checkouts awaiting
	// payment and dispatches in progress.
	const victim = "node-1"
	deadline := time.Now().Add(30 * time.Second)
	for {
		var checkouts, dispatches int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE name = 'checkout'), count(*) FILTER (WHERE name = 'dispatch')
			FROM dbos.workflow_status WHERE executor_id = $1 AND status = 'PENDING'`, victim).Scan(&checkouts, &dispatches); err != nil {
			t.Fatal(err)
		}
		if checkouts >= 2 && dispatches >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-1 never held 2 checkouts and 3 dispatches at once (%d, %d)", checkouts, dispatches)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Abandoned checkouts on the victim: their payment deadline must hold on
	// the survivor that takes them over.
	var abandoned []string
	for range 2 {
		key := "ab-" + randomHex(6)
		mustCall(t, "POST", procs[1].base+"/checkout/"+key, http.StatusOK)
		abandoned = append(abandoned, key)
		all = append(all, purchase{key: key, intent: intentAbandon})
	}
	procs[1].kill()
	killedAt := time.Now()
	victimPort := procs[1].port()

	type held struct {
		id, name  string
		createdAt int64
	}
	var heldWFs []held
	rows, err := pool.Query(ctx, `SELECT workflow_uuid, name, created_at FROM dbos.workflow_status WHERE executor_id = $1 AND status = 'PENDING'`, victim)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var h held
		if err := rows.Scan(&h.id, &h.name, &h.createdAt); err != nil {
			t.Fatal(err)
		}
		heldWFs = append(heldWFs, h)
	}
	rows.Close()
	t.Logf("node-1 SIGKILLed holding %d pending workflows", len(heldWFs))

	// Shoppers go on for a while with node-1 down, then stop.
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	waitShoppers()

	// Every held workflow is running on a survivor within TAKEOVER_AFTER + 5 s
	// of the kill, and ends as soon as its own schedule then allows: a
	// checkout whose shopper pays or declines (retrying on another instance)
	// right away; an abandoned checkout when its payment window closes; a
	// dispatch after its remaining legs (one second each, counted from the
	// previous leg, so a dispatch resumed late finishes late).
	takeoverBound := killedAt.Add(clusterTakeoverAfter + 5*time.Second)
	// Shoppers abandon some checkouts too (one in 16): those wait out their
	// payment window like the victim's own abandoned ones.
	sh.mu.Lock()
	for _, p := range sh.done {
		if p.intent == intentAbandon {
			abandoned = append(abandoned, p.key)
		}
	}
	sh.mu.Unlock()
	var lastStart, lastEnd, lastDispatchEnd time.Time
	for _, h := range heldWFs {
		bound := takeoverBound
		switch {
		case h.name == "dispatch":
			bound = takeoverBound.Add(dispatchSteps * time.Second)
		case slices.Contains(abandoned, h.id):
			// The payment window is durable from the moment the wait began,
			// which was before the kill or, at the latest, on the survivor.
			bound = takeoverBound.Add(clusterPaymentTimeout)
		}
		var status, executor string
		var startedMs, updatedMs *int64
		for {
			if err := pool.QueryRow(ctx, `SELECT status, coalesce(executor_id, ''), started_at_epoch_ms, updated_at FROM dbos.workflow_status WHERE workflow_uuid = $1`, h.id).
				Scan(&status, &executor, &startedMs, &updatedMs); err != nil {
				t.Fatal(err)
			}
			if status == "SUCCESS" || time.Now().After(bound.Add(time.Second)) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if status != "SUCCESS" {
			t.Fatalf("held workflow %s (%s): %s on %q, not done %v after the kill (bound %v)", h.id, h.name, status, executor, time.Since(killedAt).Round(time.Millisecond), bound.Sub(killedAt).Round(time.Millisecond))
		}
		end := time.UnixMilli(*updatedMs)
		if executor == victim {
			// A COMMIT the victim sent just before SIGKILL may reach Postgres
			// after the query above saw the workflow PENDING: it then ends
			// under the victim, stamped (by the victim's clock) before the kill.
			if !end.After(killedAt) {
				t.Logf("held workflow %s was completed by the victim's last commit, in flight at the kill", h.id)
				continue
			}
			t.Errorf("held workflow %s finished under the dead executor", h.id)
		}
		if end.After(bound) {
			t.Errorf("held workflow %s (%s) ended %v after the kill; bound %v", h.id, h.name, end.Sub(killedAt).Round(time.Millisecond), bound.Sub(killedAt).Round(time.Millisecond))
		}
		if startedMs == nil || time.UnixMilli(*startedMs).After(takeoverBound) {
			t.Errorf("held workflow %s (%s) was not running on a survivor within %v of the kill (started %v)", h.id, h.name, takeoverBound.Sub(killedAt), startedMs)
		} else if time.UnixMilli(*startedMs).After(lastStart) {
			lastStart = time.UnixMilli(*startedMs)
		}
		switch {
		case h.name == "dispatch":
			lastDispatchEnd = later(lastDispatchEnd, end)
		case !slices.Contains(abandoned, h.id):
			lastEnd = later(lastEnd, end)
		}
	}
	t.Logf("MEASURED takeover (TAKEOVER_AFTER %v): kill → last held workflow running on a survivor %v; → last held paid/declined checkout final %v; → last held dispatch DISPATCHED %v",
		clusterTakeoverAfter, lastStart.Sub(killedAt).Round(time.Millisecond), lastEnd.Sub(killedAt).Round(time.Millisecond), lastDispatchEnd.Sub(killedAt).Round(time.Millisecond))
	// Exactly one survivor claimed node-1, and resumed what it held. The
	// snapshot of what it held was taken right after the kill, and a COMMIT
	// node-1 sent just before dying (a workflow start) can reach Postgres
	// after that snapshot: the resumed count may exceed it by such a straggler.
	peers := metricValue(t, procs[0].base, "widget_peers_taken_over_total", "") + metricValue(t, procs[2].base, "widget_peers_taken_over_total", "")
	taken := metricValue(t, procs[0].base, "widget_workflows_taken_over_total", "") + metricValue(t, procs[2].base, "widget_workflows_taken_over_total", "")
	if peers != 1 || int(taken) < len(heldWFs) || int(taken) > len(heldWFs)+2 {
		t.Errorf("survivors claimed %v peers and resumed %v workflows; want 1 and %d (+ at most 2 commits in flight at the kill)", peers, taken, len(heldWFs))
	} else if int(taken) != len(heldWFs) {
		t.Logf("resumed %v workflows, %d in the snapshot: %v committed by node-1 as it died", taken, len(heldWFs), int(taken)-len(heldWFs))
	}

	all = append(all, sh.done...)
	if len(sh.errs) > 0 {
		t.Fatalf("%d shopper errors, first: %v", len(sh.errs), sh.errs[0])
	}
	var payLat []time.Duration
	for _, p := range sh.done {
		if p.payCode == http.StatusOK {
			payLat = append(payLat, p.payLatency)
		}
	}
	t.Logf("MEASURED under load (9 shoppers, 3→2 instances): webhook latency p50 %v p90 %v max %v", percentile(payLat, .5), percentile(payLat, .9), percentile(payLat, 1))
	checkInvariants(t, pool, all)

	// node-1 comes back: it finds its workflows taken over and recovers none.
	nodesMu.Lock()
	procs[1] = startNode(t, dbURL, victim, victimPort)
	nodesMu.Unlock()
	if got := metricValue(t, procs[1].base, "widget_workflows_recovered_total", ""); got != 0 {
		t.Errorf("node-1 recovered %v workflows after the takeover, want 0", got)
	}
	var by *string
	if err := pool.QueryRow(ctx, `SELECT taken_over_by FROM instances WHERE executor_id = $1`, victim).Scan(&by); err != nil {
		t.Fatal(err)
	}
	if by != nil {
		t.Errorf("node-1's takeover mark not cleared: %s", *by)
	}
	// It serves again, across instances.
	for i := range 3 {
		key := "back-" + randomHex(6)
		pid := mustCall(t, "POST", procs[1].base+"/checkout/"+key, http.StatusOK)
		orderID := mustCall(t, "POST", procs[(i+2)%3].base+"/payment_webhook/"+pid+"/paid", http.StatusOK)
		all = append(all, purchase{key: key, intent: intentPay, payCode: 200, orderID: orderID})
	}
	checkInvariants(t, pool, all)
	if problems := watch(); len(problems) > 0 {
		t.Errorf("orders stepped back (a transition ran twice?): %s", strings.Join(problems[:min(5, len(problems))], "; "))
	}
	if got := metricValue(t, procs[1].base, "widget_checkouts_total", `outcome="started"`); got != 3 {
		t.Errorf("node-1 started %v checkouts after coming back, want exactly the 3 new ones", got)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TestTakeoverClaimedOnce: two live instances race to take over a dead one;
// exactly one wins, its checkout completes once, and the dead one coming back
// recovers nothing. In-process, so it can call takeOver directly.
func TestTakeoverClaimedOnce(t *testing.T) {
	t.Parallel()
	dbURL := newPostgresDB(t)
	ctx := context.Background()
	// TAKEOVER_AFTER is long: the instances' own loops stay out of the race.
	newNode := func(name string) *app {
		env := map[string]string{"DATABASE_URL": dbURL, "EXECUTOR_ID": name, "TAKEOVER_AFTER": "1h", "LOG_LEVEL": "warn", "SUPERVISE": "0"}
		cfg, err := parseConfig([]string{"widget-store"}, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		a, err := newApp(ctx, cfg, newLogger(cfg, testLogWriter{t}))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	ghost := newNode("ghost")
	key := newTestKey()
	pid, err := ghost.startCheckout(ctx, key, "")
	if err != nil || pid != key {
		t.Fatalf("checkout on ghost: %q, %v", pid, err)
	}
	ghost.shutdown(ghost.logger) // its checkout stays PENDING, awaiting payment
	a, b := newNode("live-a"), newNode("live-b")
	defer a.shutdown(a.logger)
	defer b.shutdown(b.logger)
	if _, err := a.pgPool.Exec(ctx, `UPDATE instances SET heartbeat_at = 0 WHERE executor_id = 'ghost'`); err != nil {
		t.Fatal(err)
	}
	var na, nb int
	var ea, eb error
	var wg sync.WaitGroup
	wg.Go(func() { na, ea = a.takeOver(ctx, a.pgPool, "ghost") })
	wg.Go(func() { nb, eb = b.takeOver(ctx, b.pgPool, "ghost") })
	wg.Wait()
	if ea != nil || eb != nil {
		t.Fatalf("takeOver: %v, %v", ea, eb)
	}
	if na+nb != 1 || na*nb != 0 {
		t.Fatalf("takeOver resumed %d and %d workflows; want exactly one winner resuming the one checkout", na, nb)
	}
	// The resumed checkout runs on a live instance and takes the payment.
	orderID, err := b.pay(ctx, pid, paymentPaid)
	if err != nil {
		t.Fatalf("pay after takeover: %v", err)
	}
	// The ghost comes back: nothing of its own is left to recover, and its
	// takeover mark is cleared.
	ghost = newNode("ghost")
	defer ghost.shutdown(ghost.logger)
	var m dto.Metric
	if err := ghost.metrics.recovered.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 0 {
		t.Errorf("ghost recovered %v workflows after being taken over, want 0", got)
	}
	var by *string
	if err := a.pgPool.QueryRow(ctx, `SELECT taken_over_by FROM instances WHERE executor_id = 'ghost'`).Scan(&by); err != nil || by != nil {
		t.Errorf("ghost's takeover mark: %v, %v; want cleared", by, err)
	}
	o, err := a.orderByID(ctx, orderID)
	if err != nil || o.Status != statusPaid && o.Status != statusDispatched {
		t.Fatalf("order %d after takeover: %+v, %v; want PAID", orderID, o, err)
	}
	// The ghost is alive again: nobody may claim it.
	if n, err := a.takeOver(ctx, a.pgPool, "ghost"); n != 0 || err != nil {
		t.Errorf("takeover of a live instance: %d, %v; want nothing", n, err)
	}
	if err := a.pgPool.QueryRow(ctx, `SELECT taken_over_by FROM instances WHERE executor_id = 'ghost'`).Scan(&by); err != nil || by != nil {
		t.Errorf("live ghost claimed: %v, %v", by, err)
	}
}

// TestClusterStalledInstance: an instance frozen (SIGSTOP) for longer than
// TAKEOVER_AFTER is taken over while its workflows are mid-flight, then thaws
// and carries on with them: DBOS's ownership fence must stop its stale
// executions from committing, so every order still ends exactly once.
func TestClusterStalledInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two store processes")
	}
	dbURL := newPostgresDB(t)
	procs := []*storeProc{startNode(t, dbURL, "st-0", "0")}
	procs = append(procs, startNode(t, dbURL, "st-1", "0"))
	pool := openPool(t, dbURL)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `UPDATE products SET inventory = $1`, clusterStock); err != nil {
		t.Fatal(err)
	}
	watch := progressWatch(t, pool)
	// Shoppers only talk to st-0: the frozen instance would hold their
	// requests, not refuse them.
	sh := newShoppers(func() []string { return []string{procs[0].base} })
	// st-1 gets work of its own to hold: paid orders mid-dispatch.
	var all []purchase
	for range 4 {
		key := "frozen-" + randomHex(6)
		pid := mustCall(t, "POST", procs[1].base+"/checkout/"+key, http.StatusOK)
		orderID := mustCall(t, "POST", procs[0].base+"/payment_webhook/"+pid+"/paid", http.StatusOK)
		all = append(all, purchase{key: key, intent: intentPay, payCode: 200, orderID: orderID})
	}
	stop := make(chan struct{})
	waitShoppers := sh.run(4, stop)
	if err := procs[1].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	// Wait until st-0 has taken st-1 over, and a little more.
	deadline := time.Now().Add(clusterTakeoverAfter + 10*time.Second)
	for {
		var by *string
		if err := pool.QueryRow(ctx, `SELECT taken_over_by FROM instances WHERE executor_id = 'st-1'`).Scan(&by); err != nil {
			t.Fatal(err)
		}
		if by != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the frozen instance was not taken over")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // the survivor runs the resumed workflows a while
	if err := procs[1].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("st-1 frozen for %v", time.Since(frozen).Round(time.Millisecond))
	// st-1 thaws, finds itself taken over, and clears the mark.
	deadline = time.Now().Add(10 * time.Second)
	for {
		var by *string
		if err := pool.QueryRow(ctx, `SELECT taken_over_by FROM instances WHERE executor_id = 'st-1'`).Scan(&by); err != nil {
			t.Fatal(err)
		}
		if by == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the thawed instance did not clear its takeover mark")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	close(stop)
	waitShoppers()
	if len(sh.errs) > 0 {
		t.Fatalf("%d shopper errors, first: %v", len(sh.errs), sh.errs[0])
	}
	checkInvariants(t, pool, append(all, sh.done...))
	if problems := watch(); len(problems) > 0 {
		t.Errorf("orders stepped back (a transition ran twice?): %s", strings.Join(problems[:min(5, len(problems))], "; "))
	}
	select {
	case <-procs[1].done:
		t.Error("the thawed instance exited")
	default:
	}
}

// ----- Postgres restart -----

// privatePostgres is a Postgres server of the test's own, in a temporary
// directory, which the test may stop and start at will without disturbing
// the shared server other tests use.
type privatePostgres struct {
	t       *testing.T
	bin     string // directory of initdb and postgres
	dir     string
	port    string
	cred    *syscall.Credential // the postgres user's, when running as root (Postgres refuses root)
	cmd     *exec.Cmd
	exited  chan struct{}
	logFile *os.File
}

// startPrivatePostgres initialises and starts a server, or skips the test
// when Postgres's server binaries are not installed (CI installs them).
func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb") // the pattern is valid
	if len(bins) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("no Postgres server binaries in /usr/lib/postgresql: CI must run this test")
		}
		t.Skip("no Postgres server binaries in /usr/lib/postgresql")
	}
	sort.Strings(bins)
	pg := &privatePostgres{t: t, bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "ws-pg-")
	if err != nil {
		t.Fatal(err)
	}
	pg.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root and there is no postgres user to run a server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid) // numeric on Linux
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	pg.logFile, err = os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	if pg.cred != nil {
		os.Chown(pg.logFile.Name(), int(pg.cred.Uid), int(pg.cred.Gid)) // best effort: the server writes through our fd anyway
	}
	initdb := pg.command("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, pg.port, _ = net.SplitHostPort(ln.Addr().String())
	ln.Close() // free for the server; a race with another process taking it is unlikely
	pg.start()
	t.Cleanup(pg.stop)
	return pg
}

func (pg *privatePostgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pg.bin, name), args...)
	cmd.Dir = pg.dir
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	}
	return cmd
}

// url is the server's URL for database db.
func (pg *privatePostgres) url(db string) string {
	return "postgres://postgres@127.0.0.1:" + pg.port + "/" + db + "?sslmode=disable"
}

func (pg *privatePostgres) start() {
	t := pg.t
	t.Helper()
	pg.cmd = pg.command("postgres", "-D", filepath.Join(pg.dir, "data"), "-p", pg.port, "-k", pg.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200")
	pg.cmd.Stdout, pg.cmd.Stderr = pg.logFile, pg.logFile
	if err := pg.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pg.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		cmd.Wait() // stop checks that it exited; how does not matter
		close(exited)
	}(pg.cmd, pg.exited)
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := pgxpool.New(context.Background(), pg.url("postgres"))
		if err == nil {
			err = conn.Ping(context.Background())
			conn.Close()
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(pg.logFile.Name())
			t.Fatalf("private Postgres not ready: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop shuts the server down the way pg_ctl -m fast does (SIGINT): sessions
// are cut, everything committed is kept.
func (pg *privatePostgres) stop() {
	if pg.cmd == nil || pg.cmd.Process == nil {
		return
	}
	pg.cmd.Process.Signal(syscall.SIGINT) // fails only if it already exited
	select {
	case <-pg.exited:
	case <-time.After(30 * time.Second):
		pg.cmd.Process.Kill() // a server that ignores a fast shutdown: the test is over anyway
		<-pg.exited
	}
	pg.cmd = nil
}

// TestClusterSurvivesPostgresRestart: two instances under load while their
// Postgres server is stopped for longer than TAKEOVER_AFTER and started
// again: they reconnect, lose no order, and do not take each other over.
func TestClusterSurvivesPostgresRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Postgres server and two store processes")
	}
	t.Parallel()
	pg := startPrivatePostgres(t)
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, pg.url("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE store"); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	dbURL := pg.url("store")
	procs := []*storeProc{startNode(t, dbURL, "pg-0", "0")}
	procs = append(procs, startNode(t, dbURL, "pg-1", "0"))
	pool := openPool(t, dbURL)
	if _, err := pool.Exec(ctx, `UPDATE products SET inventory = $1`, clusterStock); err != nil {
		t.Fatal(err)
	}
	watch := progressWatch(t, pool)
	sh := newShoppers(func() []string { return []string{procs[0].base, procs[1].base} })
	stop := make(chan struct{})
	waitShoppers := sh.run(6, stop)

	// Restart once orders are in every state.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pending, paid int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE order_status = 0), count(*) FILTER (WHERE order_status = 2) FROM orders`).Scan(&pending, &paid); err != nil {
			t.Fatal(err)
		}
		if pending >= 2 && paid >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("load never had 2 pending and 3 paid orders at once (%d, %d)", pending, paid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pool.Reset() // its connections die with the server
	down := time.Now()
	pg.stop()
	time.Sleep(clusterTakeoverAfter + time.Second) // the outage outlasts TAKEOVER_AFTER: no instance may take another over
	pg.start()
	t.Logf("Postgres down for %v", time.Since(down).Round(time.Millisecond))

	// Shoppers go on until a dozen more purchases are complete.
	back := time.Now()
	doneAtRestart := sh.count()
	for sh.count() < doneAtRestart+12 {
		if time.Since(back) > 60*time.Second {
			t.Fatalf("only %d purchases completed in the minute after Postgres came back", sh.count()-doneAtRestart)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("MEASURED a dozen purchases completed %v after Postgres came back", time.Since(back).Round(time.Millisecond))
	close(stop)
	waitShoppers()
	if len(sh.errs) > 0 {
		t.Fatalf("%d shopper errors, first: %v", len(sh.errs), sh.errs[0])
	}
	checkInvariants(t, pool, sh.done)
	if problems := watch(); len(problems) > 0 {
		t.Errorf("orders stepped back: %s", strings.Join(problems[:min(5, len(problems))], "; "))
	}
	for _, p := range procs {
		if n := metricValue(t, p.base, "widget_peers_taken_over_total", ""); n != 0 {
			t.Errorf("%s took over %v peers during a database outage; want none", p.base, n)
		}
		select {
		case <-p.done:
			t.Errorf("%s exited during the outage", p.base)
		default:
		}
	}
	var marked int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM instances WHERE taken_over_by IS NOT NULL`).Scan(&marked); err != nil {
		t.Fatal(err)
	}
	if marked != 0 {
		t.Errorf("%d instances marked taken over after a database outage; want 0", marked)
	}
}
