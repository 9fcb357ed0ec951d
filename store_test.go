package main

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPaidPurchaseIsDispatched(t *testing.T) {
	forEachDB(t, func(t *testing.T, dbURL string) {
		base := startStore(t, dbURL, nil)
		if got := inventory(t, base); got != 100 {
			t.Fatalf("seeded inventory = %d, want 100", got)
		}
		key := newTestKey()
		pid := mustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
		if pid == "" {
			t.Fatal("checkout returned an empty payment id")
		}
		if got := inventory(t, base); got != 99 {
			t.Fatalf("inventory after checkout = %d, want 99 (one unit reserved)", got)
		}
		orderID := mustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK)
		if _, err := strconv.ParseInt(orderID, 10, 64); err != nil {
			t.Fatalf("webhook body %q is not an order id", orderID)
		}
		o := getJSON[apiOrder](t, base+"/order/"+orderID)
		if o.OrderStatus != statusPaid && o.OrderStatus != statusDispatched {
			t.Fatalf("order right after payment: %+v, want PAID", o)
		}
		// The dispatch takes 10 legs of one second; progress only goes down.
		last := 11
		o = waitOrder(t, base, orderID, 30*time.Second, func(o apiOrder) bool {
			if o.ProgressRemaining > last {
				t.Errorf("progress went up: %d after %d", o.ProgressRemaining, last)
			}
			last = o.ProgressRemaining
			return isFinal(o)
		})
		if o.OrderStatus != statusDispatched || o.ProgressRemaining != 0 || o.Status != "DISPATCHED" {
			t.Fatalf("final order %+v, want DISPATCHED with progress 0", o)
		}
		if got := inventory(t, base); got != 99 {
			t.Fatalf("inventory after the sale = %d, want 99", got)
		}
		// The same key again is the same checkout, not a second order.
		if again := mustCall(t, "POST", base+"/checkout/"+key, http.StatusOK); again != pid {
			t.Fatalf("second checkout with the same key: payment id %q, want %q", again, pid)
		}
		if again := mustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK); again != orderID {
			t.Fatalf("replayed payment answered %q, want order %s", again, orderID)
		}
		if n := len(getJSON[[]apiOrder](t, base+"/orders")); n != 1 {
			t.Fatalf("%d orders, want 1", n)
		}
	})
}

func TestDeclinedPurchaseIsCancelledAndRestocked(t *testing.T) {
	forEachDB(t, func(t *testing.T, dbURL string) {
		base := startStore(t, dbURL, nil)
		pid := mustCall(t, "POST", base+"/checkout/"+newTestKey(), http.StatusOK)
		orderID := mustCall(t, "POST", base+"/payment_webhook/"+pid+"/failed", http.StatusOK)
		o := getJSON[apiOrder](t, base+"/order/"+orderID)
		if o.OrderStatus != statusCancelled {
			t.Fatalf("declined order: %+v, want CANCELLED", o)
		}
		if got := inventory(t, base); got != 100 {
			t.Fatalf("inventory after a decline = %d, want 100 (unit returned)", got)
		}
		// A paid arriving after the decline must not resurrect the order.
		status, body := call(t, "POST", base+"/payment_webhook/"+pid+"/paid")
		if status != http.StatusConflict || !strings.Contains(body, "refund") {
			t.Fatalf("paid after decline: %d %q, want 409 mentioning the refund", status, body)
		}
		if o := getJSON[apiOrder](t, base+"/order/"+orderID); o.OrderStatus != statusCancelled {
			t.Fatalf("order after a late paid: %+v, want still CANCELLED", o)
		}
		if got := inventory(t, base); got != 100 {
			t.Fatalf("inventory = %d, want 100", got)
		}
	})
}

