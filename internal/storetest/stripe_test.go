package storetest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
)

// Payments through Stripe (issue 19), against stripe-mock behind the rig's
// recording proxy (internal/stripetest): what Stripe was asked, and with
// which Idempotency-Key, is counted at the proxy, since stripe-mock keeps no
// state and would answer a second session as happily as the first.

// stripeStore is a store with PAYMENT_PROVIDER=stripe and the stripe-mock
// it talks to.
type stripeStore struct {
	*Store
	mock *stripetest.Mock
	db   *loadgen.Database
}

// stripeEnv is the environment of a store taking payments at mock.
func stripeEnv(mock *stripetest.Mock, extra ...string) []string {
	return append([]string{"PAYMENT_PROVIDER=stripe", "STRIPE_SECRET_KEY=" + stripetest.SecretKey,
		"STRIPE_WEBHOOK_SECRET=" + stripetest.WebhookSecret, "STRIPE_API_BASE=" + mock.URL}, extra...)
}

// startStripeMock starts stripe-mock and its proxy for the test.
func startStripeMock(t testing.TB) *stripetest.Mock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mock, err := stripetest.Start(ctx, func(string, ...any) {})
	if err != nil {
		t.Fatalf("start stripe-mock: %v", err)
	}
	t.Cleanup(mock.Close) // after the store's stop, registered later
	return mock
}

// startStripeStore starts stripe-mock and a store taking payments at it,
// with extra environment.
func startStripeStore(t testing.TB, db *loadgen.Database, opts Options) *stripeStore {
	t.Helper()
	mock := startStripeMock(t)
	opts.Env = stripeEnv(mock, opts.Env...)
	return &stripeStore{Store: StartWith(t, db, opts), mock: mock, db: db}
}

// checkoutJSON is POST /checkout/{key} with Accept: application/json.
func (s *stripeStore) checkoutJSON(t testing.TB, key string) (payURL string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL("/checkout/"+key), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	r := doReq(t, http.DefaultClient, req)
	var got struct {
		PaymentID string `json:"payment_id"`
		PayURL    string `json:"pay_url"`
	}
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &got) != nil || got.PaymentID != key || got.PayURL == "" {
		t.Fatalf("POST /checkout/%s (JSON): %d %q, want 200 with payment_id and pay_url", key, r.status, r.body)
	}
	return got.PayURL
}

// orderOf is the order id the store gave checkout key, as it told Stripe
// (metadata[order_id] of the key's session create).
func (s *stripeStore) orderOf(t testing.TB, key string) string {
	t.Helper()
	creates := s.mock.SessionCreates()[key]
	if len(creates) == 0 {
		t.Fatalf("no session was created for checkout %s", key)
	}
	return creates[0].Form.Get("metadata[order_id]")
}

// send delivers event e to POST /webhooks/stripe, signed with secret at.
func (s *stripeStore) send(t testing.TB, e stripetest.Event, secret string, at time.Time) (int, string) {
	t.Helper()
	req, err := e.NewRequest(context.Background(), s.URL("/webhooks/stripe"), secret, at)
	if err != nil {
		t.Fatal(err)
	}
	r := doReq(t, http.DefaultClient, req)
	return r.status, r.body
}

// mustSend delivers e, signed properly now, and wants a 200.
func (s *stripeStore) mustSend(t testing.TB, e stripetest.Event) string {
	t.Helper()
	code, body := s.send(t, e, stripetest.WebhookSecret, time.Now())
	if code != http.StatusOK {
		t.Fatalf("event %s (%s for %s): %d %q, want 200", e.ID, e.Type, e.ClientReferenceID, code, body)
	}
	return body
}

// requests counts what Stripe was asked: method and path prefix, with
// Idempotency-Key idem.
func (s *stripeStore) requests(method, path, idem string) int {
	n := 0
	for _, r := range s.mock.Matching(method, path) {
		if r.IdempotencyKey == idem {
			n++
		}
	}
	return n
}

