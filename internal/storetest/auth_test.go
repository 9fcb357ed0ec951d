package storetest

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/web"
)

// Webhook signatures, the admin token, safe methods and cross-site posts.
// Calls are signed with web.SignWebhook, the scheme the store verifies;
// internal/web pins that scheme to an independently computed vector.

func signedHeader(secret, method, path string, at time.Time) map[string]string {
	ts := strconv.FormatInt(at.Unix(), 10)
	return map[string]string{web.WebhookTimestampHeader: ts, web.WebhookSignatureHeader: web.SignWebhook(secret, ts, method, path)}
}

func TestWebhookSignatures(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		const secret = "whsec-test-secret"
		base := Start(t, db, "PAYMENT_WEBHOOK_SECRET="+secret).Base()
		pid := MustCall(t, "POST", base+"/checkout/"+NewKey(), http.StatusOK)
		paid := "/payment_webhook/" + pid + "/paid"
		now := time.Now()
		good := signedHeader(secret, "POST", paid, now)

		cases := []struct {
			name   string
			header map[string]string
			want   string // substring of the 401's message
		}{
			{"unsigned", nil, "must be signed"},
			{"timestamp only", map[string]string{web.WebhookTimestampHeader: good[web.WebhookTimestampHeader]}, "must be signed"},
			{"signature only", map[string]string{web.WebhookSignatureHeader: good[web.WebhookSignatureHeader]}, "must be signed"},
			{"forged: another secret", signedHeader("not-the-secret", "POST", paid, now), "does not match"},
			{"forged: signed for failed", signedHeader(secret, "POST", "/payment_webhook/"+pid+"/failed", now), "does not match"},
			{"forged: signed for another payment", signedHeader(secret, "POST", "/payment_webhook/other/paid", now), "does not match"},
			{"forged: timestamp changed", withHeader(good, web.WebhookTimestampHeader, strconv.FormatInt(now.Unix()+1, 10)), "does not match"},
			{"forged: bit flipped", withHeader(good, web.WebhookSignatureHeader, flipLastHex(good[web.WebhookSignatureHeader])), "does not match"},
			{"stale: 6 min old", signedHeader(secret, "POST", paid, now.Add(-6*time.Minute)), "possible replay"},
			{"future: 6 min ahead", signedHeader(secret, "POST", paid, now.Add(6*time.Minute)), "possible replay"},
			{"timestamp not a number", withHeader(good, web.WebhookTimestampHeader, "yesterday"), "Unix seconds"},
			{"signature without sha256=", withHeader(good, web.WebhookSignatureHeader, strings.TrimPrefix(good[web.WebhookSignatureHeader], "sha256=")), "sha256= followed by"},
			{"signature not hex", withHeader(good, web.WebhookSignatureHeader, "sha256=zz"), "sha256= followed by"},
			{"empty signature", withHeader(good, web.WebhookSignatureHeader, "sha256="), "does not match"},
		}
		c := noRedirectClient(hostileDeadline)
		before := snapshot(t, base, db, "")
		phase(t, "unsigned, forged, stale and malformed: 401, nothing changed", func(t *testing.T) {
			var lat caseLatencies
			for _, tc := range cases {
				r := do(t, c, base, hreq{method: "POST", path: paid, header: tc.header})
				lat.add(tc.name, r)
				if r.status != http.StatusUnauthorized || !strings.Contains(r.body, tc.want) {
					t.Errorf("%s: %d %q, want 401 mentioning %q", tc.name, r.status, r.body, tc.want)
				}
			}
			// Unauthenticated calls learn nothing: an unknown payment or a bad
			// status is a 401 too, not a 404 or 400.
			for _, p := range []string{"/payment_webhook/no-such-payment/paid", "/payment_webhook/" + pid + "/bogus"} {
				if r := do(t, c, base, hreq{method: "POST", path: p}); r.status != http.StatusUnauthorized {
					t.Errorf("unsigned %s: %d %q, want 401", p, r.status, r.body)
				}
			}
			assertUnchanged(t, "refused webhooks", before, snapshot(t, base, db, ""))
			lat.log(t)
		})

		phase(t, "signed calls are still validated", func(t *testing.T) {
			for _, tc := range []struct {
				path string
				want int
			}{
				{"/payment_webhook/no-such-payment/paid", http.StatusNotFound},
				{"/payment_webhook/" + pid + "/bogus", http.StatusBadRequest},
			} {
				if r := do(t, c, base, hreq{method: "POST", path: tc.path, header: signedHeader(secret, "POST", tc.path, time.Now())}); r.status != tc.want {
					t.Errorf("signed %s: %d %q, want %d", tc.path, r.status, r.body, tc.want)
				}
			}
			assertUnchanged(t, "signed but invalid webhooks", before, snapshot(t, base, db, ""))
		})

		phase(t, "a signed paid works, and its replay in the window is harmless", func(t *testing.T) {
			r := do(t, c, base, hreq{method: "POST", path: paid, header: good})
			if r.status != http.StatusOK {
				t.Fatalf("signed paid: %d %q, want 200", r.status, r.body)
			}
			if o := GetJSON[Order](t, base+"/order/"+r.body); o.OrderStatus != shop.StatusPaid && o.OrderStatus != shop.StatusDispatched {
				t.Fatalf("order after a signed paid: %+v, want PAID", o)
			}
			if again := do(t, c, base, hreq{method: "POST", path: paid, header: good}); again.status != http.StatusOK || again.body != r.body {
				t.Fatalf("replayed signed paid: %d %q, want 200 %q", again.status, again.body, r.body)
			}
		})

		phase(t, "the store's own payment page needs no signature", func(t *testing.T) {
			// It applies the status in-process, not through the webhook.
			key := NewKey()
			MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
			body, hdr := form("status", "paid")
			if r := do(t, c, base, hreq{method: "POST", path: "/pay/" + key, body: body, header: hdr}); r.status != http.StatusSeeOther {
				t.Fatalf("payment page with a webhook secret set: %d %q, want 303 to the order", r.status, r.body)
			}
			page := MustCall(t, "GET", base+"/pay/"+newPendingKey(t, base), http.StatusOK)
			if strings.Contains(page, `data-testid="unsigned-webhooks"`) {
				t.Error("payment page says webhooks are unsigned while PAYMENT_WEBHOOK_SECRET is set")
			}
		})
	})
}

