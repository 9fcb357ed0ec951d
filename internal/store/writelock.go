package store

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
)

// The write lock's two lines.
//
// SQLite's write lock is taken in the process first (sqlite.go): one
// writer at a time, served in the order they came. A recovery after a crash
// with many checkouts waiting for payment replays each of them (DBOS's
// checkpoint lookup of its first step runs in a transaction, which on SQLite
// begins IMMEDIATE: a turn at the write lock), and in one line with the new
// shoppers' writes those turns stood ahead of them for as long as the
// recovery lasted (docs/BENCHMARKS.md, Many waiting checkouts). So the lock
// has two lines: a statement sent under a context that says it is
// background work (Background) waits while anyone in the foreground line
// waits, and takes the lock only when that line is empty. A background
// writer waits behind at most the foreground writers that keep coming; the
// lock is free most of the time (a shopper's writes are a few milliseconds
// of each purchase), so it is not starved, and lockWait bounds its wait as
// it does every writer's.

// BackgroundKey is the context key of a Backgrounder: statements sent under
// a context carrying one whose Background reports true (at the time each
// is sent) queue for SQLite's write lock behind every foreground writer. On
// Postgres it changes nothing.
type BackgroundKey struct{}

// Backgrounder says whether the work it is attached to (a context value
// under BackgroundKey) is background work now.
type Backgrounder interface{ Background() bool }

// BackgroundWork is a Backgrounder that is always background work: what
// runs after every request it serves was answered (the dispatch legs, a
// checkout's steps once the payment webhook settled its order and answered).
type BackgroundWork struct{}

// Background reports true.
func (BackgroundWork) Background() bool { return true }

// InBackground marks a DBOS context as background work (BackgroundWork).
// It copies the context (about a kilobyte, DBOS's): mark the short-lived
// part of a workflow, not one that waits long.
func InBackground(ctx dbos.Context) dbos.Context {
	return dbos.WithValue(ctx, BackgroundKey{}, Backgrounder(BackgroundWork{}))
}

func background(ctx context.Context) bool {
	if ctx == nil {
		return false
	}
	b, ok := ctx.Value(BackgroundKey{}).(Backgrounder)
	return ok && b.Background()
}

// writeLock is the process's SQLite write lock, with its two lines.
type writeLock struct {
	mu     sync.Mutex
	held   bool
	fg, bg list.List // of chan struct{}: a waiter's, closed when the lock is handed to it
}

// lock takes the lock, waiting in its line at most wait; it reports whether
// it holds it (false after wait) and fails only when ctx ends. waited says
// it had to queue.
func (l *writeLock) lock(ctx context.Context, bg bool, wait time.Duration) (held, waited bool, err error) {
	l.mu.Lock()
	if !l.held && l.fg.Len() == 0 && (bg || l.bg.Len() == 0) {
		l.held = true
		l.mu.Unlock()
		return true, false, nil
	}
	line := &l.fg
	if bg {
		line = &l.bg
	}
	ch := make(chan struct{})
	e := line.PushBack(ch)
	l.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		return true, true, nil
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-ch: // handed over meanwhile: give it on
		l.handOn()
	default:
		line.Remove(e)
	}
	return false, true, err
}

// unlock gives the lock to the first foreground waiter, else to the first
// background one, else frees it.
func (l *writeLock) unlock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.handOn()
}

func (l *writeLock) handOn() {
	for _, line := range []*list.List{&l.fg, &l.bg} {
		if e := line.Front(); e != nil {
			line.Remove(e)
			close(e.Value.(chan struct{}))
			return // held stays true: it passed to the waiter
		}
	}
	l.held = false
}