// expires counts the expire calls the store made (any session).
func (s *stripeStore) expires() int {
	n := 0
	for _, r := range s.mock.Matching(http.MethodPost, stripetest.SessionsPath+"/") {
		if strings.HasSuffix(r.Path, "/expire") {
			n++
		}
	}
	return n
}

// stripeRecords counts the store's Stripe records: events applied and
// payment intents recorded.
func stripeRecords(t testing.TB, db *loadgen.Database) (events, intents int) {
	t.Helper()
	query(t, db, `SELECT (SELECT COUNT(*) FROM stripe_events), (SELECT COUNT(*) FROM payment_intents)`, func(scan func(...any) error) error {
		return scan(&events, &intents)
	})
	return events, intents
}

// doReq makes a request and reads the answer; a transport error fails the
// test.
func doReq(t testing.TB, c *http.Client, req *http.Request) hresp {
	t.Helper()
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close() // read below
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", req.Method, req.URL, err)
	}
	return hresp{status: resp.StatusCode, body: string(b), header: resp.Header, dur: time.Since(start)}
}

// event is a Checkout Session event about checkout key.
func event(typ, key string) stripetest.Event {
	return stripetest.Event{ID: "evt_" + RandomHex(8), Type: typ, SessionID: "cs_test_" + RandomHex(6), ClientReferenceID: key}
}

