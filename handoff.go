package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// In-process hand-offs between a checkout workflow and the requests that
// wait on it. See checkoutWatch.

// checkoutWatch is how a checkout running in this process tells the requests
// waiting on it (checkout, webhook) what it did, without a database round
// trip; and how a webhook (in this process, or in another one through the
// payment channel, see wakeup.go) tells the checkout that a payment status was
// sent to it. It is never the source of truth: each fact it carries was
// committed first, and a waiter that hears nothing reads the database.
type checkoutWatch struct {
	running int // checkouts executing in this process under this key; guarded by checkoutWatches.mu
	refs    int // guarded by checkoutWatches.mu

	mu          sync.Mutex
	orderID     int64 // valid once started is closed; 0 when sold out
	outcomeVal  orderResult
	started     chan struct{} // closed after step 1 committed
	outcome     chan struct{} // closed after step 4 committed
	paymentKick chan struct{} // a payment status may have been sent: look (buffered 1, never closed)
	paymentSent atomic.Bool   // a payment status was sent and committed: Recv will find it
	owner       *checkoutWatches
}

// checkoutWatches holds one checkoutWatch per checkout key that someone in
// this process is running or waiting on.
type checkoutWatches struct {
	mu sync.Mutex
	m  map[string]*checkoutWatch
}

func newCheckoutWatches() *checkoutWatches {
	return &checkoutWatches{m: map[string]*checkoutWatch{}}
}

// acquire returns the watch for key, creating it; running says the caller is
// the checkout workflow itself. Pair each acquire with a release.
func (ws *checkoutWatches) acquire(key string, running bool) *checkoutWatch {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.m[key]
	if w == nil {
		w = &checkoutWatch{started: make(chan struct{}), outcome: make(chan struct{}), paymentKick: make(chan struct{}, 1), owner: ws}
		ws.m[key] = w
	}
	w.refs++
	if running {
		w.running++
	}
	return w
}

func (ws *checkoutWatches) release(key string, w *checkoutWatch, running bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w.refs--
	if running {
		w.running--
	}
	if w.refs == 0 {
		delete(ws.m, key)
	}
}

func (w *checkoutWatch) isRunning() bool {
	w.owner.mu.Lock()
	defer w.owner.mu.Unlock()
	return w.running > 0
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

func (w *checkoutWatch) publishStarted(orderID int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.orderID = orderID
	closeOnce(w.started)
}

func (w *checkoutWatch) startedOrder() (int64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.started:
		return w.orderID, true
	default:
		return 0, false
	}
}

func (w *checkoutWatch) publishOutcome(r orderResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.outcomeVal = r
	closeOnce(w.outcome)
}

func (w *checkoutWatch) result() (orderResult, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.outcome:
		return w.outcomeVal, true
	default:
		return orderResult{}, false
	}
}

// kickPayment tells the checkout to look for its payment message. Kicks
// coalesce: one pending kick is as good as many. sent says the kicker knows
// a status was sent and committed (a webhook's Send, or its announcement on
// the payment channel, which Postgres delivers only at that commit); a kick
// without it (after the channel reconnected) only says "look".
func (w *checkoutWatch) kickPayment(sent bool) {
	if sent {
		w.paymentSent.Store(true)
	}
	select {
	case w.paymentKick <- struct{}{}:
	default:
	}
}

// kick kicks the watch of key, if anyone in this process has one, for a
// payment status sent to it.
func (ws *checkoutWatches) kick(key string) {
	ws.mu.Lock()
	w := ws.m[key]
	ws.mu.Unlock()
	if w != nil {
		w.kickPayment(true)
	}
}

// kickAll kicks every watch: after the payment channel reconnects, any of
// them may have missed a notification.
func (ws *checkoutWatches) kickAll() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.m {
		w.kickPayment(false)
	}
}

// errWatchDeadline is await's "neither signal nor database said so in time".
var errWatchDeadline = errors.New("deadline passed")

// await waits until signal closes or check (a database read) reports done.
// While the checkout runs in this process it trusts the signal and reads
// nothing (but for a check a second as a safety net); otherwise it reads
// after 5 ms, then with doubling pauses up to 500 ms.
func (w *checkoutWatch) await(ctx context.Context, signal <-chan struct{}, deadline time.Time, check func() (bool, error)) error {
	pause := 5 * time.Millisecond
	for {
		wait := pause
		if w.isRunning() {
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
		if wait == pause || !w.isRunning() {
			done, err := check()
			if err != nil || done {
				return err
			}
			pause = min(pause*2, 500*time.Millisecond)
		}
		if !time.Now().Before(deadline) {
			return errWatchDeadline
		}
	}
}
