package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v85"

	"widget-store/internal/shop"
)

// Stripe takes payments through Stripe Checkout, with the official client.
//
//   - Create: POST /v1/checkout/sessions (mode=payment, a line per order line,
//     client_reference_id and metadata[checkout_key] = the checkout key,
//     metadata[order_id], success_url and cancel_url = the buyer's order
//     page), Idempotency-Key: widget-store-session-<key>. Its parameters
//     depend only on the order (expires_at too, from the order's creation),
//     so a retry after a crash is the same request and Stripe answers it with
//     the same session instead of making a second.
//   - Expire: POST /v1/checkout/sessions/{id}/expire, Idempotency-Key:
//     widget-store-expire-<key>.
//   - Refund: POST /v1/refunds, payment_intent = the PaymentIntent recorded
//     from the payment's event, Idempotency-Key: <payment id>.
//
// Stripe keeps an idempotency key for at least 24 hours: a step retried
// within that time is one effect. The client's own network retries are off
// (the workflow's steps retry, with the same key), so every request the
// store makes is one the workflow asked for.
type Stripe struct {
	client *stripe.Client
	// publicURL is where the buyer's browser reaches the store (PUBLIC_URL),
	// for the session's success and cancel URLs.
	publicURL string
}

// StripeDefaultAPI is Stripe's API, STRIPE_API_BASE's default.
const StripeDefaultAPI = "https://api.stripe.com"

// sessionLifetime is how long after its order a session expires by itself,
// should the store never expire it (Stripe allows 30 minutes to 24 hours
// after the session's creation; the store expires it when its payment
// window closes, PAYMENT_TIMEOUT).
const sessionLifetime = time.Hour

// Idempotency keys of the calls for checkout key (the refund's is the key
// itself, as the stand-in's).
func sessionIdempotencyKey(key string) string { return "widget-store-session-" + key }
func expireIdempotencyKey(key string) string  { return "widget-store-expire-" + key }

// NewStripe makes the Stripe provider: secretKey is STRIPE_SECRET_KEY,
// apiBase STRIPE_API_BASE (no trailing slash), publicURL PUBLIC_URL.
func NewStripe(secretKey, apiBase, publicURL string, httpClient *http.Client) *Stripe {
	backends := stripe.NewBackendsWithConfig(&stripe.BackendConfig{
		URL:               stripe.String(apiBase),
		HTTPClient:        httpClient,
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull}, // errors are returned, and logged by the workflow
	})
	return &Stripe{client: stripe.NewClient(secretKey, stripe.WithBackends(backends)), publicURL: publicURL}
}

// Local is false: Stripe is asked.
func (s *Stripe) Local() bool { return false }

// Create creates the Checkout Session of order o.
func (s *Stripe) Create(ctx context.Context, o Order) (Payment, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	orderPage := s.publicURL + "/track/" + strconv.FormatInt(o.OrderID, 10)
	p := &stripe.CheckoutSessionCreateParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModePayment)),
		ClientReferenceID: stripe.String(o.Key),
		Metadata:          map[string]string{"checkout_key": o.Key, "order_id": strconv.FormatInt(o.OrderID, 10)},
		SuccessURL:        stripe.String(orderPage),
		CancelURL:         stripe.String(orderPage),
		ExpiresAt:         stripe.Int64(time.UnixMilli(o.CreatedAtMs).Add(sessionLifetime).Unix()),
	}
	for _, l := range o.Lines {
		p.LineItems = append(p.LineItems, &stripe.CheckoutSessionCreateLineItemParams{
			Quantity: stripe.Int64(int64(l.Quantity)),
			PriceData: &stripe.CheckoutSessionCreateLineItemPriceDataParams{
				Currency:    stripe.String(string(stripe.CurrencyUSD)),
				UnitAmount:  stripe.Int64(l.UnitPriceCents),
				ProductData: &stripe.CheckoutSessionCreateLineItemPriceDataProductDataParams{Name: stripe.String(l.Name)},
			},
		})
	}
	p.SetIdempotencyKey(sessionIdempotencyKey(o.Key))
	cs, err := s.client.V1CheckoutSessions.Create(ctx, p)
	if err != nil {
		return Payment{}, stripeError("create the checkout session of "+o.Key, err)
	}
	if cs.ID == "" || cs.URL == "" {
		return Payment{}, permanentError{fmt.Errorf("create the checkout session of %s: Stripe's answer has no session id or URL", o.Key)}
	}
	return Payment{SessionID: cs.ID, URL: cs.URL}, nil
}

// Expire expires the session of checkout key. Stripe refuses (400) a
// session that is not open any more: paid, or expired already; that is a
// Permanent error.
func (s *Stripe) Expire(ctx context.Context, key string, p Payment) error {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	params := &stripe.CheckoutSessionExpireParams{}
	params.SetIdempotencyKey(expireIdempotencyKey(key))
	if _, err := s.client.V1CheckoutSessions.Expire(ctx, p.SessionID, params); err != nil {
		return stripeError("expire the checkout session of "+key, err)
	}
	return nil
}

