package storetest

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"widget-store/internal/loadgen"
)

// The sold-out path (issue 20): a checkout that finds no stock, and a replay
// of a key that found none, are answered from one read, with no workflow
// and no row; a key that holds an order is never answered "sold out"; a key
// answered sold out holds nothing, so after a restock the same key checks
// out again and may buy; a sold-out checkout that was recorded (a browser's,
// whose pay page reads the record) stays sold out.

// rowCounts is every row a checkout could write: DBOS's workflows and
// checkpoints, and the store's orders, lines, sold-out records and holds.
type rowCounts struct {
	Workflows, Steps, Orders, Lines, SoldOut, SoldOutLines, Holds int
	Updated                                                       int64 // the latest workflow_status.updated_at: a write to any workflow moves it
}

func countRows(t testing.TB, db *loadgen.Database) rowCounts {
	t.Helper()
	var c rowCounts
	s := dbosSchema(db)
	query(t, db, `SELECT
		(SELECT count(*) FROM `+s+`workflow_status),
		(SELECT COALESCE(MAX(updated_at), 0) FROM `+s+`workflow_status),
		(SELECT count(*) FROM `+s+`operation_outputs),
		(SELECT count(*) FROM orders), (SELECT count(*) FROM order_lines),
		(SELECT count(*) FROM sold_out_checkouts), (SELECT count(*) FROM sold_out_lines),
		(SELECT count(*) FROM hold_clients)`, func(scan func(...any) error) error {
		return scan(&c.Workflows, &c.Updated, &c.Steps, &c.Orders, &c.Lines, &c.SoldOut, &c.SoldOutLines, &c.Holds)
	})
	return c
}