// TestStripeCheckout is a purchase through Stripe, from the browser's buy to
// the dispatch, and the events Stripe may send around it, on both databases:
// the redirect to the session, the session created once with everything
// Stripe needs, a completed event paying the order, replayed and
// out-of-order events, expired and failed payments cancelling their order
// and returning its units, and events the store must refuse (bad, missing,
// stale signatures) changing nothing.
func TestStripeCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock and the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := startStripeStore(t, db, Options{Env: []string{"PAYMENT_TIMEOUT=60s"}})
		stock0 := Inventory(t, st.Base())
		noRedirect := noRedirectClient(30 * time.Second)
		key := NewKey()
		var sessionURL, orderID string

		phase(t, "Buy redirects the browser to the checkout's Stripe session, created once", func(t *testing.T) {
			req := mustRequest(t, http.MethodPost, st.URL("/buy"), url.Values{"key": {key}}.Encode())
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r := doReq(t, noRedirect, req)
			sessionURL = r.header.Get("Location")
			if r.status != http.StatusSeeOther || !strings.HasPrefix(sessionURL, "https://checkout.stripe.com/") {
				t.Fatalf("POST /buy: %d, Location %q; want 303 to the session's checkout.stripe.com URL", r.status, sessionURL)
			}
			creates := st.mock.SessionCreates()[key]
			if len(creates) != 1 || creates[0].IdempotencyKey != stripetest.SessionIdempotencyKey(key) {
				t.Fatalf("session creates for %s: %+v, want one with Idempotency-Key %s", key, creates, stripetest.SessionIdempotencyKey(key))
			}
			f := creates[0].Form
			orderID = f.Get("metadata[order_id]")
			for field, want := range map[string]string{
				"mode": "payment", "client_reference_id": key, "metadata[checkout_key]": key,
				"line_items[0][quantity]": "1", "line_items[0][price_data][unit_amount]": "9999",
				"line_items[0][price_data][currency]": "usd", "line_items[0][price_data][product_data][name]": "Premium Quality Widget",
				"success_url": st.URL("/track/" + orderID), "cancel_url": st.URL("/track/" + orderID),
			} {
				if got := f.Get(field); got != want {
					t.Errorf("session create %s = %q, want %q", field, got, want)
				}
			}
			if _, err := strconv.ParseInt(orderID, 10, 64); err != nil {
				t.Fatalf("metadata[order_id] = %q", orderID)
			}
		})

		phase(t, "the pay page, the JSON checkout and a replay send to the same session; the stand-in's Pay is refused", func(t *testing.T) {
			r := doReq(t, noRedirect, mustRequest(t, http.MethodGet, st.URL("/pay/"+key), ""))
			if r.status != http.StatusSeeOther || r.header.Get("Location") != sessionURL {
				t.Fatalf("GET /pay/%s: %d to %q, want 303 to %s", key, r.status, r.header.Get("Location"), sessionURL)
			}
			if got := st.checkoutJSON(t, key); got != sessionURL {
				t.Fatalf("pay_url %q, want %q", got, sessionURL)
			}
			if code, body := Call(t, http.MethodPost, st.URL("/checkout/"+key)); code != http.StatusOK || body != key {
				t.Fatalf("POST /checkout/%s (text): %d %q, want 200 and the key", key, code, body)
			}
			req := mustRequest(t, http.MethodPost, st.URL("/pay/"+key), "status=paid")
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if r := doReq(t, noRedirect, req); r.status != http.StatusConflict || !strings.Contains(r.body, "through Stripe") {
				t.Fatalf("POST /pay/%s status=paid: %d %q, want 409 (payments are Stripe's)", key, r.status, r.body)
			}
			if n := len(st.mock.SessionCreates()[key]); n != 1 {
				t.Fatalf("%d session creates for %s after the replays, want 1", n, key)
			}
			if o := GetJSON[Order](t, st.URL("/order/"+orderID)); o.OrderStatus != shop.StatusPending {
				t.Fatalf("order %s is %s, want PENDING", orderID, o.Status)
			}
		})

		phase(t, "bad, missing and stale signatures are 400 and change nothing", func(t *testing.T) {
			paid := event(stripetest.SessionCompleted, key)
			paid.PaymentIntent = "pi_forged"
			payload, good := paid.Signed(stripetest.WebhookSecret, time.Now())
			events0, intents0 := stripeRecords(t, db)
			for _, c := range []struct{ name, header, body, want string }{
				{"missing", "", string(payload), "missing Stripe-Signature"},
				{"wrong secret", stripetest.Sign(payload, stripetest.WrongWebhookSecret, time.Now()), string(payload), "does not match"},
				{"stale", stripetest.Sign(payload, stripetest.WebhookSecret, time.Now().Add(-stripetest.StaleAge)), string(payload), "older than 5 minutes"},
				{"tampered body", good, strings.Replace(string(payload), "pi_forged", "pi_forgex", 1), "does not match"},
				{"malformed", "t=abc,v1=00", string(payload), "malformed"},
				{"not an event", stripetest.Sign([]byte(`{"id":1`), stripetest.WebhookSecret, time.Now()), `{"id":1`, "not a Stripe event"},
			} {
				req := mustRequest(t, http.MethodPost, st.URL("/webhooks/stripe"), c.body)
				if c.header != "" {
					req.Header.Set("Stripe-Signature", c.header)
				}
				if r := doReq(t, http.DefaultClient, req); r.status != http.StatusBadRequest || !strings.Contains(r.body, c.want) {
					t.Errorf("%s: %d %q, want 400 saying %q", c.name, r.status, r.body, c.want)
				}
			}
			big := strings.Repeat(" ", 70<<10) + string(payload)
			req := mustRequest(t, http.MethodPost, st.URL("/webhooks/stripe"), big)
			req.Header.Set("Stripe-Signature", stripetest.Sign([]byte(big), stripetest.WebhookSecret, time.Now()))
			if r := doReq(t, http.DefaultClient, req); r.status != http.StatusRequestEntityTooLarge {
				t.Errorf("a 70 KB event: %d %q, want 413", r.status, r.body)
			}
			if events, intents := stripeRecords(t, db); events != events0 || intents != intents0 {
				t.Errorf("records changed: events %d→%d, intents %d→%d", events0, events, intents0, intents)
			}
			if o := GetJSON[Order](t, st.URL("/order/"+orderID)); o.OrderStatus != shop.StatusPending {
				t.Fatalf("order %s is %s after refused events, want PENDING", orderID, o.Status)
			}
		})

		completed := event(stripetest.SessionCompleted, key)
		completed.PaymentIntent, completed.OrderID = "pi_"+RandomHex(6), orderID
		phase(t, "a signed completed event pays the order, which is dispatched", func(t *testing.T) {
			if body := st.mustSend(t, completed); !strings.Contains(body, "applied") {
				t.Fatalf("completed: %q, want applied", body)
			}
			WaitOrder(t, st.Base(), orderID, 30*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusDispatched })
		})

		phase(t, "a replayed event, and events out of order, change nothing", func(t *testing.T) {
			if body := st.mustSend(t, completed); !strings.Contains(body, "applied before") {
				t.Fatalf("replayed completed: %q, want applied before", body)
			}
			st.mustSend(t, event(stripetest.SessionExpired, key))            // after the payment: first status wins
			st.mustSend(t, event(stripetest.SessionAsyncPaymentFailed, key)) // likewise
			st.mustSend(t, event("payment_intent.created", key))             // a type the store does not use
			st.mustSend(t, event(stripetest.SessionCompleted, "k-nobody"))   // names no checkout of this store
			if o := GetJSON[Order](t, st.URL("/order/"+orderID)); o.OrderStatus != shop.StatusDispatched {
				t.Fatalf("order %s is %s, want DISPATCHED", orderID, o.Status)
			}
			if late := LatePayments(t, st.Base()); len(late) != 0 || st.mock.Count(http.MethodPost, stripetest.RefundsPath) != 0 {
				t.Fatalf("late payments %+v, refunds asked %d; want none", late, st.mock.Count(http.MethodPost, stripetest.RefundsPath))
			}
		})

		phase(t, "async: completed unpaid waits; async_payment_succeeded (by metadata only) pays", func(t *testing.T) {
			k := NewKey()
			st.checkoutJSON(t, k)
			id := st.orderOf(t, k)
			pending := event(stripetest.SessionCompleted, k)
			pending.PaymentStatus = "unpaid"
			st.mustSend(t, pending)
			if o := GetJSON[Order](t, st.URL("/order/"+id)); o.OrderStatus != shop.StatusPending {
				t.Fatalf("order %s is %s after an unpaid completion, want PENDING", id, o.Status)
			}
			ok := event(stripetest.SessionAsyncPaymentSucceeded, "")
			ok.CheckoutKey, ok.PaymentIntent = k, "pi_async"
			st.mustSend(t, ok)
			WaitOrder(t, st.Base(), id, 10*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusPaid || o.OrderStatus == shop.StatusDispatched })
		})

		for _, typ := range []string{stripetest.SessionExpired, stripetest.SessionAsyncPaymentFailed} {
			phase(t, typ+" cancels the order and returns its units", func(t *testing.T) {
				k := NewKey()
				st.checkoutJSON(t, k)
				id := st.orderOf(t, k)
				expires := st.expires()
				st.mustSend(t, event(typ, k))
				WaitOrder(t, st.Base(), id, 10*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusCancelled })
				if n := st.expires(); n != expires {
					t.Errorf("%d expire calls for a session Stripe closed itself, want none", n-expires)
				}
			})
		}

		phase(t, "a cart's session has a line per order line; its expiry returns every unit", func(t *testing.T) {
			before := stockOf(t, st.Base())
			k := NewKey()
			req := mustRequest(t, http.MethodPost, st.URL("/checkout/"+k), cartBody(2, 3, 4, 1))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json")
			if r := doReq(t, http.DefaultClient, req); r.status != http.StatusOK || !strings.Contains(r.body, `"pay_url":"https://checkout.stripe.com/`) {
				t.Fatalf("cart checkout: %d %q", r.status, r.body)
			}
			f := st.mock.SessionCreates()[k][0].Form
			for field, want := range map[string]string{
				"line_items[0][quantity]": "3", "line_items[0][price_data][unit_amount]": "4999", "line_items[0][price_data][product_data][name]": "Pocket Widget",
				"line_items[1][quantity]": "1", "line_items[1][price_data][unit_amount]": "1299", "line_items[1][price_data][product_data][name]": "Widget Care Kit",
			} {
				if got := f.Get(field); got != want {
					t.Errorf("cart session %s = %q, want %q", field, got, want)
				}
			}
			st.mustSend(t, event(stripetest.SessionExpired, k))
			WaitOrder(t, st.Base(), st.orderOf(t, k), 10*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusCancelled })
			if after := stockOf(t, st.Base()); after[2] != before[2] || after[4] != before[4] {
				t.Fatalf("stock %v after the cart's expiry, want %v", after, before)
			}
		})

		phase(t, "stock: every cancelled order's units are back", func(t *testing.T) {
			// Two orders were paid (the first and the async one); the rest were cancelled.
			if got := Inventory(t, st.Base()); got != stock0-2 {
				t.Fatalf("inventory %d, want %d (two paid)", got, stock0-2)
			}
		})
	})
}

