package main

import (
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/storetest"
)

// The checkout and dispatch workflows, driven through the in-process store
// (startStore) over HTTP, on both databases: what a shopper sees, and what
// DBOS recorded.

func TestPaidPurchaseIsDispatched(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := startStore(t, db.URL, nil)
		if got := storetest.Inventory(t, base); got != 100 {
			t.Fatalf("seeded inventory = %d, want 100", got)
		}
		key := storetest.NewKey()
		pid := storetest.MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
		if pid == "" {
			t.Fatal("checkout returned an empty payment id")
		}
		if got := storetest.Inventory(t, base); got != 99 {
			t.Fatalf("inventory after checkout = %d, want 99 (one unit reserved)", got)
		}
		orderID := storetest.MustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK)
		if _, err := strconv.ParseInt(orderID, 10, 64); err != nil {
			t.Fatalf("webhook body %q is not an order id", orderID)
		}
		o := storetest.GetJSON[storetest.Order](t, base+"/order/"+orderID)
		if o.OrderStatus != shop.StatusPaid && o.OrderStatus != shop.StatusDispatched {
			t.Fatalf("order right after payment: %+v, want PAID", o)
		}
		// The dispatch takes 10 legs of one second; progress only goes down.
		last := shop.DispatchLegs + 1
		o = storetest.WaitOrder(t, base, orderID, 30*time.Second, func(o storetest.Order) bool {
			if o.ProgressRemaining > last {
				t.Errorf("progress went up: %d after %d", o.ProgressRemaining, last)
			}
			last = o.ProgressRemaining
			return storetest.IsFinal(o)
		})
		if o.OrderStatus != shop.StatusDispatched || o.ProgressRemaining != 0 || o.Status != "DISPATCHED" {
			t.Fatalf("final order %+v, want DISPATCHED with progress 0", o)
		}
		if got := storetest.Inventory(t, base); got != 99 {
			t.Fatalf("inventory after the sale = %d, want 99", got)
		}
		// The same key again is the same checkout, not a second order.
		if again := storetest.MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK); again != pid {
			t.Fatalf("second checkout with the same key: payment id %q, want %q", again, pid)
		}
		if again := storetest.MustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK); again != orderID {
			t.Fatalf("replayed payment answered %q, want order %s", again, orderID)
		}
		if n := len(storetest.Orders(t, base)); n != 1 {
			t.Fatalf("%d orders, want 1", n)
		}
		// DBOS recorded each step once, under its durable name.
		// The payment is settled from the order row: no DBOS.recv.
		checkSteps(t, db, key, []string{shop.StepReserve, shop.StepSettle, shop.DispatchWorkflow})
		// The dispatch records none: its legs are idempotent writes.
		checkSteps(t, db, shop.DispatchWorkflowID(mustInt(t, orderID)), nil)
	})
}

func TestDeclinedPurchaseIsCancelledAndRestocked(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := startStore(t, db.URL, nil)
		key := storetest.NewKey()
		pid := storetest.MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
		orderID := storetest.MustCall(t, "POST", base+"/payment_webhook/"+pid+"/failed", http.StatusOK)
		o := storetest.GetJSON[storetest.Order](t, base+"/order/"+orderID)
		if o.OrderStatus != shop.StatusCancelled {
			t.Fatalf("declined order: %+v, want CANCELLED", o)
		}
		if got := storetest.Inventory(t, base); got != 100 {
			t.Fatalf("inventory after a decline = %d, want 100 (unit returned)", got)
		}
		// A paid arriving after the decline must not resurrect the order.
		status, body := storetest.Call(t, "POST", base+"/payment_webhook/"+pid+"/paid")
		if status != http.StatusConflict || !strings.Contains(body, "refund") {
			t.Fatalf("paid after decline: %d %q, want 409 mentioning the refund", status, body)
		}
		if o := storetest.GetJSON[storetest.Order](t, base+"/order/"+orderID); o.OrderStatus != shop.StatusCancelled {
			t.Fatalf("order after a late paid: %+v, want still CANCELLED", o)
		}
		if got := storetest.Inventory(t, base); got != 100 {
			t.Fatalf("inventory = %d, want 100", got)
		}
		// The webhook settled the decline; the settle step follows it.
		checkSteps(t, db, key, []string{shop.StepReserve, shop.StepSettle})
		// The late payment is refunded by its refund workflow, in two named steps.
		storetest.WaitUntil(t, 10*time.Second, "the late payment is refunded", func() bool {
			late := storetest.LatePayments(t, base)
			return len(late) == 1 && late[0].PaymentID == pid && late[0].RefundStatus == "refunded"
		})
		checkSteps(t, db, shop.RefundWorkflowID(pid), []string{shop.StepRefundCall, shop.StepRefundRecord})
	})
}

