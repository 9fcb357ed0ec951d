package storetest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"widget-store/internal/loadgen"
)

// The paged lists, GET /orders and GET /late_payments (issue 11): a client
// that follows the Link headers sees every row exactly once, in ascending
// order, even while rows are added; a bad limit or cursor is a 400 that
// changes nothing.

// listPage is one page of a paged list, as the store answered it.
type listPage[T any] struct {
	path  string // the request, relative to the store's root
	items []T
	next  string // the Link rel="next" target; "" on the last page
}

// walkPages follows list (e.g. "/orders") from its first page with
// ?limit=limit until a page has no Link, and checks every page: 200, a JSON
// array of at most limit items, exactly limit when a Link follows (and then
// the next page is not empty), the Link exactly
// `</list?limit=N&after=CURSOR>; rel="next"`. between, when not nil, runs
// after every page that has a next one.
func walkPages[T any](t *testing.T, c *http.Client, base, list string, limit int, header map[string]string, between func()) []listPage[T] {
	t.Helper()
	linkRE := regexp.MustCompile(`^<(` + regexp.QuoteMeta(list) + `\?limit=` + strconv.Itoa(limit) + `&after=[A-Za-z0-9_-]+)>; rel="next"$`)
	var pages []listPage[T]
	path := list + "?limit=" + strconv.Itoa(limit)
	for path != "" {
		if len(pages) == 1000 {
			t.Fatalf("%s: still a next page after %d pages", list, len(pages))
		}
		r := do(t, c, base, hreq{method: "GET", path: path, header: header})
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d %q", path, r.status, r.body)
		}
		p := listPage[T]{path: path}
		if err := json.Unmarshal([]byte(r.body), &p.items); err != nil || p.items == nil {
			t.Fatalf("GET %s: want a JSON array, got %q (%v)", path, r.body, err)
		}
		if len(p.items) > limit {
			t.Fatalf("GET %s: %d items, more than the limit", path, len(p.items))
		}
		if links := r.header.Values("Link"); len(links) > 0 {
			m := linkRE.FindStringSubmatch(links[0])
			if len(links) != 1 || m == nil {
				t.Fatalf("GET %s: Link %q, want one `<%s?limit=%d&after=CURSOR>; rel=\"next\"`", path, links, list, limit)
			}
			if len(p.items) != limit {
				t.Fatalf("GET %s: %d items and a next page; want a full page of %d", path, len(p.items), limit)
			}
			p.next = m[1]
		}
		if len(pages) > 0 && len(p.items) == 0 {
			t.Fatalf("GET %s: empty page after a Link", path)
		}
		pages = append(pages, p)
		path = p.next
		if path != "" && between != nil {
			between()
		}
	}
	return pages
}

// itemsOf is every item of pages, in order.
func itemsOf[T any](pages []listPage[T]) []T {
	var all []T
	for _, p := range pages {
		all = append(all, p.items...)
	}
	return all
}

// orderIDs is the ids of orders, checked strictly ascending (so none twice).
func orderIDs(t *testing.T, what string, orders []Order) []int64 {
	t.Helper()
	ids := make([]int64, len(orders))
	for i, o := range orders {
		ids[i] = o.OrderID
		if i > 0 && ids[i] <= ids[i-1] {
			t.Fatalf("%s: order %d after order %d, want strictly ascending ids", what, ids[i], ids[i-1])
		}
	}
	return ids
}

// buyOne starts one checkout of a fresh key on c and reports whether it
// made an order (200). It only reports failures (t.Errorf), so it may run on
// any goroutine.
func buyOne(t *testing.T, c *http.Client, base string) bool {
	resp, err := c.Post(base+"/checkout/"+NewKey(), "", nil)
	if err != nil {
		t.Errorf("checkout: %v", err)
		return false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("checkout: %d %q (%v), want 200", resp.StatusCode, b, err)
		return false
	}
	return true
}

