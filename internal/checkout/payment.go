package checkout

import (
	"context"
	"strconv"
	"time"

	"widget-store/internal/provider"
	"widget-store/internal/shop"
)

// payURLWait bounds PayURL's wait for a payment the checkout is opening at
// the provider (its payment-create step retries until the payment window
// closes; a client that gives up sooner retries with the same key).
const payURLWait = 30 * time.Second

// PayURL is where the buyer of checkout key pays, once Start has answered
// that it holds an order: the stand-in's /pay/{key}, or the session the
// checkout opened at the provider (Stripe), which PayURL waits for. A
// checkout whose provider opened no payment has its order cancelled: that is
// a shop.Conflict; one still opening it after payURLWait a shop.Busy.
func (s *Service) PayURL(ctx context.Context, key string) (string, error) {
	if s.provider.Local() {
		p, err := s.provider.Create(ctx, provider.Order{Key: key}) // the stand-in's page: asks nobody
		return p.URL, err
	}
	deadline := time.Now().Add(payURLWait)
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 500*time.Millisecond) {
		ps, err := s.db.PaymentSession(ctx, key)
		if err == nil {
			return ps.URL, nil
		}
		if shop.KindOf(err) != shop.NotFound {
			return "", err
		}
		o, err := s.db.OrderByKey(ctx, key)
		if err != nil {
			return "", err
		}
		if o.Status != shop.StatusPending {
			return "", shop.Errorf(shop.Conflict, "checkout %s: the payment provider opened no payment for order %d, which is %s; nothing is held, check out again with a new key", key, o.ID, o.Status)
		}
		if time.Now().After(deadline) {
			return "", shop.Errorf(shop.Busy, "checkout %s: the payment of order %d is still being opened at the payment provider; retry with the same key", key, o.ID)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// ApplyEvent applies a provider's payment event, already verified (web
// checks Stripe's signature), and says what it did, for the provider's log
// of deliveries. It answers an error only when the event must come again
// (the store could not record it, or its checkout is still deciding:
// shop.Busy); every event that is recorded is answered, whatever it meant
// for its order, because a provider retries every other answer for days:
//
//   - an event id seen before changes nothing;
//   - a paid or failed status goes to its checkout exactly as the payment
//     webhook's does (Pay: the first status wins), a payment for an order
//     already cancelled is recorded and refunded once, and the money taken
//     (Stripe's PaymentIntent) is recorded first, for that refund;
//   - an event that decides nothing (a payment still pending, a type the
//     store does not use) and one that names no checkout of this store are
//     recorded and change nothing.
//
// The event id is recorded once the effect has committed (store.RecordEvent).
func (s *Service) ApplyEvent(ctx context.Context, ev provider.Event) (string, error) {
	if ev.Key != "" && shop.ValidateKey("checkout key", ev.Key) != nil {
		ev.Key = "" // not a key this store makes: it names none of its checkouts
	}
	ref := ""
	if ev.Status == shop.PaymentPaid {
		ref = ev.PaymentRef
	}
	seen, err := s.db.BeginEvent(ctx, ev.ID, ev.Key, ref)
	if err != nil {
		return "", err
	}
	if seen {
		return "event " + ev.ID + " was applied before; nothing changed", nil
	}
	did := "recorded; it decides no payment"
	switch {
	case ev.Key == "":
		did = "recorded; it names no checkout of this store"
		if ev.Status != "" {
			s.logger.Warn("payment event for no checkout of this store", "event_id", ev.ID, "type", ev.Type)
		}
	case ev.Status != "":
		orderID, err := s.Pay(ctx, ev.Key, ev.Status)
		switch shop.KindOf(err) {
		case "":
			if err != nil {
				return "", err
			}
			did = "applied: order " + strconv.FormatInt(orderID, 10) + " " + ev.Status
		case shop.Conflict: // it contradicts the order's fate: a late payment is recorded for refund
			did = "recorded: " + err.Error()
		case shop.NotFound:
			did = "recorded; it names no checkout of this store"
			s.logger.Warn("payment event for no checkout of this store", "event_id", ev.ID, "type", ev.Type, "payment_id", ev.Key)
		default:
			return "", err
		}
	}
	if err := s.db.RecordEvent(ctx, ev.ID, ev.Type, ev.Key); err != nil {
		return "", err
	}
	return did, nil
}