func TestSoldOut(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := startStore(t, db.URL, nil)
		storetest.MustCall(t, "POST", base+"/restock?inventory=1", http.StatusOK)
		pid := storetest.MustCall(t, "POST", base+"/checkout/"+storetest.NewKey(), http.StatusOK)
		status, body := storetest.Call(t, "POST", base+"/checkout/"+storetest.NewKey())
		if status != http.StatusConflict || !strings.Contains(body, "sold out") {
			t.Fatalf("checkout with no stock: %d %q, want 409 sold out", status, body)
		}
		if got := storetest.Inventory(t, base); got != 0 {
			t.Fatalf("inventory = %d, want 0", got)
		}
		if n := len(storetest.Orders(t, base)); n != 1 {
			t.Fatalf("%d orders, want 1: a sold-out checkout makes no order", n)
		}
		// Declining the one order puts the unit back; then a buyer succeeds.
		storetest.MustCall(t, "POST", base+"/payment_webhook/"+pid+"/failed", http.StatusOK)
		storetest.MustCall(t, "POST", base+"/checkout/"+storetest.NewKey(), http.StatusOK)
	})
}

func TestConcurrentCheckoutsOfOneKeyMakeOneOrder(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := startStore(t, db.URL, nil)
		key := storetest.NewKey()
		const n = 10
		pids := make([]string, n)
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				// Not storetest.Call: it may fail the test only from the
				// test's goroutine.
				resp, err := http.Post(base+"/checkout/"+key, "", nil)
				if err != nil {
					t.Errorf("checkout %d: %v", i, err)
					return
				}
				defer resp.Body.Close()
				b := new(strings.Builder)
				if _, err := io.Copy(b, resp.Body); err != nil {
					t.Errorf("checkout %d: read body: %v", i, err)
				}
				statuses[i], pids[i] = resp.StatusCode, b.String()
			})
		}
		wg.Wait()
		for i, p := range pids {
			if statuses[i] != http.StatusOK {
				t.Fatalf("checkout %d: %d %q, want 200", i, statuses[i], p)
			}
			if p != pids[0] {
				t.Fatalf("checkout %d got payment id %q, checkout 0 got %q", i, p, pids[0])
			}
		}
		if n := len(storetest.Orders(t, base)); n != 1 {
			t.Fatalf("%d orders for one key, want 1", n)
		}
		if got := storetest.Inventory(t, base); got != 99 {
			t.Fatalf("inventory = %d, want 99", got)
		}
		if got := storetest.WorkflowCount(t, db); got != 1 {
			t.Fatalf("%d DBOS workflows for one key, want 1", got)
		}
	})
}

func TestUnpaidCheckoutTimesOut(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := startStore(t, db.URL, map[string]string{"PAYMENT_TIMEOUT": "1s"})
		pid := storetest.MustCall(t, "POST", base+"/checkout/"+storetest.NewKey(), http.StatusOK)
		orders := storetest.Orders(t, base)
		if len(orders) != 1 {
			t.Fatalf("%d orders, want 1", len(orders))
		}
		id := strconv.FormatInt(orders[0].OrderID, 10)
		o := storetest.WaitOrder(t, base, id, 15*time.Second, storetest.IsFinal)
		if o.OrderStatus != shop.StatusCancelled {
			t.Fatalf("unpaid order %+v, want CANCELLED after the payment window", o)
		}
		if got := storetest.Inventory(t, base); got != 100 {
			t.Fatalf("inventory = %d, want 100 (unit returned)", got)
		}
		// Payment arriving after the window: not silently charged.
		status, body := storetest.Call(t, "POST", base+"/payment_webhook/"+pid+"/paid")
		if status != http.StatusConflict || !strings.Contains(body, "refund") {
			t.Fatalf("late payment: %d %q, want 409 recorded for refund", status, body)
		}
		if o := storetest.GetJSON[storetest.Order](t, base+"/order/"+id); o.OrderStatus != shop.StatusCancelled {
			t.Fatalf("order after late payment %+v, want CANCELLED", o)
		}
	})
}

func TestPagesRender(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := startStore(t, db.URL, nil)
		page := storetest.MustCall(t, "GET", base+"/", http.StatusOK)
		for _, want := range []string{"Premium Quality Widget", "$99.99", `data-testid="buy"`, "/static/htmx.min.js", "100</strong> in stock"} {
			if !strings.Contains(page, want) {
				t.Errorf("store page lacks %q", want)
			}
		}
		js := storetest.MustCall(t, "GET", base+"/static/htmx.min.js", http.StatusOK)
		if !strings.Contains(js, "htmx") || len(js) < 40000 {
			t.Errorf("htmx.min.js not served from the binary (%d bytes)", len(js))
		}
	})
}

// checkSteps checks the steps DBOS recorded for one workflow: the durable
// names, in order (DBOS.sleep, the deadline a Recv may checkpoint, aside),
// and none derived from a Go symbol ("main.…-fm", what DBOS records for a
// step without a name).
func checkSteps(t *testing.T, db *loadgen.Database, workflowID string, want []string) {
	t.Helper()
	var got []string
	for _, s := range storetest.RecordedSteps(t, db) {
		if s.WorkflowID != workflowID {
			continue
		}
		if strings.Contains(s.Name, "main.") || strings.Contains(s.Name, "-fm") {
			t.Errorf("workflow %s step %d is recorded as %q, a Go symbol, not a durable step name", workflowID, s.StepID, s.Name)
		}
		if s.Name != "DBOS.sleep" {
			got = append(got, s.Name)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("workflow %s recorded steps %q, want %q", workflowID, got, want)
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%q is not a number: %v", s, err)
	}
	return n
}