// TestStripeWindowAndLatePayment: a checkout whose window closes unpaid
// expires its session at Stripe (once) before its units go back; a
// completed event that comes afterwards is answered 200, recorded, and
// refunded through Stripe exactly once, however often Stripe delivers it.
func TestStripeWindowAndLatePayment(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock and the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := startStripeStore(t, db, Options{Env: []string{"PAYMENT_TIMEOUT=2s"}})
		stock0 := Inventory(t, st.Base())
		key := NewKey()
		st.checkoutJSON(t, key)
		id := st.orderOf(t, key)

		phase(t, "the window closes: the session is expired once, then the order cancelled", func(t *testing.T) {
			WaitOrder(t, st.Base(), id, 20*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusCancelled })
			if n := st.requests(http.MethodPost, stripetest.SessionsPath+"/", stripetest.ExpireIdempotencyKey(key)); n != 1 {
				t.Fatalf("%d expire calls with key %s, want 1", n, stripetest.ExpireIdempotencyKey(key))
			}
			if got := Inventory(t, st.Base()); got != stock0 {
				t.Fatalf("inventory %d, want %d", got, stock0)
			}
		})

		phase(t, "a late completed event is 200 and refunded once through Stripe", func(t *testing.T) {
			late := event(stripetest.SessionCompleted, key)
			late.PaymentIntent = "pi_late_" + RandomHex(4)
			body := st.mustSend(t, late)
			if !strings.Contains(body, "recorded for refund") {
				t.Fatalf("late completed: %q, want recorded for refund", body)
			}
			waitRefunded(t, st.Base(), key, 30*time.Second)
			st.mustSend(t, late) // Stripe delivers it again
			again := event(stripetest.SessionAsyncPaymentSucceeded, key)
			again.PaymentIntent = late.PaymentIntent
			st.mustSend(t, again) // another event of the same payment
			refunds := st.mock.Matching(http.MethodPost, stripetest.RefundsPath)
			if len(refunds) != 1 || refunds[0].IdempotencyKey != key || refunds[0].Form.Get("payment_intent") != late.PaymentIntent {
				t.Fatalf("refunds asked: %+v; want one, Idempotency-Key %s, payment_intent %s", refunds, key, late.PaymentIntent)
			}
			if got := Inventory(t, st.Base()); got != stock0 {
				t.Fatalf("inventory %d after the late payment, want %d", got, stock0)
			}
		})
	})
}