// Refund refunds the PaymentIntent r.PaymentRef in full, with the payment id
// as the idempotency key. Without a PaymentIntent (none was recorded: the
// payment did not come through Stripe) it is a Permanent error, for an
// operator.
func (s *Stripe) Refund(ctx context.Context, r RefundRequest) (Refund, error) {
	if r.PaymentRef == "" {
		return Refund{}, permanentError{fmt.Errorf("refund %s: no Stripe PaymentIntent was recorded for this payment; refund it in Stripe's dashboard", r.PaymentID)}
	}
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	params := &stripe.RefundCreateParams{PaymentIntent: stripe.String(r.PaymentRef)}
	params.SetIdempotencyKey(r.PaymentID)
	re, err := s.client.V1Refunds.Create(ctx, params)
	if err != nil {
		return Refund{}, stripeError("refund "+r.PaymentID, err)
	}
	if re.ID == "" {
		return Refund{}, permanentError{fmt.Errorf("refund %s: Stripe's answer has no refund id", r.PaymentID)}
	}
	replayed := re.LastResponse != nil && re.LastResponse.Header.Get("Idempotent-Replayed") == "true"
	return Refund{RefundID: re.ID, Replayed: replayed}, nil
}

// stripeError wraps a failed call: Permanent for a 4xx a retry cannot
// change (permanentStatus), otherwise (a 5xx, 409, 429, the network) one
// to retry.
func stripeError(what string, err error) error {
	var se *stripe.Error
	if errors.As(err, &se) {
		err = fmt.Errorf("%s: Stripe answered %d %s: %s", what, se.HTTPStatusCode, se.Code, se.Msg)
		if permanentStatus(se.HTTPStatusCode) {
			return permanentError{err}
		}
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Checkout Session events the store acts on (see ParseStripeEvent).
const (
	stripeCompleted          = "checkout.session.completed"
	stripeAsyncSucceeded     = "checkout.session.async_payment_succeeded"
	stripeAsyncFailed        = "checkout.session.async_payment_failed"
	stripeExpired            = "checkout.session.expired"
	stripePaymentStatusPaid  = "paid"
	stripeSessionObjectField = "checkout.session"
)

// ParseStripeEvent reads a verified Stripe event (internal/web checks its
// signature): the checkout it is about, by client_reference_id, else
// metadata.checkout_key, and what it means for its payment:
// checkout.session.completed with payment_status=paid and
// checkout.session.async_payment_succeeded are paid;
// checkout.session.async_payment_failed and checkout.session.expired are
// failed; a completed session not paid yet (an asynchronous method,
// payment_status=unpaid) and every other type decide nothing (Status "").
// An error is an event of a type the store uses whose object is not a
// Checkout Session.
func ParseStripeEvent(e stripe.Event) (Event, error) {
	ev := Event{ID: e.ID, Type: string(e.Type)}
	switch ev.Type {
	case stripeCompleted, stripeAsyncSucceeded, stripeAsyncFailed, stripeExpired:
	default:
		return ev, nil // not ours to act on
	}
	if e.Data == nil {
		return ev, errors.New("the event has no data.object")
	}
	var cs struct {
		Object            string            `json:"object"`
		ClientReferenceID string            `json:"client_reference_id"`
		Metadata          map[string]string `json:"metadata"`
		PaymentStatus     string            `json:"payment_status"`
		PaymentIntent     json.RawMessage   `json:"payment_intent"`
	}
	if err := json.Unmarshal(e.Data.Raw, &cs); err != nil {
		return ev, fmt.Errorf("data.object is not a Checkout Session: %v", err)
	}
	if cs.Object != "" && cs.Object != stripeSessionObjectField {
		return ev, fmt.Errorf("data.object is a %.40q, not a checkout.session", cs.Object)
	}
	ev.Key = cs.ClientReferenceID
	if ev.Key == "" {
		ev.Key = cs.Metadata["checkout_key"]
	}
	ev.PaymentRef = stripeID(cs.PaymentIntent)
	switch {
	case ev.Type == stripeCompleted && cs.PaymentStatus == stripePaymentStatusPaid, ev.Type == stripeAsyncSucceeded:
		ev.Status = shop.PaymentPaid
	case ev.Type == stripeAsyncFailed, ev.Type == stripeExpired:
		ev.Status = shop.PaymentFailed
	}
	return ev, nil
}

// stripeID reads an expandable field: an id string, or an object with an
// id; "" for null or anything else.
func stripeID(raw json.RawMessage) string {
	var id string
	if json.Unmarshal(raw, &id) == nil {
		return id
	}
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.ID
	}
	return ""
}
