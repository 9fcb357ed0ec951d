// Package paywait is how a checkout workflow and the requests that wait on
// it hear from each other quickly: the checkout hands out the payment id and
// the outcome to the request waiting in this process, and a payment webhook,
// in this process or in any other instance, wakes the checkout waiting for
// its payment. It is one mechanism, a hand-off, and this comment is its whole
// story.
//
// # What is durable, and what is only a hint
//
// Nothing here is the source of truth. Every fact a hand-off carries was
// committed first (the order row, the sold-out row, the order's final status,
// the payment recorded beside it), and every waiter that hears nothing falls
// back to the database: a request polls the order (with backoff), a checkout
// reads its order row. A crash loses only hints.
//
// # The payment
//
// The order row is the payment's record, and the webhook writes it
// (Deliver): in one transaction with its read of the order, within the
// payment window and while the checkout is alive in DBOS, it settles the
// order by the status (PAID, or CANCELLED with its units back), and that
// commit is its answer; otherwise (a payment after the window, or for a
// checkout an operator cancelled) it records the status beside the order
// (store.RecordPayment, the first per key counts) and waits for the
// checkout to decide. The checkout then settles its order from the row, in
// one step (settle, steps.go): it finds the order PAID or CANCELLED and
// follows it, or decides by the recorded status, or, at its deadline with
// nothing recorded, cancels it as timed out. Whatever commits first while
// the order is PENDING wins, by conditional UPDATEs.
//
// The checkout waits for that (Checkout.AwaitPayment) outside DBOS: the wait
// records nothing, and the deadline it waits for is the reserve step's
// checkpoint (PayByMs), so a wait cut by a crash still ends on time. The
// build before this one took the status as a DBOS message (dbos.Send in the
// webhook, dbos.Recv in the checkout): a read-and-consume transaction and
// about ten statements more per purchase, for a fact the order row already
// held. Its checkouts still in flight after an upgrade keep their recorded
// steps (Checkout.ReceiveMessage; workflow.go says how).
//
// Until something is there to settle by, the checkout waits for a kick:
// from a webhook in this process right after its commit, or, on Postgres,
// from a webhook in any instance through the store's own NOTIFY channel,
// which Postgres delivers at that commit. The channel is listening before
// Launch recovers anything (Hub.Start), after a reconnect every waiting
// checkout is kicked to look again, and the hub looks for every waiting
// checkout's payment every paymentRecheck anyway, in a statement per
// lookPage checkouts, as a safety net. A look reads the store's own tables
// (store.PaymentsIn): the order no longer PENDING, or a status recorded.
//
// On the happy path the wait reads nothing: an order created by this very
// execution needs no first look (no payment can be settled before the order
// exists, and this execution's hand-off was registered before that, so any
// payment since is a kick waiting for it), and a kick that knows the order
// has something to settle by goes straight to the settle step. A kick that
// was wrong (nothing there, the deadline not reached) costs a settle step
// that decides nothing and says so; the checkout then waits again
// (workflow.go).
//
// # The payment id and the outcome
//
// A request that starts a checkout (AwaitStart) waits for the checkout's
// first step; the checkout, if it runs in this process, hands the result over
// in memory right after that step commits (Checkout.PaymentID). A webhook
// (Deliver) waits the same way for the outcome (Checkout.Outcome). A request
// whose checkout runs elsewhere (a retried key, another instance, a recovery
// in progress) polls the database instead.
package paywait

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/critpath"
	"widget-store/internal/metrics"
	"widget-store/internal/reconcile"
	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// Topic is the topic on which the build before this one sent the payment
// status (webhook → checkout) as a DBOS message; its checkouts still in
// flight receive on it (Checkout.ReceiveMessage). It is a durable name: DBOS
// records it with every message.
const Topic = "payment_status"

// paymentRecheck is how often the hub looks for the payment messages of
// every checkout waiting here without having been kicked (Hub.lookAll): a
// safety net only, every kick path is meant to be enough.
const paymentRecheck = 10 * time.Second

// lookPage is how many waiting checkouts one statement of the periodic look
// asks about.
const lookPage = 1000

// recoverySlots is how many checkouts this process did not start itself (a
// recovery at start, a takeover, an operator's resume) replay at once while
// no purchase request is in flight (one while any is): see Hub.Checkout.
const recoverySlots = 4

