// Package provider is the store's payment provider, behind one small
// interface the workflows call (the root's workflow.go) without knowing which
// provider they have: create the payment of a checkout, expire it when the
// checkout's payment window closes unpaid, refund it. Two implement it:
//
//   - StandIn (PAYMENT_PROVIDER=standin, the default): the demo's own
//     provider. Its payment page is the store's /pay/{key}, so creating and
//     expiring a payment ask nobody; its refund API is PROVIDER_URL
//     (POST {URL}/refunds/{payment id}), by default the store's own stand-in
//     (internal/web, /provider/).
//   - Stripe (PAYMENT_PROVIDER=stripe): a Stripe Checkout Session per
//     checkout, expired through the API, refunds of its PaymentIntent; all
//     through the official client, stripe-go (stripe.go).
//
// Every call that reaches a provider carries an idempotency key derived from
// the checkout key (the payment id): the workflows call it from DBOS steps,
// which are at least once, and the key makes each call one effect however
// often a crash repeats it.
package provider

import (
	"context"
	"errors"
)

// Provider is a payment provider.
type Provider interface {
	// Local reports a provider whose Create and Expire ask nobody (the
	// stand-in, whose payment page is the store's own): the checkout then
	// runs them without a step, since there is nothing to checkpoint, and
	// its payment costs no transaction more than before providers existed.
	Local() bool
	// Create creates the payment of a checkout's order: where its buyer pays.
	Create(ctx context.Context, o Order) (Payment, error)
	// Expire closes payment p of checkout key, whose window ended unpaid: no
	// payment can be made at it any more. A payment that won the race arrives
	// as a late payment and is refunded. An error that is Permanent says it
	// could not be expired because it is not open (paid or expired already).
	Expire(ctx context.Context, key string, p Payment) error
	// Refund refunds a payment in full, once per payment id however often it
	// is asked.
	Refund(ctx context.Context, r RefundRequest) (Refund, error)
}

// Order is what a payment is created for.
type Order struct {
	Key     string // the checkout key, which is also the payment id
	OrderID int64
	Lines   []Line
	// CreatedAtMs is when the order was made (Unix ms, from the checkout's
	// first checkpoint): anything derived from it is the same in every
	// retry, as an idempotent request's parameters must be.
	CreatedAtMs int64
}

// Line is one line of an order as the buyer sees it at the provider.
type Line struct {
	Name           string
	Quantity       int
	UnitPriceCents int64
}

// Payment is where the buyer of a checkout pays. It is the payment-create
// step's checkpoint, so its JSON names are durable.
type Payment struct {
	SessionID string `json:"session_id,omitempty"` // the provider's id of it ("" for the stand-in)
	URL       string `json:"url"`                  // where the buyer pays
}

// RefundRequest is a refund to make.
type RefundRequest struct {
	PaymentID   string // the checkout key: the idempotency key
	AmountCents int64  // the order's total
	// PaymentRef is the provider's id of the money taken (Stripe: the
	// PaymentIntent), recorded from its payment event; "" when none was.
	PaymentRef string
}

// Refund is the provider's answer to a refund call.
type Refund struct {
	RefundID string `json:"refund_id"`
	Replayed bool   `json:"replayed"` // the provider had refunded this key before: nothing more was refunded
}

// Event is a provider's payment event, checked and read (internal/web reads
// Stripe's): what it says about which checkout.
type Event struct {
	ID   string // the provider's event id: seen once, applied once
	Type string
	// Key is the checkout the event is about ("" when it names none of
	// this store's).
	Key string
	// Status is shop.PaymentPaid or shop.PaymentFailed for an event that
	// decides the payment; "" for one that does not (a payment still
	// pending, an event type the store does not use).
	Status string
	// PaymentRef is the provider's id of the money taken (Stripe: the
	// PaymentIntent), "" when the event carries none.
	PaymentRef string
}

// permanentError is an answer that trying again cannot change.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// PermanentError marks err as one that trying again cannot change.
func PermanentError(err error) error { return permanentError{err} }

// Permanent reports an error that trying again cannot change: a 4xx other
// than 408, 409 and 429, or an answer that is not what was asked for.
// Transport errors and 5xx are not permanent.
func Permanent(err error) bool { return errors.As(err, new(permanentError)) }

// permanentStatus reports an HTTP status a retry cannot change. 409 is not:
// Stripe answers it to a request whose idempotency key is still in flight.
func permanentStatus(code int) bool {
	return code >= 400 && code < 500 && code != 408 && code != 409 && code != 429
}
