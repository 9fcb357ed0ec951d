package loadgen

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
)

// The invariants of a Stripe run (Observed.Stripe) that differ from the
// stand-in's. Stripe is answered 2xx for every event the store recorded,
// a payment for an order already cancelled included, so the answers no
// longer tell a payment that shipped from one that came too late: check 3
// reads each order's fate from the database and holds it against the
// events its shopper sent; check 6 counts refunds at Stripe (the proxy), one
// per distinct Idempotency-Key; check 7 holds what Stripe was asked against
// issue 19's contract: one session, one expiry and at most one refund per
// checkout key, each under its own Idempotency-Key.

// stripeRefunds counts the refunds Stripe was asked for by payment id (the
// checkout key whose PaymentIntent each names): one per distinct
// Idempotency-Key, since Stripe makes one refund per key. A request
// stripe-mock refused (4xx) made no refund (check 7 reports it); one the
// proxy could not answer (502: the store was killed mid-call) may have.
// A PaymentIntent no purchase sent counts under "?"+the PaymentIntent.
func stripeRefunds(reqs []stripetest.Request, purchases []Purchase) map[string]int {
	keyOf := map[string]string{}
	for _, p := range purchases {
		if p.PaymentIntent != "" {
			keyOf[p.PaymentIntent] = p.Key
		}
	}
	idem := map[string]map[string]bool{}
	for _, r := range reqs {
		if r.Method != http.MethodPost || r.Path != stripetest.RefundsPath || (r.Status >= 400 && r.Status < 500) {
			continue
		}
		pi := r.Form.Get("payment_intent")
		key, ok := keyOf[pi]
		if !ok {
			key = "?" + pi
		}
		if idem[key] == nil {
			idem[key] = map[string]bool{}
		}
		idem[key][r.IdempotencyKey] = true
	}
	out := map[string]int{}
	for k, ids := range idem {
		out[k] = len(ids)
	}
	return out
}

// paysWith reports whether an event of type typ with this payment_status
// says the buyer paid.
func paysWith(typ, payStatus string) bool {
	return (typ == stripetest.SessionCompleted && payStatus == "paid") || typ == stripetest.SessionAsyncPaymentSucceeded
}

// checkStripeFates is check 3 of a Stripe run: every event was answered
// 2xx, and each order ended as its events say. An order whose shopper sent
// a payment ships, or (its window having closed first) is CANCELLED with
// the payment recorded for refund; a payment sent only after the store
// expired the session (Late) must be the latter; an order with only
// failures, or no event before its window closed, is CANCELLED and nothing
// is refunded; and no order ships without a payment.
func checkStripeFates(byKey map[string]Order, count map[shop.Status]int, snap Snapshot, purchases []Purchase) Check {
	var o offences
	events, replays, shipped, late, raced, failed, unpaid := 0, 0, 0, 0, 0, 0, 0
	paidKeys := map[string]bool{}
	for _, p := range purchases {
		for _, e := range p.Events {
			events++
			if e.Replay {
				replays++
			}
			if e.Answer.Status/100 != 2 {
				o.add("event %s (%s) for %s answered %v, want 2xx", e.ID, e.Type, p.Key, e.Answer)
			}
		}
		for _, r := range p.Replays {
			if r.Got != r.Want {
				o.add("%s repeated answered %v, first %v", r.Call, r.Got, r.Want)
			}
		}
		paid := false
		for _, e := range p.Events {
			paid = paid || paysWith(e.Type, e.PaymentStatus)
		}
		if paid {
			paidKeys[p.Key] = true
		}
		ord, has := byKey[p.Key]
		if !has {
			if len(p.Events) > 0 {
				o.add("events were sent for %s, whose checkout made no order", p.Key)
			}
			continue
		}
		_, isLate := snap.LatePayments[p.Key]
		switch {
		case paid && p.Late:
			late++
			if ord.Status != shop.StatusCancelled || !isLate {
				o.add("order %d (%s) was paid after the store expired its session, but is %s (recorded for refund: %v), want CANCELLED and refunded", ord.ID, p.Key, ord.Status, isLate)
			}
		case paid && ord.Status == shop.StatusDispatched && !isLate:
			shipped++
		case paid && ord.Status == shop.StatusCancelled && isLate:
			raced++ // paid as its window closed: refunded (check 6)
		case paid:
			o.add("order %d (%s) was paid but is %s (recorded for refund: %v)", ord.ID, p.Key, ord.Status, isLate)
		case p.Sent == shop.PaymentFailed:
			failed++
			if ord.Status != shop.StatusCancelled || isLate {
				o.add("order %d (%s) was declined but is %s (recorded for refund: %v)", ord.ID, p.Key, ord.Status, isLate)
			}
		default: // no payment event before the window closed
			unpaid++
			if (ord.Status != shop.StatusCancelled && ord.Status != shop.StatusPending) || isLate {
				o.add("order %d (%s) was never paid but is %s (recorded for refund: %v)", ord.ID, p.Key, ord.Status, isLate)
			}
		}
	}
	if got := count[shop.StatusPaid] + count[shop.StatusDispatched]; got != shipped {
		o.add("%d orders PAID/DISPATCHED but %d paid in time", got, shipped)
	}
	for pid := range snap.LatePayments {
		if !paidKeys[pid] {
			o.add("late payment %s recorded, but no event said it was paid", pid)
		}
	}
	return o.check("3 every Stripe event answered 2xx, every order's fate is what its events said",
		fmt.Sprintf("%d events (%d redelivered) all 2xx; %d paid shipped, %d paid after the store expired the session + %d paid as the window closed = refunded, %d declined + %d unpaid = CANCELLED",
			events, replays, shipped, late, raced, failed, unpaid))
}

