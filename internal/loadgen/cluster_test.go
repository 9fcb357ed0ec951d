package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"widget-store/internal/shop"
)

// A call that fails on one instance moves on to the next, with the same
// path, until an instance answers; the payment goes through the instance
// after the one that answered the checkout; a 4xx is an answer.
func TestFailoverMovesOnAndAttributes(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // refuses connections
	var mu sync.Mutex
	var busyCalls, upCalls []string
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		busyCalls = append(busyCalls, r.URL.Path)
		mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/checkout/") {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("7\n"))
	}))
	defer busy.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upCalls = append(upCalls, r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/checkout/gone" {
			http.Error(w, "sold out", http.StatusConflict)
			return
		}
		w.Write([]byte(strings.TrimPrefix(r.URL.Path, "/checkout/")))
	}))
	defer up.Close()

	f := NewFailover([]string{down.URL, busy.URL, up.URL}, 2, 5*time.Second)
	f.Stats = NewStats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The first checkout starts on instance 0: down, then busy, then up.
	a, attempts, err := f.Checkout(ctx, "k1")
	if err != nil || a != (Answer{200, "k1"}) || attempts != 3 {
		t.Fatalf("checkout: %v after %d attempts, %v; want 200 k1 after 3", a, attempts, err)
	}
	// The payment starts after up (2): on down (0), then busy (1) answers.
	a, attempts, err = f.Pay(ctx, "k1", "paid")
	if err != nil || a != (Answer{200, "7"}) || attempts != 2 {
		t.Fatalf("pay: %v after %d attempts, %v; want 200 7 after 2", a, attempts, err)
	}
	s, ok := f.Served("k1")
	if !ok || s.CheckoutNode != 2 || s.PayNode != 1 || s.PayLatency <= 0 {
		t.Errorf("served k1: %+v, %v; want checkout on 2, payment on 1, with its latency", s, ok)
	}
	// The next checkout starts on instance 1 (busy) and is answered by up
	// with a 409: an answer, not a failure.
	a, attempts, err = f.Checkout(ctx, "gone")
	if err != nil || a.Status != http.StatusConflict || attempts != 2 {
		t.Fatalf("sold-out checkout: %v after %d attempts, %v; want 409 after 2", a, attempts, err)
	}
	if got := f.PerNode(); got[0] != (NodeCalls{}) || got[1] != (NodeCalls{Payments: 1}) || got[2] != (NodeCalls{Checkouts: 2}) {
		t.Errorf("per node: %+v", got)
	}
	errs := f.Stats.Errors()
	if errs["checkout: connection refused"] != 1 || errs["checkout: http 503"] != 2 || errs["webhook: connection refused"] != 1 {
		t.Errorf("failed attempts: %v", errs)
	}
	mu.Lock()
	if len(busyCalls) != 3 || len(upCalls) != 2 {
		t.Errorf("calls: busy %v, up %v", busyCalls, upCalls)
	}
	mu.Unlock()

	// When no instance answers, the call gives up when ctx ends.
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	g := NewFailover([]string{down.URL, down.URL}, 1, time.Second)
	if _, _, err := g.Checkout(short, "k2"); err == nil || !strings.Contains(err.Error(), "gave up") {
		t.Errorf("checkout with every instance down: %v, want gave up", err)
	}
	if s, ok := g.Served("k2"); ok || s.CheckoutNode != -1 {
		t.Errorf("served k2: %+v, %v; want nothing", s, ok)
	}
}

// A sampler that reads from another source than the API (the database
// sampler) applies the same rules: a status that steps back, progress that
// rises, DISPATCHED with progress left, negative stock.
func TestSamplerSourceRecordsViolations(t *testing.T) {
	samples := []struct {
		orders []apiOrder
		stock  int
	}{
		{[]apiOrder{{1, shop.StatusPaid, 8}, {2, shop.StatusPending, shop.DispatchLegs}, {3, shop.StatusPaid, 5}}, 5},
		{[]apiOrder{{1, shop.StatusPending, 8}, {2, shop.StatusPending, shop.DispatchLegs}, {3, shop.StatusPaid, 6}}, 5},
		{[]apiOrder{{1, shop.StatusPaid, 8}, {2, shop.StatusDispatched, 3}, {3, shop.StatusPaid, 6}}, -1},
	}
	i := 0
	s := &Sampler{orders: map[int64]seenOrder{}, minInv: 1 << 62}
	s.read = func(context.Context) ([]apiOrder, int, bool, error) {
		o := samples[i]
		i++
		return o.orders, o.stock, true, nil
	}
	for range samples {
		if _, err := s.Sample(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	n, orders, minStock, violations := s.Result()
	if n != 3 || orders != 3 || minStock != -1 {
		t.Errorf("result: %d samples, %d orders, min stock %d", n, orders, minStock)
	}
	for _, want := range []string{
		"order 1 went from PAID back to PENDING",
		"order 3 progress rose from 5 to 6",
		"order 2 is DISPATCHED with progress 3",
		"stock -1 < 0",
	} {
		found := false
		for _, v := range violations {
			found = found || v == want
		}
		if !found {
			t.Errorf("violation %q not recorded; got %q", want, violations)
		}
	}
}
