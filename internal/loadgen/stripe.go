package loadgen

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
)

// Stripe mode (Options.Provider "stripe"): the store runs with
// PAYMENT_PROVIDER=stripe against stripe-mock behind stripetest's recording
// proxy, and the shoppers pay the way Stripe's servers tell a store about a
// payment: signed Checkout Session events posted to POST /webhooks/stripe,
// retried on any answer but a 2xx or 4xx, as Stripe retries. The shoppers
// check out as in the stand-in mode; what they pay with is a plan drawn per
// purchase:
//
//   - card: checkout.session.completed with payment_status=paid;
//   - async, in order: completed (unpaid: a bank debit pending), then
//     async_payment_succeeded; async, out of order: the success first, then
//     the completed (unpaid) event Stripe sent earlier;
//   - decline (Decline): completed (unpaid) then async_payment_failed, or
//     checkout.session.expired (the buyer left Stripe's page);
//   - abandon (Abandon): no event until the store's payment window closes
//     and the store asks Stripe to expire the session; then the expired
//     event Stripe sends for that;
//   - late (LatePay): the same wait, then a completed, paid event: the
//     buyer paid as the store expired the session (the race issue 19 names),
//     so the order must end CANCELLED and the payment refunded, once.
//
// With Replay, a purchase's events are delivered again afterwards, in
// reverse order (Stripe delivers at least once and in no promised order).
// The abandon and late plans wait in the background, so the shopper goes on
// buying. What Stripe was asked is read from the proxy for the checks
// (CheckInvariantsStocks with Observed.Stripe).

// StripePayer pays purchases with signed events.
type StripePayer struct {
	Client  *Client // the store: its Base and retries
	Mock    *stripetest.Mock
	Secret  string  // the store's STRIPE_WEBHOOK_SECRET
	LatePay float64 // fraction of purchases paid only after the store expired their session

	wg sync.WaitGroup // the abandon and late plans' background waits
}

// stripePlan is how one purchase pays.
type stripePlan int

const (
	planCard stripePlan = iota
	planAsyncInOrder
	planAsyncOutOfOrder
	planAsyncFailed
	planExpired
	planAbandon
	planLate
)

// drawPlan chooses a purchase's plan. It draws from rng only in Stripe
// mode, so stand-in runs of a seed stay what they were.
func (s *StripePayer) drawPlan(rng *rand.Rand, decline, abandon bool) stripePlan {
	late := rng.Float64() < s.LatePay
	variant := rng.IntN(10)
	switch {
	case abandon:
		return planAbandon
	case late:
		return planLate
	case decline && variant < 5:
		return planAsyncFailed
	case decline:
		return planExpired
	case variant < 6:
		return planCard
	case variant < 8:
		return planAsyncInOrder
	}
	return planAsyncOutOfOrder
}

// PaymentIntent is the PaymentIntent the events of a purchase name: the
// store records it from the event and refunds it.
func PaymentIntent(key string) string { return "pi_" + key }

// pay makes a purchase's payment by its plan, after its checkout answered
// 200; ctx is the purchase's call context.
func (s *StripePayer) pay(ctx context.Context, p *Purchase, plan stripePlan, replay bool, rng *rand.Rand, ledger *Ledger) {
	sessionID, err := s.session(ctx, p.Key)
	if err != nil {
		ledger.gaveUp(p, err.Error())
		return
	}
	ledger.record(func() { p.PaymentIntent = PaymentIntent(p.Key) })
	n := 0
	event := func(typ, payStatus string) stripetest.Event {
		n++
		return stripetest.Event{
			ID: "evt_" + p.Key + "_" + strconv.Itoa(n), Type: typ, SessionID: sessionID,
			ClientReferenceID: p.Key, PaymentStatus: payStatus, PaymentIntent: PaymentIntent(p.Key), Created: time.Now(),
		}
	}
	completedPaid := func() stripetest.Event { return event(stripetest.SessionCompleted, "paid") }
	completedUnpaid := func() stripetest.Event { return event(stripetest.SessionCompleted, "unpaid") }
	succeeded := func() stripetest.Event { return event(stripetest.SessionAsyncPaymentSucceeded, "paid") }

	// Each step is an event and whether it decides the payment (its answer
	// is the purchase's Payment).
	type step struct {
		e       stripetest.Event
		decides bool
	}
	var steps []step
	status := shop.PaymentPaid
	switch plan {
	case planCard:
		steps = []step{{completedPaid(), true}}
	case planAsyncInOrder:
		steps = []step{{completedUnpaid(), false}, {succeeded(), true}}
	case planAsyncOutOfOrder:
		ok := succeeded()
		steps = []step{{ok, true}, {completedUnpaid(), false}}
	case planAsyncFailed:
		status = shop.PaymentFailed
		steps = []step{{completedUnpaid(), false}, {event(stripetest.SessionAsyncPaymentFailed, "unpaid"), true}}
	case planExpired:
		status = shop.PaymentFailed
		steps = []step{{event(stripetest.SessionExpired, "unpaid"), true}}
	case planAbandon, planLate:
		delay := time.Duration(rng.Int64N(int64(100 * time.Millisecond)))
		s.wg.Go(func() { s.afterExpiry(ctx, p, plan, delay, event, ledger) })
		return
	}
	ledger.record(func() { p.Sent = status })
	var sent []stripetest.Event
	for _, st := range steps {
		a, ok := s.send(ctx, p, st.e, false, ledger)
		if !ok {
			return
		}
		if st.decides {
			ledger.record(func() { p.Payment = a })
		}
		sent = append(sent, st.e)
	}
	if replay {
		for i := len(sent) - 1; i >= 0; i-- {
			if _, ok := s.send(ctx, p, sent[i], true, ledger); !ok {
				return
			}
		}
	}
}