// checkStripeCalls is check 7: what Stripe was asked, per checkout key.
func checkStripeCalls(byKey map[string]Order, snap Snapshot, purchases []Purchase, reqs []stripetest.Request) Check {
	var o offences
	creates := map[string][]stripetest.Request{}  // by client_reference_id
	sessions := map[string]string{}               // session id → key
	expiries := map[string][]stripetest.Request{} // by key
	refunds := map[string][]stripetest.Request{}  // by the key whose PaymentIntent it names
	keyOfPI := map[string]string{}
	for _, p := range purchases {
		if p.PaymentIntent != "" {
			keyOfPI[p.PaymentIntent] = p.Key
		}
	}
	var other []string
	unanswered := 0
	for _, r := range reqs {
		switch {
		case r.Status == http.StatusBadGateway || r.Status == 0:
			unanswered++ // the store was killed mid-call: it asks again
		case r.Status/100 != 2:
			o.add("Stripe refused %s %s (Idempotency-Key %q): %d", r.Method, r.Path, r.IdempotencyKey, r.Status)
		}
		switch {
		case r.Method == http.MethodPost && r.Path == stripetest.SessionsPath:
			k := r.Form.Get("client_reference_id")
			creates[k] = append(creates[k], r)
			if r.ObjectID != "" {
				sessions[r.ObjectID] = k
			}
		case r.Method == http.MethodPost && strings.HasPrefix(r.Path, stripetest.SessionsPath+"/") && strings.HasSuffix(r.Path, "/expire"):
			k, _ := strings.CutPrefix(r.IdempotencyKey, "widget-store-expire-")
			expiries[k] = append(expiries[k], r)
		case r.Method == http.MethodPost && r.Path == stripetest.RefundsPath:
			pi := r.Form.Get("payment_intent")
			k, ok := keyOfPI[pi]
			if !ok {
				o.add("a refund of PaymentIntent %q, which no event named", pi)
				continue
			}
			refunds[k] = append(refunds[k], r)
		default:
			other = append(other, r.Method+" "+r.Path)
		}
	}

	// Sessions: one per key, every attempt under the one Idempotency-Key
	// with the same parameters (Stripe refuses a key reused with others),
	// for the order's lines.
	retried := 0
	for _, k := range slices.Sorted(maps.Keys(creates)) {
		rs := creates[k]
		ord, has := byKey[k]
		if !has {
			o.add("a session was created for %q, which has no order", k)
			continue
		}
		if len(rs) > 1 {
			retried++
		}
		want := rs[0].Form.Encode()
		for _, r := range rs {
			if r.IdempotencyKey != stripetest.SessionIdempotencyKey(k) {
				o.add("session create for %s under Idempotency-Key %q, want %q", k, r.IdempotencyKey, stripetest.SessionIdempotencyKey(k))
			}
			if r.Form.Encode() != want {
				o.add("session creates for %s under one Idempotency-Key with different parameters (Stripe refuses the second): %s", k, formDiff(rs[0].Form, r.Form))
			}
		}
		f := rs[0].Form
		if f.Get("mode") != "payment" || f.Get("metadata[checkout_key]") != k || f.Get("metadata[order_id]") != strconv.FormatInt(ord.ID, 10) ||
			f.Get("success_url") == "" || f.Get("cancel_url") == "" {
			o.add("session create for %s (order %d): mode %q, metadata[checkout_key] %q, metadata[order_id] %q, success_url %q, cancel_url %q",
				k, ord.ID, f.Get("mode"), f.Get("metadata[checkout_key]"), f.Get("metadata[order_id]"), f.Get("success_url"), f.Get("cancel_url"))
		}
		units := 0
		for _, l := range ord.units() {
			units += l.Quantity
		}
		if got := formUnits(f); got != units {
			o.add("session for %s (order %d) asks for %d units in its line_items, the order holds %d", k, ord.ID, got, units)
		}
	}
	unhanded := 0 // sessions of checkouts that answered 409: opened at Stripe, the order cancelled before it was recorded
	for _, p := range purchases {
		if p.Checkout.Status == http.StatusOK && len(creates[p.Key]) == 0 {
			o.add("checkout %s answered 200 but Stripe was asked for no session", p.Key)
		}
		if p.Checkout.Status == http.StatusConflict && len(creates[p.Key]) > 0 {
			unhanded++
		}
	}

	// What the store recorded: for every checkout answered 200, a session
	// Stripe created for its key (the one its buyer is sent to pay at); for
	// every payment, the PaymentIntent its event named.
	if snap.PaymentSessions == nil {
		o.add("the database has no payment_sessions table: not a build that takes payments through Stripe")
	}
	for _, p := range purchases {
		rec, ok := snap.PaymentSessions[p.Key]
		switch {
		case p.Checkout.Status == http.StatusOK && !ok:
			o.add("checkout %s answered 200 but the store recorded no session for it", p.Key)
		case ok && sessions[rec] != p.Key:
			o.add("the store recorded session %q for %s, which is not a session Stripe created for it", rec, p.Key)
		}
		if pi, ok := snap.PaymentIntents[p.Key]; ok && pi != p.PaymentIntent {
			o.add("the store recorded PaymentIntent %q for %s, whose events named %q", pi, p.Key, p.PaymentIntent)
		}
	}
	for k := range snap.PaymentSessions {
		if _, ok := byKey[k]; !ok {
			o.add("the store recorded a session for %q, which has no order", k)
		}
	}

	// Expiries: only of the key's own recorded session, only for an order
	// that does not ship, and for every order whose window closed unpaid.
	for k, rs := range expiries {
		ord, has := byKey[k]
		if !has {
			o.add("an expiry under Idempotency-Key %q names no order's key", rs[0].IdempotencyKey)
			continue
		}
		if ord.Status == shop.StatusPaid || ord.Status == shop.StatusDispatched {
			o.add("order %d (%s) is %s, but the store expired its session", ord.ID, k, ord.Status)
		}
		for _, r := range rs {
			id := strings.TrimSuffix(strings.TrimPrefix(r.Path, stripetest.SessionsPath+"/"), "/expire")
			// A checkout whose create was cut off and whose window then
			// closed records no session: the store asks again under the
			// same key (Stripe replays the session) and expires that one
			// (internal/payment, closeLate), so its expiry names a
			// session Stripe made for the key, and the order is cancelled.
			closedUnrecorded := snap.PaymentSessions[k] == "" && ord.Status == shop.StatusCancelled
			if sessions[id] != k || (id != snap.PaymentSessions[k] && !closedUnrecorded) {
				o.add("expiry of %s for %s: not the session the store recorded for it (%q)", id, k, snap.PaymentSessions[k])
			}
		}
	}
	for _, p := range purchases {
		if _, has := byKey[p.Key]; has && p.Checkout.Status == http.StatusOK && p.Sent == "" && len(expiries[p.Key]) == 0 {
			o.add("%s was never paid, but the store never asked Stripe to expire its session", p.Key)
		}
	}

	// Refunds: under the payment id (the key), of the PaymentIntent the
	// events named; the store's record of it is Stripe's refund.
	for k, rs := range refunds {
		ids := map[string]bool{}
		for _, r := range rs {
			ids[r.IdempotencyKey] = true
			if r.IdempotencyKey != k {
				o.add("refund for %s under Idempotency-Key %q, want the payment id %q", k, r.IdempotencyKey, k)
			}
		}
		if len(ids) > 1 {
			o.add("refunds for %s under %d Idempotency-Keys: Stripe made %d refunds", k, len(ids), len(ids))
		}
		if ord, has := byKey[k]; has && (ord.Status == shop.StatusPaid || ord.Status == shop.StatusDispatched) {
			o.add("order %d (%s) ships, but Stripe was asked to refund it", ord.ID, k)
		}
		if rec, ok := snap.Refunded[k]; ok && !slices.ContainsFunc(rs, func(r stripetest.Request) bool { return r.ObjectID == rec }) {
			o.add("the store recorded refund %q for %s, which is not a refund Stripe made for it", rec, k)
		}
	}
	detail := fmt.Sprintf("%d sessions (%d created again after a kill, same key and parameters), %d expired, %d refunded; %d calls, %d cut off by a kill",
		len(creates), retried, len(expiries), len(refunds), len(reqs), unanswered)
	if unhanded > 0 {
		detail += fmt.Sprintf("; %d sessions opened for checkouts then refused (409: the window closed before the session was recorded; never handed out, never expired)", unhanded)
	}
	if len(other) > 0 {
		detail += fmt.Sprintf("; %d other calls (%s)", len(other), strings.Join(other[:min(3, len(other))], ", "))
	}
	return o.check("7 Stripe asked once per key: one session (Idempotency-Key widget-store-session-<key>), expiries only of unpaid orders, at most one refund, only of late payments", detail)
}

// formDiff names the fields whose values differ between two forms.
func formDiff(a, b url.Values) string {
	var d []string
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if !slices.Equal(a[k], b[k]) {
			d = append(d, fmt.Sprintf("%s %q then %q", k, a.Get(k), b.Get(k)))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(b)) {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s added (%q)", k, b.Get(k)))
		}
	}
	return strings.Join(d, ", ")
}

// formUnits is the sum of a session create's line_items[i][quantity].
func formUnits(f map[string][]string) int {
	n := 0
	for i := 0; ; i++ {
		q, ok := f["line_items["+strconv.Itoa(i)+"][quantity]"]
		if !ok || len(q) == 0 {
			return n
		}
		v, err := strconv.Atoi(q[0])
		if err != nil {
			return -1
		}
		n += v
	}
}
