// Package crashpoint is CRASH_AT, for tests: the store exits (status
// supervisor.ExitCrash) right after a named point of a workflow, and a test
// restarts it without CRASH_AT and checks that the workflow carries on from
// exactly there.
//
// A point is "workflow:step", named after what has just committed: a durable
// step by its durable name ("checkout:settle", "refund:refund-provider";
// every step runs through internal/durable, whose Tx and Call then call
// After), the child workflow a step starts by its name
// ("checkout:dispatch"), and the checkout's two hand-offs and its payment
// wait by the paywait calls that make them ("checkout:payment-id",
// "checkout:outcome", "checkout:await-payment"). A dispatch leg is numbered:
// "dispatch:dispatch-leg:3" is right after leg 3.
package crashpoint

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"widget-store/internal/shop"
	"widget-store/internal/supervisor"
)

// The checkout's points that are not durable steps of its own.
const (
	PaymentID    = "payment-id"    // the payment id handed to the waiting request (paywait.Checkout.PaymentID)
	AwaitPayment = "await-payment" // the wait for the payment ended (nothing recorded: the settle step reads the row next)
	Outcome      = "outcome"       // the order's fate handed to the waiting webhook (paywait.Checkout.Outcome)
)

// Points lists every point, in the order a purchase passes them (a
// dispatch leg as "dispatch:dispatch-leg:N").
func Points() []string {
	return []string{
		shop.CheckoutWorkflow + ":" + shop.StepReserve,
		shop.CheckoutWorkflow + ":" + shop.StepPaymentCreate, // a provider that is asked (Stripe) only
		shop.CheckoutWorkflow + ":" + shop.StepPaymentRecord, // likewise
		shop.CheckoutWorkflow + ":" + PaymentID,
		shop.CheckoutWorkflow + ":" + AwaitPayment,
		shop.CheckoutWorkflow + ":" + shop.StepSettle,
		shop.CheckoutWorkflow + ":" + shop.StepPaymentClose, // a provider that is asked only, and only when the window closed unpaid
		shop.CheckoutWorkflow + ":" + Outcome,               // before the dispatch starts: the answer does not wait for it
		shop.CheckoutWorkflow + ":" + shop.DispatchWorkflow,
		shop.DispatchWorkflow + ":" + shop.StepDispatchLeg + ":N",
		shop.ReleaseWorkflow + ":" + shop.StepRelease,
		shop.ReleaseWorkflow + ":" + shop.StepPaymentClose, // a provider that is asked (Stripe) only, after a release of an order with a payment
		shop.RefundWorkflow + ":" + shop.StepRefundCall,
		shop.RefundWorkflow + ":" + shop.StepRefundRecord,
		shop.CancelOrderWorkflow + ":" + shop.StepCancelOrder,
		shop.CancelOrderWorkflow + ":" + shop.StepPaymentClose, // likewise, after a cancel of an unpaid order
	}
}

// Leg is the step name of dispatch leg n, as a point names it.
func Leg(n int) string { return shop.StepDispatchLeg + ":" + strconv.Itoa(n) }

// Point is a parsed CRASH_AT. The zero value never crashes.
type Point struct{ at string }

// Parse reads CRASH_AT: one of Points, a dispatch leg numbered from 1 to
// shop.DispatchLegs.
func Parse(s string) (Point, error) {
	if slices.Contains(Points(), s) && !strings.HasSuffix(s, ":N") {
		return Point{at: s}, nil
	}
	if leg, ok := strings.CutPrefix(s, shop.DispatchWorkflow+":"+shop.StepDispatchLeg+":"); ok {
		if n, err := strconv.Atoi(leg); err == nil && n >= 1 && n <= shop.DispatchLegs && leg == strconv.Itoa(n) {
			return Point{at: s}, nil
		}
	}
	return Point{}, fmt.Errorf("CRASH_AT %q: want one of %s (N from 1 to %d)", s, strings.Join(Points(), ", "), shop.DispatchLegs)
}

// After exits the process if p is step of workflow: call it right after
// the step committed.
func (p Point) After(logger *slog.Logger, workflow, step string) {
	if p.at != "" && p.at == workflow+":"+step {
		logger.Warn("CRASH_AT: exiting", "workflow", workflow, "step", step)
		os.Exit(supervisor.ExitCrash)
	}
}
