package loadgen

import (
	"strings"
	"testing"

	"widget-store/internal/shop"
)

// The checker must fail on each kind of corruption it exists to catch: a
// checker that always passes proves nothing.
func TestCheckInvariantsCatchesEachViolation(t *testing.T) {
	good := func() (Snapshot, []Purchase) {
		snap := Snapshot{
			Stock: 98,
			Orders: []Order{
				{ID: 1, Key: "a", Status: shop.StatusDispatched, Progress: 0},
				{ID: 2, Key: "b", Status: shop.StatusCancelled, Progress: shop.DispatchLegs},
				{ID: 3, Key: "c", Status: shop.StatusDispatched, Progress: 0},
				{ID: 4, Key: "d", Status: shop.StatusCancelled, Progress: shop.DispatchLegs},
			},
			LatePayments:    map[string]int64{"d": 4},
			ProviderRefunds: map[string]int{"d": 1},
			Refunded:        map[string]string{"d": "re_1"},
			Workflows:       map[string]int{"checkout SUCCESS": 5, "dispatch SUCCESS": 2, "refund SUCCESS": 1},
		}
		ps := []Purchase{
			{Key: "a", Checkout: Answer{200, "a"}, Sent: "paid", Payment: Answer{200, "1"}},
			{Key: "b", Checkout: Answer{200, "b"}, Sent: "failed", Payment: Answer{200, "2"}},
			{Key: "c", Checkout: Answer{200, "c"}, Sent: "paid", Payment: Answer{200, "3"},
				Replays: []Replay{{Call: "payment c", Got: Answer{200, "3"}, Want: Answer{200, "3"}}}},
			{Key: "d", Checkout: Answer{200, "d"}, Sent: "paid", Payment: Answer{409, "cancelled; recorded for refund"}},
			{Key: "e", Checkout: Answer{409, "sold out"}},
		}
		return snap, ps
	}
	snap, ps := good()
	if cs := CheckInvariants(100, snap, ps, Observed{}); !cs.OK() {
		var b strings.Builder
		cs.Print(&b)
		t.Fatalf("a consistent run failed:\n%s", b.String())
	}
	for _, tc := range []struct {
		name    string
		corrupt func(*Snapshot, []Purchase, *Observed)
		fails   string // the number of the check that must fail
	}{
		{"a unit lost", func(s *Snapshot, _ []Purchase, _ *Observed) { s.Stock = 97 }, "1"},
		{"negative stock seen", func(_ *Snapshot, _ []Purchase, o *Observed) { o.Violations = []string{"stock -1 < 0"} }, "1"},
		{"an order no key made", func(s *Snapshot, _ []Purchase, _ *Observed) {
			s.Orders = append(s.Orders, Order{ID: 5, Key: "zz", Status: shop.StatusCancelled, Progress: shop.DispatchLegs})
		}, "2"},
		{"sold out but an order", func(s *Snapshot, _ []Purchase, _ *Observed) {
			s.Orders = append(s.Orders, Order{ID: 5, Key: "e", Status: shop.StatusCancelled, Progress: shop.DispatchLegs})
		}, "2"},
		{"paid ack, order cancelled", func(s *Snapshot, _ []Purchase, _ *Observed) {
			s.Orders[0].Status, s.Orders[0].Progress, s.Stock = shop.StatusCancelled, shop.DispatchLegs, 99
		}, "3"},
		{"answered the wrong order", func(_ *Snapshot, ps []Purchase, _ *Observed) { ps[0].Payment.Body = "3" }, "3"},
		{"a replay answered differently", func(_ *Snapshot, ps []Purchase, _ *Observed) { ps[2].Replays[0].Got = Answer{409, "x"} }, "3"},
		{"late payment not recorded", func(s *Snapshot, _ []Purchase, _ *Observed) { delete(s.LatePayments, "d") }, "3"},
		{"status went back", func(_ *Snapshot, _ []Purchase, o *Observed) {
			o.Violations = []string{"order 1 went from PAID back to PENDING"}
		}, "4"},
		{"dispatched with progress left", func(s *Snapshot, _ []Purchase, _ *Observed) { s.Orders[0].Progress = 3 }, "4"},
		{"a workflow stuck", func(s *Snapshot, _ []Purchase, _ *Observed) { s.Workflows["dispatch PENDING"] = 1 }, "5"},
		{"a client gave up", func(_ *Snapshot, ps []Purchase, _ *Observed) { ps[4].GaveUp = "timeout" }, "5"},
		{"a refund stuck", func(s *Snapshot, _ []Purchase, _ *Observed) {
			s.Workflows["refund SUCCESS"], s.Workflows["refund PENDING"] = 0, 1
		}, "5"},
		{"a late payment never refunded", func(s *Snapshot, _ []Purchase, _ *Observed) {
			delete(s.ProviderRefunds, "d")
			delete(s.Refunded, "d")
		}, "6"},
		{"a late payment refunded twice", func(s *Snapshot, _ []Purchase, _ *Observed) { s.ProviderRefunds["d"] = 2 }, "6"},
		{"a refund the store did not record", func(s *Snapshot, _ []Purchase, _ *Observed) { delete(s.Refunded, "d") }, "6"},
		{"a shipped payment refunded", func(s *Snapshot, _ []Purchase, _ *Observed) { s.ProviderRefunds["a"] = 1 }, "6"},
		{"a refund of no late payment", func(s *Snapshot, _ []Purchase, _ *Observed) { s.Refunded["c"] = "re_2" }, "6"},
		{"a late payment for an order that shipped", func(s *Snapshot, _ []Purchase, _ *Observed) {
			s.LatePayments["a"], s.ProviderRefunds["a"], s.Refunded["a"] = 1, 1, "re_3"
		}, "6"},
		{"a paid acknowledgement neither shipped nor refunded", func(s *Snapshot, ps []Purchase, _ *Observed) {
			delete(s.LatePayments, "d")
			delete(s.ProviderRefunds, "d")
			delete(s.Refunded, "d")
		}, "6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, ps := good()
			var obs Observed
			tc.corrupt(&snap, ps, &obs)
			cs := CheckInvariants(100, snap, ps, obs)
			for _, c := range cs {
				if strings.HasPrefix(c.Name, tc.fails+" ") && c.OK {
					var b strings.Builder
					cs.Print(&b)
					t.Errorf("check %s passed:\n%s", tc.fails, b.String())
				}
			}
		})
	}
}