func TestSoldOut(t *testing.T) {
	forEachDB(t, func(t *testing.T, dbURL string) {
		base := startStore(t, dbURL, nil)
		mustCall(t, "POST", base+"/restock?inventory=1", http.StatusOK)
		pid := mustCall(t, "POST", base+"/checkout/"+newTestKey(), http.StatusOK)
		status, body := call(t, "POST", base+"/checkout/"+newTestKey())
		if status != http.StatusConflict || !strings.Contains(body, "sold out") {
			t.Fatalf("checkout with no stock: %d %q, want 409 sold out", status, body)
		}
		if got := inventory(t, base); got != 0 {
			t.Fatalf("inventory = %d, want 0", got)
		}
		if n := len(getJSON[[]apiOrder](t, base+"/orders")); n != 1 {
			t.Fatalf("%d orders, want 1: a sold-out checkout makes no order", n)
		}
		// Declining the one order puts the unit back; then a buyer succeeds.
		mustCall(t, "POST", base+"/payment_webhook/"+pid+"/failed", http.StatusOK)
		mustCall(t, "POST", base+"/checkout/"+newTestKey(), http.StatusOK)
	})
}

func TestConcurrentCheckoutsOfOneKeyMakeOneOrder(t *testing.T) {
	forEachDB(t, func(t *testing.T, dbURL string) {
		base := startStore(t, dbURL, nil)
		key := newTestKey()
		const n = 10
		pids := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				status, body := call(t, "POST", base+"/checkout/"+key)
				if status != http.StatusOK {
					t.Errorf("checkout %d: %d %q", i, status, body)
				}
				pids[i] = body
			})
		}
		wg.Wait()
		for i, p := range pids {
			if p != pids[0] {
				t.Fatalf("checkout %d got payment id %q, checkout 0 got %q", i, p, pids[0])
			}
		}
		if n := len(getJSON[[]apiOrder](t, base+"/orders")); n != 1 {
			t.Fatalf("%d orders for one key, want 1", n)
		}
		if got := inventory(t, base); got != 99 {
			t.Fatalf("inventory = %d, want 99", got)
		}
	})
}

func TestUnpaidCheckoutTimesOut(t *testing.T) {
	forEachDB(t, func(t *testing.T, dbURL string) {
		base := startStore(t, dbURL, map[string]string{"PAYMENT_TIMEOUT": "1s"})
		pid := mustCall(t, "POST", base+"/checkout/"+newTestKey(), http.StatusOK)
		orders := getJSON[[]apiOrder](t, base+"/orders")
		if len(orders) != 1 {
			t.Fatalf("%d orders, want 1", len(orders))
		}
		id := strconv.FormatInt(orders[0].OrderID, 10)
		o := waitOrder(t, base, id, 15*time.Second, isFinal)
		if o.OrderStatus != statusCancelled {
			t.Fatalf("unpaid order %+v, want CANCELLED after the payment window", o)
		}
		if got := inventory(t, base); got != 100 {
			t.Fatalf("inventory = %d, want 100 (unit returned)", got)
		}
		// Payment arriving after the window: not silently charged.
		status, body := call(t, "POST", base+"/payment_webhook/"+pid+"/paid")
		if status != http.StatusConflict || !strings.Contains(body, "refund") {
			t.Fatalf("late payment: %d %q, want 409 recorded for refund", status, body)
		}
		if o := getJSON[apiOrder](t, base+"/order/"+id); o.OrderStatus != statusCancelled {
			t.Fatalf("order after late payment %+v, want CANCELLED", o)
		}
	})
}

func TestPagesRender(t *testing.T) {
	forEachDB(t, func(t *testing.T, dbURL string) {
		base := startStore(t, dbURL, nil)
		page := mustCall(t, "GET", base+"/", http.StatusOK)
		for _, want := range []string{"Premium Quality Widget", "$99.99", `data-testid="buy"`, "/static/htmx.min.js", "100</strong> in stock"} {
			if !strings.Contains(page, want) {
				t.Errorf("store page lacks %q", want)
			}
		}
		js := mustCall(t, "GET", base+"/static/htmx.min.js", http.StatusOK)
		if !strings.Contains(js, "htmx") || len(js) < 40000 {
			t.Errorf("htmx.min.js not served from the binary (%d bytes)", len(js))
		}
	})
}
