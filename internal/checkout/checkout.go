// Package checkout is how a request reaches the checkout workflow: Start
// starts a checkout and waits for its payment id, Pay applies a payment
// webhook to its order (together they satisfy web.Checkout). It decides what
// a payment means for an order, in one place; the hand-offs are paywait's,
// the workflows the root package's, started through Workflows.
//
// The call path goes one way: web calls Pay, Pay calls paywait.Deliver, which
// answers (the outcome, or ErrOrphaned: the checkout will never take the
// payment), and then Pay starts what the answer needs (a release, a refund).
// Nothing calls back up.
package checkout

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"widget-store/internal/critpath"
	"widget-store/internal/paywait"
	"widget-store/internal/provider"
	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// Workflows are the workflow starts a request needs; the root package's
// workflows satisfy them. Each starts (or finds) the workflow under its fixed
// ID on the store's root DBOS context, never the request's, whose
// cancellation would durably cancel it.
type Workflows interface {
	// StartCheckout starts the checkout of key (its workflow ID) of cart
	// items (nil: one unit of product 1) for the browser session shopper
	// ("" for an API client), from the client address client ("" unless the
	// hold limit is on).
	StartCheckout(key, shopper, client string, items []shop.Line) error
	// Release runs the release of an order (reconcile's remedy for a PENDING
	// order whose checkout will not run again) and waits for it.
	Release(ctx context.Context, orderID int64) error
	// Refund starts the refund of late payment pid; it runs on by itself.
	Refund(ctx context.Context, pid string) error
}

// Service starts checkouts and applies payments.
type Service struct {
	hub       *paywait.Hub
	db        *store.DB
	workflows Workflows
	provider  provider.Provider // where buyers pay (payment.go)
	logger    *slog.Logger
}

// New makes the service.
func New(hub *paywait.Hub, db *store.DB, w Workflows, p provider.Provider, logger *slog.Logger) *Service {
	return &Service{hub: hub, db: db, workflows: w, provider: p, logger: logger}
}

// Start starts the checkout of key (or, for a key seen before, finds it) and
// waits for its first step; soldOut reports that it found no stock. shopper
// is the buying browser's session ("" for an API client), client its address
// when the hold limit is on.
//
// items is the cart (shop.ParseCart checked its shape); nil is the API's
// checkout without one, one unit of product 1. With a cart, a product not in
// the catalog is a shop.Invalid error before anything starts, a key seen
// before with another cart a shop.Conflict, and a short line the
// shop.Conflict that names the short lines.
//
// # Sold out, answered from a read
//
// Before it starts anything, Start reads the key's order, its sold-out
// record, its workflow's status row and the cart's stock, in one statement
// (store.LookBeforeCheckout), and answers from that read alone when it can:
//   - the key recorded a sold-out checkout: "sold out" again, from the record
//     (its outcome is final: a reserve that finds the record takes nothing);
//   - an API checkout (no shopper) whose key has no order, no record and no
//     workflow, and a line the stock cannot fill: "sold out", and nothing is
//     written, no workflow started. Nothing is promised either: the key
//     holds nothing, so the same key asked again checks out again, and after
//     a restock (or a unit given back) it may buy.
//
// Everything else starts (or finds) the checkout workflow as before: a key
// with an order (its replays get the order, never "sold out"), a key whose
// workflow exists but has not reserved yet (recovering after a crash, or in
// flight in another instance: its reserve decides), and a cart the stock can
// fill now. A browser's checkout (shopper set) that finds no stock is
// recorded through the workflow too: its buyer is sent to the pay page of
// the key, which shows the short lines from the record on every reload.
//
// Why this is safe: DBOS commits a workflow's status row before its first
// step runs, and the read is one snapshot, so a snapshot with no workflow,
// no order and no record of the key has nothing of the key's in flight
// anywhere; "sold out" is then what the stock said at that snapshot, and
// only a checkout of the same key started afterwards (a retry, or a second
// call sent at the same moment, after stock came back) can buy with it.
// Stock is only ever taken by the reserve, so a read can never oversell.
func (s *Service) Start(ctx context.Context, key, shopper, client string, items []shop.Line) (soldOut bool, err error) {
	ctx, end := s.db.Trace.Begin(ctx, critpath.Checkout, key) // the critical path's count (internal/critpath)
	defer end()
	if items != nil {
		items = slices.Clone(items)
		shop.SortLines(items) // the order the reserve takes the rows in (steps.go)
	}
	look, err := s.db.LookBeforeCheckout(ctx, key, items)
	if err != nil {
		return false, err
	}
	if items != nil {
		if err := inCatalog(look); err != nil {
			return false, err
		}
	}
	switch {
	case look.SoldOut && !look.Ordered:
		soldOut = true // recorded: the same answer, without asking DBOS again
	case shopper == "" && look.Read && !look.Ordered && !look.Started && len(look.Short) > 0:
		if items == nil {
			return true, nil
		}
		return true, shop.Errorf(shop.Conflict, "%s", shop.ShortMessage(key, look.Short))
	default:
		soldOut, err = s.hub.AwaitStart(ctx, key, func() error { return s.workflows.StartCheckout(key, shopper, client, items) })
	}
	if err != nil || items == nil {
		return soldOut, err
	}
	cart, _, err := s.db.CartOfKey(ctx, key)
	if err != nil {
		return false, err
	}
	if !shop.SameCart(cart, items) {
		return false, shop.Errorf(shop.Conflict, "checkout %s was made for a different cart; use a new key for this one", key)
	}
	if soldOut {
		short, err := s.db.SoldOutLines(ctx, key)
		if err != nil {
			return false, err
		}
		return true, shop.Errorf(shop.Conflict, "%s", shop.ShortMessage(key, shortOnly(short)))
	}
	return false, nil
}

