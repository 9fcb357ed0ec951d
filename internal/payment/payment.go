// Package payment is a checkout's payment at its provider, as the durable
// steps of the workflows that ask for it: Open (payment-create,
// payment-record), Expire (payment-expire), Close (payment-close), Refund
// (refund-provider). Each method is one call from a workflow (the root's
// workflow.go) and takes that workflow's DBOS context: every step runs on it
// through internal/durable, under its durable name (internal/shop) and past
// its crash point, exactly as the workflows' own steps do. The workflows call
// no provider themselves, and never know which one they have.
//
// Why a package of its own, between those it uses: internal/provider is the
// providers' API clients (one interface, the stand-in and Stripe), which know
// nothing of DBOS or of the store's tables; internal/checkout is the request
// side (a request starting a checkout, waiting for its pay URL, applying a
// webhook), which runs outside any workflow. What lives here runs inside the
// workflows: which provider call each step makes, with which retries, what a
// refusal means for the order, and what is recorded of the answer.
//
// Its one database write is payment-record's (store.RecordPaymentSession), a
// dbos.RunAsTransaction on the handle DBOS uses, in one transaction with the
// step's checkpoint, like every transactional step in the root's steps.go.
//
// The steps' names, order and outputs (provider.Payment, int64, bool,
// provider.Refund) are checkpoints: a workflow recovered from an earlier
// build's replays them, so none of them may change shape.
package payment

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/durable"
	"widget-store/internal/provider"
	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// Steps are the payment's steps.
type Steps struct {
	run      *durable.Runner
	db       *store.DB
	provider provider.Provider // the stand-in or Stripe
	now      func() time.Time
	logger   *slog.Logger
}

// New makes the steps: run runs them (the workflows' own runner), p is the
// provider PAYMENT_PROVIDER names, now the clock the workflows' steps use.
func New(run *durable.Runner, db *store.DB, p provider.Provider, now func() time.Time) *Steps {
	return &Steps{run: run, db: db, provider: p, now: now, logger: run.Logger}
}

// Order is the order a checkout opens a payment for, from its reserve step's
// checkpoint.
type Order struct {
	Key         string // the checkout key: the payment id, and the root of the provider's idempotency keys
	OrderID     int64  // 0: the reserve found a line short, and there is nothing to pay
	CreatedAtMs int64  // when the order was made (Unix ms): the session's parameters derive from it
	PayByMs     int64  // when the payment window closes (Unix ms)
	// Replayed is an order this key made before this execution began (the
	// reserve's Existing): its payment is not opened again.
	Replayed bool
}

// minPayable is the least time a payment is opened for: nobody pays at a
// provider's page in less, and the check that the window closed before the
// payment was opened must not hang on the clock's tick (with a window of
// 1 ms, the order and its payment were made in the same millisecond about
// three times in four on SQLite, and a session was opened, paid by nobody,
// and expired at once).
const minPayable = 100 * time.Millisecond

// Open opens the payment of a new order at the provider, when the provider
// is asked (Stripe; the stand-in's pay page is the store's own, and a
// stand-in checkout runs no step here):
//
//  1. [payment-create] ask the provider for the order's payment, with an
//     idempotency key per checkout (provider.Stripe): a step is at least
//     once, the key makes it one session. Transport errors and 5xx are
//     retried until the payment window closes.
//  2. [payment-record] record it with the order (payment_sessions), in one
//     transaction with the step's checkpoint: the buyer's redirect and
//     POST /checkout's pay_url read it.
//
// After 1's checkpoint a crash asks the provider nothing more: the recovered
// checkout replays the session from it. opened is false when the provider
// opened none (it refused, or could not be reached before the window
// closed): the checkout cancels the order as declined, and a request waiting
// for the pay URL is told so. A sold-out or replayed reserve opens nothing.
//
// A payment that would be open for less than minPayable before the window
// closes is not opened: the window counts as closed.
func (s *Steps) Open(ctx dbos.Context, order Order) (p provider.Payment, opened bool, err error) {
	if order.OrderID == 0 || order.Replayed || s.provider.Local() {
		return provider.Payment{}, true, nil
	}
	p, err = durable.Call(ctx, s.run, shop.CheckoutWorkflow, shop.StepPaymentCreate, func(ctx context.Context) (provider.Payment, error) {
		var created provider.Payment
		o, err := s.providerOrder(ctx, order)
		if err == nil && s.now().UnixMilli() >= order.PayByMs-minPayable.Milliseconds() {
			s.closeLate(ctx, o)
			return created, provider.PermanentError(fmt.Errorf("the payment window of order %d closed before the provider opened a payment", order.OrderID))
		}
		if err == nil {
			created, err = s.provider.Create(ctx, o)
		}
		if err != nil && !provider.Permanent(err) {
			s.logger.Warn("checkout: creating the payment at the provider failed; retrying", "workflow_id", order.Key, "order_id", order.OrderID, "err", err)
		}
		return created, err
	}, dbos.WithStepMaxRetries(1000), dbos.WithStepBaseInterval(200*time.Millisecond), dbos.WithStepBackoffFactor(2),
		dbos.WithStepMaxInterval(5*time.Second), dbos.WithStepRetryPredicate(func(err error) bool { return !provider.Permanent(err) }))
	if err != nil && ctx.Err() != nil {
		return provider.Payment{}, false, err // a stop, not the provider's answer: nothing was checkpointed, the recovered checkout asks again
	}
	if err != nil {
		s.run.Log(ctx, order.OrderID).Error("checkout: the payment provider opened no payment; the order is cancelled", "err", err)
		return provider.Payment{}, false, nil
	}
	if _, err := durable.Tx(ctx, s.run, shop.CheckoutWorkflow, shop.StepPaymentRecord, s.record(order, p)); err != nil {
		return p, false, err
	}
	return p, true, nil
}