// newPendingKey starts a checkout and returns its key.
func newPendingKey(t *testing.T, base string) string {
	t.Helper()
	key := NewKey()
	MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
	return key
}

func flipLastHex(sig string) string {
	last := sig[len(sig)-1]
	flipped := byte('0')
	if last == '0' {
		flipped = '1'
	}
	return sig[:len(sig)-1] + string(flipped)
}

func TestUnsignedWebhooksInDemoMode(t *testing.T) {
	base := Start(t, NewSQLiteDB(t)).Base()
	key := newPendingKey(t, base)
	if page := MustCall(t, "GET", base+"/pay/"+key, http.StatusOK); !strings.Contains(page, `data-testid="unsigned-webhooks"`) {
		t.Error("payment page does not say that webhook signatures are off")
	}
	MustCall(t, "POST", base+"/payment_webhook/"+key+"/paid", http.StatusOK)
}

func TestAdminToken(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		const token = "admin-test-token"
		base := Start(t, db, "ADMIN_TOKEN="+token).Base()
		// A visitor's page has no token to send: it shows no operator buttons
		// and no internals panel (every order is the operator's to see); the
		// operator's (the token, or a signed-in session: attacker_test.go)
		// has both.
		page := MustCall(t, "GET", base+"/", http.StatusOK)
		if strings.Contains(page, `data-testid="crash"`) || strings.Contains(page, `data-testid="internals-stock"`) {
			t.Errorf("with ADMIN_TOKEN set a visitor's store page should have no operator buttons and no internals panel")
		}
		if r := do(t, noRedirectClient(hostileDeadline), base, hreq{method: "GET", path: "/", header: map[string]string{"X-Admin-Token": token}}); !strings.Contains(r.body, `data-testid="crash"`) ||
			!strings.Contains(r.body, `data-testid="internals-stock"`) {
			t.Errorf("with ADMIN_TOKEN set the operator's store page should show the internals and its buttons")
		}
		c := noRedirectClient(hostileDeadline)
		formHdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		refused := []struct {
			name string
			req  hreq
			want string
		}{
			{"restock, no token", hreq{method: "POST", path: "/restock?inventory=7"}, "needs the admin token"},
			{"restock, wrong X-Admin-Token", hreq{method: "POST", path: "/restock?inventory=7", header: map[string]string{"X-Admin-Token": "guess"}}, "wrong admin token"},
			{"restock, wrong bearer", hreq{method: "POST", path: "/restock?inventory=7", header: map[string]string{"Authorization": "Bearer guess"}}, "wrong admin token"},
			{"restock, token prefix", hreq{method: "POST", path: "/restock?inventory=7", header: map[string]string{"X-Admin-Token": token[:len(token)-1]}}, "wrong admin token"},
			{"restock, token plus suffix", hreq{method: "POST", path: "/restock?inventory=7", header: map[string]string{"X-Admin-Token": token + "x"}}, "wrong admin token"},
			{"restock, basic auth", hreq{method: "POST", path: "/restock?inventory=7", header: map[string]string{"Authorization": "Basic " + token}}, "needs the admin token"},
			{"restock, token in query", hreq{method: "POST", path: "/restock?inventory=7&admin_token=" + token}, "needs the admin token"},
			{"restock, wrong token in form", hreq{method: "POST", path: "/restock", body: strings.NewReader("inventory=7&admin_token=guess"), header: formHdr}, "wrong admin token"},
			{"crash, no token", hreq{method: "POST", path: "/crash_application"}, "needs the admin token"},
			{"crash, wrong token", hreq{method: "POST", path: "/crash_application", header: map[string]string{"Authorization": "Bearer guess"}}, "wrong admin token"},
			{"late payments, no token", hreq{method: "GET", path: "/late_payments"}, "needs the admin token"},
			{"late payments, wrong token", hreq{method: "GET", path: "/late_payments", header: map[string]string{"X-Admin-Token": "guess"}}, "wrong admin token"},
		}
		before := snapshot(t, base, db, token)
		for _, tc := range refused {
			r := do(t, c, base, tc.req)
			if r.status != http.StatusUnauthorized || !strings.Contains(r.body, tc.want) {
				t.Errorf("%s: %d %q, want 401 mentioning %q", tc.name, r.status, r.body, tc.want)
			}
		}
		assertUnchanged(t, "refused admin calls", before, snapshot(t, base, db, token))
		WaitHealthy(t, base, time.Second) // still alive: no crash went through

		accepted := []struct {
			name string
			req  hreq
			want int
		}{
			{"bearer", hreq{method: "POST", path: "/restock?inventory=7", header: map[string]string{"Authorization": "Bearer " + token}}, 7},
			{"lower-case bearer", hreq{method: "POST", path: "/restock?inventory=8", header: map[string]string{"Authorization": "bearer " + token}}, 8},
			{"X-Admin-Token", hreq{method: "POST", path: "/restock?inventory=9", header: map[string]string{"X-Admin-Token": token}}, 9},
			{"form field", hreq{method: "POST", path: "/restock", body: strings.NewReader(url.Values{"inventory": {"10"}, "admin_token": {token}}.Encode()), header: formHdr}, 10},
		}
		for _, tc := range accepted {
			r := do(t, c, base, tc.req)
			if r.status != http.StatusOK {
				t.Errorf("restock with %s: %d %q, want 200", tc.name, r.status, r.body)
				continue
			}
			if got := Inventory(t, base); got != tc.want {
				t.Errorf("restock with %s: inventory %d, want %d", tc.name, got, tc.want)
			}
		}
		if r := do(t, c, base, hreq{method: "GET", path: "/late_payments", header: map[string]string{"X-Admin-Token": token}}); r.status != http.StatusOK {
			t.Errorf("late payments with the token: %d %q", r.status, r.body)
		}
	})
}

