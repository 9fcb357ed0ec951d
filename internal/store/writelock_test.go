package store

import (
	"context"
	"testing"
	"time"
)

// TestWriteLockForegroundFirst: a background writer (a checkout replaying
// under the recovery gate) that queued for SQLite's write lock first still
// takes it after a foreground writer that queued later (a new shopper), and
// takes it at once when nobody waits; a waiter that gives up hands nothing
// on.
func TestWriteLockForegroundFirst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var l writeLock
	if held, waited, err := l.lock(ctx, true, time.Second); !held || waited || err != nil {
		t.Fatalf("a background writer on a free lock: held %v, waited %v, %v; want it at once", held, waited, err)
	}
	got := make(chan string, 2)
	take := func(name string, bg bool) {
		held, _, err := l.lock(ctx, bg, 10*time.Second)
		if !held || err != nil {
			t.Errorf("%s: held %v, %v", name, held, err)
		}
		got <- name
		l.unlock()
	}
	go take("background", true)
	waitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.bg.Len() == 1 })
	go take("foreground", false)
	waitFor(t, func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.fg.Len() == 1 })
	l.unlock()
	if first, second := <-got, <-got; first != "foreground" || second != "background" {
		t.Fatalf("took the lock in the order %s, %s; want the new shopper's write first", first, second)
	}

	// A waiter that gives up (its wait bounded, or its context ended) leaves
	// the line, and the lock passes to nobody in its place.
	if held, _, _ := l.lock(ctx, false, time.Second); !held {
		t.Fatal("the free lock was not taken")
	}
	if held, waited, err := l.lock(ctx, true, 20*time.Millisecond); held || !waited || err != nil {
		t.Fatalf("a bounded wait on a held lock: held %v, waited %v, %v; want neither held nor an error", held, waited, err)
	}
	l.unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held || l.bg.Len() != 0 || l.fg.Len() != 0 {
		t.Fatalf("after the last unlock: held %v, %d + %d waiting; want it free", l.held, l.fg.Len(), l.bg.Len())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