// record records the payment p the provider opened for the order (its
// session id and where the buyer pays), in one transaction with the
// payment-record step's checkpoint, and returns when (Unix ms).
func (s *Steps) record(order Order, p provider.Payment) func(context.Context, dbos.Tx) (int64, error) {
	return func(ctx context.Context, tx dbos.Tx) (int64, error) {
		now := s.now().UnixMilli()
		return now, store.RecordPaymentSession(ctx, tx, order.Key, order.OrderID, p.SessionID, p.URL, now)
	}
}

// providerOrder is the order as its payment at the provider shows it: its
// lines at their unit prices at the hold, with the products' names. A read,
// for the payment-create step: the lines never change once written.
func (s *Steps) providerOrder(ctx context.Context, order Order) (provider.Order, error) {
	o, err := s.db.OrderByID(ctx, order.OrderID)
	if err == nil {
		o, err = s.db.WithLines(ctx, o)
	}
	if err != nil {
		return provider.Order{}, err
	}
	products, err := s.db.Products(ctx)
	if err != nil {
		return provider.Order{}, err
	}
	out := provider.Order{Key: order.Key, OrderID: order.OrderID, CreatedAtMs: order.CreatedAtMs}
	for _, l := range o.Lines {
		name := fmt.Sprintf("Product %d", l.ProductID)
		for _, p := range products {
			if p.ID == l.ProductID {
				name = p.Name
			}
		}
		out.Lines = append(out.Lines, provider.Line{Name: name, Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents})
	}
	return out, nil
}

// closeLate closes, best effort, a payment an earlier attempt of the
// payment-create step may have opened at the provider when the payment
// window closed before the step's checkpoint (a crash cut the attempt after
// the provider answered, and the checkout recovered late): nobody has its
// URL, but it would stay open until it expired by itself. Asked again under
// the same idempotency key, the provider answers with that payment (or makes
// one, if no attempt reached it), which is then expired at once under its own
// key. A failure is only logged: the payment expires by itself within the
// hour, and a payment made at it is refunded like any late payment.
func (s *Steps) closeLate(ctx context.Context, o provider.Order) {
	p, err := s.provider.Create(ctx, o)
	if err == nil {
		err = s.provider.Expire(ctx, o.Key, p)
	}
	if err != nil && !provider.Permanent(err) {
		s.logger.Warn("checkout: could not close the payment of a checkout whose window closed before it was recorded; it expires by itself", "workflow_id", o.Key, "order_id", o.OrderID, "err", err)
	}
}

// Expire closes payment p of checkout key's order orderID at the provider
// once the payment window ended unpaid, before the units go back
// ([payment-expire]; nothing for the stand-in): Stripe sessions cannot
// expire sooner than 30 minutes by themselves, and this is what keeps the
// store's window honest. A payment that wins the race arrives as a completed
// event for a cancelled order and is refunded. The provider refusing (the
// session is no longer open: paid or expired already) ends the step;
// transport errors and 5xx are retried for about two minutes, after which
// the order is cancelled anyway: the session then expires by itself within
// the hour, and a payment made at it meanwhile is refunded the same way. An
// order no longer PENDING was cancelled by an operator while its checkout
// waited, and its payment closed by that cancel-order (Close): nothing more
// is asked of the provider.
func (s *Steps) Expire(ctx dbos.Context, key string, orderID int64, p provider.Payment) {
	if s.provider.Local() {
		return
	}
	expired, err := durable.Call(ctx, s.run, shop.CheckoutWorkflow, shop.StepPaymentExpire, func(ctx context.Context) (bool, error) {
		o, err := s.db.OrderByID(ctx, orderID)
		if err != nil {
			return false, err
		}
		if o.Status != shop.StatusPending { // an operator cancelled it meanwhile, and cancel-order closed its payment (Close)
			return false, nil
		}
		err = s.provider.Expire(ctx, key, p)
		if provider.Permanent(err) {
			s.logger.Info("checkout: the provider did not expire the payment: it is no longer open (a payment that came is refunded)", "workflow_id", key, "order_id", orderID, "err", err)
			return false, nil
		}
		if err != nil {
			s.logger.Warn("checkout: expiring the payment at the provider failed; retrying", "workflow_id", key, "order_id", orderID, "err", err)
		}
		return err == nil, err
	}, dbos.WithStepMaxRetries(30), dbos.WithStepBaseInterval(200*time.Millisecond), dbos.WithStepBackoffFactor(2), dbos.WithStepMaxInterval(5*time.Second))
	if err != nil {
		s.run.Log(ctx, orderID).Error("checkout: could not expire the payment at the provider; cancelling the order anyway (a payment made at it is refunded)", "err", err)
		return
	}
	s.run.Log(ctx, orderID).Info("checkout: payment window closed; payment expired at the provider", "expired", expired)
}