// inCatalog refuses a cart with a product the catalog does not have.
func inCatalog(look store.BeforeCheckout) error {
	if len(look.Unknown) > 0 {
		return shop.Errorf(shop.Invalid, "there is no product %d in the catalog; nothing was held", look.Unknown[0])
	}
	return nil
}

// shortOnly keeps the lines that were short.
func shortOnly(cart []shop.Shortage) []shop.Shortage {
	var out []shop.Shortage
	for _, s := range cart {
		if s.Available < s.Quantity {
			out = append(out, s)
		}
	}
	return out
}

// Pay applies a payment status to the order behind payment id pid and
// returns the order id. A replay is answered from the order's state; a status
// that contradicts the order's fate is a conflict, and a payment for an order
// already cancelled is recorded for refund and its refund workflow started.
func (s *Service) Pay(ctx context.Context, pid, status string) (int64, error) {
	ctx, end := s.db.Trace.Begin(ctx, critpath.Webhook, pid) // the critical path's count (internal/critpath)
	defer end()
	o, err := s.hub.Deliver(ctx, pid, status)
	if errors.Is(err, paywait.ErrOrphaned) {
		// Its checkout will never take the payment: release the order now
		// (the reconciler would, a little later) and answer from it.
		if err := s.workflows.Release(ctx, o.ID); err != nil {
			return 0, err
		}
		o, err = s.db.OrderByKey(ctx, pid)
	}
	if err != nil {
		return 0, err
	}
	switch {
	case status == shop.PaymentPaid && (o.Status == shop.StatusPaid || o.Status == shop.StatusDispatched):
		return o.ID, nil
	case status == shop.PaymentFailed && o.Status == shop.StatusCancelled:
		return o.ID, nil
	case status == shop.PaymentPaid && o.Status == shop.StatusCancelled:
		first, err := s.db.RecordLatePayment(ctx, pid, o.ID)
		if err != nil {
			return 0, err
		}
		if first { // a retried webhook is not a second refund
			s.logger.Warn("payment for a cancelled order recorded for refund", "payment_id", pid, "order_id", o.ID)
		}
		// Started on every delivery, not only the first: a crash between the
		// record and this start leaves the retried webhook (or, without one,
		// the reconciler) to start it, and with its fixed ID a second start
		// finds the first.
		if err := s.workflows.Refund(ctx, pid); err != nil {
			return 0, err
		}
		return 0, shop.Errorf(shop.Conflict, "order %d was already cancelled (declined, or not paid within the payment window); this payment is recorded for refund", o.ID)
	default: // failed, but the order is paid
		return 0, shop.Errorf(shop.Conflict, "order %d is already paid; a decline cannot cancel it", o.ID)
	}
}