// TestStripeHardened: with ADMIN_TOKEN set the Stripe webhook needs no
// token, only Stripe's signature; an operator's Cancel and refund of an
// order paid through Stripe refunds its PaymentIntent, once.
func TestStripeHardened(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock and the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		const token = "stripe-hardened-admin-token"
		st := startStripeStore(t, db, Options{Env: []string{"ADMIN_TOKEN=" + token, "PAYMENT_TIMEOUT=60s"}})
		key := NewKey()
		st.checkoutJSON(t, key)
		id := st.orderOf(t, key)
		admin := func(method, path string) hresp {
			req := mustRequest(t, method, st.URL(path), "")
			req.Header.Set("Authorization", "Bearer "+token)
			return doReq(t, http.DefaultClient, req)
		}
		order := func() Order {
			var o Order
			if r := admin(http.MethodGet, "/order/"+id); r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &o) != nil {
				t.Fatalf("GET /order/%s: %d %q", id, r.status, r.body)
			}
			return o
		}

		phase(t, "an unsigned event is 400, a signed one pays without any token", func(t *testing.T) {
			paid := event(stripetest.SessionCompleted, key)
			paid.PaymentIntent = "pi_hardened"
			req := mustRequest(t, http.MethodPost, st.URL("/webhooks/stripe"), string(paid.Payload()))
			req.Header.Set("Authorization", "Bearer "+token) // the admin token is no signature
			if r := doReq(t, http.DefaultClient, req); r.status != http.StatusBadRequest {
				t.Fatalf("unsigned event with the admin token: %d %q, want 400", r.status, r.body)
			}
			if o := order(); o.OrderStatus != shop.StatusPending {
				t.Fatalf("order %s is %s after an unsigned event, want PENDING", id, o.Status)
			}
			st.mustSend(t, paid)
			if o := order(); o.OrderStatus != shop.StatusPaid && o.OrderStatus != shop.StatusDispatched {
				t.Fatalf("order %s is %s after the signed event, want PAID", id, o.Status)
			}
		})

		phase(t, "Cancel and refund refunds the recorded PaymentIntent once", func(t *testing.T) {
			if r := admin(http.MethodPost, "/admin/orders/"+id+"/cancel"); r.status != http.StatusOK {
				t.Fatalf("cancel and refund: %d %q", r.status, r.body)
			}
			WaitUntil(t, 30*time.Second, "the refund through Stripe", func() bool {
				return st.mock.Count(http.MethodPost, stripetest.RefundsPath) > 0 && refundRecorded(t, db, key)
			})
			refunds := st.mock.Matching(http.MethodPost, stripetest.RefundsPath)
			if len(refunds) != 1 || refunds[0].IdempotencyKey != key || refunds[0].Form.Get("payment_intent") != "pi_hardened" {
				t.Fatalf("refunds asked: %+v; want one of pi_hardened with key %s", refunds, key)
			}
		})
	})
}