// TestSafeMethodsChangeNothing: GET and HEAD on every route leave the store
// exactly as it was (no order, no workflow, no restock, no crash).
func TestSafeMethodsChangeNothing(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := Start(t, db).Base() // demo mode: crash and restock open to POST
		key := newPendingKey(t, base)
		declined := newPendingKey(t, base)
		MustCall(t, "POST", base+"/payment_webhook/"+declined+"/failed", http.StatusOK)
		MustCall(t, "POST", base+"/payment_webhook/"+declined+"/paid", http.StatusConflict) // a late payment row
		paths := []string{
			"/healthz", "/product", "/orders", "/order/1", "/checkout/" + NewKey(), "/checkout/" + key,
			"/payment_webhook/" + key + "/paid", "/payment_webhook/" + key + "/failed", "/restock", "/restock?inventory=3",
			"/crash_application", "/late_payments", "/", "/buy", "/buy?key=" + NewKey(), "/pay/" + key, "/pay/" + key + "?status=failed",
			"/pay/" + NewKey(), "/track/1", "/partials/stock", "/partials/my-orders", "/partials/internals", "/partials/track/1",
			"/static/app.css", "/static/",
		}
		c := noRedirectClient(hostileDeadline)
		before := snapshot(t, base, db, "")
		for _, p := range paths {
			for _, m := range []string{"GET", "HEAD"} {
				r := do(t, c, base, hreq{method: m, path: p})
				if r.status >= 500 {
					t.Errorf("%s %s: %d %q", m, p, r.status, r.body)
				}
				WaitHealthy(t, base, time.Second)
			}
		}
		assertUnchanged(t, "GET/HEAD on every route", before, snapshot(t, base, db, ""))
	})
}

