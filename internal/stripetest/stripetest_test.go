package stripetest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v85"
	"github.com/stripe/stripe-go/v85/webhook"

	"widget-store/internal/stripetest"
)

// TestMockRecordsWhatStripeWasAsked starts the real stripe-mock and talks to
// it the way the store does, through stripe-go pointed at the proxy.
func TestMockRecordsWhatStripeWasAsked(t *testing.T) {
	ctx := context.Background()
	m, err := stripetest.Start(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)

	sc := stripe.NewClient(stripetest.SecretKey, stripe.WithBackends(stripe.NewBackendsWithConfig(&stripe.BackendConfig{
		URL:               stripe.String(m.URL),
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelError},
	})))

	const key = "k-abc123"
	var sessionID string
	t.Run("a session create is forwarded and recorded with its Idempotency-Key", func(t *testing.T) {
		params := &stripe.CheckoutSessionCreateParams{
			Mode:              stripe.String(string(stripe.CheckoutSessionModePayment)),
			ClientReferenceID: stripe.String(key),
			SuccessURL:        stripe.String("http://127.0.0.1/order/1"),
			CancelURL:         stripe.String("http://127.0.0.1/order/1"),
			LineItems: []*stripe.CheckoutSessionCreateLineItemParams{{
				Quantity: stripe.Int64(2),
				PriceData: &stripe.CheckoutSessionCreateLineItemPriceDataParams{
					Currency:    stripe.String("usd"),
					UnitAmount:  stripe.Int64(1250),
					ProductData: &stripe.CheckoutSessionCreateLineItemPriceDataProductDataParams{Name: stripe.String("Widget")},
				},
			}},
		}
		params.AddMetadata("checkout_key", key)
		params.AddMetadata("order_id", "1")
		params.SetIdempotencyKey(stripetest.SessionIdempotencyKey(key))
		s, err := sc.V1CheckoutSessions.Create(ctx, params)
		if err != nil {
			t.Fatalf("create a session through the proxy: %v", err)
		}
		if s.ID == "" || s.URL == "" {
			t.Fatalf("stripe-mock answered a session without id or url: %+v", s)
		}
		sessionID = s.ID

		creates := m.SessionCreates()[key]
		if len(creates) != 1 {
			t.Fatalf("session creates for %s: %d, want 1 (all requests: %+v)", key, len(creates), m.Requests())
		}
		r := creates[0]
		if r.IdempotencyKey != "widget-store-session-"+key {
			t.Errorf("Idempotency-Key %q, want widget-store-session-%s", r.IdempotencyKey, key)
		}
		if r.Status != http.StatusOK || r.ObjectID != s.ID {
			t.Errorf("recorded answer %d %q, want 200 %q", r.Status, r.ObjectID, s.ID)
		}
		if got := r.Form.Get("metadata[checkout_key]"); got != key {
			t.Errorf("form metadata[checkout_key] = %q, want %q", got, key)
		}
		if got := r.Form.Get("line_items[0][price_data][unit_amount]"); got != "1250" {
			t.Errorf("form line_items[0][price_data][unit_amount] = %q, want 1250", got)
		}
	})

	t.Run("an expiry and a refund are told apart from creates", func(t *testing.T) {
		// Await sees a request that arrives after it started waiting, once
		// answered.
		awaited := make(chan stripetest.Request, 1)
		go func() {
			r, err := m.Await(ctx, func(r stripetest.Request) bool {
				return r.IdempotencyKey == stripetest.ExpireIdempotencyKey(key) && r.Status != 0
			})
			if err != nil {
				t.Error(err)
			}
			awaited <- r
		}()
		ep := &stripe.CheckoutSessionExpireParams{}
		ep.SetIdempotencyKey(stripetest.ExpireIdempotencyKey(key))
		if _, err := sc.V1CheckoutSessions.Expire(ctx, sessionID, ep); err != nil {
			t.Fatalf("expire: %v", err)
		}
		if r := <-awaited; r.Path != stripetest.SessionsPath+"/"+sessionID+"/expire" || r.Status != http.StatusOK {
			t.Errorf("Await returned %+v, want the expiry of %s answered 200", r, sessionID)
		}
		rp := &stripe.RefundCreateParams{PaymentIntent: stripe.String("pi_123")}
		rp.SetIdempotencyKey(key)
		if _, err := sc.V1Refunds.Create(ctx, rp); err != nil {
			t.Fatalf("refund: %v", err)
		}
		if n := len(m.SessionCreates()[key]); n != 1 {
			t.Errorf("session creates after an expiry: %d, want 1", n)
		}
		if n := m.Count(http.MethodPost, stripetest.SessionsPath); n != 2 {
			t.Errorf("POSTs under %s: %d, want 2 (create, expire)", stripetest.SessionsPath, n)
		}
		refunds := m.Matching(http.MethodPost, stripetest.RefundsPath)
		if len(refunds) != 1 || refunds[0].IdempotencyKey != key || refunds[0].Form.Get("payment_intent") != "pi_123" {
			t.Errorf("refunds recorded: %+v, want one for pi_123 keyed %s", refunds, key)
		}
		byKey := m.ByIdempotencyKey()
		if len(byKey[stripetest.ExpireIdempotencyKey(key)]) != 1 {
			t.Errorf("requests keyed %s: %+v", stripetest.ExpireIdempotencyKey(key), byKey)
		}
	})

	t.Run("a request stripe-mock refuses is recorded with its status", func(t *testing.T) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL+stripetest.RefundsPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		all := m.Requests()
		last := all[len(all)-1]
		if resp.StatusCode < 400 || last.Status != resp.StatusCode || last.ObjectID != "" {
			t.Errorf("unauthenticated refund: answered %d, recorded %+v", resp.StatusCode, last)
		}
	})
}

