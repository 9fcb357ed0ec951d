package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// CallTimeout bounds one attempt of any provider call.
const CallTimeout = 10 * time.Second

// StandIn is the demo's own provider: the store's /pay/{key} page, and a
// refund API at URL (POST {URL}/refunds/{payment id} with an
// Idempotency-Key, which the provider uses to refund a payment at most once
// however often it is asked).
type StandIn struct {
	URL   string       // PROVIDER_URL, no trailing slash
	Token string       // sent as a bearer token when set (the store's own stand-in takes the admin token)
	HTTP  *http.Client // its Timeout is CallTimeout
}

// Local is true: the pay page is the store's own.
func (c *StandIn) Local() bool { return true }

// Create asks nobody: the payment page of checkout key is the store's
// /pay/{key}.
func (c *StandIn) Create(_ context.Context, o Order) (Payment, error) {
	return Payment{URL: "/pay/" + o.Key}, nil
}

// Expire asks nobody: the pay page takes no payment once the order is
// cancelled.
func (c *StandIn) Expire(context.Context, string, Payment) error { return nil }

// Refund asks the provider to refund payment r.PaymentID of r.AmountCents,
// with the payment id as the idempotency key: the payment id rather than a
// key per call, so that whatever happens to the caller (a retry, a fork, a
// second workflow started by hand) a payment is refunded at most once.
func (c *StandIn) Refund(ctx context.Context, r RefundRequest) (Refund, error) {
	pid := r.PaymentID
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	body, err := json.Marshal(map[string]int64{"amount_cents": r.AmountCents})
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