func TestSoldOutAnsweredFromReads(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := Start(t, db).Base()
		MustCall(t, "POST", base+"/restock?inventory=1", http.StatusOK)
		MustCall(t, "POST", base+"/restock?product_id=3&inventory=2", http.StatusOK)
		MustCall(t, "POST", base+"/checkout/"+NewKey(), http.StatusOK) // the last unit of product 1
		before := countRows(t, db)

		// No stock: 409, and its replays the same, writing nothing.
		key := NewKey()
		want := "sold out: no widgets left for checkout " + key
		for i := range 3 {
			if code, body := Call(t, "POST", base+"/checkout/"+key); code != http.StatusConflict || !strings.Contains(body, want) {
				t.Fatalf("checkout %d of %s with no stock: %d %q, want 409 %q", i, key, code, body, want)
			}
		}
		// A cart with a short line: the 409 names the short lines, as ever.
		cartKey := NewKey()
		r := checkoutCart(t, base, cartKey, cartBody(2, 1, 3, 3))
		if r.status != http.StatusConflict || !strings.Contains(r.body, "sold out: checkout "+cartKey+" holds nothing; short: product 3: 3 wanted, 2 left") ||
			strings.Contains(r.body, "product 2:") {
			t.Fatalf("short cart: %d %q, want 409 naming product 3 only", r.status, r.body)
		}
		if r2 := checkoutCart(t, base, cartKey, cartBody(3, 3, 2, 1)); r2.status != http.StatusConflict || r2.body != r.body {
			t.Fatalf("replay of the short cart: %d %q, want %q", r2.status, r2.body, r.body)
		}
		if after := countRows(t, db); after != before {
			t.Fatalf("rows after sold-out checkouts and their replays: %+v, before %+v: want no workflow and no row written", after, before)
		}

		// Nothing was promised: after a restock the same key checks out again
		// and buys; from then on it is that order's key, never "sold out".
		MustCall(t, "POST", base+"/restock?inventory=1", http.StatusOK)
		if code, body := Call(t, "POST", base+"/checkout/"+key); code != http.StatusOK || body != key {
			t.Fatalf("the sold-out key after a restock: %d %q, want 200 and its payment id", code, body)
		}
		if got := Inventory(t, base); got != 0 {
			t.Fatalf("inventory %d after the retried key bought, want 0", got)
		}
		for i := range 2 {
			if code, body := Call(t, "POST", base+"/checkout/"+key); code != http.StatusOK || body != key {
				t.Fatalf("replay %d of the key that bought, stock 0: %d %q, want 200 and its payment id", i, code, body)
			}
		}
		if code, _ := webhook(t, base, key, "paid"); code != http.StatusOK {
			t.Fatalf("paying the retried key: %d", code)
		}
		if code, body := Call(t, "POST", base+"/checkout/"+key); code != http.StatusOK || body != key {
			t.Fatalf("replay of the paid key, stock 0: %d %q", code, body)
		}
		// Its workflow's records deleted (as retention or an operator does),
		// the key still holds its order: never "sold out".
		WaitUntil(t, 30*time.Second, "the checkout of "+key+" finished", func() bool {
			var status string
			query(t, db, `SELECT COALESCE(MAX(status), '') FROM `+dbosSchema(db)+`workflow_status WHERE workflow_uuid = '`+key+`'`,
				func(scan func(...any) error) error { return scan(&status) })
			return status == "SUCCESS"
		})
		dbosCLI(t, db, "delete", key)
		if code, body := Call(t, "POST", base+"/checkout/"+key); code != http.StatusOK || body != key {
			t.Fatalf("replay of the paid key whose workflow was deleted, stock 0: %d %q, want 200 and its payment id", code, body)
		}

		// A browser's sold-out checkout is recorded (its pay page reads the
		// record), and stays sold out after a restock; its replays write
		// nothing and start nothing.
		c := session(t, "")
		browserKey := browserBuy(t, c, base)
		if pr := do(t, c, base, hreq{method: "GET", path: "/pay/" + browserKey}); pr.status != http.StatusOK || !strings.Contains(pr.body, `data-testid="sold-out"`) {
			t.Fatalf("the sold-out pay page: %d, want 200 showing sold out", pr.status)
		}
		recorded := countRows(t, db)
		if recorded.SoldOut != before.SoldOut+1 {
			t.Fatalf("sold-out records after a browser's sold-out checkout: %d, want %d", recorded.SoldOut, before.SoldOut+1)
		}
		MustCall(t, "POST", base+"/restock?inventory=5", http.StatusOK)
		for i := range 2 {
			if code, body := Call(t, "POST", base+"/checkout/"+browserKey); code != http.StatusConflict || !strings.Contains(body, "sold out") {
				t.Fatalf("replay %d of the recorded sold-out key after a restock: %d %q, want 409 sold out", i, code, body)
			}
		}
		if after := countRows(t, db); after != recorded {
			t.Fatalf("rows after replays of a recorded sold-out key: %+v, before %+v", after, recorded)
		}
		if got := Inventory(t, base); got != 5 {
			t.Fatalf("inventory %d, want 5: a recorded sold-out key takes nothing", got)
		}
	})
}

