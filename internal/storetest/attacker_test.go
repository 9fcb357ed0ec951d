package storetest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/web"
)

// The attacker's table: the store run the way the README hardens it
// (ADMIN_TOKEN and PAYMENT_WEBHOOK_SECRET set), a browser buyer with orders
// in every state, and a stranger who tries everything the hardening is for.
// Each row asserts the refusal (a clear 4xx) and that nothing changed: the
// orders, the stock, the late payments and their refunds, the DBOS
// workflows, the stand-in provider's refunds and the size of /metrics.

// attackerState is storeState plus what only an attacker's row could move.
type attackerState struct {
	storeState
	ProviderRefunds int // rows of provider_refunds: refunds the stand-in provider made
}

func attackerSnapshot(t *testing.T, base string, db *loadgen.Database, admin string) attackerState {
	t.Helper()
	s := attackerState{storeState: snapshot(t, base, db, admin)}
	query(t, db, `SELECT count(*) FROM provider_refunds`, func(scan func(...any) error) error { return scan(&s.ProviderRefunds) })
	return s
}

// session is an HTTP client with its own cookie jar (a browser session),
// calling from the loopback address from (127.0.0.1 when "").
func session(t *testing.T, from string) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	if from != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		tr.DialContext = d.DialContext
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Jar: jar, Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// browserBuy buys through the store page's form in session c and returns
// the checkout key (from the redirect to /pay/{key}).
func browserBuy(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	do(t, c, base, hreq{method: "GET", path: "/"}) // the session cookie
	key := NewKey()
	body, hdr := form("key", key)
	r := do(t, c, base, hreq{method: "POST", path: "/buy", body: body, header: hdr})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/pay/"+key {
		t.Fatalf("buy: %d %q Location %q, want 303 to /pay/%s", r.status, r.body, r.header.Get("Location"), key)
	}
	return key
}

// browserPay posts the pay page's form (status paid or failed) in session c
// and returns the order id it redirects to.
func browserPay(t *testing.T, c *http.Client, base, key, status string) string {
	t.Helper()
	body, hdr := form("status", status)
	r := do(t, c, base, hreq{method: "POST", path: "/pay/" + key, body: body, header: hdr})
	id, ok := strings.CutPrefix(r.header.Get("Location"), "/track/")
	if r.status != http.StatusSeeOther || !ok {
		t.Fatalf("pay %s %s: %d %q Location %q, want 303 to the order", key, status, r.status, r.body, r.header.Get("Location"))
	}
	return id
}

