package paywait

import (
	"container/list"
	"context"
	"sync"
)

// gate is the recovery gate (Hub.Checkout): how many checkouts no request
// here waits on may replay at once. It admits recoverySlots while no
// purchase request is in flight in this process, and one while any is
// (foreground): a replay's statements compete with a new shopper's for the
// database (SQLite's write lock, Postgres's CPU), so while shoppers buy,
// the recovery goes on one checkout at a time, and at full width when they
// pause. Waiters are admitted in the order they came.
type gate struct {
	mu         sync.Mutex
	replaying  int       // checkouts holding a slot
	foreground int       // purchase requests in flight (AwaitStart, Deliver)
	waiting    list.List // of *gateWaiter, in the order they came
}

type gateWaiter struct {
	admitted chan struct{} // closed when a slot is handed to it
}

func (g *gate) width() int {
	if g.foreground > 0 {
		return 1
	}
	return recoverySlots
}

// admitLocked hands free slots to the first waiters. Call with g.mu held.
func (g *gate) admitLocked() {
	for g.replaying < g.width() {
		e := g.waiting.Front()
		if e == nil {
			return
		}
		g.waiting.Remove(e)
		g.replaying++
		close(e.Value.(*gateWaiter).admitted)
	}
}

// enter takes a slot, or waits for one until ctx ends or jump is closed or
// sends; jumped reports that jump ended the wait without a slot, and
// check, called on each of jump's sends, says whether it counts (false:
// keep waiting). It returns whether it holds a slot.
func (g *gate) enter(ctx context.Context, jump <-chan struct{}, check func() bool) (slot bool, err error) {
	g.mu.Lock()
	if g.waiting.Len() == 0 && g.replaying < g.width() {
		g.replaying++
		g.mu.Unlock()
		return true, nil
	}
	w := &gateWaiter{admitted: make(chan struct{})}
	e := g.waiting.PushBack(w)
	g.mu.Unlock()
	for {
		select {
		case <-w.admitted:
			return true, nil
		case <-jump:
			if !check() {
				continue
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
		// Leaving the line: a slot handed over meanwhile is given on.
		g.mu.Lock()
		defer g.mu.Unlock()
		select {
		case <-w.admitted:
			g.replaying--
			g.admitLocked()
		default:
			g.waiting.Remove(e)
		}
		return false, err
	}
}

// leave gives a slot back.
func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.replaying--
	g.admitLocked()
}

// busy counts a purchase request in flight until the returned func is
// called.
func (g *gate) busy() func() {
	g.mu.Lock()
	g.foreground++
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.foreground--
		g.admitLocked()
	}
}