// badPageRequests are list queries the store must refuse with a 400 whose
// message contains the second string. cursor is a valid cursor of the other
// list (a cursor is for its own list only).
func badPageRequests(otherListCursor string) [][2]string {
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	return [][2]string{
		{"?limit=0", "limit must be a whole number from 1 to 1000"},
		{"?limit=1001", "limit must be a whole number from 1 to 1000"},
		{"?limit=x", "limit must be a whole number from 1 to 1000"},
		{"?limit=", "limit must be"},
		{"?limit=-5", "limit must be"},
		{"?limit=2.5", "limit must be"},
		{"?limit=1e3", "limit must be"},
		{"?limit=5&limit=6", "limit given 2 times"},
		{"?after=", "after must be a cursor"},
		{"?after=%21%21not-a-cursor", "after must be a cursor"},
		{"?after=" + b64("orders:0"), "after must be a cursor"},
		{"?after=" + b64("orders:1") + "%3D%3D", "after must be a cursor"},
		{"?after=" + b64("late_payments:x:k-1"), "after must be a cursor"},
		{"?after=" + otherListCursor, "after must be a cursor"},
		{"?limit=7&after=" + b64("orders:"+strings.Repeat("9", 300)), "after must be a cursor"},
		{"?limit=0&after=garbage", "limit must be"},
	}
}

// expectRefused sends each bad query to list and checks the 400, its
// readable message, no Link, and that nothing in the store changed.
func expectRefused(t *testing.T, c *http.Client, base string, db *loadgen.Database, list string, header map[string]string, adminToken, otherListCursor string) {
	t.Helper()
	before := snapshot(t, base, db, adminToken)
	for _, bad := range badPageRequests(otherListCursor) {
		r := do(t, c, base, hreq{method: "GET", path: list + bad[0], header: header})
		var msg struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(r.body), &msg); r.status != http.StatusBadRequest || err != nil || !strings.Contains(msg.Error, bad[1]) {
			t.Errorf("GET %s%s: %d %q, want 400 with an error containing %q", list, bad[0], r.status, r.body, bad[1])
		}
		if l := r.header.Get("Link"); l != "" {
			t.Errorf("GET %s%s: refused, yet Link %q", list, bad[0], l)
		}
	}
	assertUnchanged(t, "bad "+list+" queries", before, snapshot(t, base, db, adminToken))
}