func TestAttackerTable(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		const admin, secret = "admin-test-token", "whsec-test-secret"
		var log capturedLog
		st := StartWith(t, db, Options{Env: []string{"ADMIN_TOKEN=" + admin, "PAYMENT_WEBHOOK_SECRET=" + secret}, Log: io.MultiWriter(&log, LogWriter(t, ""))})
		base := st.Base()
		adminHdr := map[string]string{"Authorization": "Bearer " + admin}
		buyer := session(t, "")

		// The buyer's orders: one waiting for payment, one paid, one declined
		// (and then paid late, by a signed webhook: a refund), and one an API
		// client started (no session).
		var pending, paid, declined, apiKey string
		var pendingID, paidID, declinedID string
		phase(t, "the buyer buys, pays, declines, and tracks, in the browser's session", func(t *testing.T) {
			pending = browserBuy(t, buyer, base)
			paid = browserBuy(t, buyer, base)
			paidID = browserPay(t, buyer, base, paid, "paid")
			declined = browserBuy(t, buyer, base)
			declinedID = browserPay(t, buyer, base, declined, "failed")
			late := "/payment_webhook/" + declined + "/paid"
			if r := do(t, buyer, base, hreq{method: "POST", path: late, header: signedHeader(secret, "POST", late, time.Now())}); r.status != http.StatusConflict {
				t.Fatalf("signed late payment: %d %q, want 409 (recorded for refund)", r.status, r.body)
			}
			apiKey = newPendingKey(t, base)
			for _, p := range []string{"/track/" + paidID, "/partials/track/" + paidID, "/partials/timeline/" + paidID, "/order/" + paidID, "/pay/" + pending} {
				if r := do(t, buyer, base, hreq{method: "GET", path: p}); r.status != http.StatusOK {
					t.Errorf("the buyer's own %s: %d %.200q, want 200", p, r.status, r.body)
				}
			}
			pendingID = strconv.FormatInt(GetPages[Order](t, base+"/orders?limit=1000", http.Header{"Authorization": {"Bearer " + admin}})[0].OrderID, 10)
			// The buyer's timeline names the workflows by the order, not by the key.
			tl := do(t, buyer, base, hreq{method: "GET", path: "/partials/timeline/" + paidID}).body
			if !strings.Contains(tl, "checkout of order #"+paidID) || strings.Contains(tl, paid) {
				t.Errorf("the buyer's timeline should name the checkout by its order, without the key: %.400q", tl)
			}
		})

		keys := []string{pending, paid, declined, apiKey}
		stranger := session(t, "")
		do(t, stranger, base, hreq{method: "GET", path: "/"}) // a session of its own

		phase(t, "nothing a stranger can fetch shows a key or a payment id", func(t *testing.T) {
			paths := []string{"/", "/product", "/healthz", "/metrics", "/orders", "/late_payments", "/admin/attention",
				"/admin/debug/pprof/heap", "/admin/debug/pprof/goroutine", "/admin/debug/pprof/cpu?seconds=1",
				"/partials/stock", "/partials/my-orders", "/partials/internals", "/partials/internals/timeline",
				"/static/app.js", "/no-such-page"}
			for id := 1; id <= 6; id++ {
				s := strconv.Itoa(id)
				paths = append(paths, "/order/"+s, "/track/"+s, "/partials/track/"+s, "/partials/timeline/"+s, "/partials/internals/timeline?order="+s)
			}
			for _, k := range keys {
				paths = append(paths, "/pay/"+k, "/pay/"+k+"?sig=forged")
			}
			for _, p := range paths {
				for _, c := range []*http.Client{stranger, noRedirectClient(hostileDeadline)} {
					r := do(t, c, base, hreq{method: "GET", path: p, header: map[string]string{"Accept": "text/html"}})
					if r.status >= 500 {
						t.Errorf("GET %s: %d", p, r.status)
					}
					for _, k := range keys {
						if strings.Contains(r.body, k) {
							t.Errorf("GET %s (%d) shows a buyer's key %s to a stranger", p, r.status, k)
						}
					}
					if strings.HasPrefix(p, "/order/") || strings.HasPrefix(p, "/track/") || strings.HasPrefix(p, "/partials/track/") ||
						strings.HasPrefix(p, "/partials/timeline/") || strings.HasPrefix(p, "/pay/") {
						if r.status != http.StatusNotFound {
							t.Errorf("GET %s by a stranger: %d, want 404 (another buyer's order is as good as none)", p, r.status)
						}
					}
					if (p == "/orders" || p == "/late_payments" || strings.HasPrefix(p, "/admin/") || strings.HasPrefix(p, "/partials/internals")) && r.status != http.StatusUnauthorized {
						t.Errorf("GET %s by a stranger: %d, want 401 (the operator's)", p, r.status)
					}
				}
			}
			// The operator sees the keys (the internals timeline names the
			// workflows by their IDs): the stranger's view is redacted, not
			// the records.
			if r := do(t, stranger, base, hreq{method: "GET", path: "/partials/internals/timeline?order=" + paidID, header: adminHdr}); r.status != http.StatusOK || !strings.Contains(r.body, paid) {
				t.Errorf("the operator's timeline of order %s: %d, want 200 naming checkout %s", paidID, r.status, paid)
			}
			// Order ids are not a secret, but their ownership is: the same
			// message for another's order and for none.
			mine := do(t, stranger, base, hreq{method: "GET", path: "/order/" + paidID}).body
			none := do(t, stranger, base, hreq{method: "GET", path: "/order/987654"}).body
			if strings.Replace(mine, paidID, "N", 1) != strings.Replace(none, "987654", "N", 1) {
				t.Errorf("another buyer's order and no order answer differently: %q vs %q", mine, none)
			}
		})

		type row struct {
			name string
			req  func() hreq // a fresh request (a body is read once)
			want int
		}
		payForm := func(key, status string, extra ...string) func() hreq {
			return func() hreq {
				body, hdr := form(append([]string{"status", status}, extra...)...)
				return hreq{method: "POST", path: "/pay/" + key, body: body, header: hdr}
			}
		}
		webhook := func(key, status string, hdr map[string]string) func() hreq {
			return func() hreq { return hreq{method: "POST", path: "/payment_webhook/" + key + "/" + status, header: hdr} }
		}
		plain := func(q hreq) func() hreq { return func() hreq { return q } }
		rows := []row{
			{"pay a pending order with its key, no session", payForm(pending, "paid"), 404},
			{"decline a pending order with its key, no session", payForm(pending, "failed"), 404},
			{"late-pay a cancelled order with its key (a refund for nothing)", payForm(declined, "paid"), 404},
			{"pay an API checkout with its key", payForm(apiKey, "paid"), 404},
			{"pay with a forged pay-link signature", payForm(apiKey, "paid", "sig", strings.Repeat("0", 64)), 404},
			{"pay with a pay link signed by another secret", payForm(apiKey, "paid", "sig", web.PayLinkSignature("not-the-secret", apiKey)), 404},
			{"pay with the signature of another key's link", payForm(apiKey, "paid", "sig", web.PayLinkSignature(secret, pending)), 404},
			{"unsigned webhook: paid", webhook(pending, "paid", nil), 401},
			{"unsigned webhook: failed", webhook(pending, "failed", nil), 401},
			{"unsigned webhook: late payment", webhook(declined, "paid", nil), 401},
			{"webhook with a wrong admin token", webhook(apiKey, "paid", map[string]string{"X-Admin-Token": "guess"}), 401},
			{"stale signed webhook (replayed after 6 min)", webhook(declined, "paid", signedHeader(secret, "POST", "/payment_webhook/"+declined+"/paid", time.Now().Add(-6*time.Minute))), 401},
			{"refund at the provider for a payment never made", plain(hreq{method: "POST", path: "/provider/refunds/" + pending, header: map[string]string{"Idempotency-Key": pending}}), 401},
			{"cancel-and-refund another's order", plain(hreq{method: "POST", path: "/admin/orders/" + paidID + "/cancel"}), 401},
			{"restock", plain(hreq{method: "POST", path: "/restock?inventory=1"}), 401},
			{"crash", plain(hreq{method: "POST", path: "/crash_application"}), 401},
		}
		// The buyer's own forms replayed from the stranger's session (a
		// stolen pay URL): the session is what counts, not the URL.
		phase(t, "a stranger's payments, declines, late payments and refunds are refused and change nothing", func(t *testing.T) {
			before := attackerSnapshot(t, base, db, admin)
			for _, tc := range rows {
				for _, c := range []*http.Client{stranger, noRedirectClient(hostileDeadline)} {
					r := do(t, c, base, tc.req())
					if r.status != tc.want || len(r.body) == 0 {
						t.Errorf("%s: %d %.200q, want %d with a message", tc.name, r.status, r.body, tc.want)
					}
				}
			}
			if after := attackerSnapshot(t, base, db, admin); after != before {
				t.Errorf("the stranger changed the store:\nbefore %+v\nafter  %+v", before, after)
			}
			WaitHealthy(t, base, time.Second) // no crash went through
		})

		phase(t, "the same key with the buyer's session, or a signed pay link, still pays", func(t *testing.T) {
			if id := browserPay(t, buyer, base, pending, "paid"); id != pendingID {
				t.Fatalf("the buyer paid order %s, want %s", id, pendingID)
			}
			sig := web.PayLinkSignature(secret, apiKey)
			if r := do(t, stranger, base, hreq{method: "GET", path: "/pay/" + apiKey + "?sig=" + sig}); r.status != http.StatusOK || !strings.Contains(r.body, `name="sig"`) {
				t.Fatalf("the signed pay link's page: %d, want 200 with the signature in its forms", r.status)
			}
			r := do(t, stranger, base, payForm(apiKey, "paid", "sig", sig)())
			if r.status != http.StatusSeeOther || r.header.Get("Location") != "/pay/"+apiKey+"?sig="+sig {
				t.Fatalf("pay through the signed link: %d %q Location %q, want 303 back to the pay page", r.status, r.body, r.header.Get("Location"))
			}
		})

		phase(t, "made-up methods, huge headers and paths leave /metrics small", func(t *testing.T) {
			size := func() int {
				return len(do(t, noRedirectClient(10*time.Second), base, hreq{method: "GET", path: "/metrics"}).body)
			}
			start := size()
			c := noRedirectClient(5 * time.Second)
			for i := range 300 {
				do(t, c, base, hreq{method: fmt.Sprintf("X%dMETHOD", i), path: "/order/1"})
			}
			for i := range 20 {
				req, err := http.NewRequest(strings.Repeat("M", 100<<10)+strconv.Itoa(i), base+"/", nil)
				if err != nil {
					t.Fatal(err)
				}
				if resp, err := c.Do(req); err == nil {
					resp.Body.Close()
					if resp.StatusCode < 400 || resp.StatusCode >= 500 {
						t.Errorf("100 KB method: %d, want a 4xx", resp.StatusCode)
					}
				}
			}
			for _, q := range []hreq{
				{method: "GET", path: "/" + strings.Repeat("p", 60<<10)},
				{method: "GET", path: "/order/" + strings.Repeat("9", 30<<10)},
				{method: "GET", path: "/", header: map[string]string{"X-Junk": strings.Repeat("h", 2<<20)}},
			} {
				req, err := http.NewRequest(q.method, base+q.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range q.header {
					req.Header.Set(k, v)
				}
				if resp, err := c.Do(req); err == nil {
					resp.Body.Close()
					if resp.StatusCode < 400 || resp.StatusCode >= 500 {
						t.Errorf("GET %.30s… (%d header bytes): %d, want a 4xx", q.path, len(q.header["X-Junk"]), resp.StatusCode)
					}
				}
			}
			end := size()
			t.Logf("/metrics: %d bytes before, %d after", start, end)
			if end > 200<<10 || end > start+8<<10 {
				t.Errorf("/metrics grew from %d to %d bytes: a label takes values from requests", start, end)
			}
		})

		phase(t, "every HTML answer forbids framing and foreign scripts", func(t *testing.T) {
			for _, p := range []string{"/", "/pay/" + pending, "/track/" + paidID, "/partials/stock", "/no-such", "/track/999999"} {
				r := do(t, buyer, base, hreq{method: "GET", path: p, header: map[string]string{"Accept": "text/html"}})
				csp := r.header.Get("Content-Security-Policy")
				if !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") ||
					r.header.Get("X-Frame-Options") != "DENY" || r.header.Get("X-Content-Type-Options") != "nosniff" ||
					r.header.Get("Referrer-Policy") != "same-origin" {
					t.Errorf("GET %s (%d): headers %v", p, r.status, r.header)
				}
				if strings.Contains(r.body, " onclick=") || strings.Contains(r.body, " style=") || strings.Contains(r.body, "<script>") {
					t.Errorf("GET %s: inline script or style, which the CSP would block", p)
				}
			}
		})

		phase(t, "an operator session needs the token; forged or expired ones are nobody's", func(t *testing.T) {
			internals := func(c *http.Client, cookie string) int {
				h := map[string]string{}
				if cookie != "" {
					h["Cookie"] = "operator=" + cookie
				}
				return do(t, c, base, hreq{method: "GET", path: "/partials/internals", header: h}).status
			}
			exp := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
			for _, forged := range []string{"1", exp + ".", exp + "." + strings.Repeat("a", 64), "99999999999." + strings.Repeat("0", 64),
				strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10) + ".00"} {
				if got := internals(noRedirectClient(hostileDeadline), forged); got != http.StatusUnauthorized {
					t.Errorf("internals with forged operator cookie %q: %d, want 401", forged, got)
				}
			}
			op := session(t, "")
			body, hdr := form("admin_token", "guess")
			if r := do(t, op, base, hreq{method: "POST", path: "/admin/login", body: body, header: hdr}); r.status != http.StatusUnauthorized {
				t.Fatalf("login with a wrong token: %d %q, want 401", r.status, r.body)
			}
			if got := internals(op, ""); got != http.StatusUnauthorized {
				t.Fatalf("internals after a failed login: %d, want 401", got)
			}
			body, hdr = form("admin_token", admin)
			if r := do(t, op, base, hreq{method: "POST", path: "/admin/login", body: body, header: hdr}); r.status != http.StatusSeeOther {
				t.Fatalf("login with the token: %d %q, want 303", r.status, r.body)
			}
			if got := internals(op, ""); got != http.StatusOK {
				t.Fatalf("internals for the signed-in operator: %d, want 200", got)
			}
			if page := do(t, op, base, hreq{method: "GET", path: "/"}).body; !strings.Contains(page, `data-testid="internals-stock"`) || !strings.Contains(page, `data-testid="crash"`) {
				t.Fatal("the signed-in operator's store page lacks the internals panel or its buttons")
			}
			do(t, op, base, hreq{method: "POST", path: "/admin/logout"})
			if got := internals(op, ""); got != http.StatusUnauthorized {
				t.Fatalf("internals after signing out: %d, want 401", got)
			}
		})

		phase(t, "the 21st unpaid checkout from one address is 429; another address still buys", func(t *testing.T) {
			hog := session(t, "127.0.0.3")
			other := session(t, "127.0.0.2")
			stock := Inventory(t, base)
			var first string
			for i := range 20 {
				k := NewKey()
				if i == 0 {
					first = k
				}
				if r := do(t, hog, base, hreq{method: "POST", path: "/checkout/" + k}); r.status != http.StatusOK {
					t.Fatalf("checkout %d of 20: %d %q", i+1, r.status, r.body)
				}
			}
			before := attackerSnapshot(t, base, db, admin)
			r := do(t, hog, base, hreq{method: "POST", path: "/checkout/" + NewKey()})
			ra, _ := strconv.Atoi(r.header.Get("Retry-After"))
			if r.status != http.StatusTooManyRequests || ra < 1 || !strings.Contains(r.body, "too many unpaid checkouts") {
				t.Fatalf("21st checkout: %d %q Retry-After %q, want 429 with a message and Retry-After", r.status, r.body, r.header.Get("Retry-After"))
			}
			if r := do(t, hog, base, hreq{method: "POST", path: "/buy", body: strings.NewReader("key=" + NewKey()), header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}); r.status != http.StatusTooManyRequests {
				t.Fatalf("21st hold through the store page: %d %q, want 429", r.status, r.body)
			}
			// A made-up X-Forwarded-For from a peer that is no trusted proxy
			// is ignored: rotating it does not buy a fresh limit. The store
			// says, once, that a proxy it was not told of seems to be there.
			for i := range 3 {
				xff := map[string]string{"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i+1)}
				if r := do(t, hog, base, hreq{method: "POST", path: "/checkout/" + NewKey(), header: xff}); r.status != http.StatusTooManyRequests {
					t.Fatalf("21st checkout with a forged X-Forwarded-For: %d %q, want 429", r.status, r.body)
				}
			}
			if n := strings.Count(log.String(), "TRUSTED_PROXIES does not name"); n != 1 {
				t.Errorf("the untrusted-proxy warning was logged %d times, want once", n)
			}
			if after := attackerSnapshot(t, base, db, admin); after != before {
				t.Errorf("a refused checkout changed the store:\nbefore %+v\nafter  %+v", before, after)
			}
			// A replay of a key it already holds takes nothing new: answered as before.
			if r := do(t, hog, base, hreq{method: "POST", path: "/checkout/" + first}); r.status != http.StatusOK || r.body != first {
				t.Fatalf("replay of a held key: %d %q, want 200 %q", r.status, r.body, first)
			}
			if r := do(t, other, base, hreq{method: "POST", path: "/checkout/" + NewKey()}); r.status != http.StatusOK {
				t.Fatalf("a checkout from 127.0.0.2 while 127.0.0.3 is at its limit: %d %q, want 200", r.status, r.body)
			}
			if got := Inventory(t, base); got != stock-21 {
				t.Fatalf("stock %d, want %d (20 holds and the other address's one)", got, stock-21)
			}
		})

		phase(t, "the buyer's orders ended as the buyer made them, refunds once", func(t *testing.T) {
			orders := map[string]shop.Status{}
			for _, o := range GetPages[Order](t, base+"/orders?limit=1000", http.Header{"Authorization": {"Bearer " + admin}}) {
				orders[strconv.FormatInt(o.OrderID, 10)] = o.OrderStatus
			}
			if s := orders[declinedID]; s != shop.StatusCancelled {
				t.Errorf("declined order %s: %v, want CANCELLED", declinedID, s)
			}
			for _, id := range []string{paidID, pendingID} {
				if s := orders[id]; s != shop.StatusPaid && s != shop.StatusDispatched {
					t.Errorf("paid order %s: %v, want PAID or DISPATCHED", id, s)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for ctx.Err() == nil {
				var n int
				query(t, db, `SELECT count(*) FROM provider_refunds`, func(scan func(...any) error) error { return scan(&n) })
				if n == 1 {
					return
				}
				if n > 1 {
					t.Fatalf("%d refunds at the provider, want exactly 1 (the signed late payment)", n)
				}
				time.Sleep(100 * time.Millisecond) // the refund workflow calls the provider
			}
			t.Fatal("the signed late payment was not refunded within 30 s")
		})
	})
}
