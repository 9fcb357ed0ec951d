package paywait

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"widget-store/internal/metrics"
)

// TestRecoveryGate: checkouts no request here started (a recovery after a
// crash) replay at most recoverySlots at a time; the next goes ahead once
// one has looked for its payment; a checkout whose buyer pays goes ahead at
// once, slots or not; and one a request waits on (a new checkout, a retried
// key) never queues. The gate needs no database: it decides before the
// checkout's first statement.
func TestRecoveryGate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hub := New(nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(), 2*time.Minute)
	admitted := func(key string) (<-chan *Checkout, <-chan error) {
		got, failed := make(chan *Checkout, 1), make(chan error, 1)
		go func() {
			c, err := hub.Checkout(ctx, key)
			if err != nil {
				failed <- err
				return
			}
			got <- c
		}()
		return got, failed
	}
	within := func(got <-chan *Checkout, d time.Duration) *Checkout {
		select {
		case c := <-got:
			return c
		case <-time.After(d):
			return nil
		}
	}

	var replaying []*Checkout
	for i := range recoverySlots {
		got, _ := admitted("recovered-" + string(rune('a'+i)))
		c := within(got, 5*time.Second)
		if c == nil {
			t.Fatalf("recovered checkout %d of %d waits with a slot free", i+1, recoverySlots)
		}
		replaying = append(replaying, c)
	}

	queued, _ := admitted("recovered-queued")
	if c := within(queued, 200*time.Millisecond); c != nil {
		t.Fatalf("a recovered checkout replays with all %d slots taken: new shoppers' statements would queue behind every recovered checkout", recoverySlots)
	}

	t.Run("a payment lets its checkout through at once", func(t *testing.T) {
		paid, _ := admitted("recovered-paid")
		time.Sleep(50 * time.Millisecond) // let it queue (either way it must get through)
		hub.kick("recovered-paid")        // its webhook sent the payment
		c := within(paid, 5*time.Second)
		if c == nil {
			t.Fatal("a recovered checkout whose buyer paid still waits for a slot")
		}
		c.Close()
	})

	t.Run("a checkout a request waits on never queues", func(t *testing.T) {
		ho := hub.acquire("new-key", false) // the request of POST /checkout/new-key, as AwaitStart does
		defer hub.release("new-key", ho, false)
		got, _ := admitted("new-key")
		c := within(got, 5*time.Second)
		if c == nil {
			t.Fatal("a new checkout queued at the recovery gate")
		}
		c.Close()
	})

	t.Run("a slot given back admits the next", func(t *testing.T) {
		replaying[0].leaveGate() // it looked for its payment (AwaitPayment) and waits
		c := within(queued, 5*time.Second)
		if c == nil {
			t.Fatal("the queued checkout did not replay after a slot was given back")
		}
		replaying = append(replaying, c) // every slot taken again
	})

	t.Run("while a purchase is in flight one slot is open", func(t *testing.T) {
		done := hub.recovery.busy() // a checkout request or a webhook, as AwaitStart and Deliver count them
		last := replaying[len(replaying)-1]
		for _, c := range replaying[:len(replaying)-1] {
			c.leaveGate() // every slot but one given back: one checkout replays, as many as one slot allows
		}
		replaying = []*Checkout{last}
		next, _ := admitted("recovered-while-busy")
		if c := within(next, 200*time.Millisecond); c != nil {
			t.Fatal("a recovered checkout replays beside another while a new shopper's request is in flight")
		}
		replaying[0].leaveGate()
		c := within(next, 5*time.Second)
		if c == nil {
			t.Fatal("the one slot given back admitted nobody")
		}
		replaying = []*Checkout{c}
		more, _ := admitted("recovered-after-busy")
		done() // the request answered: the gate opens to its full width
		if c := within(more, 5*time.Second); c == nil {
			t.Fatal("the gate stayed at one slot after the request ended")
		} else {
			replaying = append(replaying, c)
		}
		for i := len(replaying); i < recoverySlots; i++ { // every slot taken again
			got, _ := admitted("recovered-refill-" + string(rune('a'+i)))
			if c := within(got, 5*time.Second); c != nil {
				replaying = append(replaying, c)
			}
		}
	})

	t.Run("a stop ends the wait", func(t *testing.T) {
		stopCtx, stop := context.WithCancel(ctx)
		failed := make(chan error, 1)
		go func() {
			_, err := hub.Checkout(stopCtx, "recovered-stopped")
			failed <- err
		}()
		stop()
		select {
		case err := <-failed:
			if err == nil {
				t.Fatal("a checkout admitted with every slot taken")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a checkout at the gate did not notice the stop")
		}
	})
	for _, c := range replaying {
		c.Close()
	}
}