// TestLastUnitsNeverSoldOutToABuyer: 40 keys race for 10 units, each key
// sent three times at once and then once more after the sale: every key
// that got a unit is answered its payment id every time, every other key
// "sold out" every time, and exactly 10 units are sold.
func TestLastUnitsNeverSoldOutToABuyer(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := Start(t, db, "LOG_LEVEL=error").Base()
		const units, keys, copies = 10, 40, 3
		MustCall(t, "POST", base+"/restock?inventory="+strconv.Itoa(units), http.StatusOK)
		type answer struct {
			code int
			body string
		}
		var mu sync.Mutex
		answers := map[string][]answer{}
		call := func(key string) {
			code, body := Call(t, "POST", base+"/checkout/"+key)
			mu.Lock()
			answers[key] = append(answers[key], answer{code, body})
			mu.Unlock()
		}
		all := make([]string, keys)
		for i := range all {
			all[i] = NewKey()
		}
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for _, k := range all {
			for range copies {
				wg.Go(func() { <-gate; call(k) })
			}
		}
		close(gate)
		wg.Wait()
		for _, k := range all {
			call(k)
		}
		sold := 0
		for _, k := range all {
			as := answers[k]
			bought := false
			for _, a := range as {
				switch {
				case a.code == http.StatusOK && a.body == k:
					bought = true
				case a.code == http.StatusConflict && strings.Contains(a.body, "sold out"):
				default:
					t.Errorf("key %s answered %d %q", k, a.code, a.body)
				}
			}
			if bought {
				sold++
				for _, a := range as {
					if a.code != http.StatusOK {
						t.Errorf("key %s bought a unit but was also answered %d %q (answers %v)", k, a.code, a.body, as)
					}
				}
			}
		}
		if sold != units {
			t.Errorf("%d keys bought, want %d", sold, units)
		}
		if n := len(Orders(t, base)); n != units {
			t.Errorf("%d orders, want %d", n, units)
		}
		if got := Inventory(t, base); got != 0 {
			t.Errorf("inventory %d, want 0", got)
		}
	})
}

// TestSoldOutWaitsForAKeyInFlight: a checkout whose workflow exists but has
// not reserved yet (in flight in another instance, or recovering after a
// crash) decides the key's answer, not the stock a replay reads meanwhile.
// Postgres only: the test holds the row of product 1 locked, so the
// checkout's reserve waits in the database with its workflow started, while
// product 2, the cart's other line, runs out and comes back.
func TestSoldOutWaitsForAKeyInFlight(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		if db.Kind != "postgres" {
			t.Skip("SQLite has one writer: a reserve cannot be held mid-way while the stock changes")
		}
		base := Start(t, db).Base()
		MustCall(t, "POST", base+"/restock?product_id=1&inventory=5", http.StatusOK)
		MustCall(t, "POST", base+"/restock?product_id=2&inventory=5", http.StatusOK)
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }() // for an early failure; the test rolls back below, after which this is ErrTxClosed
		if _, err := tx.Exec(ctx, `SELECT 1 FROM products WHERE product_id = 1 FOR UPDATE`); err != nil {
			t.Fatal(err)
		}

		key := NewKey()
		first, replay := make(chan hresp, 1), make(chan hresp, 1)
		go func() { first <- checkoutCart(t, base, key, cartBody(1, 1, 2, 1)) }()
		WaitUntil(t, 10*time.Second, "the checkout's workflow started", func() bool {
			var n int
			query(t, db, `SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = '`+key+`'`, func(scan func(...any) error) error { return scan(&n) })
			return n == 1
		})
		MustCall(t, "POST", base+"/restock?product_id=2&inventory=0", http.StatusOK)
		go func() { replay <- checkoutCart(t, base, key, cartBody(1, 1, 2, 1)) }()
		// The replay must wait for the reserve, which waits for the lock: any
		// answer before the lock goes is one the stock gave, not the key.
		select {
		case r := <-replay:
			t.Fatalf("the replay answered %d %q while its key's reserve was still waiting", r.status, r.body)
		case r := <-first:
			t.Fatalf("the checkout answered %d %q while its reserve was still waiting", r.status, r.body)
		case <-time.After(time.Second):
		}
		MustCall(t, "POST", base+"/restock?product_id=2&inventory=5", http.StatusOK)
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		for what, ch := range map[string]chan hresp{"checkout": first, "replay": replay} {
			if r := <-ch; r.status != http.StatusOK || r.body != key {
				t.Errorf("%s: %d %q, want 200 and the payment id (the reserve found the stock back)", what, r.status, r.body)
			}
		}
		if s := stockOf(t, base); s[1] != 4 || s[2] != 4 {
			t.Errorf("stock %v, want 4 of products 1 and 2", s)
		}
		if n := len(Orders(t, base)); n != 1 {
			t.Errorf("%d orders, want 1", n)
		}
	})
}
