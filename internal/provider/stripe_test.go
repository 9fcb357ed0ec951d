package provider

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stripe/stripe-go/v85"

	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
)

// TestParseStripeEvent is the one verdict on what a Stripe event means: the
// checkout it names and the payment status it decides.
func TestParseStripeEvent(t *testing.T) {
	parse := func(t *testing.T, payload []byte) (Event, error) {
		t.Helper()
		var e stripe.Event
		if err := json.Unmarshal(payload, &e); err != nil {
			t.Fatal(err)
		}
		return ParseStripeEvent(e)
	}
	for _, c := range []struct {
		name             string
		ev               stripetest.Event
		key, status, ref string
	}{
		{"completed and paid", stripetest.Event{Type: stripetest.SessionCompleted, ClientReferenceID: "k1", PaymentIntent: "pi_1"}, "k1", shop.PaymentPaid, "pi_1"},
		{"completed, async payment pending", stripetest.Event{Type: stripetest.SessionCompleted, ClientReferenceID: "k1", PaymentStatus: "unpaid"}, "k1", "", ""},
		{"async succeeded", stripetest.Event{Type: stripetest.SessionAsyncPaymentSucceeded, ClientReferenceID: "k1", PaymentIntent: "pi_2"}, "k1", shop.PaymentPaid, "pi_2"},
		{"async failed", stripetest.Event{Type: stripetest.SessionAsyncPaymentFailed, ClientReferenceID: "k1"}, "k1", shop.PaymentFailed, ""},
		{"expired", stripetest.Event{Type: stripetest.SessionExpired, ClientReferenceID: "k1"}, "k1", shop.PaymentFailed, ""},
		{"the key from metadata only", stripetest.Event{Type: stripetest.SessionCompleted, CheckoutKey: "k2", PaymentIntent: "pi_3"}, "k2", shop.PaymentPaid, "pi_3"},
		{"client_reference_id wins over metadata", stripetest.Event{Type: stripetest.SessionExpired, ClientReferenceID: "k1", CheckoutKey: "k2"}, "k1", shop.PaymentFailed, ""},
		{"no key", stripetest.Event{Type: stripetest.SessionCompleted}, "", shop.PaymentPaid, ""},
		{"a type the store does not use", stripetest.Event{Type: "charge.refunded", ClientReferenceID: "k1"}, "", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.ev.ID = "evt_1"
			got, err := parse(t, c.ev.Payload())
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != "evt_1" || got.Key != c.key || got.Status != c.status || got.PaymentRef != c.ref {
				t.Fatalf("got %+v, want key %q status %q ref %q", got, c.key, c.status, c.ref)
			}
		})
	}

	t.Run("an expanded payment_intent is read by its id", func(t *testing.T) {
		payload := strings.Replace(string(stripetest.Event{ID: "evt_2", Type: stripetest.SessionCompleted, ClientReferenceID: "k1", PaymentIntent: "pi_x"}.Payload()),
			`"payment_intent":"pi_x"`, `"payment_intent":{"id":"pi_x","object":"payment_intent"}`, 1)
		got, err := parse(t, []byte(payload))
		if err != nil || got.PaymentRef != "pi_x" {
			t.Fatalf("got %+v, %v; want pi_x", got, err)
		}
	})
	t.Run("a session event whose object is not a session is an error", func(t *testing.T) {
		payload := strings.Replace(string(stripetest.Event{ID: "evt_3", Type: stripetest.SessionCompleted, ClientReferenceID: "k1"}.Payload()),
			`"object":"checkout.session"`, `"object":"payment_intent"`, 1)
		if got, err := parse(t, []byte(payload)); err == nil {
			t.Fatalf("got %+v, want an error", got)
		}
	})
}

// TestPermanentStatus: which answers a retry cannot change.
func TestPermanentStatus(t *testing.T) {
	for code, want := range map[int]bool{400: true, 401: true, 402: true, 404: true, 408: false, 409: false, 429: false, 500: false, 503: false} {
		if got := permanentStatus(code); got != want {
			t.Errorf("permanentStatus(%d) = %v, want %v", code, got, want)
		}
	}
}
