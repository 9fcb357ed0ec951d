package paywait

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// channel is the Postgres NOTIFY channel on which a webhook announces, at the
// commit of its Send, the checkout key it sent a payment status to. Every
// instance LISTENs on it and kicks its own waiting checkout (see the package
// comment for why the store has a channel of its own).
const channel = "widget_store_payment"

// listenerTimeouts bound the listener's waits, so that it notices a server
// that died without a word (a machine lost on a real network sends no
// reset; its connection would look alive for the kernel's keepalive time,
// minutes): each connection attempt gets connectTimeout, and a connection
// silent for idlePing is pinged, with pingTimeout to answer.
const (
	connectTimeout = 5 * time.Second
	idlePing       = 10 * time.Second
	pingTimeout    = 3 * time.Second
)

// Start starts the hub's periodic look for the payments of every checkout
// waiting here (Hub.lookAll, every paymentRecheck), and makes it listen for
// payments announced by any instance: on Postgres it opens a connection of
// its own, LISTENs, and returns once it listens; a goroutine then kicks the
// checkout of each announced key until Stop. Call it before dbos.Launch, so
// that the checkouts Launch recovers miss no announcement from then on. On
// SQLite (one process) there is nothing to listen to.
//
// The listener survives the loss of its server (a restart, or a failover to
// another node of a replicated cluster): when the connection breaks, or a
// ping on an idle one goes unanswered, it reconnects with backoff (100 ms
// doubling to 2 s; the pool's connection settings, so with a multi-host
// DATABASE_URL and target_session_attrs=read-write it finds the new
// leader), and then kicks every waiting checkout to look for its payment in
// the database: an announcement made while nobody listened is lost, the
// payment message it announced is not.
func (h *Hub) Start(ctx context.Context) error {
	lookCtx, stopLook := context.WithCancel(context.WithoutCancel(ctx))
	looked := make(chan struct{})
	go func() {
		defer close(looked)
		t := time.NewTicker(paymentRecheck)
		defer t.Stop()
		for {
			select {
			case <-lookCtx.Done():
				return
			case <-t.C:
				h.lookAll(lookCtx)
			}
		}
	}()
	h.stopLooking = func() { stopLook(); <-looked }
	if !h.db.Dialect.Postgres {
		return nil
	}
	connect := func(ctx context.Context) (*pgx.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		cfg := h.db.Pool.Config().ConnConfig.Copy()
		// A wait that times out (idlePing) only sets a deadline on the
		// socket, which leaves the connection usable; pgx's default would
		// also send the server a cancel request, which could land on the
		// ping that follows.
		cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
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
			waitCtx, cancelWait := context.WithTimeout(loopCtx, idlePing)
			n, err := conn.WaitForNotification(waitCtx)
			cancelWait()
			if err == nil {
				h.kick(n.Payload)
				continue
			}
			if loopCtx.Err() == nil && waitCtx.Err() != nil {
				// Silent for idlePing: is the server still there? (pgx
				// keeps the connection usable after a wait that timed out.)
				pingCtx, cancelPing := context.WithTimeout(loopCtx, pingTimeout)
				err = conn.Ping(pingCtx)
				cancelPing()
				if err == nil {
					continue
				}
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

// Stop stops listening and looking and waits for both to end. It is safe to
// call when Start was not.
func (h *Hub) Stop() {
	h.stopListening()
	h.stopLooking()
}
