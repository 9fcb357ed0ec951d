package store

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/storetest"
)

// openPagingDB opens a fresh database of db's flavour with the store's
// schema and the clock now.
func openPagingDB(t *testing.T, db *loadgen.Database, now func() time.Time) *DB {
	t.Helper()
	ctx := context.Background()
	schema, err := os.ReadFile("../../schema.sql") // the root's schema.sql; tests run in the package directory
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(ctx, db.URL, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if err := d.Migrate(ctx, string(schema)); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestOrdersPage walks the orders at several page sizes, including ones that
// divide the count exactly: every order once, ascending, and more is false
// exactly on the last page.
func TestOrdersPage(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		ctx := context.Background()
		d := openPagingDB(t, db, nil)
		const n = 23
		var want []int64
		for i := range n {
			err := d.InTx(ctx, func(tx Tx) error {
				var id int64
				err := tx.QueryRow(ctx, `INSERT INTO orders (checkout_key, product_id, price_cents, created_at, last_update_time)
					VALUES ($1, 1, 9999, 0, 0) RETURNING order_id`, fmt.Sprintf("key-%d", i)).Scan(&id)
				want = append(want, id)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, limit := range []int{1, 5, 22, 23, 24, 1000} {
			var got []int64
			var after int64
			for pages := 1; ; pages++ {
				page, more, err := d.OrdersPage(ctx, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if more && len(page) != limit || len(page) > limit {
					t.Fatalf("limit %d, page %d: %d orders, more %v", limit, pages, len(page), more)
				}
				for _, o := range page {
					got = append(got, o.ID)
				}
				if !more {
					if wantPages := max(1, (n+limit-1)/limit); pages != wantPages {
						t.Errorf("limit %d: %d pages, want %d", limit, pages, wantPages)
					}
					break
				}
				after = page[len(page)-1].ID
			}
			if !slices.Equal(got, want) {
				t.Errorf("limit %d: walked %v, want %v", limit, got, want)
			}
		}
		if page, more, err := d.OrdersPage(ctx, want[n-1], 10); err != nil || len(page) != 0 || more {
			t.Errorf("after the last order: %d orders, more %v, %v", len(page), more, err)
		}
	})
}

// TestLatePaymentsPage walks late payments that share received_at times
// (the payment id breaks the tie) at several page sizes, and checks that the
// page queries use the index.
func TestLatePaymentsPage(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		ctx := context.Background()
		now := time.UnixMilli(1_767_225_600_000)
		d := openPagingDB(t, db, func() time.Time { return now })
		// Three payments a millisecond, recorded out of payment id order.
		var want []LatePaymentPos
		for i := range 17 {
			if i%3 == 0 {
				now = now.Add(time.Millisecond)
			}
			pid := fmt.Sprintf("k-%c%d", 'z'-i%3, i)
			if first, err := d.RecordLatePayment(ctx, pid, int64(i+1)); err != nil || !first {
				t.Fatalf("record %s: %v, %v", pid, first, err)
			}
			want = append(want, LatePaymentPos{ReceivedAtMs: now.UnixMilli(), PaymentID: pid})
		}
		slices.SortFunc(want, func(a, b LatePaymentPos) int {
			if a.ReceivedAtMs != b.ReceivedAtMs {
				return int(a.ReceivedAtMs - b.ReceivedAtMs)
			}
			return strings.Compare(a.PaymentID, b.PaymentID)
		})
		for _, limit := range []int{1, 2, 3, 16, 17, 18} {
			var got []LatePaymentPos
			var after *LatePaymentPos
			for pages := 1; ; pages++ {
				page, more, err := d.LatePaymentsPage(ctx, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if more && len(page) != limit || len(page) > limit {
					t.Fatalf("limit %d, page %d: %d payments, more %v", limit, pages, len(page), more)
				}
				for _, p := range page {
					got = append(got, p.Pos())
				}
				if !more {
					if wantPages := (len(want) + limit - 1) / limit; pages != wantPages {
						t.Errorf("limit %d: %d pages, want %d", limit, pages, wantPages)
					}
					break
				}
				pos := page[len(page)-1].Pos()
				after = &pos
			}
			if !slices.Equal(got, want) {
				t.Errorf("limit %d: walked %v, want %v", limit, got, want)
			}
		}

		// Both page queries are one range of the index, with no sort. With
		// a handful of rows Postgres would rather scan the table: it is told
		// not to, so the plan shows whether the index can serve the query.
		for _, q := range []string{
			`SELECT payment_id, order_id, received_at FROM late_payments ORDER BY received_at, payment_id LIMIT 101`,
			`SELECT payment_id, order_id, received_at FROM late_payments WHERE (received_at, payment_id) > (1767225600005, 'k-y4') ORDER BY received_at, payment_id LIMIT 101`,
		} {
			plan := explain(t, d, q)
			if !strings.Contains(plan, "late_payments_received") || strings.Contains(plan, "TEMP B-TREE") || strings.Contains(plan, "Sort") {
				t.Errorf("plan of %s:\n%s\nwant a range of index late_payments_received and no sort", q, plan)
			}
			t.Logf("%s:\n%s", q, plan)
		}
	})
}

// explain is the query plan of q, one line per step.
func explain(t *testing.T, d *DB, q string) string {
	t.Helper()
	ctx := context.Background()
	var lines []string
	err := d.InTx(ctx, func(tx Tx) error {
		prefix := "EXPLAIN QUERY PLAN "
		if d.Dialect.Postgres {
			prefix = "EXPLAIN "
			if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, prefix+q)
		if err != nil {
			return err
		}
		defer rows.Close() // its error is rows.Err's, returned below
		for rows.Next() {
			var line string
			if d.Dialect.Postgres {
				err = rows.Scan(&line)
			} else {
				var id, parent, unused int64
				err = rows.Scan(&id, &parent, &unused, &line)
			}
			if err != nil {
				return err
			}
			lines = append(lines, line)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatalf("explain %s: %v", q, err)
	}
	return strings.Join(lines, "\n")
}