// Hub holds the hand-offs of this process: one per checkout key that someone
// here is running or waiting on.
type Hub struct {
	db      *store.DB
	dctx    dbos.Context
	logger  *slog.Logger
	metrics *metrics.Metrics
	window  time.Duration // PAYMENT_TIMEOUT: a webhook settles an order within it (Deliver)

	mu      sync.Mutex
	handoff map[string]*handoff

	// recovery is the recovery gate (Hub.Checkout, gate.go).
	recovery gate

	stopListening func() // set by Start on Postgres
	stopLooking   func() // set by Start
}

// New makes the hub. dctx is the DBOS context the payment messages are sent
// with; window is the payment window (PAYMENT_TIMEOUT).
func New(db *store.DB, dctx dbos.Context, logger *slog.Logger, m *metrics.Metrics, window time.Duration) *Hub {
	return &Hub{db: db, dctx: dctx, logger: logger, metrics: m, window: window, handoff: map[string]*handoff{},
		stopListening: func() {}, stopLooking: func() {}}
}

// handoff is what passes between one checkout and its waiters in this process.
type handoff struct {
	running  int  // checkouts executing here under this key; guarded by Hub.mu
	refs     int  // guarded by Hub.mu
	awaiting bool // its checkout waits in AwaitPayment: the periodic look asks for it; guarded by Hub.mu

	mu          sync.Mutex
	orderID     int64 // valid once started is closed; 0 when sold out
	outcome     shop.Status
	started     chan struct{} // closed once the first step committed
	finished    chan struct{} // closed once the order's fate committed
	paymentKick chan struct{} // a payment status may have been sent: look (buffered 1, never closed)
	paymentSent bool          // the order has something to settle by, committed: a webhook settled it or recorded a status; guarded by mu
}

// acquire returns the hand-off of key, creating it; running says the caller
// is the checkout workflow itself. Pair each acquire with a release.
func (h *Hub) acquire(key string, running bool) *handoff {
	h.mu.Lock()
	defer h.mu.Unlock()
	ho := h.handoff[key]
	if ho == nil {
		ho = &handoff{started: make(chan struct{}), finished: make(chan struct{}), paymentKick: make(chan struct{}, 1)}
		h.handoff[key] = ho
	}
	ho.refs++
	if running {
		ho.running++
	}
	return ho
}

func (h *Hub) release(key string, ho *handoff, running bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ho.refs--
	if running {
		ho.running--
	}
	if ho.refs == 0 {
		delete(h.handoff, key)
	}
}

func (h *Hub) isRunning(ho *handoff) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return ho.running > 0
}

// kick tells the checkout of key, if it waits in this process, to look for
// its payment. sent says the kicker knows the order has something to settle
// by, committed (a webhook that settled it or recorded a status, or its
// announcement on the channel, which Postgres delivers only at that commit);
// a kick without it only says "look".
// Kicks coalesce: one pending kick is as good as many.
func (ho *handoff) kick(sent bool) {
	if sent {
		ho.mu.Lock()
		ho.paymentSent = true
		ho.mu.Unlock()
	}
	select {
	case ho.paymentKick <- struct{}{}:
	default:
	}
}

func (ho *handoff) sent() bool {
	ho.mu.Lock()
	defer ho.mu.Unlock()
	return ho.paymentSent
}

func (h *Hub) kick(key string) {
	h.mu.Lock()
	ho := h.handoff[key]
	h.mu.Unlock()
	if ho != nil {
		ho.kick(true)
	}
}

