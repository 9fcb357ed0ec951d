package legs_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"widget-store/internal/legs"
	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/store"
	"widget-store/internal/storetest"
)

// The writer on a real SQLite file and a real Postgres database with the
// store's schema: 200 dispatches write their ten legs at once, each leg only
// after the last one returned, as the dispatch workflow does. Every order
// ends DISPATCHED at 0, legs share commits (far fewer batches than legs), and
// a leg written again, an order that is not PAID, and two legs of one order
// in one batch are each answered as the single-leg path expects.
func TestWriter(t *testing.T) {
	schema, err := os.ReadFile("../../schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	storetest.ForEachDB(t, func(t *testing.T, ldb *loadgen.Database) {
		ctx := context.Background()
		db, err := store.Open(ctx, ldb.URL, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		if err := db.Migrate(ctx, string(schema)); err != nil {
			t.Fatal(err)
		}
		const orders = 200
		var ids []int64
		for i := range orders + 1 {
			var id int64
			status := shop.StatusPaid
			if i == orders {
				status = shop.StatusCancelled // no leg may write it
			}
			if err := db.Q().QueryRow(ctx, `
				INSERT INTO orders (checkout_key, product_id, price_cents, order_status, created_at, last_update_time)
				VALUES ($1, 1, 100, $2, 0, 0) RETURNING order_id`, fmt.Sprintf("legs-%d", i), status).Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		var batches, batched atomic.Int64
		w := legs.New(db, time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)), func(n int) {
			batches.Add(1)
			batched.Add(int64(n))
		})
		w.Start()
		t.Cleanup(w.Stop)

		var wg sync.WaitGroup
		errs := make(chan error, orders)
		for _, id := range ids[:orders] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for remaining := shop.DispatchLegs - 1; remaining >= 0; remaining-- {
					written, err := w.Write(ctx, id, remaining)
					if err == nil && !written {
						err = fmt.Errorf("order %d: leg to %d not written", id, remaining)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var dispatched int
		if err := db.Q().QueryRow(ctx, `SELECT COUNT(*) FROM orders WHERE order_status = $1 AND progress_remaining = 0`, shop.StatusDispatched).Scan(&dispatched); err != nil {
			t.Fatal(err)
		}
		if dispatched != orders {
			t.Fatalf("%d orders DISPATCHED at 0, want %d", dispatched, orders)
		}
		legsWritten := int64(orders * shop.DispatchLegs)
		if batched.Load() != legsWritten {
			t.Fatalf("%d legs counted in batches, want %d", batched.Load(), legsWritten)
		}
		if b := batches.Load(); b*4 > legsWritten {
			t.Fatalf("%d legs took %d batches: the writer did not batch", legsWritten, b)
		}
		t.Logf("%d legs in %d batches", legsWritten, batches.Load())

		// A leg written before, and a cancelled order: not written, and the
		// rows unchanged.
		for _, c := range []struct {
			id        int64
			remaining int
		}{{ids[0], 3}, {ids[orders], 9}} {
			written, err := w.Write(ctx, c.id, c.remaining)
			if err != nil || written {
				t.Fatalf("order %d, leg to %d: written %v, err %v; want not written", c.id, c.remaining, written, err)
			}
		}
		var status shop.Status
		var progress int
		if err := db.Q().QueryRow(ctx, `SELECT order_status, progress_remaining FROM orders WHERE order_id = $1`, ids[orders]).Scan(&status, &progress); err != nil {
			t.Fatal(err)
		}
		if status != shop.StatusCancelled || progress != shop.DispatchLegs {
			t.Fatalf("the cancelled order became %v with %d legs to go", status, progress)
		}

		// Two legs of one order at once (a redispatch beside its dispatch):
		// they go into different batches, and exactly the lower one wins.
		var id int64
		if err := db.Q().QueryRow(ctx, `
			INSERT INTO orders (checkout_key, product_id, price_cents, order_status, created_at, last_update_time)
			VALUES ('legs-twice', 1, 100, $1, 0, 0) RETURNING order_id`, shop.StatusPaid).Scan(&id); err != nil {
			t.Fatal(err)
		}
		before := batches.Load()
		results := make(chan bool, 2)
		for _, remaining := range []int{5, 4} {
			go func() {
				written, err := w.Write(ctx, id, remaining)
				if err != nil {
					t.Error(err)
				}
				results <- written
			}()
		}
		n := 0
		for range 2 {
			if <-results {
				n++
			}
		}
		if err := db.Q().QueryRow(ctx, `SELECT progress_remaining FROM orders WHERE order_id = $1`, id).Scan(&progress); err != nil {
			t.Fatal(err)
		}
		if progress != 4 || n < 1 || batches.Load()-before < 1 {
			t.Fatalf("two legs of one order: progress %d, %d written, %d batches", progress, n, batches.Load()-before)
		}

		// Stopped: a leg is refused, not lost silently.
		w.Stop()
		if _, err := w.Write(ctx, id, 3); err != legs.ErrStopped {
			t.Fatalf("a leg after Stop: %v, want ErrStopped", err)
		}
	})
}
