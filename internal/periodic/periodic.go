// Package periodic runs a background service's pass now and then at a fixed
// interval, until stopped (the loop the reconciler and retention share),
// and waits that a context can cut short (Sleep).
package periodic

import (
	"context"
	"time"
)

// Loop is a running pass loop.
type Loop struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs pass at once and then every interval, each time with a context
// that Stop cancels. A pass that runs longer than the interval delays the
// next one; passes never overlap.
func Start(every time.Duration, pass func(ctx context.Context)) *Loop {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Loop{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			pass(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return l
}

// Stop cancels the pass in progress, if any, and waits for it. Safe on a nil
// Loop (a service never started).
func (l *Loop) Stop() {
	if l == nil {
		return
	}
	l.cancel()
	<-l.done
}

// Sleep waits d, or until ctx ends, and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
