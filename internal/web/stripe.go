package web

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v85/webhook"

	"widget-store/internal/provider"
	"widget-store/internal/shop"
)

// Stripe's events: POST /webhooks/stripe.
//
// Stripe signs every event it sends with the endpoint's secret
// (STRIPE_WEBHOOK_SECRET): "Stripe-Signature: t=<unix>,v1=<hex
// HMAC-SHA256(secret, "<t>.<body>")>". The store verifies it with stripe-go's
// webhook package, on the body exactly as received, before it reads anything
// from it: a missing, malformed, forged or stale signature (older than
// stripeTolerance, a replay) is a 400 that names what is wrong, and nothing
// changes. The signature is the event's only authentication, in demo and
// hardened mode alike (Stripe sends no admin token). Events of an API
// version other than stripe-go's are taken: the fields read
// (provider.ParseStripeEvent) are stable across versions.
//
// What an event does is checkout.Service.ApplyEvent's business: every event
// that is recorded is answered 200, a payment for an order already cancelled
// included (it is refunded), because Stripe retries any other answer for
// days; a 503 (a checkout still deciding) or a 500 makes Stripe send it again,
// as it should.
const (
	stripeSignatureHeader = "Stripe-Signature"
	stripeTolerance       = 5 * time.Minute
	// stripeMaxBody bounds an event's body. Checkout Session events are a
	// few KB (line items are not included); the store's own limit (64 KB,
	// server.go) is the same, stated here for Stripe's sake.
	stripeMaxBody = 64 << 10
)

// handleStripeWebhook is POST /webhooks/stripe: verified with secret, then
// applied. secret is "" unless Stripe is the provider: 404 then.
func handleStripeWebhook(secret string, checkout Checkout) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if secret == "" {
			return shop.Errorf(shop.NotFound, "this store does not take payments through Stripe (PAYMENT_PROVIDER is not stripe)")
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, stripeMaxBody+1))
		if err != nil {
			return err // the store's body limit (413), or a broken connection
		}
		if len(body) > stripeMaxBody {
			return &http.MaxBytesError{Limit: stripeMaxBody}
		}
		e, err := webhook.ConstructEventWithOptions(body, r.Header.Get(stripeSignatureHeader), secret,
			webhook.ConstructEventOptions{Tolerance: stripeTolerance, IgnoreAPIVersionMismatch: true})
		if err != nil {
			return stripeSignatureError(err)
		}
		if e.ID == "" {
			return shop.Errorf(shop.Invalid, "the event has no id; nothing was changed")
		}
		ev, err := provider.ParseStripeEvent(e)
		if err != nil {
			return shop.Errorf(shop.Invalid, "event %.80s (%.80s): %v; nothing was changed", e.ID, e.Type, err)
		}
		did, err := checkout.ApplyEvent(r.Context(), ev)
		if err != nil {
			return err
		}
		return writeText(w, http.StatusOK, did)
	}
}

// stripeSignatureError is the 400 for an event stripe-go's webhook package
// refused, saying why.
func stripeSignatureError(err error) error {
	var msg string
	switch {
	case errors.Is(err, webhook.ErrNotSigned):
		msg = "missing " + stripeSignatureHeader + " header: Stripe signs every event it sends"
	case errors.Is(err, webhook.ErrInvalidHeader):
		msg = "malformed " + stripeSignatureHeader + " header: want t=<unix seconds>,v1=<hex signature>"
	case errors.Is(err, webhook.ErrTooOld):
		msg = stripeSignatureHeader + " is older than 5 minutes: refused as a possible replay"
	case errors.Is(err, webhook.ErrNoValidSignature):
		msg = stripeSignatureHeader + " does not match this body (is STRIPE_WEBHOOK_SECRET the endpoint's signing secret?)"
	default: // signed, but not an event (unparsable JSON, a thin event notification)
		msg = "the body is not a Stripe event: " + err.Error()
	}
	return shop.Errorf(shop.Invalid, "%s; nothing was changed", msg)
}
