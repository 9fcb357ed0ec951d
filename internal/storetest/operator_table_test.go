package storetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// The rows of README's decision table (Operating it with DBOS's CLI) that
// operator_test.go does not cover, each acted out with DBOS's real CLI
// against the real store process, on both databases. Every phase asserts
// what a user would notice (the order's status, the stock, the number of
// orders, the payment's answer, the refunds at the provider), and each test
// ends with the invariant checker.

// initialStock is the schema's seed stock.
const initialStock = 100

// tryCLI runs `go tool dbos workflow ARGS… -D <db>` and returns its output
// and error: for the actions whose refusal is itself the answer.
func tryCLI(db *loadgen.Database, args ...string) (string, error) {
	root, err := loadgen.FindModuleRoot()
	if err != nil {
		return "", err
	}
	u := db.URL
	if db.Kind == "sqlite" {
		u = "sqlite:" + db.Path
	}
	cmd := exec.Command("go", append(append([]string{"tool", "dbos", "workflow"}, args...), "-D", u)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// forkCLI is `dbos workflow fork ID ARGS…`; it returns the forked
// execution's workflow ID.
func forkCLI(t *testing.T, db *loadgen.Database, id string, args ...string) string {
	t.Helper()
	out := dbosCLI(t, db, append([]string{"fork", id}, args...)...)
	var fork struct {
		ID string `json:"workflow_uuid"`
	}
	if i := strings.IndexByte(out, '{'); i < 0 || json.Unmarshal([]byte(out[i:]), &fork) != nil || fork.ID == "" {
		t.Fatalf("dbos workflow fork %s %v: unreadable output:\n%s", id, args, out)
	}
	return fork.ID
}

// waitStatus waits until `dbos workflow get ID` says status.
func waitStatus(t *testing.T, db *loadgen.Database, id, status string, timeout time.Duration) {
	t.Helper()
	WaitUntil(t, timeout, "workflow "+id+" is "+status, func() bool { return workflowStatus(t, db, id) == status })
}

// forward is an order sampler's check that the order only ever moves
// forward: its progress never goes up.
type forward struct {
	mu       sync.Mutex
	progress int
	went     []string
}

func newForward() *forward { return &forward{progress: shop.DispatchLegs} }

func (f *forward) see(o Order) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if o.ProgressRemaining > f.progress {
		f.went = append(f.went, fmt.Sprintf("progress %d after %d", o.ProgressRemaining, f.progress))
	}
	f.progress = o.ProgressRemaining
}

func (f *forward) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.went) > 0 {
		t.Errorf("the order went backwards: %v", f.went)
	}
}

// buy makes a checkout of a fresh key and returns the purchase so far.
func buy(t *testing.T, st *Store) loadgen.Purchase {
	t.Helper()
	key := NewKey()
	pid := MustCall(t, "POST", st.URL("/checkout/"+key), http.StatusOK)
	return loadgen.Purchase{Key: key, Checkout: loadgen.Answer{Status: http.StatusOK, Body: pid}}
}

// pay sends payment status for p and records the answer in p.
func pay(t *testing.T, st *Store, p *loadgen.Purchase, status string) (int, string) {
	t.Helper()
	code, body := Call(t, "POST", st.URL("/payment_webhook/"+p.Key+"/"+status))
	p.Sent, p.Payment = status, loadgen.Answer{Status: code, Body: strings.TrimSpace(body)}
	return code, body
}

// orderID is the order id of an answer body.
func orderID(t *testing.T, body string) int64 {
	t.Helper()
	id, err := strconv.ParseInt(strings.TrimSpace(body), 10, 64)
	if err != nil {
		t.Fatalf("order id %q: %v", body, err)
	}
	return id
}

// orderByID is GET /order/{id}.
func orderByID(t *testing.T, st *Store, id int64) Order {
	t.Helper()
	return GetJSON[Order](t, st.URL("/order/"+strconv.FormatInt(id, 10)))
}

// lastUpdate is order id's last_update_time, which every write of it sets:
// read beside the running store (see WorkflowCount), to tell a fork that
// wrote nothing from one that wrote the same values again.
func lastUpdate(t *testing.T, db *loadgen.Database, id int64) int64 {
	t.Helper()
	var at int64
	query(t, db, `SELECT last_update_time FROM orders WHERE order_id = `+strconv.FormatInt(id, 10), func(scan func(...any) error) error { return scan(&at) })
	return at
}

