package stripetest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v85"
	"github.com/stripe/stripe-go/v85/webhook"
)

// The Checkout Session event types the store acts on.
const (
	SessionCompleted             = "checkout.session.completed"
	SessionAsyncPaymentSucceeded = "checkout.session.async_payment_succeeded"
	SessionAsyncPaymentFailed    = "checkout.session.async_payment_failed"
	SessionExpired               = "checkout.session.expired"
)

// StaleAge is older than the five minutes' tolerance the store (and
// stripe-go's default) gives a signature's timestamp: an event signed
// StaleAge ago must be refused.
const StaleAge = 6 * time.Minute

// Event is a Checkout Session event as Stripe sends it to a webhook
// endpoint, reduced to the fields the store reads.
type Event struct {
	ID                string // evt_...; the store ignores an id it has seen
	Type              string // one of the Session* constants, or any other type
	SessionID         string // cs_...
	ClientReferenceID string // the checkout key; "" leaves it null
	// CheckoutKey is metadata.checkout_key; "" means ClientReferenceID (the
	// store sets both), so a test of the metadata fallback sets it and
	// leaves ClientReferenceID empty.
	CheckoutKey string
	OrderID     string // metadata.order_id; "" leaves it out
	// PaymentStatus is the session's payment_status: "" means "paid" for
	// completed and async_payment_succeeded events and "unpaid" otherwise;
	// set "unpaid" on a completed event for a pending async payment.
	PaymentStatus string
	PaymentIntent string    // pi_...; "" leaves it null
	Created       time.Time // zero means now
}

// Payload is the event's JSON body, as Stripe would post it: an "event"
// object of stripe-go's API version whose data.object is the session.
func (e Event) Payload() []byte {
	created := e.Created
	if created.IsZero() {
		created = time.Now()
	}
	payStatus := e.PaymentStatus
	if payStatus == "" {
		payStatus = "unpaid"
		if e.Type == SessionCompleted || e.Type == SessionAsyncPaymentSucceeded {
			payStatus = "paid"
		}
	}
	status := "complete"
	if e.Type == SessionExpired {
		status = "expired"
	}
	metadata := map[string]string{}
	if key := e.CheckoutKey; key != "" {
		metadata["checkout_key"] = key
	} else if e.ClientReferenceID != "" {
		metadata["checkout_key"] = e.ClientReferenceID
	}
	if e.OrderID != "" {
		metadata["order_id"] = e.OrderID
	}
	session := map[string]any{
		"id":                  e.SessionID,
		"object":              "checkout.session",
		"client_reference_id": nullable(e.ClientReferenceID),
		"metadata":            metadata,
		"mode":                "payment",
		"status":              status,
		"payment_status":      payStatus,
		"payment_intent":      nullable(e.PaymentIntent),
		"currency":            "usd",
		"livemode":            false,
		"created":             created.Unix(),
	}
	event := map[string]any{
		"id":               e.ID,
		"object":           "event",
		"api_version":      stripe.APIVersion,
		"created":          created.Unix(),
		"type":             e.Type,
		"livemode":         false,
		"pending_webhooks": 1,
		"request":          map[string]any{"id": nil, "idempotency_key": nil},
		"data":             map[string]any{"object": session},
	}
	b, err := json.Marshal(event)
	if err != nil {
		panic(err) // maps of strings and numbers always marshal
	}
	return b
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Signed returns the event's payload and the Stripe-Signature header that
// signs it with secret at time at, made by stripe-go's
// webhook.GenerateTestSignedPayload. Sign with WrongWebhookSecret for a bad
// signature, or at time.Now().Add(-StaleAge) for a stale one.
func (e Event) Signed(secret string, at time.Time) (payload []byte, header string) {
	payload = e.Payload()
	return payload, Sign(payload, secret, at)
}

// Sign returns the Stripe-Signature header for payload, signed with secret
// at time at (a test that tampers with a payload after signing uses it).
func Sign(payload []byte, secret string, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
		Payload:   payload,
		Secret:    secret,
		Timestamp: at,
	}).Header
}

// NewRequest is the POST Stripe would make to deliver the event to the
// webhook endpoint at url, signed with secret at time at.
func (e Event) NewRequest(ctx context.Context, url, secret string, at time.Time) (*http.Request, error) {
	payload, header := e.Signed(secret, at)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", header)
	return req, nil
}