// Close expires at the provider the payment of order orderID, which workflow
// wf (release or cancel-order) has just cancelled unpaid, before its checkout
// finished it ([payment-close]; the stand-in asks nobody, and runs no step
// and no transaction here): that checkout will not expire it (release: it
// will never run again; cancel-order: the operator's cancel stopped it with
// DBOS, and one that gets to its expiry anyway finds the order no longer
// PENDING, see Expire), and at Stripe the session would stay payable for up
// to an hour.
//
// It runs after the units went back, not before, because the cancel is what
// decides: it cancels only an order still PENDING, in one transaction with
// its checkpoint, and only an order it cancelled needs its payment closed
// (expiring first would close the payment of an order that the step then
// finds paid). The order's guarantee: from the cancel's commit on, any
// payment made at the session is a payment for a cancelled order, which the
// webhook records and the refund workflow pays back, once; this step, with
// the checkout's own key (widget-store-expire-<key>, one expiry however
// often a crash repeats it; recovery re-runs it after a crash before its
// checkpoint), shrinks the time such a payment can still be made from the
// session's own expiry to the step's latency. An order with no payment
// recorded (its checkout stopped before payment-record: nobody was given
// the URL) has nothing to close. The provider refusing (the session is no
// longer open) ends the step; transport errors and 5xx are retried for about
// two minutes, then only logged: the session expires by itself and a payment
// made at it is refunded.
func (s *Steps) Close(ctx dbos.Context, wf string, orderID int64) {
	if s.provider.Local() {
		return
	}
	closed, err := durable.Call(ctx, s.run, wf, shop.StepPaymentClose, func(ctx context.Context) (bool, error) {
		o, err := s.db.OrderByID(ctx, orderID)
		if err != nil {
			return false, err
		}
		ps, err := s.db.PaymentSession(ctx, o.Key)
		if shop.KindOf(err) == shop.NotFound {
			return false, nil // no payment was recorded: nobody can pay at one
		}
		if err != nil {
			return false, err
		}
		err = s.provider.Expire(ctx, o.Key, provider.Payment{SessionID: ps.SessionID, URL: ps.URL})
		if provider.Permanent(err) {
			s.logger.Info(wf+": the provider did not expire the payment: it is no longer open (a payment that came is refunded)", "order_id", orderID, "err", err)
			return false, nil
		}
		if err != nil {
			s.logger.Warn(wf+": expiring the payment at the provider failed; retrying", "order_id", orderID, "err", err)
		}
		return err == nil, err
	}, dbos.WithStepMaxRetries(30), dbos.WithStepBaseInterval(200*time.Millisecond), dbos.WithStepBackoffFactor(2), dbos.WithStepMaxInterval(5*time.Second))
	if err != nil {
		s.run.Log(ctx, orderID).Error(wf+": could not expire the cancelled order's payment at the provider; it expires by itself (a payment made at it is refunded)", "err", err)
		return
	}
	s.run.Log(ctx, orderID).Info(wf+": the cancelled order's payment is closed at the provider", "expired", closed)
}

// Refund is the refund workflow's provider call ([refund-provider]): the
// provider's refund of late payment pid, amountCents in full, through the
// same interface for both (the stand-in: POST {PROVIDER_URL}/refunds/{pid};
// Stripe: POST /v1/refunds of the PaymentIntent recorded from the payment's
// event), with Idempotency-Key: <pid>: a step runs at least once, the key
// makes it one refund. Transport errors and 5xx are retried for about a day
// (attempts 100 ms doubling to a minute apart; a recovery starts the count
// again); a 4xx, or an answer that is not a refund of this payment, is the
// error the workflow ends with, in ERROR for an operator.
func (s *Steps) Refund(ctx dbos.Context, pid string, amountCents int64) (provider.Refund, error) {
	return durable.Call(ctx, s.run, shop.RefundWorkflow, shop.StepRefundCall, func(ctx context.Context) (provider.Refund, error) {
		ref, err := s.db.PaymentRef(ctx, pid) // the provider's id of the money taken (Stripe's PaymentIntent), "" for the stand-in
		if err != nil {
			return provider.Refund{}, err
		}
		r, err := s.provider.Refund(ctx, provider.RefundRequest{PaymentID: pid, AmountCents: amountCents, PaymentRef: ref})
		if err != nil && !provider.Permanent(err) {
			s.logger.Warn("refund: the provider call failed; retrying", "payment_id", pid, "err", err)
		}
		return r, err
	}, dbos.WithStepMaxRetries(1500), dbos.WithStepBaseInterval(100*time.Millisecond), dbos.WithStepBackoffFactor(2),
		dbos.WithStepMaxInterval(time.Minute), dbos.WithStepRetryPredicate(func(err error) bool { return !provider.Permanent(err) }))
}
