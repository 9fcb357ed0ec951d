package web

import (
	"encoding/json"
	"errors"
	"net/http"

	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// The demo's stand-in payment provider, like the payment page: the refund
// workflow calls PROVIDER_URL, which by default is this store's own
// /provider. A real deployment points PROVIDER_URL at the real provider and
// nothing calls these routes.

// providerRefundJSON is the provider's answer to a refund.
type providerRefundJSON struct {
	RefundID  string `json:"refund_id"`
	PaymentID string `json:"payment_id"`
	Replayed  bool   `json:"replayed"` // an earlier request with this Idempotency-Key made the refund
}

// handleProviderRefund is POST /provider/refunds/{payment_id}, with header
// Idempotency-Key and body {"amount_cents": N}: it refunds the payment once
// per key (store.ProviderRefundOnce) and answers the refund; a repeat with
// the same key answers the same refund, replayed, and refunds nothing more.
// A missing or malformed key or amount is a 400, an unknown payment a 404,
// a key reused for another payment or amount a 409.
func handleProviderRefund(db *store.DB) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		pid := r.PathValue("payment_id")
		if err := shop.ValidateKey("payment id", pid); err != nil {
			return err
		}
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			return shop.Errorf(shop.Invalid, "the Idempotency-Key header is required: a refund is made once per key")
		}
		if err := shop.ValidateKey("Idempotency-Key", key); err != nil {
			return err
		}
		var body struct {
			AmountCents *int64 `json:"amount_cents"`
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				return err
			}
			return shop.Errorf(shop.Invalid, `the body must be JSON {"amount_cents": N}: %v`, err)
		}
		if body.AmountCents == nil || *body.AmountCents <= 0 {
			return shop.Errorf(shop.Invalid, "amount_cents must be a positive number of cents")
		}
		if _, err := db.OrderByKey(r.Context(), pid); err != nil {
			return err // shop.NotFound: the provider knows no such payment
		}
		ref, err := db.ProviderRefundOnce(r.Context(), key, pid, *body.AmountCents, "re_"+newKey())
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, providerRefundJSON{RefundID: ref.RefundID, PaymentID: ref.PaymentID, Replayed: ref.Replayed})
	}
}
