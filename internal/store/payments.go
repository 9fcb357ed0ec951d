package store

import (
	"context"
	"fmt"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
)

// The records of payments at a provider that is asked (Stripe): the payment
// of each checkout (payment_sessions), the money taken (payment_intents) and
// the events applied (stripe_events). schema.sql says why each exists.

// PaymentSession is where the buyer of a checkout pays at the provider.
type PaymentSession struct {
	Key       string
	OrderID   int64
	SessionID string
	URL       string
	CreatedAt time.Time
}

// RecordPaymentSession records the payment of checkout key, in the caller's
// transaction (the checkout's payment-record step, with its checkpoint).
// ON CONFLICT DO NOTHING: the step commits once, and a key's second
// execution (its DBOS records deleted) never reaches it; should one ever, the
// first record stands, as the provider's idempotency key made it the same.
func RecordPaymentSession(ctx context.Context, q dbos.Querier, key string, orderID int64, sessionID, url string, nowMs int64) error {
	if _, err := q.Exec(ctx, `INSERT INTO payment_sessions (checkout_key, order_id, session_id, pay_url, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (checkout_key) DO NOTHING`, key, orderID, sessionID, url, nowMs); err != nil {
		return fmt.Errorf("record the payment session of %s: %w", key, err)
	}
	return nil
}

// PaymentSession reads the payment of checkout key: a shop.NotFound error
// when none is recorded (yet).
func (db *DB) PaymentSession(ctx context.Context, key string) (PaymentSession, error) {
	s := PaymentSession{Key: key}
	var createdMs int64
	err := db.q.QueryRow(ctx, `SELECT order_id, session_id, pay_url, created_at FROM payment_sessions WHERE checkout_key = $1`, key).
		Scan(&s.OrderID, &s.SessionID, &s.URL, &createdMs)
	if IsNoRows(err) {
		return s, shop.Errorf(shop.NotFound, "checkout %s has no payment at the provider", key)
	}
	if err != nil {
		return s, fmt.Errorf("read the payment session of %s: %w", key, err)
	}
	s.CreatedAt = time.UnixMilli(createdMs)
	return s, nil
}

// PaymentRef is the provider's id of the money taken for payment pid (a
// Stripe PaymentIntent), "" when none was recorded.
func (db *DB) PaymentRef(ctx context.Context, pid string) (string, error) {
	var ref string
	err := db.q.QueryRow(ctx, `SELECT payment_intent FROM payment_intents WHERE checkout_key = $1`, pid).Scan(&ref)
	if err != nil && !IsNoRows(err) {
		return "", fmt.Errorf("read the payment intent of %s: %w", pid, err)
	}
	return ref, nil
}

// BeginEvent starts applying provider event eventID about checkout key, in
// one transaction: seen reports an event applied before (nothing more to
// do); otherwise, when ref is set (a payment), it is recorded as the money
// taken for key, if key names an order and none was recorded before (the
// first payment event wins). It is written before the payment is applied, so
// any refund that follows finds it.
func (db *DB) BeginEvent(ctx context.Context, eventID, key, ref string) (seen bool, err error) {
	err = db.InTx(ctx, func(tx Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM stripe_events WHERE event_id = $1`, eventID).Scan(&one)
		if err == nil {
			seen = true
			return nil
		}
		if !IsNoRows(err) {
			return fmt.Errorf("look up event %s: %w", eventID, err)
		}
		if ref == "" || key == "" {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO payment_intents (checkout_key, payment_intent, event_id, received_at)
			SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM orders WHERE checkout_key = $1)
			ON CONFLICT (checkout_key) DO NOTHING`, key, ref, eventID, db.now().UnixMilli())
		if err != nil {
			return fmt.Errorf("record the payment intent of %s: %w", key, err)
		}
		return nil
	})
	return seen, err
}

// RecordEvent records provider event eventID as applied, once its effect has
// committed.
func (db *DB) RecordEvent(ctx context.Context, eventID, eventType, key string) error {
	if _, err := db.q.Exec(ctx, `INSERT INTO stripe_events (event_id, event_type, checkout_key, received_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (event_id) DO NOTHING`, eventID, eventType, key, db.now().UnixMilli()); err != nil {
		return fmt.Errorf("record event %s: %w", eventID, err)
	}
	return nil
}

// PruneStripeEvents deletes at most limit of the applied Stripe events
// received before cutoff and returns how many it deleted. An event id is
// kept only to recognise a redelivery, and Stripe redelivers an event for at
// most three days after its first attempt (which is never after the store
// received it): retention passes a cutoff at least that far back
// (internal/retention). A page at a time, so that on SQLite the delete holds
// the one writer briefly.
func (db *DB) PruneStripeEvents(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	res, err := db.q.Exec(ctx, `DELETE FROM stripe_events WHERE event_id IN
		(SELECT event_id FROM stripe_events WHERE received_at < $1 ORDER BY received_at LIMIT $2)`, cutoff.UnixMilli(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune the Stripe events received before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune the Stripe events: %w", err)
	}
	return n, nil
}
