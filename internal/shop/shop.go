// Package shop holds the store's domain words, defined once: the product,
// orders and their statuses, payment statuses, the length of a dispatch, the
// durable names of the workflows, and errors that carry a kind.
//
// Nothing here knows about HTTP or SQL. The web layer maps an error's Kind to
// a status code (internal/web); the store package reads and writes these
// types; the views render them.
package shop

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ProductID is the reference store's product, the first of the catalog: the
// product of GET /product, and of a checkout without a cart.
const ProductID = 1

// Product is one product of the catalog.
type Product struct {
	ID          int
	Name        string
	Description string
	PriceCents  int64
	Inventory   int
	Picture     string // its picture's path under /static ("" if it has none)
}

// Price formats the price, e.g. "$99.99".
func (p Product) Price() string { return Money(p.PriceCents) }

// Money formats cents as dollars, e.g. "$99.99".
func Money(cents int64) string { return fmt.Sprintf("$%d.%02d", cents/100, cents%100) }

// Status is an order's status, as stored and as the JSON API reports it. The
// numbers are the reference widget store's, so existing clients keep working.
type Status int

// Order statuses. An order moves only forward: PENDING → PAID → DISPATCHED,
// or PENDING → CANCELLED.
const (
	StatusCancelled  Status = -1
	StatusPending    Status = 0
	StatusDispatched Status = 1
	StatusPaid       Status = 2
)

// String is the status as a word: PENDING, PAID, DISPATCHED, CANCELLED.
func (s Status) String() string {
	switch s {
	case StatusPending:
		return "PENDING"
	case StatusPaid:
		return "PAID"
	case StatusDispatched:
		return "DISPATCHED"
	case StatusCancelled:
		return "CANCELLED"
	}
	return "UNKNOWN(" + strconv.Itoa(int(s)) + ")"
}

// DispatchLegs is how many one-second legs the dispatch of an order takes:
// an order's progress_remaining starts here and counts down to 0.
const DispatchLegs = 10

// Order is one order.
type Order struct {
	ID                int64
	Key               string // the checkout's idempotency key, which is also its payment id
	Shopper           string // the browser session that bought it ("" for an API client's checkout)
	ProductID         int
	PriceCents        int64
	Status            Status
	ProgressRemaining int
	CreatedAt         time.Time
	LastUpdate        time.Time
	// Lines are what the order holds, each at its unit price at the hold;
	// PriceCents is their total. Read only where they are shown (nil
	// elsewhere).
	Lines []Line
}

// StatusName is the status as a word.
func (o Order) StatusName() string { return o.Status.String() }

// Final reports an order that will not change any more.
func (o Order) Final() bool { return o.Status == StatusDispatched || o.Status == StatusCancelled }

// ProgressPercent is how far the dispatch has got.
func (o Order) ProgressPercent() int {
	switch o.Status {
	case StatusDispatched:
		return 100
	case StatusPaid:
		return (DispatchLegs - o.ProgressRemaining) * 100 / DispatchLegs
	}
	return 0
}

// Price formats the price paid.
func (o Order) Price() string { return Money(o.PriceCents) }

// Payment statuses. The webhook accepts only PaymentPaid and PaymentFailed:
// anything else is refused before it reaches a workflow, since a typo must
// not cancel a customer's order. PaymentTimedOut is what a checkout records
// when no payment came within its window.
const (
	PaymentPaid     = "paid"
	PaymentFailed   = "failed"
	PaymentTimedOut = "timeout"
)

// Durable names: DBOS records them and looks them up at recovery, so they
// are part of the data. Renaming one strands the workflows already started
// under the old name (see AppVersion and README.md).
const (
	CheckoutWorkflow = "checkout"
	DispatchWorkflow = "dispatch"
	// ReleaseWorkflow cancels an order no checkout will finish (its checkout
	// was cancelled by an operator, failed, or was deleted) and returns its
	// unit: see internal/reconcile.
	ReleaseWorkflow = "release"
	// RefundWorkflow pays back a payment that came for an order already
	// cancelled (a late payment): one per payment id, see RefundWorkflowID.
	RefundWorkflow = "refund"
	// CancelOrderWorkflow is an operator's "cancel and refund" of an order
	// that needs attention (the internals panel): the order CANCELLED, its
	// unit back, and, if it was paid, its payment refunded. One per order,
	// see CancelOrderWorkflowID.
	CancelOrderWorkflow = "cancel-order"
)