// TestEventsAreSignedAsStripeSignsThem checks the events against
// stripe-go's own verification, with the options the store uses.
func TestEventsAreSignedAsStripeSignsThem(t *testing.T) {
	opts := webhook.ConstructEventOptions{Tolerance: 5 * time.Minute}
	e := stripetest.Event{
		ID:                "evt_1",
		Type:              stripetest.SessionCompleted,
		SessionID:         "cs_test_1",
		ClientReferenceID: "k-1",
		OrderID:           "7",
		PaymentIntent:     "pi_1",
	}

	t.Run("signed now with the secret: verifies, and reads back", func(t *testing.T) {
		payload, header := e.Signed(stripetest.WebhookSecret, time.Now())
		ev, err := webhook.ConstructEventWithOptions(payload, header, stripetest.WebhookSecret, opts)
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		var s stripe.CheckoutSession
		if err := s.UnmarshalJSON(ev.Data.Raw); err != nil {
			t.Fatal(err)
		}
		if ev.ID != "evt_1" || string(ev.Type) != stripetest.SessionCompleted || s.ID != "cs_test_1" ||
			s.ClientReferenceID != "k-1" || s.Metadata["checkout_key"] != "k-1" || s.Metadata["order_id"] != "7" ||
			s.PaymentStatus != stripe.CheckoutSessionPaymentStatusPaid || s.PaymentIntent == nil || s.PaymentIntent.ID != "pi_1" {
			t.Errorf("event read back as %+v, session %+v", ev, s)
		}
	})
	t.Run("stale: refused as too old", func(t *testing.T) {
		payload, header := e.Signed(stripetest.WebhookSecret, time.Now().Add(-stripetest.StaleAge))
		if _, err := webhook.ConstructEventWithOptions(payload, header, stripetest.WebhookSecret, opts); !errors.Is(err, webhook.ErrTooOld) {
			t.Errorf("stale event: %v, want ErrTooOld", err)
		}
	})
	t.Run("wrong secret: refused", func(t *testing.T) {
		payload, header := e.Signed(stripetest.WrongWebhookSecret, time.Now())
		if _, err := webhook.ConstructEventWithOptions(payload, header, stripetest.WebhookSecret, opts); !errors.Is(err, webhook.ErrNoValidSignature) {
			t.Errorf("wrongly signed event: %v, want ErrNoValidSignature", err)
		}
	})
	t.Run("tampered after signing: refused", func(t *testing.T) {
		payload, header := e.Signed(stripetest.WebhookSecret, time.Now())
		other := stripetest.Event{ID: "evt_1", Type: stripetest.SessionCompleted, SessionID: "cs_test_1", ClientReferenceID: "k-2"}
		if _, err := webhook.ConstructEventWithOptions(other.Payload(), header, stripetest.WebhookSecret, opts); !errors.Is(err, webhook.ErrNoValidSignature) {
			t.Errorf("tampered event: %v, want ErrNoValidSignature (payload was %s)", err, payload)
		}
	})
	t.Run("an expired session's event defaults to unpaid, metadata fallback", func(t *testing.T) {
		x := stripetest.Event{ID: "evt_2", Type: stripetest.SessionExpired, SessionID: "cs_test_2", CheckoutKey: "k-9"}
		ev, err := webhook.ConstructEventWithOptions(x.Payload(), stripetest.Sign(x.Payload(), stripetest.WebhookSecret, time.Now()), stripetest.WebhookSecret, opts)
		if err != nil {
			t.Fatal(err)
		}
		var s stripe.CheckoutSession
		if err := s.UnmarshalJSON(ev.Data.Raw); err != nil {
			t.Fatal(err)
		}
		if s.PaymentStatus != stripe.CheckoutSessionPaymentStatusUnpaid || s.Status != stripe.CheckoutSessionStatusExpired ||
			s.ClientReferenceID != "" || s.Metadata["checkout_key"] != "k-9" || s.PaymentIntent != nil {
			t.Errorf("expired session read back as %+v", s)
		}
	})
	t.Run("NewRequest carries the signature header", func(t *testing.T) {
		var got error
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			payload, err := io.ReadAll(r.Body)
			if err != nil {
				got = err
				return
			}
			_, got = webhook.ConstructEventWithOptions(payload, r.Header.Get("Stripe-Signature"), stripetest.WebhookSecret, opts)
		}))
		defer srv.Close()
		req, err := e.NewRequest(context.Background(), srv.URL+"/webhooks/stripe", stripetest.WebhookSecret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got != nil {
			t.Errorf("delivered event does not verify: %v", got)
		}
	})
}