// TestCrossSitePostsRefused: a browser form post from another site (as
// told by Sec-Fetch-Site or Origin) is refused with 403 and changes nothing;
// the same post from the store's own pages works.
func TestCrossSitePostsRefused(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := Start(t, db).Base()
		key := newPendingKey(t, base)
		formHdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		posts := []struct {
			name, path, body string
			want             int // when same-origin
		}{
			{"buy", "/buy", "key=" + NewKey(), http.StatusSeeOther},
			{"restock", "/restock", "inventory=42", http.StatusOK},
			{"pay", "/pay/" + key, "status=paid", http.StatusSeeOther},
		}
		foreign := []map[string]string{
			withHeader(formHdr, "Sec-Fetch-Site", "cross-site"),
			withHeader(formHdr, "Sec-Fetch-Site", "same-site"), // a sibling subdomain is another origin too
			withHeader(formHdr, "Origin", "https://evil.example"),
			withHeader(formHdr, "Origin", "null"),
		}
		c := noRedirectClient(hostileDeadline)
		before := snapshot(t, base, db, "")
		for _, p := range posts {
			for _, h := range foreign {
				r := do(t, c, base, hreq{method: "POST", path: p.path, body: strings.NewReader(p.body), header: h})
				if r.status != http.StatusForbidden || !strings.Contains(r.body, "cross-origin") {
					t.Errorf("%s with %v: %d %q, want 403 cross-origin", p.name, h, r.status, r.body)
				}
			}
		}
		assertUnchanged(t, "cross-site posts", before, snapshot(t, base, db, ""))

		own := []map[string]string{
			withHeader(formHdr, "Sec-Fetch-Site", "same-origin"),
			withHeader(formHdr, "Origin", base),
		}
		for i, h := range own {
			for _, p := range posts {
				body := p.body
				if p.name == "buy" {
					body = "key=" + NewKey()
				}
				r := do(t, c, base, hreq{method: "POST", path: p.path, body: strings.NewReader(body), header: h})
				want := p.want
				if p.name == "pay" && i > 0 {
					want = http.StatusSeeOther // paid again: a replay, same redirect
				}
				if r.status != want {
					t.Errorf("same-origin %s with %v: %d %q, want %d", p.name, h, r.status, r.body, want)
				}
			}
		}
		if got := Inventory(t, base); got != 42 { // the last same-origin restock set it
			t.Errorf("inventory %d, want 42", got)
		}
		if n := len(Orders(t, base)); n != 3 {
			t.Errorf("%d orders, want 3 (the first checkout and two same-origin buys)", n)
		}
	})
}
