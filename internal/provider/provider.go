// Package provider is the store's client of the payment provider's refund
// API: POST {URL}/refunds/{payment id} with an Idempotency-Key, which the
// provider uses to refund a payment at most once however often it is asked.
// The refund workflow (the root's workflow.go) calls it from a DBOS step,
// which is at least once; the key makes it exactly once. The store serves a
// stand-in of this API itself (internal/web, /provider/), the default
// PROVIDER_URL; a real deployment points PROVIDER_URL at the real provider.
package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// CallTimeout bounds one attempt.
const CallTimeout = 10 * time.Second

// Client calls the provider.
type Client struct {
	URL   string       // PROVIDER_URL, no trailing slash
	Token string       // sent as a bearer token when set (the store's own stand-in takes the admin token)
	HTTP  *http.Client // its Timeout is CallTimeout
}

// Refund is the provider's answer to a refund call.
type Refund struct {
	RefundID string `json:"refund_id"`
	Replayed bool   `json:"replayed"` // the provider had refunded this key before: nothing more was refunded
}

// permanentError is an answer that trying again cannot change.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent reports an error that trying again cannot change: a 4xx other
// than 408 and 429, or an answer that is not a refund of this payment.
// Transport errors and 5xx are not permanent.
func Permanent(err error) bool { return errors.As(err, new(permanentError)) }

// Refund asks the provider to refund payment pid of amountCents, with pid as
// the idempotency key: the payment id rather than a key per call, so that
// whatever happens to the caller (a retry, a fork, a second workflow started
// by hand) a payment is refunded at most once.
func (c *Client) Refund(ctx context.Context, pid string, amountCents int64) (Refund, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	body, err := json.Marshal(map[string]int64{"amount_cents": amountCents})
	if err != nil {
		return Refund{}, permanentError{err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+"/refunds/"+url.PathEscape(pid), bytes.NewReader(body))
	if err != nil {
		return Refund{}, permanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", pid)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Refund{}, fmt.Errorf("refund %s: %w", pid, err)
	}
	defer resp.Body.Close() // read below; a close error adds nothing to the answer
	text, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Refund{}, fmt.Errorf("refund %s: read the answer: %w", pid, err)
	}
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return Refund{}, fmt.Errorf("refund %s: provider answered %s: %.200s", pid, resp.Status, text)
	case resp.StatusCode != http.StatusOK:
		return Refund{}, permanentError{fmt.Errorf("refund %s: provider refused it: %s: %.200s", pid, resp.Status, text)}
	}
	var got struct {
		RefundID  string `json:"refund_id"`
		PaymentID string `json:"payment_id"`
		Replayed  bool   `json:"replayed"`
	}
	if err := json.Unmarshal(text, &got); err != nil || got.RefundID == "" || got.PaymentID != pid {
		return Refund{}, permanentError{fmt.Errorf("refund %s: the provider's answer is not a refund of this payment: %.200s", pid, text)}
	}
	return Refund{RefundID: got.RefundID, Replayed: got.Replayed}, nil
}