// afterExpiry waits until the store has asked Stripe to expire p's session
// (its payment window closed), then sends what Stripe would: the expired
// event (abandon), or, after delay, the buyer's payment that lost the race
// (late).
func (s *StripePayer) afterExpiry(ctx context.Context, p *Purchase, plan stripePlan, delay time.Duration, event func(typ, payStatus string) stripetest.Event, ledger *Ledger) {
	want := stripetest.ExpireIdempotencyKey(p.Key)
	if _, err := s.Mock.Await(ctx, func(r stripetest.Request) bool { return r.IdempotencyKey == want }); err != nil {
		ledger.gaveUp(p, fmt.Sprintf("the store never asked Stripe to expire %s's session: %v", p.Key, err))
		return
	}
	if plan == planAbandon {
		// The answer goes to the ledger (and a failure to p.GaveUp): the
		// checks read it there.
		s.send(ctx, p, event(stripetest.SessionExpired, "unpaid"), false, ledger)
		return
	}
	time.Sleep(delay)
	ledger.record(func() { p.Sent, p.Late = shop.PaymentPaid, true })
	if a, ok := s.send(ctx, p, event(stripetest.SessionCompleted, "paid"), false, ledger); ok {
		ledger.record(func() { p.Payment = a })
	}
}

// session waits for the store's session create for key to have been
// answered (the checkout answers after it, so it has been) and returns the
// session's id.
func (s *StripePayer) session(ctx context.Context, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := s.Mock.Await(ctx, func(r stripetest.Request) bool {
		return r.Method == http.MethodPost && r.Path == stripetest.SessionsPath && r.Status == http.StatusOK &&
			r.ObjectID != "" && r.Form.Get("client_reference_id") == key
	})
	if err != nil {
		return "", fmt.Errorf("checkout %s answered, but Stripe made no session for it: %v", key, err)
	}
	return r.ObjectID, nil
}

// send delivers e, signed now at every attempt (as Stripe signs each
// delivery), until the store answers 2xx or 4xx, and records it.
func (s *StripePayer) send(ctx context.Context, p *Purchase, e stripetest.Event, replay bool, ledger *Ledger) (Answer, bool) {
	a, _, err := s.Client.retryRequest(ctx, "webhook", "event "+e.ID+" "+e.Type, func(ctx context.Context) (*http.Request, error) {
		return e.NewRequest(ctx, s.Client.Base+"/webhooks/stripe", s.Secret, time.Now())
	})
	if err != nil {
		ledger.gaveUp(p, err.Error())
		return Answer{}, false
	}
	ledger.record(func() {
		p.Events = append(p.Events, SentEvent{ID: e.ID, Type: e.Type, PaymentStatus: e.PaymentStatus, Replay: replay, Answer: a})
	})
	return a, true
}

// wait waits for the background plans.
func (s *StripePayer) wait() { s.wg.Wait() }

// SentEvent is one Stripe event a shopper delivered, and the store's answer.
type SentEvent struct {
	ID, Type      string
	PaymentStatus string // the session's payment_status in it
	Replay        bool   // a redelivery of an event already answered
	Answer        Answer
}

// startStripe starts stripe-mock behind its recording proxy for a run and
// gives the store the settings that make it use it; logs go to log.
func startStripe(ctx context.Context, o *Options, log io.Writer) (*stripetest.Mock, error) {
	if log == nil {
		log = io.Discard
	}
	m, err := stripetest.Start(ctx, func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		// stripe-mock logs three lines per request; the proxy's record
		// has them all.
		for _, skip := range []string{"stripe-mock: Request: ", "stripe-mock: Request data", "stripe-mock: Response: "} {
			if strings.HasPrefix(line, skip) {
				return
			}
		}
		fmt.Fprintln(log, line)
	})
	if err != nil {
		return nil, err
	}
	o.Env = append(o.Env,
		"PAYMENT_PROVIDER=stripe",
		"STRIPE_SECRET_KEY="+stripetest.SecretKey,
		"STRIPE_WEBHOOK_SECRET="+stripetest.WebhookSecret,
		"STRIPE_API_BASE="+m.URL,
	)
	return m, nil
}