// refundRecorded reports whether the store recorded the refund of payment pid.
func refundRecorded(t testing.TB, db *loadgen.Database, pid string) bool {
	n := 0
	query(t, db, `SELECT COUNT(*) FROM refunds WHERE payment_id = '`+pid+`'`, func(scan func(...any) error) error { return scan(&n) })
	return n == 1
}

// TestStripeRefusesTheSession: when Stripe refuses to create the session
// (here a key stripe-mock does not take: 401), the checkout holds nothing:
// its order is cancelled with its units back, the buyer is told so (409),
// and no workflow is left in ERROR.
func TestStripeRefusesTheSession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock and the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := startStripeStore(t, db, Options{Env: []string{"STRIPE_SECRET_KEY=rk_live_not_for_stripe_mock"}})
		stock0 := Inventory(t, st.Base())
		key := NewKey()
		req := mustRequest(t, http.MethodPost, st.URL("/checkout/"+key), "")
		req.Header.Set("Accept", "application/json")
		if r := doReq(t, http.DefaultClient, req); r.status != http.StatusConflict || !strings.Contains(r.body, "opened no payment") {
			t.Fatalf("checkout with a refused session: %d %q, want 409 saying no payment was opened", r.status, r.body)
		}
		if n := len(st.mock.SessionCreates()[key]); n != 1 {
			t.Fatalf("%d session creates, want 1 (a refusal is not retried)", n)
		}
		if got := Inventory(t, st.Base()); got != stock0 {
			t.Fatalf("inventory %d, want %d: nothing held", got, stock0)
		}
		WaitUntil(t, 20*time.Second, "the checkout workflow ends in SUCCESS", func() bool { return workflowStatus(t, db, key) == "SUCCESS" })
	})
}