// TestOrdersPaging: 250 orders, then /orders?limit=7 followed to its end
// while a buyer keeps adding orders. The walk sees every order that existed
// before it exactly once, ids strictly ascending, and, since order ids are
// handed out in commit order, every order up to the last one it saw, the
// ones added during the walk included; a final walk sees every order.
func TestOrdersPaging(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := Start(t, db).Base()
		c := noRedirectClient(10 * time.Second)
		// The buyers' own connections, closed before the store stops: a
		// graceful shutdown waits for idle ones.
		tr := &http.Transport{MaxIdleConnsPerHost: 8}
		buyers := &http.Client{Timeout: 10 * time.Second, Transport: tr}
		t.Cleanup(tr.CloseIdleConnections)
		MustCall(t, "POST", base+"/restock?inventory=100000", http.StatusOK)

		const initial = 250
		var wg sync.WaitGroup
		var bought atomic.Int64
		for range 5 { // 5 buyers at once, 50 each
			wg.Go(func() {
				for range initial / 5 {
					if buyOne(t, buyers, base) {
						bought.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		before := Orders(t, base)
		if len(before) != initial {
			t.Fatalf("%d orders after %d checkouts, want %d", len(before), bought.Load(), initial)
		}
		beforeIDs := orderIDs(t, "GET /orders before the walk", before)

		// The JSON shape is the one of GET /order/{id}.
		first := walkPages[map[string]any](t, c, base, "/orders", 1, nil, nil)
		if len(first) == 0 {
			t.Fatal("no pages")
		}
		one := GetJSON[map[string]any](t, base+"/order/"+strconv.FormatInt(beforeIDs[0], 10))
		if got := first[0].items[0]; !reflect.DeepEqual(got, one) {
			t.Errorf("first order on /orders %v, want it as GET /order/%d answers %v", got, beforeIDs[0], one)
		}
		if len(first) != initial {
			t.Errorf("limit=1: %d pages, want %d", len(first), initial)
		}

		// The walk, with a buyer adding orders as it goes. After each page
		// the walker lets the buyer make 3 more orders and waits until it
		// has made one more since the last page, then reads on while the
		// buyer carries on: the page reads and the checkouts race, and the
		// walk still gains on the buyer (7 a page against 3), so it ends.
		var added atomic.Int64
		allow, stop := make(chan struct{}, 100), make(chan struct{})
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-allow:
				}
				if !buyOne(t, buyers, base) {
					return
				}
				added.Add(1)
			}
		})
		stopBuyer := sync.OnceFunc(func() { close(stop); wg.Wait() })
		defer stopBuyer() // also when the test fails half-way: no checkouts after it ends
		last := added.Load()
		pages := walkPages[Order](t, c, base, "/orders", 7, nil, func() {
			for range 3 {
				allow <- struct{}{}
			}
			WaitUntil(t, 10*time.Second, "an order added during the walk", func() bool { return added.Load() > last })
			last = added.Load()
		})
		stopBuyer()
		seen := orderIDs(t, "the walk of /orders?limit=7", itemsOf(pages))
		t.Logf("walk: %d pages, %d orders seen; %d orders added during it", len(pages), len(seen), added.Load())

		seenSet := map[int64]bool{}
		for _, id := range seen {
			seenSet[id] = true
		}
		for _, id := range beforeIDs {
			if !seenSet[id] {
				t.Errorf("order %d existed before the walk and was not seen", id)
			}
		}
		if len(seen) <= initial {
			t.Errorf("the walk saw %d orders, none of those added during it", len(seen))
		}
		all := orderIDs(t, "GET /orders after the walk", Orders(t, base))
		if want := initial + int(added.Load()); len(all) != want {
			t.Fatalf("%d orders after the walk, want %d (%d + %d added)", len(all), want, initial, added.Load())
		}
		if len(seen) > len(all) || !reflect.DeepEqual(seen, all[:len(seen)]) {
			t.Errorf("the walk saw %d orders that are not the first %d of all %d: one committed behind the cursor", len(seen), len(seen), len(all))
		}

		// Final walks, nothing changing: every order, at several page sizes,
		// exact multiples included (the last page is full and has no Link).
		for _, limit := range []int{7, 100, len(all) - 1, len(all), 1000} {
			pages := walkPages[Order](t, c, base, "/orders", limit, nil, nil)
			if got := orderIDs(t, fmt.Sprintf("final walk, limit %d", limit), itemsOf(pages)); !reflect.DeepEqual(got, all) {
				t.Errorf("final walk, limit %d: %d orders, want all %d", limit, len(got), len(all))
			}
			if want := (len(all) + limit - 1) / limit; len(pages) != want {
				t.Errorf("final walk, limit %d: %d pages, want %d", limit, len(pages), want)
			}
		}
		// The default page size is 100: the first page of GET /orders is the
		// one of ?limit=100, and its Link leads to ?limit=100 pages.
		r := do(t, c, base, hreq{method: "GET", path: "/orders"})
		var def []Order
		if err := json.Unmarshal([]byte(r.body), &def); r.status != http.StatusOK || err != nil {
			t.Fatalf("GET /orders: %d %q (%v)", r.status, r.body, err)
		}
		hundred := walkPages[Order](t, c, base, "/orders", 100, nil, nil)
		if !reflect.DeepEqual(def, hundred[0].items) || r.header.Get("Link") != "<"+hundred[0].next+`>; rel="next"` {
			t.Errorf("GET /orders: %d orders, Link %q; want the first page of ?limit=100, %d orders, Link to %q",
				len(def), r.header.Get("Link"), len(hundred[0].items), hundred[0].next)
		}

		expectRefused(t, c, base, db, "/orders", nil, "", base64.RawURLEncoding.EncodeToString([]byte("late_payments:1767225600000:k-1")))
	})
}