// newestID is the id of the newest order.
func newestID(t *testing.T, st *Store) int64 { return NewestOrder(t, st.Base()).OrderID }

// TestOperatorTableForkDeleteRefund acts out, on one store: fork of a
// dispatch and of a checkout (from each step, to another application
// version), delete of an unfinished checkout, cancel and resume of a
// refund, and resume/fork/cancel of the store's own release and redispatch
// workflows.
func TestOperatorTableForkDeleteRefund(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the store and DBOS's CLI")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		prov := newTestProvider(t, providerUp)
		// The window outlasts the fork phase: it forks a waiting checkout
		// three times through DBOS's CLI and waits for eight forks before it
		// pays it, which took 57 s on a loaded machine (the checkout then
		// timed out before its payment).
		st := startBehind(t, db, prov, "RECONCILE_EVERY=300ms", "PAYMENT_TIMEOUT=180s")
		stock := Inventory(t, st.Base())
		var purchases []loadgen.Purchase

		phase(t, "fork a dispatch mid-way and finished: nothing new written, progress never up, DISPATCHED once", func(t *testing.T) {
			p := buy(t, st)
			_, body := pay(t, st, &p, shop.PaymentPaid)
			purchases = append(purchases, p)
			id := orderID(t, body)
			f := newForward()
			WaitOrder(t, st.Base(), body, 10*time.Second, func(o Order) bool { f.see(o); return o.ProgressRemaining <= shop.DispatchLegs-3 })
			var forks []string
			for _, step := range []string{"1", "2"} {
				forks = append(forks, forkCLI(t, db, shop.DispatchWorkflowID(id), "--step", step))
			}
			o := WaitOrder(t, st.Base(), body, 30*time.Second, func(o Order) bool { f.see(o); return IsFinal(o) })
			if o.OrderStatus != shop.StatusDispatched || o.ProgressRemaining != 0 {
				t.Fatalf("order %d ended %s with %d to go", id, o.Status, o.ProgressRemaining)
			}
			stock--
			for _, fid := range forks {
				waitStatus(t, db, fid, "SUCCESS", 30*time.Second)
			}
			written := lastUpdate(t, db, id)
			finished := forkCLI(t, db, shop.DispatchWorkflowID(id))
			waitStatus(t, db, finished, "SUCCESS", 30*time.Second)
			if at := lastUpdate(t, db, id); at != written {
				t.Errorf("the fork of the finished dispatch wrote order %d (last update %d, was %d)", id, at, written)
			}
			waitStatus(t, db, shop.DispatchWorkflowID(id), "SUCCESS", 10*time.Second)
			f.see(orderByID(t, st, id))
			f.check(t)
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d after forking the dispatch, want %d", got, stock)
			}
		})

		phase(t, "fork a checkout from each step: no second order, no stock movement", func(t *testing.T) {
			// A finished, paid checkout, forked from every step it recorded.
			p := buy(t, st)
			_, body := pay(t, st, &p, shop.PaymentPaid)
			purchases = append(purchases, p)
			WaitOrder(t, st.Base(), body, 30*time.Second, IsFinal)
			stock--
			t.Logf("steps of checkout %s:\n%s", p.Key, dbosCLI(t, db, "steps", p.Key))
			orders := len(Orders(t, st.Base()))
			var forks []string
			for step := 0; step <= 3; step++ { // its steps are 0-2 (reserve, settle, dispatch), and one past the end
				forks = append(forks, forkCLI(t, db, p.Key, "--step", strconv.Itoa(step)))
			}
			// A checkout waiting for its payment, forked mid-wait, then paid:
			// the original takes the payment, the forks do nothing.
			w := buy(t, st)
			orders++
			for _, step := range []string{"1", "2", "3"} {
				forks = append(forks, forkCLI(t, db, w.Key, "--step", step))
			}
			for _, fid := range forks {
				waitStatus(t, db, fid, "SUCCESS", 30*time.Second)
			}
			if s := workflowStatus(t, db, w.Key); s != "PENDING" {
				t.Fatalf("the forked waiting checkout is %s, want PENDING (still waiting)", s)
			}
			if code, body := pay(t, st, &w, shop.PaymentPaid); code != http.StatusOK {
				t.Fatalf("payment for the checkout forked mid-wait: %d %q", code, body)
			}
			purchases = append(purchases, w)
			stock--
			if n := len(Orders(t, st.Base())); n != orders {
				t.Errorf("%d orders after the forks, want %d: a forked execution made an order", n, orders)
			}
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d after the forks, want %d", got, stock)
			}
		})

		var staleFork string
		phase(t, "fork a checkout to another application version: ENQUEUED until an instance of it runs; it holds nothing", func(t *testing.T) {
			p := buy(t, st)
			code, _ := pay(t, st, &p, shop.PaymentFailed)
			if code != http.StatusOK {
				t.Fatalf("decline: %d", code)
			}
			purchases = append(purchases, p)
			orders := len(Orders(t, st.Base()))
			// A version no instance runs: nothing dequeues it.
			staleFork = forkCLI(t, db, p.Key, "--application-version", "widget-store-no-such-build")
			// The previous build's version: this build carries it over at
			// its next start (store.UpgradeWorkflows) and runs it: a fork
			// does nothing.
			oldFork := forkCLI(t, db, p.Key, "--application-version", "widget-store-2")
			if err := st.Stop(stopTimeout); err != nil {
				t.Fatal(err)
			}
			st.Restart(t)
			waitStatus(t, db, oldFork, "SUCCESS", 30*time.Second)
			if s := workflowStatus(t, db, staleFork); s != "ENQUEUED" {
				t.Errorf("the fork to a version no instance runs is %s after a restart, want ENQUEUED", s)
			}
			if n := len(Orders(t, st.Base())); n != orders {
				t.Errorf("%d orders after the forks, want %d", n, orders)
			}
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d after the forks, want %d", got, stock)
			}
		})

		var releasedID int64
		phase(t, "delete a checkout waiting for payment: released as for cancel; a payment then 409 and refunded once", func(t *testing.T) {
			p := buy(t, st)
			releasedID = newestID(t, st)
			if got := Inventory(t, st.Base()); got != stock-1 {
				t.Fatalf("inventory %d with the order pending, want %d", got, stock-1)
			}
			dbosCLI(t, db, "delete", p.Key)
			WaitUntil(t, 20*time.Second, "the reconciler releases the order of the deleted checkout", func() bool {
				return orderByID(t, st, releasedID).OrderStatus == shop.StatusCancelled
			})
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d after the release, want %d", got, stock)
			}
			waitStatus(t, db, shop.ReleaseWorkflowID(releasedID), "SUCCESS", 10*time.Second)
			code, body := pay(t, st, &p, shop.PaymentPaid)
			if code != http.StatusConflict || !strings.Contains(body, "recorded for refund") {
				t.Fatalf("payment for the deleted checkout: %d %q, want 409 recorded for refund", code, body)
			}
			purchases = append(purchases, p)
			refund := waitRefunded(t, st.Base(), p.Key, 15*time.Second)
			if got := providerRefunds(t, db, p.Key); len(got) != 1 || got[0] != refund.RefundID {
				t.Errorf("provider refunds of %s: %v, want exactly [%s]", p.Key, got, refund.RefundID)
			}
		})

		phase(t, "delete a checkout, then pay at once (before the reconciler): 409 and refunded once", func(t *testing.T) {
			p := buy(t, st)
			id := newestID(t, st)
			dbosCLI(t, db, "delete", p.Key)
			code, body := pay(t, st, &p, shop.PaymentPaid)
			if code != http.StatusConflict || !strings.Contains(body, "recorded for refund") {
				t.Fatalf("payment for a just-deleted checkout: %d %q, want 409 recorded for refund", code, body)
			}
			purchases = append(purchases, p)
			if o := orderByID(t, st, id); o.OrderStatus != shop.StatusCancelled {
				t.Errorf("order %d is %s after the payment, want CANCELLED", id, o.Status)
			}
			waitRefunded(t, st.Base(), p.Key, 15*time.Second)
			if got := providerRefunds(t, db, p.Key); len(got) != 1 {
				t.Errorf("provider refunds of %s: %v, want one", p.Key, got)
			}
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d, want %d", got, stock)
			}
		})

		phase(t, "cancel a refund that is retrying, resume it once the provider is back: refunded exactly once", func(t *testing.T) {
			p := buy(t, st)
			pay(t, st, &p, shop.PaymentFailed)
			prov.mode.Store(providerDown)
			refused := prov.refused.Load()
			code, body := pay(t, st, &p, shop.PaymentPaid)
			if code != http.StatusConflict {
				t.Fatalf("paid after the decline: %d %q, want 409", code, body)
			}
			purchases = append(purchases, p)
			rid := shop.RefundWorkflowID(p.Key)
			WaitUntil(t, 15*time.Second, "the refund is retrying against the failing provider", func() bool {
				return prov.refused.Load() >= refused+3
			})
			dbosCLI(t, db, "cancel", rid)
			if s := workflowStatus(t, db, rid); s != "CANCELLED" {
				t.Fatalf("refund %s is %s after cancel", rid, s)
			}
			prov.mode.Store(providerUp)
			// The CLI's cancel only marks the workflow: the execution in the
			// process goes on retrying, and its next attempt reaches the
			// provider, which refunds. DBOS then refuses its checkpoint (the
			// workflow is no longer its), so nothing records the refund:
			// the late payment stays pending (and the reconciler leaves a
			// refund workflow that exists to the operator).
			WaitUntil(t, 20*time.Second, "the cancelled execution's retry reaches the provider", func() bool {
				return len(providerRefunds(t, db, p.Key)) == 1
			})
			if lp, ok := latePayment(t, st.Base(), p.Key); !ok || lp.RefundStatus != "pending" {
				t.Errorf("the cancelled refund's late payment: %+v (found %v), want pending", lp, ok)
			}
			if s := workflowStatus(t, db, rid); s != "CANCELLED" {
				t.Errorf("refund %s is %s before the resume, want CANCELLED", rid, s)
			}
			dbosCLI(t, db, "resume", rid)
			refund := waitRefunded(t, st.Base(), p.Key, 20*time.Second)
			waitStatus(t, db, rid, "SUCCESS", 10*time.Second)
			if got := providerRefunds(t, db, p.Key); len(got) != 1 || got[0] != refund.RefundID {
				t.Errorf("provider refunds of %s: %v, want exactly [%s]", p.Key, got, refund.RefundID)
			}
		})

		phase(t, "resume, fork and cancel the store's own release and redispatch workflows: no second stock movement", func(t *testing.T) {
			// A redispatch: cancel a dispatch mid-way.
			p := buy(t, st)
			_, body := pay(t, st, &p, shop.PaymentPaid)
			purchases = append(purchases, p)
			id := orderID(t, body)
			f := newForward()
			WaitOrder(t, st.Base(), body, 10*time.Second, func(o Order) bool { f.see(o); return o.ProgressRemaining <= shop.DispatchLegs-2 })
			dbosCLI(t, db, "cancel", shop.DispatchWorkflowID(id))
			rd := shop.RedispatchWorkflowID(id)
			WaitUntil(t, 15*time.Second, "the reconciler starts "+rd, func() bool {
				_, err := tryCLI(db, "get", rd)
				return err == nil
			})
			forks := []string{forkCLI(t, db, rd)} // mid-way
			o := WaitOrder(t, st.Base(), body, 30*time.Second, func(o Order) bool { f.see(o); return IsFinal(o) })
			if o.OrderStatus != shop.StatusDispatched {
				t.Fatalf("order %d ended %s", id, o.Status)
			}
			stock--
			waitStatus(t, db, rd, "SUCCESS", 15*time.Second)
			rel := shop.ReleaseWorkflowID(releasedID)
			written := map[int64]int64{id: lastUpdate(t, db, id), releasedID: lastUpdate(t, db, releasedID)}
			for _, wf := range []string{rd, rel} {
				forks = append(forks, forkCLI(t, db, wf), forkCLI(t, db, wf, "--step", "1"))
				out, err := tryCLI(db, "resume", wf)
				t.Logf("dbos workflow resume %s (finished): %v\n%s", wf, err, out)
				out, err = tryCLI(db, "cancel", wf)
				t.Logf("dbos workflow cancel %s (finished): %v\n%s", wf, err, out)
			}
			for _, fid := range forks {
				waitStatus(t, db, fid, "SUCCESS", 30*time.Second)
			}
			for oid, at := range written {
				if now := lastUpdate(t, db, oid); now != at {
					t.Errorf("a fork of a finished release or redispatch wrote order %d (last update %d, was %d)", oid, now, at)
				}
			}
			for _, wf := range []string{rd, rel} {
				if s := workflowStatus(t, db, wf); s != "SUCCESS" {
					t.Errorf("%s is %s after resume and cancel of it finished, want SUCCESS", wf, s)
				}
			}
			f.see(orderByID(t, st, id))
			f.check(t)
			if o := orderByID(t, st, releasedID); o.OrderStatus != shop.StatusCancelled {
				t.Errorf("released order %d is %s, want CANCELLED", releasedID, o.Status)
			}
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d, want %d", got, stock)
			}
		})

		phase(t, "the fork to a version no instance runs, deleted by the operator; invariants", func(t *testing.T) {
			if s := workflowStatus(t, db, staleFork); s != "ENQUEUED" {
				t.Errorf("the fork to a version no instance runs is %s, want ENQUEUED", s)
			}
			dbosCLI(t, db, "delete", staleFork)
			CheckInvariantsExcusing(t, st, initialStock, purchases, Settle(t, st, 30*time.Second), map[string]int{
				"dispatch CANCELLED": 1, // cancelled mid-way; redispatch/<id> shipped its order
			})
		})
	})
}