// Step names, recorded by DBOS with every checkpoint and checked when one is
// replayed (the workflows set them with dbos.WithStepName; the timeline shows
// them as is). Part of the durable data like the workflow names: never derive
// them from Go symbols, which a refactor renames.
const (
	StepReserve = "reserve" // checkout: reserve a unit and create the order
	// checkout: settle the order from its row: PAID, or CANCELLED with its
	// units back (declined, or no payment in its window).
	StepSettle = "settle"
	// checkout, as the build before this one recorded it (checkouts it
	// started, still in flight): the payment came in / declined or timed
	// out, the unit goes back; after its dbos.Recv of the payment message.
	StepMarkPaid = "mark-paid"
	StepCancel   = "cancel"
	StepRelease  = "release" // release: the order of a dead checkout cancelled, its unit back
	// cancel-order: an operator's cancel; the order CANCELLED, its unit back,
	// a paid one's payment recorded for refund.
	StepCancelOrder = "cancel-order"

	// checkout, with a provider that is asked (Stripe; the stand-in's pay
	// page is the store's own and needs none of these): create the order's
	// payment at the provider (idempotency key per checkout), record it with
	// the order. (payment-expire: a checkout of the build before this one
	// expired the payment there when its window closed unpaid, before the
	// units went back; this build's checkout closes it after, payment-close.)
	StepPaymentCreate = "payment-create"
	StepPaymentRecord = "payment-record"
	StepPaymentExpire = "payment-expire"
	// checkout, release, cancel-order (a provider that is asked only): the
	// order cancelled unpaid (its window closed, or it was cancelled before
	// its checkout finished it), expire its payment at the provider (the
	// same idempotency key as payment-expire), after its units went back.
	StepPaymentClose = "payment-close"

	StepRefundCall   = "refund-provider" // refund: ask the payment provider to refund (idempotency key = payment id)
	StepRefundRecord = "refund-record"   // refund: record the provider's refund in the store
)

// AppVersion is the DBOS application version. DBOS recovers only workflows of
// its own version (its default, a hash of the binary, would strand every
// order in flight at each rebuild). Bump it when a change to the workflows
// would make old checkpoints replay wrongly, and carry the unfinished
// workflows of the previous version over at startup (see UpgradeRenames).
const AppVersion = "widget-store-3"

// PreviousAppVersion is the build before explicit step names: DBOS named its
// steps after their Go functions. UpgradeRenames maps those names to today's;
// the steps, their order, inputs and outputs are otherwise the same, so an
// order in flight under the previous build finishes under this one (the
// store carries them over at startup, store.UpgradeWorkflows).
const PreviousAppVersion = "widget-store-2"

// UpgradeRenames maps the previous build's step names to today's.
func UpgradeRenames() map[string]string {
	return map[string]string{
		"main.checkoutTx.reserveAndCreateOrder-fm": StepReserve,
		"main.orderTx.markPaid-fm":                 StepMarkPaid,
		"main.orderTx.cancel-fm":                   StepCancel,
		"main.progressTx.apply-fm":                 StepDispatchLeg,
	}
}

// StepDispatchLeg names a leg of a dispatch on the timeline. The legs are not
// DBOS steps (each is an idempotent write, see the root's workflow.go); the
// previous build checkpointed them, and its checkpoints carried over by the
// upgrade are renamed to this.
const StepDispatchLeg = "dispatch-leg"

// DispatchWorkflowID is the ID of the dispatch workflow of an order. A
// checkout's ID is its client's key, which cannot contain "/", so the two
// never collide.
func DispatchWorkflowID(orderID int64) string {
	return "dispatch/" + strconv.FormatInt(orderID, 10)
}

// ReleaseWorkflowID is the ID of the workflow that releases an order: one
// per order, so however many instances or requests ask, it runs once.
func ReleaseWorkflowID(orderID int64) string {
	return "release/" + strconv.FormatInt(orderID, 10)
}