// Carts: check 1 holds per product, counting units, not orders.
func TestCheckInvariantsPerProduct(t *testing.T) {
	good := func() Snapshot {
		return Snapshot{
			Stocks: map[int]int{1: 9, 2: 7, 3: 5},
			Orders: []Order{
				{ID: 1, Key: "a", Status: shop.StatusDispatched, Lines: []shop.Line{{ProductID: 1, Quantity: 1}, {ProductID: 2, Quantity: 3}}},
				{ID: 2, Key: "b", Status: shop.StatusCancelled, Progress: shop.DispatchLegs, Lines: []shop.Line{{ProductID: 3, Quantity: 2}}},
			},
			Workflows: map[string]int{"checkout SUCCESS": 2, "dispatch SUCCESS": 1},
		}
	}
	ps := []Purchase{
		{Key: "a", Checkout: Answer{200, "a"}, Sent: "paid", Payment: Answer{200, "1"}},
		{Key: "b", Checkout: Answer{200, "b"}, Sent: "failed", Payment: Answer{200, "2"}},
	}
	initial := map[int]int{1: 10, 2: 10, 3: 5}
	if cs := CheckInvariantsStocks(initial, good(), ps, Observed{}); !cs.OK() {
		var b strings.Builder
		cs.Print(&b)
		t.Fatalf("a consistent run failed:\n%s", b.String())
	}
	for name, corrupt := range map[string]func(*Snapshot){
		"a declined line's units not back": func(s *Snapshot) { s.Stocks[3] = 3 },
		"one unit of a line lost":          func(s *Snapshot) { s.Stocks[2] = 6 },
		"units given back twice":           func(s *Snapshot) { s.Stocks[3] = 7 },
		"a line of an unstocked product":   func(s *Snapshot) { s.Orders[0].Lines = append(s.Orders[0].Lines, shop.Line{ProductID: 4, Quantity: 1}) },
	} {
		snap := good()
		corrupt(&snap)
		cs := CheckInvariantsStocks(initial, snap, ps, Observed{})
		if cs[0].OK {
			t.Errorf("%s: check 1 passed: %s", name, cs[0].Detail)
		}
	}
}
