package paywait

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// channel is the Postgres NOTIFY channel on which a webhook announces, at the
// commit of its Send, the checkout key it sent a payment status to. Every
// instance LISTENs on it and kicks its own waiting checkout (see the package
// comment for why the store has a channel of its own).
const channel = "widget_store_payment"

// Start makes the hub listen for payments announced by any instance: on
// Postgres it opens a connection of its own, LISTENs, and returns once it
// listens; a goroutine then kicks the checkout of each announced key until
// Stop. Call it before dbos.Launch, so that the checkouts Launch recovers miss
// no announcement from then on. On SQLite (one process) it does nothing.
func (h *Hub) Start(ctx context.Context) error {
	if !h.db.Dialect.Postgres {
		return nil
	}
	connect := func(ctx context.Context) (*pgx.Conn, error) {
		conn, err := pgx.ConnectConfig(ctx, h.db.Pool.Config().ConnConfig.Copy())
		if err != nil {
			return nil, err
		}
		if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
			conn.Close(ctx) // the LISTEN error is the one to report
			return nil, err
		}
		return conn, nil
	}
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := connect(startCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("listen on %s: %w", channel, err)
	}

	loopCtx, stopLoop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		backoff := 100 * time.Millisecond
		for {
			n, err := conn.WaitForNotification(loopCtx)
			if err == nil {
				h.kick(n.Payload)
				continue
			}
			conn.Close(context.Background()) // broken or cancelled: a close error adds nothing
			if loopCtx.Err() != nil {
				return
			}
			h.logger.Warn("payment channel lost; reconnecting", "err", err)
			for {
				select {
				case <-loopCtx.Done():
					return
				case <-time.After(backoff):
				}
				if conn, err = connect(loopCtx); err == nil {
					break
				}
				backoff = min(backoff*2, 2*time.Second)
			}
			backoff = 100 * time.Millisecond
			// A payment may have been announced while nobody listened.
			h.kickAll()
		}
	}()
	h.stopListening = func() { stopLoop(); <-done }
	return nil
}

// Stop stops listening and waits for the listener to end. It is safe to call
// when Start was not (or did nothing).
func (h *Hub) Stop() { h.stopListening() }