// TestLatePaymentsPaging: payments that came after their order's window
// closed, paged by (received_at, payment_id), behind the admin token. 12 are
// recorded before a walk at limit=3, 12 more during it (two after each
// page): the walk sees each of the first 12 exactly once, nothing twice, in
// strictly ascending order; final walks see all 24.
func TestLatePaymentsPaging(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		const token = "paging-test-admin-token"
		// HOLD_LIMIT=0: the 24 unpaid checkouts below come from one address.
		base := Start(t, db, "PAYMENT_TIMEOUT=1s", "ADMIN_TOKEN="+token, "HOLD_LIMIT=0").Base()
		c := noRedirectClient(10 * time.Second)
		admin := map[string]string{"Authorization": "Bearer " + token}

		var pids []string
		for range 24 {
			pids = append(pids, MustCall(t, "POST", base+"/checkout/"+NewKey(), http.StatusOK))
		}
		// Every order (the operator's read) waits out its window.
		WaitUntil(t, 20*time.Second, "every order cancelled", func() bool {
			orders := GetPages[Order](t, base+"/orders?limit=1000", http.Header{"Authorization": {"Bearer " + token}})
			for _, o := range orders {
				if !IsFinal(o) {
					return false
				}
			}
			return len(orders) == 24
		})
		payLate := func(pid string) {
			t.Helper()
			// The provider's call: with ADMIN_TOKEN set and no webhook secret,
			// the webhook takes the admin token.
			r := do(t, c, base, hreq{method: "POST", path: "/payment_webhook/" + pid + "/paid", header: admin})
			if r.status != http.StatusConflict || !strings.Contains(r.body, "refund") {
				t.Fatalf("late payment %s: %d %q, want 409 recorded for refund", pid, r.status, r.body)
			}
		}
		for _, pid := range pids[:12] {
			payLate(pid)
		}

		// Admin only, first page and followed pages alike.
		if r := do(t, c, base, hreq{method: "GET", path: "/late_payments?limit=5"}); r.status != http.StatusUnauthorized {
			t.Errorf("GET /late_payments?limit=5 without the token: %d %q, want 401", r.status, r.body)
		}
		if r := do(t, c, base, hreq{method: "GET", path: "/late_payments?limit=0"}); r.status != http.StatusUnauthorized {
			t.Errorf("GET /late_payments?limit=0 without the token: %d %q, want 401 before any validation", r.status, r.body)
		}

		rest := pids[12:]
		pages := walkPages[LatePayment](t, c, base, "/late_payments", 3, admin, func() {
			for range 2 {
				if len(rest) > 0 {
					payLate(rest[0])
					rest = rest[1:]
				}
			}
		})
		if len(rest) != 0 {
			t.Fatalf("the walk ended with %d late payments still to record during it", len(rest))
		}
		if r := do(t, c, base, hreq{method: "GET", path: pages[0].next}); r.status != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", pages[0].next, r.status)
		}
		seen := countLatePayments(t, "the walk of /late_payments?limit=3", itemsOf(pages))
		t.Logf("walk: %d pages, %d late payments seen (12 before it, 12 during it)", len(pages), len(seen))
		for _, pid := range pids[:12] {
			if seen[pid] != 1 {
				t.Errorf("late payment %s recorded before the walk: seen %d times, want once", pid, seen[pid])
			}
		}

		// Each late payment's refund workflow runs beside the walks and
		// changes its refund_status once: wait for all of them, so that every
		// final walk reads the same state.
		WaitUntil(t, 15*time.Second, "every late payment refunded", func() bool {
			for _, p := range itemsOf(walkPages[LatePayment](t, c, base, "/late_payments", 100, admin, nil)) {
				if p.RefundStatus != "refunded" {
					return false
				}
			}
			return true
		})
		var all []LatePayment
		for _, limit := range []int{3, 5, 12, 23, 24, 100} {
			pages := walkPages[LatePayment](t, c, base, "/late_payments", limit, admin, nil)
			got := itemsOf(pages)
			ids := countLatePayments(t, fmt.Sprintf("final walk, limit %d", limit), got)
			for _, pid := range pids {
				if ids[pid] != 1 {
					t.Errorf("final walk, limit %d: late payment %s seen %d times, want once", limit, pid, ids[pid])
				}
			}
			if want := (24 + limit - 1) / limit; len(pages) != want {
				t.Errorf("final walk, limit %d: %d pages, want %d", limit, len(pages), want)
			}
			if all == nil {
				all = got
			} else if !reflect.DeepEqual(got, all) {
				t.Errorf("final walk, limit %d: %v, want the same list as at limit 3, %v", limit, got, all)
			}
		}

		orderCursor := base64.RawURLEncoding.EncodeToString([]byte("orders:" + strconv.FormatInt(all[0].OrderID, 10)))
		expectRefused(t, c, base, db, "/late_payments", admin, token, orderCursor)
	})
}

// countLatePayments counts the payment ids of late, which must be in strictly
// ascending (received_at, payment_id) order.
func countLatePayments(t *testing.T, what string, late []LatePayment) map[string]int {
	t.Helper()
	n := map[string]int{}
	for i, p := range late {
		n[p.PaymentID]++
		if i == 0 {
			continue
		}
		q := late[i-1]
		if p.ReceivedAt.Before(q.ReceivedAt) || p.ReceivedAt.Equal(q.ReceivedAt) && p.PaymentID <= q.PaymentID {
			t.Errorf("%s: %s (%v) after %s (%v), want strictly ascending (received_at, payment_id)", what, p.PaymentID, p.ReceivedAt, q.PaymentID, q.ReceivedAt)
		}
	}
	return n
}