// TestStripeWebhookOffWithTheStandIn: a store whose provider is the
// stand-in has no Stripe webhook: a signed event is a 404 that says why.
func TestStripeWebhookOffWithTheStandIn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the store")
	}
	st := Start(t, NewSQLiteDB(t))
	e := event(stripetest.SessionCompleted, NewKey())
	req, err := e.NewRequest(context.Background(), st.URL("/webhooks/stripe"), stripetest.WebhookSecret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r := doReq(t, http.DefaultClient, req); r.status != http.StatusNotFound || !strings.Contains(r.body, "PAYMENT_PROVIDER") {
		t.Fatalf("POST /webhooks/stripe on the stand-in: %d %q, want 404 naming PAYMENT_PROVIDER", r.status, r.body)
	}
}

// mustRequest is a request with body ("" for none).
func mustRequest(t testing.TB, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestStripeWindowClosedBeforeTheSession: a checkout whose payment window
// closed before its session was recorded (here a window of 1 ms; in a
// crash, an attempt that reached Stripe and was cut before its checkpoint)
// leaves no session open at Stripe: the create is asked again under the
// same Idempotency-Key and that session expired at once; the order is
// cancelled with its units back and the buyer told so (409).
func TestStripeWindowClosedBeforeTheSession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock and the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := startStripeStore(t, db, Options{Env: []string{"PAYMENT_TIMEOUT=1ms"}})
		stock0 := Inventory(t, st.Base())
		key := NewKey()
		req := mustRequest(t, http.MethodPost, st.URL("/checkout/"+key), "")
		req.Header.Set("Accept", "application/json")
		if r := doReq(t, http.DefaultClient, req); r.status != http.StatusConflict || !strings.Contains(r.body, "opened no payment") {
			t.Fatalf("checkout after its window: %d %q, want 409 saying no payment was opened", r.status, r.body)
		}
		if n := st.requests(http.MethodPost, stripetest.SessionsPath, stripetest.SessionIdempotencyKey(key)); n != 1 {
			t.Errorf("%d session creates with the checkout's key, want 1", n)
		}
		if n := st.requests(http.MethodPost, stripetest.SessionsPath+"/", stripetest.ExpireIdempotencyKey(key)); n != 1 {
			t.Errorf("%d expiries with the checkout's key, want 1: the session it may have opened is closed", n)
		}
		if got := Inventory(t, st.Base()); got != stock0 {
			t.Fatalf("inventory %d, want %d: nothing held", got, stock0)
		}
	})
}

// TestStripeCancelExpiresTheSession: an operator's Cancel and refund of an
// order still waiting for its payment expires its Checkout Session at once,
// under the checkout's expire key, and only once (the checkout, whose window
// ends later, asks Stripe nothing more), on both databases. Without it the
// session stayed payable at Stripe until it expired by itself.
func TestStripeCancelExpiresTheSession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock and the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := startStripeStore(t, db, Options{Env: []string{"PAYMENT_TIMEOUT=4s"}})
		stock0 := Inventory(t, st.Base())
		key := NewKey()
		st.checkoutJSON(t, key)
		id := st.orderOf(t, key)
		expireKey := stripetest.ExpireIdempotencyKey(key)

		phase(t, "Cancel and refund of the PENDING order expires its session, units back", func(t *testing.T) {
			MustCall(t, "POST", st.URL("/admin/orders/"+id+"/cancel"), http.StatusOK)
			WaitOrder(t, st.Base(), id, 10*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusCancelled })
			if n := st.requests(http.MethodPost, stripetest.SessionsPath+"/", expireKey); n != 1 {
				t.Fatalf("%d expire calls with key %s once the cancel answered, want 1", n, expireKey)
			}
			if got := Inventory(t, st.Base()); got != stock0 {
				t.Fatalf("inventory %d, want %d", got, stock0)
			}
		})

		phase(t, "past the checkout's window, Stripe was asked nothing more", func(t *testing.T) {
			// An absence can only be watched for a while: the operator's
			// cancel stopped the checkout (DBOS cancelled it), whose window
			// ends 4 s after it began; watch until 2 s past that.
			deadline := time.Now().Add(6 * time.Second)
			for time.Now().Before(deadline) {
				if n := st.expires(); n != 1 {
					t.Fatalf("%d expire calls in all, want 1", n)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if n := st.requests(http.MethodPost, stripetest.SessionsPath+"/", expireKey); n != 1 {
				t.Fatalf("%d expire calls with key %s, want 1", n, expireKey)
			}
		})
	})
}