// RefundWorkflowID is the ID of the workflow that refunds late payment pid:
// one per payment, so a retried webhook or a reconciler pass that asks again
// starts nothing new. A payment id is a checkout key, which cannot contain
// "/", so it never collides with a checkout's ID.
func RefundWorkflowID(pid string) string {
	return "refund/" + pid
}

// RedispatchWorkflowID is the ID of a second dispatch of a paid order whose
// dispatch workflow will not run again (cancelled by an operator, failed):
// the same dispatch, started once more by internal/reconcile. Its legs are
// idempotent, so it picks up where the order's progress is.
func RedispatchWorkflowID(orderID int64) string {
	return "redispatch/" + strconv.FormatInt(orderID, 10)
}

// CancelOrderWorkflowID is the ID of an operator's cancel-and-refund of an
// order: one per order, so a double click or two operators cancel it once.
func CancelOrderWorkflowID(orderID int64) string {
	return "cancel/" + strconv.FormatInt(orderID, 10)
}

// OrderOfWorkflowID is the inverse of DispatchWorkflowID, RedispatchWorkflowID,
// ReleaseWorkflowID and CancelOrderWorkflowID: the order a workflow of one
// of those IDs works on. ok is false for any other ID.
func OrderOfWorkflowID(id string) (orderID int64, ok bool) {
	for _, prefix := range []string{"dispatch/", "redispatch/", "release/", "cancel/"} {
		if rest, found := strings.CutPrefix(id, prefix); found {
			n, err := strconv.ParseInt(rest, 10, 64)
			return n, err == nil && n > 0
		}
	}
	return 0, false
}

// MaxKeyLen bounds idempotency keys. A key is a workflow ID, which DBOS puts
// in Postgres NOTIFY payloads (capped at 8000 bytes); an unbounded key would
// hang a checkout instead of failing it.
const MaxKeyLen = 128

// ValidateKey accepts 1–128 characters of A–Z a–z 0–9 - _ . ~ : (URL-safe,
// never "/"), which covers UUIDs and the keys the reference clients send.
// what names the key in the error ("checkout key", "payment id").
func ValidateKey(what, key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return Errorf(Invalid, "%s must be 1 to %d characters long (got %d)", what, MaxKeyLen, len(key))
	}
	for _, c := range key {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' || c == ':') {
			return Errorf(Invalid, "%s may contain only A-Z a-z 0-9 - _ . ~ : (found %q)", what, c)
		}
	}
	// "." and ".." are path segments the router cleans away: a checkout with
	// such a key could never be reached at /pay/{key} or by the webhook.
	if key == "." || key == ".." {
		return Errorf(Invalid, "%s cannot be %q", what, key)
	}
	return nil
}

// ValidatePayment checks a payment id and a payment status from a client.
func ValidatePayment(pid, status string) error {
	if err := ValidateKey("payment id", pid); err != nil {
		return err
	}
	if status != PaymentPaid && status != PaymentFailed {
		return Errorf(Invalid, "payment status must be %q or %q (got %.40q); nothing was changed", PaymentPaid, PaymentFailed, status)
	}
	return nil
}

// ParseOrderID reads an order id: a positive integer.
func ParseOrderID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, Errorf(Invalid, "order id must be a positive integer (got %.40q)", s)
	}
	return id, nil
}

// Attention is an order (or a payment of one) that an operator should look
// at: no workflow will finish it by itself, or it has not moved for longer
// than it should (internal/reconcile decides; the internals panel shows it).
type Attention struct {
	Order     Order
	PaymentID string // set for a late payment whose refund is stuck
	Reason    string // what is wrong, in a sentence
	// Workflows are the workflows behind it, as DBOS has them.
	Workflows []WorkflowState
	// Retry is the stopped workflow an operator's Retry runs again (resumed,
	// or forked from its failed step: reconcile.Operations.Retry), "" when
	// there is none.
	Retry string
	// CanCancel: Cancel-and-refund applies (an unfinished order).
	CanCancel bool
}

// WorkflowState is one workflow's DBOS status.
type WorkflowState struct {
	ID, Status, Error string
}
