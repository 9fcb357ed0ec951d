package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// paymentChannel is the Postgres NOTIFY channel on which a webhook announces,
// at the commit of its Send, the checkout key it sent a payment status to.
// Every instance LISTENs on it and kicks its own waiting checkout, which then
// reads its message (awaitPayment).
//
// Why a channel of our own when DBOS has one: DBOS starts LISTENing in the
// background after Launch and never looks again for messages announced before
// it listened (it does only after a reconnect), so a payment sent just after a
// (re)start could leave a recovered checkout asleep in Recv until its payment
// window closed: found by the chaos tool, 1–2 stores in 16 started together.
// This channel is listening before Launch recovers any workflow, and after a
// reconnect every waiting checkout is kicked to look again.
const paymentChannel = "widget_store_payment"

// listenForPayments (Postgres) opens a connection of its own, LISTENs on
// paymentChannel and returns once it listens; a goroutine then kicks the
// watch of each announced key until stop is called.
func (a *app) listenForPayments(ctx context.Context) (stop func(), err error) {
	connect := func(ctx context.Context) (*pgx.Conn, error) {
		conn, err := pgx.ConnectConfig(ctx, a.pgPool.Config().ConnConfig.Copy())
		if err != nil {
			return nil, err
		}
		if _, err := conn.Exec(ctx, "LISTEN "+paymentChannel); err != nil {
			conn.Close(ctx) // the LISTEN error is the one to report
			return nil, err
		}
		return conn, nil
	}
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := connect(startCtx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", paymentChannel, err)
	}

	loopCtx, stopLoop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		backoff := 100 * time.Millisecond
		for {
			n, err := conn.WaitForNotification(loopCtx)
			if err == nil {
				a.watches.kick(n.Payload)
				continue
			}
			conn.Close(context.Background()) // broken or cancelled: a close error adds nothing
			if loopCtx.Err() != nil {
				return
			}
			a.logger.Warn("payment channel lost; reconnecting", "err", err)
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
			a.watches.kickAll()
		}
	}()
	return func() { stopLoop(); <-done }, nil
}