// kickAll makes every waiting checkout look: after the channel reconnects,
// any of them may have missed an announcement.
func (h *Hub) kickAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ho := range h.handoff {
		ho.kick(false)
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// Checkout is the checkout workflow's end of its hand-off.
type Checkout struct {
	hub   *Hub
	key   string
	ho    *handoff
	since time.Time // when this execution registered
	// orderIsNew: the order was created by this very execution, after since.
	orderIsNew bool
	gated      atomic.Bool // holds a slot of the recovery gate; read by the SQLite connector too (Background)
}

// Checkout registers the checkout workflow of key, executing now in this
// process. Close it when the workflow returns.
//
// # The recovery gate
//
// A checkout that no request in this process waits on was not started by
// one: DBOS recovered it at start, the cluster took it over from a dead
// peer, or an operator resumed it. Such a checkout waits here for one of
// recoverySlots slots before it replays, and holds it until it has looked
// for its payment (AwaitPayment) or ended; while any purchase request (a
// checkout's AwaitStart, a webhook's Deliver) is in flight here, only one
// slot is open (gate.go), and on SQLite a replaying checkout's turn at the
// write lock waits behind every new shopper's (Checkout.Background,
// Checkout.Context). Replaying is a few statements
// each (DBOS's checkpoint lookup of the reserve step in a transaction, which
// on SQLite is a turn at the one write lock, and the look for the payment
// message): after a crash with 100,000 checkouts waiting, DBOS starts them
// all at once, and without the gate their statements queued ahead of every
// new shopper's for as long as the recovery lasted (docs/BENCHMARKS.md, Many
// waiting checkouts). Through the gate a new shopper's statements wait
// behind at most recoverySlots of them. A payment for a checkout still at
// the gate lets it through at once (the buyer is waiting on its webhook),
// and a request that waits on its key (a retried checkout) means it was
// never held. The gate only delays a replay: what the checkout decides is
// unchanged, and its payment deadline is the reserve step's checkpoint, so a
// checkout whose deadline passed while it queued records the timeout (or a
// payment that came in time) as it would have at once.
func (h *Hub) Checkout(ctx context.Context, key string) (*Checkout, error) {
	h.mu.Lock()
	ho := h.handoff[key]
	requested := ho != nil && ho.refs > ho.running
	h.mu.Unlock()
	c := &Checkout{hub: h, key: key, ho: h.acquire(key, true), since: time.Now()}
	if !requested {
		if err := c.admit(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// admit waits for a slot of the recovery gate, or for a payment sent to
// this checkout, which goes ahead at once.
func (c *Checkout) admit(ctx context.Context) error {
	// A kick that only says "look" (after the channel reconnected) changes
	// nothing here: a replayed checkout looks first anyway.
	defer c.hub.metrics.AtGate()()
	slot, err := c.hub.recovery.enter(ctx, c.ho.paymentKick, c.ho.sent)
	c.gated.Store(slot)
	return err
}

// leaveGate gives the checkout's slot of the recovery gate back, if it holds one.
func (c *Checkout) leaveGate() {
	if c.gated.Swap(false) {
		c.hub.recovery.leave()
	}
}

// Background reports that the checkout is replaying under the recovery gate:
// background work, whose statements queue for SQLite's write lock behind
// every foreground writer's (store.BackgroundKey). A checkout let through
// by its payment, or past its look, is not.
func (c *Checkout) Background() bool { return c.gated.Load() }

// Context returns ctx marked with the checkout (store.BackgroundKey) when
// it replays under the recovery gate: its statements then give way to new
// shoppers' (Background). Otherwise it returns ctx as it is (marking it
// copies DBOS's context, about a kilobyte).
func (c *Checkout) Context(ctx dbos.Context) dbos.Context {
	if !c.gated.Load() {
		return ctx
	}
	return dbos.WithValue(ctx, store.BackgroundKey{}, store.Backgrounder(c))
}

// Close ends the registration.
func (c *Checkout) Close() {
	c.leaveGate()
	c.hub.release(c.key, c.ho, true)
}

// PaymentID hands out the result of the first step to the request waiting
// for it: the order (its id, and when it was created), or 0 when sold out.
// The order's payment id is the checkout's key.
//
// createdAt tells a new order from one replayed from an earlier execution's
// checkpoint, which may have been paid before this execution registered: it
// then looks for its payment before waiting (see the package comment). Both
// times come from this process's clock for a new order; for a replayed one
// from whichever instance created it, and only a clock ahead of this one by
// more than the time since then (a takeover waits TAKEOVER_AFTER, 10 s) could
// make it look new: its payment is then found by the paymentRecheck look.
func (c *Checkout) PaymentID(orderID int64, createdAt time.Time) {
	c.orderIsNew = orderID != 0 && !createdAt.Before(c.since.Truncate(time.Millisecond))
	c.hub.db.Trace.Answered(c.key, critpath.Checkout) // what the checkout does next is not on the request's path
	c.ho.mu.Lock()
	defer c.ho.mu.Unlock()
	c.ho.orderID = orderID
	closeOnce(c.ho.started)
}

// Outcome hands out the order's fate, committed just before, to the webhook
// waiting for it.
func (c *Checkout) Outcome(status shop.Status) {
	c.hub.db.Trace.Answered(c.key, critpath.Webhook) // nor, from here, on the webhook's (the dispatch's start)
	c.ho.mu.Lock()
	defer c.ho.mu.Unlock()
	c.ho.outcome = status
	closeOnce(c.ho.finished)
}

// AwaitPayment waits until the checkout's order has something to settle it
// by (a webhook settled it, or recorded a payment status, or an operator
// cancelled it), or until deadline, the end of its payment window (which the
// reserve step recorded, so a wait cut by a crash still ends on time). It
// records nothing: the checkout's settle step reads the row next and decides
// (see the package comment). It returns early only with ctx's error.
//
// While it waits it holds no timer but the deadline's and reads nothing: the
// hub's periodic look (Hub.lookAll, every paymentRecheck) asks for every
// waiting checkout of the process in a statement per lookPage, and kicks
// those whose order has something. (Each checkout used to look by itself
// every paymentRecheck: 10,000 statements a second with 100,000 waiting.)
//
// again says the checkout's settle step found nothing to decide by before
// the deadline (a kick that was wrong): the wait starts with a look, and a
// kick's "sent" from before does not count.
func (c *Checkout) AwaitPayment(ctx context.Context, deadline time.Time, again bool) error {
	defer c.hub.metrics.Step(shop.CheckoutWorkflow, "await-payment", time.Now()) // a replay after recovery records ~0
	look := !c.orderIsNew || again
	if again {
		c.ho.mu.Lock()
		c.ho.paymentSent = false
		c.ho.mu.Unlock()
	}
	defer c.hub.metrics.Awaiting(look)()
	c.hub.setAwaiting(c.ho, true)
	defer c.hub.setAwaiting(c.ho, false)
	for !c.ho.sent() {
		retry := false
		if look {
			found, err := c.hub.paymentIn(ctx, c.key)
			if err != nil {
				// The read is only a hint: a failure (the database restarting,
				// say) must not fail the checkout. Look again shortly.
				c.hub.logger.Warn("checkout: looking for the payment failed; retrying", "workflow_id", c.key, "err", err)
				found, retry = false, true
			}
			if found {
				break
			}
		}
		c.leaveGate() // looked: the next recovered checkout may replay
		remaining := time.Until(deadline)
		if remaining <= 0 {
			break
		}
		wait := remaining
		if retry {
			wait = min(wait, time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-c.ho.paymentKick:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
		look = true
	}
	c.leaveGate()
	// Pass the kick on: another execution of this key in this process (an
	// operator resumed the checkout while the execution it fenced off still
	// waited here) waits on the same hand-off, and the one kick went to
	// whichever took it first. Without this the other saw its payment only
	// at its deadline (TestOperatorTableCancelResume). A kick too many only
	// makes a waiter look once more.
	c.ho.kick(false)
	return nil
}

// ReceiveMessage is the payment step of a checkout started by the build
// before this one, which took the payment status as a DBOS message: its
// recorded steps have a dbos.Recv here, and a replay must make the same
// call. It returns the message that build's webhook sent (shop.PaymentPaid,
// shop.PaymentFailed), or the recorded one, or shop.PaymentTimedOut. This
// build sends no message: call it after AwaitPayment, when the order row
// has what the checkout's next step (mark-paid, cancel) follows, and it
// returns at once. Taking it is background work on SQLite's write lock
// (store.InBackground): nobody waits for it.
func (c *Checkout) ReceiveMessage(ctx dbos.Context) (string, error) {
	status, err := dbos.Recv[string](store.InBackground(ctx), Topic, time.Millisecond)
	if errors.Is(err, dbos.ErrTimeout) {
		return shop.PaymentTimedOut, nil
	}
	return status, err
}

func (h *Hub) setAwaiting(ho *handoff, awaiting bool) {
	h.mu.Lock()
	ho.awaiting = awaiting
	h.mu.Unlock()
}

// lookAll is the periodic look: it asks the database which of the
// checkouts waiting here have something to settle their order by, a page of
// lookPage at a time, and kicks those. A failed read is logged and left to the next look.
func (h *Hub) lookAll(ctx context.Context) {
	h.mu.Lock()
	var keys []string
	for key, ho := range h.handoff {
		if ho.awaiting {
			keys = append(keys, key)
		}
	}
	h.mu.Unlock()
	for page := range slices.Chunk(keys, lookPage) {
		found, err := h.db.PaymentsIn(ctx, page)
		if err != nil {
			if ctx.Err() == nil {
				h.logger.Warn("checkout: the periodic look for payments failed; the next one tries again", "err", err)
			}
			return
		}
		for _, key := range found {
			h.kick(key)
		}
	}
}

// paymentIn reports whether the order of checkout key has something to
// settle it by (store.PaymentsIn).
func (h *Hub) paymentIn(ctx context.Context, key string) (bool, error) {
	found, err := h.db.PaymentsIn(ctx, []string{key})
	return len(found) > 0, err
}

// ErrOrphaned is Deliver's "the checkout will never take this payment": the
// caller releases the order (a durable action, the reconciler's remedy) and
// answers from it.
var ErrOrphaned = errors.New("the checkout of this payment will not run again")

// errDeadline is await's "neither the hand-off nor the database said so in time".
var errDeadline = errors.New("deadline passed")

// await waits until signal closes or check (a database read) reports done.
// While the checkout runs in this process it trusts the signal and reads
// nothing (but for a check a second, as a safety net); otherwise it reads
// after 5 ms, then with doubling pauses up to 500 ms.
func (h *Hub) await(ctx context.Context, ho *handoff, signal <-chan struct{}, deadline time.Time, check func() (bool, error)) error {
	pause := 5 * time.Millisecond
	for {
		wait := pause
		if h.isRunning(ho) {
			wait = time.Second
		}
		t := time.NewTimer(min(wait, time.Until(deadline)))
		select {
		case <-signal:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		select {
		case <-signal:
			return nil
		default:
		}
		if wait == pause || !h.isRunning(ho) {
			done, err := check()
			if err != nil || done {
				return err
			}
			pause = min(pause*2, 500*time.Millisecond)
		}
		if !time.Now().Before(deadline) {
			return errDeadline
		}
	}
}

// AwaitStart calls start, which starts (or finds) the checkout workflow of
// key, and waits for the checkout's first step: soldOut reports that it found
// no stock. A checkout still starting after 30 s is a shop.Busy error: retry
// with the same key.
func (h *Hub) AwaitStart(ctx context.Context, key string, start func() error) (soldOut bool, err error) {
	defer h.recovery.busy()()
	ho := h.acquire(key, false)
	defer h.release(key, ho, false)
	if err := start(); err != nil {
		return false, fmt.Errorf("start checkout: %w", err)
	}
	state := store.CheckoutNotYet
	err = h.await(ctx, ho, ho.started, time.Now().Add(30*time.Second), func() (bool, error) {
		var err error
		state, err = h.db.CheckoutState(ctx, key)
		return state != store.CheckoutNotYet, err
	})
	if errors.Is(err, errDeadline) {
		return false, shop.Errorf(shop.Busy, "checkout %s is still starting; retry with the same key", key)
	}
	if err != nil {
		return false, fmt.Errorf("await the payment id: %w", err)
	}
	select {
	case <-ho.started:
		ho.mu.Lock()
		defer ho.mu.Unlock()
		return ho.orderID == 0, nil
	default:
		return state == store.CheckoutSoldOut, nil
	}
}

// Deliver hands payment status to the checkout behind payment id pid and
// returns its order with the outcome. When the order is still PENDING it
// settles it by the status (store.SettlePayment): PAID, or CANCELLED with
// its units back, and that commit is the answer: the webhook does not wait
// for the checkout, which finds its order settled (settle, steps.go) and
// starts the dispatch. Otherwise the order is returned as it is. An unknown
// pid is a shop.NotFound error.
//
// Why the webhook settles the order, and what decides a race: the order row
// does. Whatever commits first while the order is PENDING wins, by a
// conditional UPDATE: the first payment status, the checkout's cancel at the
// end of its window, an operator's cancel. So the first status to arrive is
// the one that counts; a payment that commits as the window closes, after
// the checkout gave up waiting but before its settle step, wins, and the
// step finds the order PAID and the checkout ships it. A crash after the
// commit loses nothing: the recovered checkout reads the row.
//
// The order is settled here only within its payment window and while its
// checkout is alive in DBOS (PENDING or ENQUEUED). A payment after the
// window (a late payment, refunded) or for a checkout that will never take
// it is recorded beside the order (store.RecordPayment) and awaited: the
// checkout decides, at most 60 s (then a shop.Busy error). A checkout that
// will never decide (an operator cancelled or deleted it, it failed, or it
// finished without the payment) is then ErrOrphaned: while the order stays
// PENDING, Deliver looks at the checkout's DBOS status about once a second
// (checkoutGone), and returns ErrOrphaned as soon as it is so, instead of
// waiting out its 60 s.
func (h *Hub) Deliver(ctx context.Context, pid, status string) (shop.Order, error) {
	defer h.recovery.busy()()
	ho := h.acquire(pid, false)
	defer h.release(pid, ho, false)
	o, settled, err := h.settle(ctx, pid, status)
	if err != nil || (o.Status != shop.StatusPending && !settled) {
		return o, err
	}
	ho.kick(true)
	if settled {
		outcome := metrics.CheckoutPaid
		if o.Status == shop.StatusCancelled {
			outcome = metrics.CheckoutDeclined
		}
		h.metrics.Checkout(outcome)
		return o, nil
	}
	var asked time.Time
	err = h.await(ctx, ho, ho.finished, time.Now().Add(60*time.Second), func() (bool, error) {
		cur, err := h.db.OrderByKey(ctx, pid)
		if err != nil {
			return false, err
		}
		o = cur
		if cur.Status != shop.StatusPending || time.Since(asked) < time.Second {
			return cur.Status != shop.StatusPending, nil
		}
		asked = time.Now()
		gone, err := h.checkoutGone(ctx, pid)
		if err == nil && gone {
			err = ErrOrphaned
		}
		return gone, err
	})
	if errors.Is(err, errDeadline) {
		return o, shop.Errorf(shop.Busy, "payment for order %d received; the order is still being processed, retry to see its outcome", o.ID)
	}
	if err != nil {
		return o, err
	}
	select {
	case <-ho.finished:
		ho.mu.Lock()
		o.Status = ho.outcome
		ho.mu.Unlock()
	default:
	}
	return o, nil
}

// checkoutGone reports, for an order still PENDING, a checkout (workflow ID
// key) that will never take its payment: its workflow will not run again
// (reconcile.Dead: cancelled, failed, dead-lettered), does not exist
// (deleted), or finished (SUCCESS with the order PENDING is a re-run of a
// deleted checkout, which answered from the order and ended).
func (h *Hub) checkoutGone(ctx context.Context, key string) (bool, error) {
	st, err := dbos.ListWorkflows(dbos.From(h.dctx, ctx), dbos.WithFilterWorkflowIDs(key),
		dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return false, fmt.Errorf("status of checkout %s: %w", key, err)
	}
	return len(st) == 0 || reconcile.Dead(st[0].Status) || st[0].Status == dbos.WorkflowStatusSuccess, nil
}

// settle reads the order behind pid and, if it is PENDING, settles it by
// the payment status when it may (store.SettlePayment; settled then, and o
// carries the new status), or records the status for its checkout
// (store.RecordPayment), in one transaction; on Postgres the read also
// announces the key on the payment channel when the order is PENDING, which
// Postgres delivers to every instance at the commit (and not at all if the
// transaction rolls back): either way the order then has something to
// settle by.
func (h *Hub) settle(ctx context.Context, pid, status string) (o shop.Order, settled bool, err error) {
	err = h.db.InTx(ctx, func(tx store.Tx) error {
		var err error
		if h.db.Dialect.Postgres {
			o, err = store.OrderByKeyAnnouncing(ctx, tx, pid, channel)
		} else {
			o, err = store.OrderByKey(ctx, tx, pid)
		}
		if err != nil || o.Status != shop.StatusPending {
			return err
		}
		now := time.Now()
		if settled, err = h.db.SettlePayment(ctx, tx, o, status, now.UnixMilli(), h.window.Milliseconds()); err != nil {
			return err
		}
		if !settled {
			_, err = store.RecordPayment(ctx, tx, pid, status, now.UnixMilli()) // a second status for the key changes nothing
			return err
		}
		o.Status, o.LastUpdate = shop.StatusPaid, now
		if status != shop.PaymentPaid {
			o.Status = shop.StatusCancelled
		}
		return nil
	})
	if err != nil {
		settled = false // rolled back
	}
	return o, settled, err
}
