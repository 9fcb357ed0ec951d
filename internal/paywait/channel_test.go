package paywait

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"widget-store/internal/loadgen"
	"widget-store/internal/metrics"
	"widget-store/internal/store"
)

// TestChannelSurvivesLosingItsConnection: the payment channel's connection
// is cut by the server (as a leader's shutdown or death cuts it, before a
// failover); the listener reconnects by itself, kicks every waiting
// checkout to look again (an announcement made while nobody listened would
// otherwise be missed), and hears announcements again afterwards.
func TestChannelSurvivesLosingItsConnection(t *testing.T) {
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("TEST_DATABASE_URL is not set: CI must test Postgres")
		}
		t.Skip("TEST_DATABASE_URL not set")
	}
	ctx := context.Background()
	pg, err := loadgen.NewPostgresDB(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pg.Drop(context.Background()); err != nil {
			t.Logf("drop test database: %v", err)
		}
	})
	db, err := store.Open(ctx, pg.URL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// No DBOS context: the listener needs only the database.
	hub := New(db, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(), 2*time.Minute)
	if err := hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer hub.Stop()

	admins, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admins.Close(ctx)
	listenerPID := func() int {
		var pid int
		err := admins.QueryRow(ctx, `SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN `+channel+`'`).Scan(&pid)
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	kicked := func(c *Checkout, within time.Duration) bool {
		select {
		case <-c.ho.paymentKick:
			return true
		case <-time.After(within):
			return false
		}
	}
	announce := func(key string) {
		if _, err := admins.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, key); err != nil {
			t.Fatal(err)
		}
	}

	// A checkout no request here started queues at the recovery gate and
	// leaves it once it has looked for its payment, as AwaitPayment does.
	checkout := func(key string) *Checkout {
		c, err := hub.Checkout(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		c.leaveGate()
		return c
	}
	waiting := checkout("waiting")
	defer waiting.Close()
	announce("waiting")
	if !kicked(waiting, 5*time.Second) || !waiting.ho.sent() {
		t.Fatal("an announcement did not kick its checkout")
	}

	before := listenerPID()
	if before == 0 {
		t.Fatal("no listener connection found")
	}
	if _, err := admins.Exec(ctx, `SELECT pg_terminate_backend($1)`, before); err != nil {
		t.Fatal(err)
	}
	if !kicked(waiting, 10*time.Second) {
		t.Fatal("no kick after the channel reconnected: a payment announced while nobody listened would be missed")
	}
	after := listenerPID()
	if after == 0 || after == before {
		t.Fatalf("listener backend %d after the old one (%d) was terminated; want a new one", after, before)
	}

	other := checkout("other")
	defer other.Close()
	announce("other")
	if !kicked(other, 5*time.Second) || !other.ho.sent() {
		t.Fatal("an announcement after the reconnect did not kick its checkout")
	}
}
