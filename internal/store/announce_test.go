package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"widget-store/internal/shop"
	"widget-store/internal/storetest"
)

// TestOrderByKeyAnnouncing: the webhook's read of the order announces the
// key on the channel, in the same statement, exactly when the order is
// PENDING and the transaction commits: a PAID order's read and a rolled-back
// read announce nothing (Postgres delivers a NOTIFY only at its commit).
func TestOrderByKeyAnnouncing(t *testing.T) {
	db := storetest.NewPostgresDB(t)
	d := openPagingDB(t, db, nil)
	ctx := context.Background()
	const channel = "test_announce"
	for key, status := range map[string]shop.Status{"pending-key": shop.StatusPending, "paid-key": shop.StatusPaid} {
		if _, err := d.Pool.Exec(ctx, `INSERT INTO orders (checkout_key, product_id, price_cents, order_status, created_at, last_update_time)
			VALUES ($1, 1, 9999, $2, 0, 0)`, key, status); err != nil {
			t.Fatal(err)
		}
	}
	listener, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, "LISTEN "+channel); err != nil {
		t.Fatal(err)
	}

	read := func(key string, commit bool) shop.Order {
		var o shop.Order
		rollback := errors.New("roll back")
		err := d.InTx(ctx, func(tx Tx) error {
			var err error
			if o, err = OrderByKeyAnnouncing(ctx, tx, key, channel); err != nil || commit {
				return err
			}
			return rollback
		})
		if err != nil && !errors.Is(err, rollback) {
			t.Fatal(err)
		}
		return o
	}
	if o := read("paid-key", true); o.Status != shop.StatusPaid || o.Key != "paid-key" {
		t.Fatalf("read %+v, want the PAID order of paid-key", o)
	}
	read("pending-key", false)
	if o := read("pending-key", true); o.Status != shop.StatusPending || o.Key != "pending-key" {
		t.Fatalf("read %+v, want the PENDING order of pending-key", o)
	}
	if _, err := OrderByKeyAnnouncing(ctx, d.Q(), "no-such-key", channel); shop.KindOf(err) != shop.NotFound {
		t.Fatalf("unknown key: %v, want a NotFound error", err)
	}

	wait := func(d time.Duration) (string, error) {
		c, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		n, err := listener.WaitForNotification(c)
		if err != nil {
			return "", err
		}
		return n.Payload, nil
	}
	if got, err := wait(5 * time.Second); err != nil || got != "pending-key" {
		t.Fatalf("first notification: %q (%v), want pending-key", got, err)
	}
	if got, err := wait(500 * time.Millisecond); err == nil {
		t.Fatalf("a second notification %q: want only the committed PENDING read's", got)
	}
}
