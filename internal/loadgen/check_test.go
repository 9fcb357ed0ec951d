package loadgen

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
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

// Stripe mode: checks 3, 6 and 7 read the events sent and what Stripe was
// asked (the proxy's record), and each fails on the corruption it exists to
// catch.
func TestCheckStripeCatchesEachViolation(t *testing.T) {
	form := func(key, orderID string) url.Values {
		return url.Values{
			"mode": {"payment"}, "client_reference_id": {key}, "metadata[checkout_key]": {key}, "metadata[order_id]": {orderID},
			"success_url": {"http://127.0.0.1/track/" + orderID}, "cancel_url": {"http://127.0.0.1/track/" + orderID},
			"line_items[0][quantity]": {"1"}, "line_items[0][price_data][unit_amount]": {"1000"},
		}
	}
	create := func(key, orderID, session string) stripetest.Request {
		return stripetest.Request{Method: "POST", Path: stripetest.SessionsPath, IdempotencyKey: stripetest.SessionIdempotencyKey(key),
			Form: form(key, orderID), Status: 200, ObjectID: session}
	}
	expire := func(key, session string) stripetest.Request {
		return stripetest.Request{Method: "POST", Path: stripetest.SessionsPath + "/" + session + "/expire",
			IdempotencyKey: stripetest.ExpireIdempotencyKey(key), Form: url.Values{}, Status: 200, ObjectID: session}
	}
	refund := func(key, idem, re string) stripetest.Request {
		return stripetest.Request{Method: "POST", Path: stripetest.RefundsPath, IdempotencyKey: idem,
			Form: url.Values{"payment_intent": {PaymentIntent(key)}}, Status: 200, ObjectID: re}
	}
	ok := Answer{200, "recorded"}
	good := func() (Snapshot, []Purchase, *StripeObserved) {
		snap := Snapshot{
			Stock: 98,
			Orders: []Order{
				{ID: 1, Key: "a", Status: shop.StatusDispatched, Progress: 0},
				{ID: 2, Key: "b", Status: shop.StatusCancelled, Progress: shop.DispatchLegs},
				{ID: 3, Key: "c", Status: shop.StatusCancelled, Progress: shop.DispatchLegs},
				{ID: 4, Key: "d", Status: shop.StatusCancelled, Progress: shop.DispatchLegs},
				{ID: 5, Key: "f", Status: shop.StatusDispatched, Progress: 0},
			},
			LatePayments:    map[string]int64{"c": 3},
			ProviderRefunds: map[string]int{}, // the stand-in's table: empty with Stripe
			Refunded:        map[string]string{"c": "re_1"},
			Workflows:       map[string]int{"checkout SUCCESS": 5, "dispatch SUCCESS": 2, "refund SUCCESS": 1},
			PaymentSessions: map[string]string{"a": "cs_a", "b": "cs_b", "c": "cs_c", "d": "cs_d", "f": "cs_f"},
			PaymentIntents:  map[string]string{"a": PaymentIntent("a"), "c": PaymentIntent("c"), "f": PaymentIntent("f")},
		}
		ps := []Purchase{
			{Key: "a", Checkout: Answer{200, "a"}, Sent: "paid", Payment: ok, PaymentIntent: PaymentIntent("a"),
				Events: []SentEvent{{ID: "evt_a_1", Type: stripetest.SessionCompleted, PaymentStatus: "paid", Answer: ok},
					{ID: "evt_a_1", Type: stripetest.SessionCompleted, PaymentStatus: "paid", Answer: ok, Replay: true}}},
			{Key: "b", Checkout: Answer{200, "b"}, Sent: "failed", Payment: ok, PaymentIntent: PaymentIntent("b"),
				Events: []SentEvent{{ID: "evt_b_1", Type: stripetest.SessionExpired, PaymentStatus: "unpaid", Answer: ok}}},
			{Key: "c", Checkout: Answer{200, "c"}, Sent: "paid", Late: true, Payment: ok, PaymentIntent: PaymentIntent("c"),
				Events: []SentEvent{{ID: "evt_c_1", Type: stripetest.SessionCompleted, PaymentStatus: "paid", Answer: ok}}},
			{Key: "d", Checkout: Answer{200, "d"}, PaymentIntent: PaymentIntent("d"),
				Events: []SentEvent{{ID: "evt_d_1", Type: stripetest.SessionExpired, PaymentStatus: "unpaid", Answer: ok}}},
			{Key: "e", Checkout: Answer{409, "sold out"}},
			{Key: "f", Checkout: Answer{200, "f"}, Sent: "paid", Payment: ok, PaymentIntent: PaymentIntent("f"),
				Events: []SentEvent{{ID: "evt_f_2", Type: stripetest.SessionAsyncPaymentSucceeded, PaymentStatus: "paid", Answer: ok},
					{ID: "evt_f_1", Type: stripetest.SessionCompleted, PaymentStatus: "unpaid", Answer: ok}}},
		}
		obs := &StripeObserved{Requests: []stripetest.Request{
			create("a", "1", "cs_a"), create("b", "2", "cs_b"), create("c", "3", "cs_c"),
			{Method: "POST", Path: stripetest.SessionsPath, IdempotencyKey: stripetest.SessionIdempotencyKey("d"), Form: form("d", "4"), Status: 502},
			create("d", "4", "cs_d"), create("f", "5", "cs_f"),
			expire("c", "cs_c"), expire("d", "cs_d"),
			refund("c", "c", "re_1"), refund("c", "c", "re_2"),
		}}
		return snap, ps, obs
	}
	check := func(snap Snapshot, ps []Purchase, obs *StripeObserved) Checks {
		return CheckInvariants(100, snap, ps, Observed{Stripe: obs})
	}
	snap, ps, obs := good()
	if cs := check(snap, ps, obs); !cs.OK() || len(cs) != 7 {
		var b strings.Builder
		cs.Print(&b)
		t.Fatalf("a consistent Stripe run failed (or was not checked as one):\n%s", b.String())
	}
	// A checkout whose session could not be opened before the window
	// closed answers 409 with its order cancelled (Stripe mode only).
	snap, ps, obs = good()
	snap.Orders = append(snap.Orders, Order{ID: 6, Key: "g", Status: shop.StatusCancelled, Progress: shop.DispatchLegs})
	snap.Workflows["checkout SUCCESS"]++
	ps = append(ps, Purchase{Key: "g", Checkout: Answer{409, "the payment provider opened no payment"}})
	obs.Requests = append(obs.Requests, create("g", "6", "cs_g"))
	if cs := check(snap, ps, obs); !cs.OK() {
		var b strings.Builder
		cs.Print(&b)
		t.Fatalf("a 409 with its order cancelled failed a Stripe run:\n%s", b.String())
	}
	if cs := CheckInvariants(100, snap, ps, Observed{}); cs[1].OK {
		t.Errorf("a 409 that made an order passed check 2 of a stand-in run: %s", cs[1].Detail)
	}
	for _, tc := range []struct {
		name    string
		corrupt func(*Snapshot, []Purchase, *StripeObserved)
		fails   string
	}{
		{"an event answered 400", func(_ *Snapshot, ps []Purchase, _ *StripeObserved) {
			ps[0].Events[1].Answer = Answer{400, "bad signature"}
		}, "3"},
		{"a late payment shipped", func(s *Snapshot, _ []Purchase, _ *StripeObserved) {
			s.Orders[2].Status, s.Orders[2].Progress, s.Stock = shop.StatusDispatched, 0, 97
		}, "3"},
		{"paid, cancelled, not recorded for refund", func(s *Snapshot, _ []Purchase, _ *StripeObserved) {
			s.Orders[0].Status, s.Orders[0].Progress, s.Stock = shop.StatusCancelled, shop.DispatchLegs, 99
		}, "3"},
		{"an unpaid completed event shipped", func(_ *Snapshot, ps []Purchase, _ *StripeObserved) { ps[5].Events = ps[5].Events[1:] }, "3"},
		{"a declined order shipped", func(s *Snapshot, _ []Purchase, _ *StripeObserved) {
			s.Orders[1].Status, s.Orders[1].Progress, s.Stock = shop.StatusDispatched, 0, 97
		}, "3"},
		{"a late payment nobody paid", func(s *Snapshot, _ []Purchase, _ *StripeObserved) { s.LatePayments["d"] = 4 }, "3"},
		{"a late payment never refunded at Stripe", func(_ *Snapshot, _ []Purchase, o *StripeObserved) { o.Requests = o.Requests[:8] }, "6"},
		{"a late payment refunded twice at Stripe", func(_ *Snapshot, _ []Purchase, o *StripeObserved) {
			o.Requests = append(o.Requests, refund("c", "c-again", "re_3"))
		}, "6"},
		{"a shipped payment refunded at Stripe", func(_ *Snapshot, _ []Purchase, o *StripeObserved) {
			o.Requests = append(o.Requests, refund("a", "a", "re_4"))
		}, "7"},
		{"a refund under another key", func(_ *Snapshot, _ []Purchase, o *StripeObserved) { o.Requests[8].IdempotencyKey = "refund-c" }, "7"},
		{"the store recorded a refund Stripe never made", func(s *Snapshot, _ []Purchase, _ *StripeObserved) { s.Refunded["c"] = "re_9" }, "7"},
		{"a second session under another key", func(_ *Snapshot, _ []Purchase, o *StripeObserved) {
			r := create("a", "1", "cs_a2")
			r.IdempotencyKey = "widget-store-session-a-retry"
			o.Requests = append(o.Requests, r)
		}, "7"},
		{"one key, other parameters", func(_ *Snapshot, _ []Purchase, o *StripeObserved) {
			r := create("a", "1", "cs_a2")
			r.Form.Set("line_items[0][quantity]", "2")
			o.Requests = append(o.Requests, r)
		}, "7"},
		{"a session for a sold-out key", func(_ *Snapshot, _ []Purchase, o *StripeObserved) {
			o.Requests = append(o.Requests, create("e", "6", "cs_e"))
		}, "7"},
		{"a checkout answered without a session", func(_ *Snapshot, _ []Purchase, o *StripeObserved) {
			o.Requests = slices.Delete(o.Requests, 1, 2) // b's
		}, "7"},
		{"a session for other units than the order's", func(_ *Snapshot, _ []Purchase, o *StripeObserved) {
			o.Requests[0].Form = form("a", "1")
			o.Requests[0].Form.Set("line_items[0][quantity]", "3")
		}, "7"},
		{"a session naming another order", func(_ *Snapshot, _ []Purchase, o *StripeObserved) { o.Requests[0].Form = form("a", "2") }, "7"},
		{"a shipped order's session expired", func(_ *Snapshot, _ []Purchase, o *StripeObserved) {
			o.Requests = append(o.Requests, expire("a", "cs_a"))
		}, "7"},
		{"another key's session expired", func(_ *Snapshot, _ []Purchase, o *StripeObserved) { o.Requests[6] = expire("c", "cs_b") }, "7"},
		{"an abandoned checkout's session never expired", func(_ *Snapshot, _ []Purchase, o *StripeObserved) {
			o.Requests = slices.Delete(o.Requests, 7, 8) // d's
		}, "7"},
		{"Stripe refused a call", func(_ *Snapshot, _ []Purchase, o *StripeObserved) { o.Requests[5].Status = 400 }, "7"},
		{"no session recorded for a checkout answered 200", func(s *Snapshot, _ []Purchase, _ *StripeObserved) { delete(s.PaymentSessions, "b") }, "7"},
		{"another key's session recorded", func(s *Snapshot, _ []Purchase, _ *StripeObserved) { s.PaymentSessions["b"] = "cs_a" }, "7"},
		{"a session recorded for no order", func(s *Snapshot, _ []Purchase, _ *StripeObserved) { s.PaymentSessions["zz"] = "cs_a" }, "7"},
		{"the wrong PaymentIntent recorded", func(s *Snapshot, _ []Purchase, _ *StripeObserved) { s.PaymentIntents["c"] = "pi_other" }, "7"},
		{"a build without the tables", func(s *Snapshot, _ []Purchase, _ *StripeObserved) { s.PaymentSessions, s.PaymentIntents = nil, nil }, "7"},
		{"a session expired other than the one recorded", func(s *Snapshot, _ []Purchase, o *StripeObserved) {
			o.Requests = append(o.Requests, create("d", "4", "cs_d2"))
			s.PaymentSessions["d"] = "cs_d2"
		}, "7"},
		{"a 409 for an order that shipped", func(_ *Snapshot, ps []Purchase, _ *StripeObserved) {
			ps[0].Checkout = Answer{409, "no payment opened"}
		}, "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, ps, obs := good()
			tc.corrupt(&snap, ps, obs)
			cs := check(snap, ps, obs)
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