// TestOperatorTableCancelResume acts out, on one store: resume of a
// cancelled checkout before and after the reconciler released its order,
// and cancel of a checkout in the window after the payment and before the
// dispatch (reached by crashing the store right there).
func TestOperatorTableCancelResume(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the store, crashes it, and DBOS's CLI")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		// No reconciler pass after the first: the cancelled checkout below
		// stays unreleased for as long as the phase takes.
		st := Start(t, db, "RECONCILE_EVERY=1h", "PAYMENT_TIMEOUT=60s")
		stock := Inventory(t, st.Base())
		var purchases []loadgen.Purchase
		var resumedID int64

		phase(t, "resume a cancelled checkout not released yet: it runs on as if never cancelled, paid, dispatched", func(t *testing.T) {
			p := buy(t, st)
			resumedID = newestID(t, st)
			dbosCLI(t, db, "cancel", p.Key)
			if s := workflowStatus(t, db, p.Key); s != "CANCELLED" {
				t.Fatalf("checkout is %s after cancel", s)
			}
			dbosCLI(t, db, "resume", p.Key)
			waitStatus(t, db, p.Key, "PENDING", 15*time.Second)
			code, body := pay(t, st, &p, shop.PaymentPaid)
			if code != http.StatusOK || orderID(t, body) != resumedID {
				t.Fatalf("payment for the resumed checkout: %d %q, want 200 %d", code, body, resumedID)
			}
			purchases = append(purchases, p)
			stock--
			waitStatus(t, db, p.Key, "SUCCESS", 15*time.Second)
			WaitOrder(t, st.Base(), body, 10*time.Second, func(o Order) bool { return o.ProgressRemaining < shop.DispatchLegs })
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d, want %d", got, stock)
			}
			// The rest of its dispatch runs after the restart below (a
			// graceful stop leaves it PENDING; DBOS recovers it).
		})

		const fast = "RECONCILE_EVERY=300ms"
		const window = "PAYMENT_TIMEOUT=15s"
		phase(t, "cancel a checkout after its payment, before it started the dispatch: redispatch ships it", func(t *testing.T) {
			if err := st.Stop(stopTimeout); err != nil {
				t.Fatal(err)
			}
			// The store exits right after the settle step commits, before
			// the checkout starts the dispatch.
			st.RestartWith(t, "CRASH_AT=checkout:settle", fast, window)
			p := buy(t, st)
			if resp, err := http.Post(st.URL("/payment_webhook/"+p.Key+"/paid"), "", nil); err == nil {
				resp.Body.Close() // the answer may or may not come out before the exit
			}
			if code, err := st.WaitExit(30 * time.Second); err != nil || code != 1 {
				st.Kill()
				t.Fatalf("the store did not exit at checkout:settle: status %d, %v", code, err)
			}
			var status int
			query(t, db, `SELECT order_status FROM orders WHERE checkout_key = '`+p.Key+`'`, func(scan func(...any) error) error { return scan(&status) })
			if shop.Status(status) != shop.StatusPaid {
				t.Fatalf("order of %s is %v at the crash, want PAID", p.Key, shop.Status(status))
			}
			dbosCLI(t, db, "cancel", p.Key) // the store is down: the operator cancels what looks stuck
			st.RestartWith(t, fast, window)
			code, body := pay(t, st, &p, shop.PaymentPaid) // the retried webhook
			if code != http.StatusOK {
				t.Fatalf("the retried payment: %d %q, want 200 and the order id", code, body)
			}
			purchases = append(purchases, p)
			stock--
			id := orderID(t, body)
			f := newForward()
			o := WaitOrder(t, st.Base(), body, 40*time.Second, func(o Order) bool { f.see(o); return IsFinal(o) })
			f.check(t)
			if o.OrderStatus != shop.StatusDispatched {
				t.Fatalf("order %d ended %s, want DISPATCHED", id, o.Status)
			}
			waitStatus(t, db, shop.RedispatchWorkflowID(id), "SUCCESS", 15*time.Second)
			if s := workflowStatus(t, db, p.Key); s != "CANCELLED" {
				t.Errorf("the checkout is %s, want CANCELLED (not recovered)", s)
			}
			if out, err := tryCLI(db, "get", shop.DispatchWorkflowID(id)); err == nil {
				t.Errorf("the cancelled checkout started its dispatch after all:\n%s", out)
			}
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d, want %d", got, stock)
			}
		})

		phase(t, "resume a cancelled checkout already released: nothing changes, it ends with its order CANCELLED; a payment 409, refunded once", func(t *testing.T) {
			// Beside it, a checkout deleted while it waits: the execution
			// left waiting in the process reaches the same window's close and
			// must commit nothing (checked at the end of the phase).
			d := buy(t, st)
			deletedID := newestID(t, st)
			dbosCLI(t, db, "delete", d.Key)
			purchases = append(purchases, d)
			p := buy(t, st)
			id := newestID(t, st)
			dbosCLI(t, db, "cancel", p.Key)
			WaitUntil(t, 20*time.Second, "the reconciler releases the order", func() bool {
				return orderByID(t, st, id).OrderStatus == shop.StatusCancelled
			})
			if got := Inventory(t, st.Base()); got != stock {
				t.Fatalf("inventory %d after the release, want %d", got, stock)
			}
			dbosCLI(t, db, "resume", p.Key)
			// The resumed checkout looks at its order before it waits (it did
			// not create it), finds it CANCELLED, and its settle step follows
			// the row and ends, changing nothing: at once, not at its window's
			// close (it used to wait for it, and, before that, end in ERROR,
			// one more workflow for an operator to look at).
			waitStatus(t, db, p.Key, "SUCCESS", 15*time.Second)
			code, body := pay(t, st, &p, shop.PaymentPaid)
			if code != http.StatusConflict || !strings.Contains(body, "recorded for refund") {
				t.Fatalf("payment for the resumed released checkout: %d %q, want 409 recorded for refund", code, body)
			}
			purchases = append(purchases, p)
			waitRefunded(t, st.Base(), p.Key, 15*time.Second)
			if steps := stepNamesByWorkflow(t, db)[p.Key]; !slices.Equal(steps, []string{shop.StepReserve, shop.StepSettle}) {
				t.Errorf("the resumed checkout recorded %q, want reserve and settle", steps)
			}
			if o := orderByID(t, st, id); o.OrderStatus != shop.StatusCancelled {
				t.Errorf("order %d is %s, want CANCELLED", id, o.Status)
			}
			if got := providerRefunds(t, db, p.Key); len(got) != 1 {
				t.Errorf("provider refunds of %s: %v, want one", p.Key, got)
			}
			if o := orderByID(t, st, deletedID); o.OrderStatus != shop.StatusCancelled {
				t.Errorf("the deleted checkout's order %d is %s after its window closed, want CANCELLED (released)", deletedID, o.Status)
			}
			if out, err := tryCLI(db, "get", d.Key); err == nil {
				t.Errorf("the deleted checkout %s is back in DBOS's records:\n%s", d.Key, out)
			}
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d, want %d", got, stock)
			}
		})

		phase(t, "invariants", func(t *testing.T) {
			obs := Settle(t, st, 30*time.Second)
			if o := orderByID(t, st, resumedID); o.OrderStatus != shop.StatusDispatched {
				t.Errorf("the resumed checkout's order %d is %s, want DISPATCHED", resumedID, o.Status)
			}
			CheckInvariantsExcusing(t, st, initialStock, purchases, obs, map[string]int{
				"checkout CANCELLED": 1, // cancelled after its payment; redispatch/<id> shipped its order
			})
		})
	})
}