// TestStripeReleaseExpiresTheSession: an order whose checkout will never
// finish it (here an operator cancelled the checkout with DBOS's CLI while it
// waited for its payment) is released by the reconciler, and the release
// expires its Checkout Session at Stripe ([payment-close]), once, under the
// checkout's expire key, with its units back, on both databases. Without it
// the session stayed payable at Stripe for its hour, and a payment made there
// would have been taken and refunded.
func TestStripeReleaseExpiresTheSession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock, the store and DBOS's CLI")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := startStripeStore(t, db, Options{Env: []string{"RECONCILE_EVERY=300ms", "PAYMENT_TIMEOUT=120s"}})
		stock0 := Inventory(t, st.Base())
		key := NewKey()
		st.checkoutJSON(t, key)
		id := st.orderOf(t, key)
		orderID, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		var sessionID string
		query(t, db, `SELECT session_id FROM payment_sessions WHERE checkout_key = '`+key+`'`, func(scan func(...any) error) error { return scan(&sessionID) })
		expireKey := stripetest.ExpireIdempotencyKey(key)

		phase(t, "the checkout cancelled with DBOS's CLI: the reconciler releases the order and expires its session", func(t *testing.T) {
			if n := st.expires(); n != 0 {
				t.Fatalf("%d expire calls before the release, want 0", n)
			}
			dbosCLI(t, db, "cancel", key)
			// The reconciler leaves orders younger than reconcile.Grace (5 s) alone.
			WaitOrder(t, st.Base(), id, 30*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusCancelled })
			// The order is cancelled by the release's first step; its
			// payment-close comes after, before the workflow's SUCCESS.
			WaitUntil(t, 30*time.Second, "the release workflow's SUCCESS", func() bool {
				return workflowStatus(t, db, shop.ReleaseWorkflowID(orderID)) == "SUCCESS"
			})
			expires := st.mock.Matching(http.MethodPost, stripetest.SessionsPath+"/")
			if len(expires) != 1 || expires[0].IdempotencyKey != expireKey || expires[0].Path != stripetest.SessionsPath+"/"+sessionID+"/expire" {
				t.Fatalf("expire calls once the release finished: %+v; want one, of session %s, with Idempotency-Key %s", expires, sessionID, expireKey)
			}
			if got := Inventory(t, st.Base()); got != stock0 {
				t.Fatalf("inventory %d after the release, want %d", got, stock0)
			}
		})

		phase(t, "the reconciler's later passes ask Stripe nothing more", func(t *testing.T) {
			// An absence can only be watched for a while: five passes.
			deadline := time.Now().Add(1500 * time.Millisecond)
			for time.Now().Before(deadline) {
				if n := st.expires(); n != 1 {
					t.Fatalf("%d expire calls in all, want 1", n)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if n := len(st.mock.SessionCreates()[key]); n != 1 {
				t.Fatalf("%d session creates for %s, want 1", n, key)
			}
		})
	})
}
