package storetest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
	"widget-store/internal/web"
)

// Who is handed a Stripe Checkout Session's URL (access.mayHavePayURL). The
// URL is where the order is paid: whoever has it sees the order's lines and
// total and can pay it. With ADMIN_TOKEN set, a browser-bought order's URL
// goes to its own browser session and the operator only, wherever the store
// hands it out (POST /checkout/{key} as JSON, /buy, GET /pay/{key}); an
// API-bought order's goes to whoever presents its key at POST
// /checkout/{key}, its buyer.

// stripeSessionURL is the prefix of every Checkout Session URL stripe-mock
// answers.
const stripeSessionURL = "https://checkout.stripe.com/"

// payURLOf is the pay_url of POST /checkout/{key} (JSON) in client c with
// extra headers, or "" with the status when the answer is not a 200.
func payURLOf(t *testing.T, c *http.Client, base, key string, extra map[string]string) (string, hresp) {
	t.Helper()
	r := do(t, c, base, hreq{method: http.MethodPost, path: "/checkout/" + key, header: withHeader(extra, "Accept", "application/json")})
	if r.status != http.StatusOK {
		return "", r
	}
	var got struct {
		PaymentID string `json:"payment_id"`
		PayURL    string `json:"pay_url"`
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil || got.PaymentID != key {
		t.Fatalf("POST /checkout/%s (JSON): %q, want payment_id and pay_url", key, r.body)
	}
	return got.PayURL, r
}

// TestStripePayURLAccess: in hardened mode a stranger who knows a browser
// buyer's key learns nothing of its Stripe session from any route (the JSON
// checkout, /buy, the pay page, the order's pages and JSON, the operator's
// routes) and changes nothing; the buyer's session and the operator still
// get the session; an API-bought key's session goes to whoever presents the
// key at the API, and its pay page keeps the stand-in's rule (a signed pay
// link or the operator).
func TestStripePayURLAccess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock and the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		const admin, secret = "payurl-admin-token", "payurl-webhook-secret"
		st := startStripeStore(t, db, Options{Env: []string{"ADMIN_TOKEN=" + admin, "PAYMENT_WEBHOOK_SECRET=" + secret, "PAYMENT_TIMEOUT=300s"}})
		base := st.Base()
		adminHdr := map[string]string{"Authorization": "Bearer " + admin}
		buyer := session(t, "")
		do(t, buyer, base, hreq{method: http.MethodGet, path: "/"}) // the shopper cookie
		key := NewKey()
		var sessionURL, orderID string

		phase(t, "the buyer's Buy goes to the order's Stripe session", func(t *testing.T) {
			body, hdr := form("key", key)
			r := do(t, buyer, base, hreq{method: http.MethodPost, path: "/buy", body: body, header: hdr})
			sessionURL = r.header.Get("Location")
			if r.status != http.StatusSeeOther || !strings.HasPrefix(sessionURL, stripeSessionURL) {
				t.Fatalf("POST /buy: %d, Location %q; want 303 to the session", r.status, sessionURL)
			}
			orderID = st.orderOf(t, key)
		})

		stranger := session(t, "")
		do(t, stranger, base, hreq{method: http.MethodGet, path: "/"}) // a session of its own
		clients := map[string]*http.Client{"a stranger's session": stranger, "no session": noRedirectClient(30 * time.Second)}

		phase(t, "a stranger with the key gets nothing of the session, and changes nothing", func(t *testing.T) {
			before := snapshot(t, base, db, admin)
			requests0 := len(st.mock.Requests())
			leaks := func(what string, r hresp) {
				t.Helper()
				if strings.Contains(r.body, stripeSessionURL) || strings.Contains(r.header.Get("Location"), stripeSessionURL) || r.header.Get("X-Store-Go-To") != "" {
					t.Errorf("%s: %d, Location %q, body %.300q: hands a stranger the order's Stripe session", what, r.status, r.header.Get("Location"), r.body)
				}
				if r.status >= 500 {
					t.Errorf("%s: %d %.300q", what, r.status, r.body)
				}
			}
			for name, c := range clients {
				// The JSON checkout: refused as the pay page refuses it, 404.
				_, r := payURLOf(t, c, base, key, nil)
				leaks(name+": POST /checkout (JSON)", r)
				if r.status != http.StatusNotFound {
					t.Errorf("%s: POST /checkout/%s (JSON): %d %.200q, want 404", name, key, r.status, r.body)
				}
				// The text checkout answers the key the caller sent, as the stand-in's does.
				r = do(t, c, base, hreq{method: http.MethodPost, path: "/checkout/" + key})
				leaks(name+": POST /checkout (text)", r)
				if r.status != http.StatusOK || r.body != key {
					t.Errorf("%s: POST /checkout/%s (text): %d %.200q, want 200 and the key", name, key, r.status, r.body)
				}
				// Buy with the key: the stand-in's answer, to the pay page, which refuses.
				body, hdr := form("key", key)
				r = do(t, c, base, hreq{method: http.MethodPost, path: "/buy", body: body, header: hdr})
				leaks(name+": POST /buy", r)
				if r.status != http.StatusSeeOther || r.header.Get("Location") != "/pay/"+key {
					t.Errorf("%s: POST /buy %s: %d to %q, want 303 to /pay/%s", name, key, r.status, r.header.Get("Location"), key)
				}
				// The same post as the store page's script makes it.
				body, hdr = form("key", key)
				r = do(t, c, base, hreq{method: http.MethodPost, path: "/buy", body: body, header: withHeader(hdr, "X-Store-Script", "1")})
				leaks(name+": POST /buy (script)", r)
				if r.status != http.StatusSeeOther || r.header.Get("Location") != "/pay/"+key {
					t.Errorf("%s: POST /buy %s (script): %d to %q, want 303 to /pay/%s", name, key, r.status, r.header.Get("Location"), key)
				}
				for _, p := range []string{"/pay/" + key, "/pay/" + key + "?sig=" + web.PayLinkSignature("not-the-secret", key),
					"/track/" + orderID, "/partials/track/" + orderID, "/partials/timeline/" + orderID, "/order/" + orderID} {
					r := do(t, c, base, hreq{method: http.MethodGet, path: p})
					leaks(name+": GET "+p, r)
					if r.status != http.StatusNotFound {
						t.Errorf("%s: GET %s: %d, want 404", name, p, r.status)
					}
				}
				for _, p := range []string{"/orders", "/late_payments", "/admin/attention", "/partials/internals", "/partials/internals/timeline?order=" + orderID} {
					r := do(t, c, base, hreq{method: http.MethodGet, path: p})
					leaks(name+": GET "+p, r)
					if r.status != http.StatusUnauthorized {
						t.Errorf("%s: GET %s: %d, want 401", name, p, r.status)
					}
				}
			}
			if after := snapshot(t, base, db, admin); after != before {
				t.Errorf("the store changed:\nbefore %+v\nafter  %+v", before, after)
			}
			if n := len(st.mock.Requests()); n != requests0 {
				t.Errorf("Stripe was asked %d more times, want none: %+v", n-requests0, st.mock.Requests()[requests0:])
			}
		})

		phase(t, "a stranger's replay of a cancelled order's key gets the same answers", func(t *testing.T) {
			k := NewKey()
			body, hdr := form("key", k)
			if r := do(t, buyer, base, hreq{method: http.MethodPost, path: "/buy", body: body, header: hdr}); r.status != http.StatusSeeOther {
				t.Fatalf("POST /buy: %d %q", r.status, r.body)
			}
			id := st.orderOf(t, k)
			st.mustSend(t, event(stripetest.SessionExpired, k))
			WaitUntil(t, 30*time.Second, "the expired order cancelled", func() bool {
				var o Order
				r := do(t, buyer, base, hreq{method: http.MethodGet, path: "/order/" + id})
				return r.status == http.StatusOK && json.Unmarshal([]byte(r.body), &o) == nil && o.OrderStatus == shop.StatusCancelled
			})
			for name, c := range clients {
				if _, r := payURLOf(t, c, base, k, nil); r.status != http.StatusNotFound || strings.Contains(r.body, id) || strings.Contains(strings.ToLower(r.body), "cancel") {
					t.Errorf("%s: POST /checkout/%s (JSON) of a cancelled order: %d %.200q, want the same 404", name, k, r.status, r.body)
				}
				if r := do(t, c, base, hreq{method: http.MethodPost, path: "/checkout/" + k}); r.status != http.StatusOK || r.body != k {
					t.Errorf("%s: POST /checkout/%s (text) of a cancelled order: %d %.200q, want 200 and the key, as for any other", name, k, r.status, r.body)
				}
			}
		})

		phase(t, "the buyer's session and the operator still get the session", func(t *testing.T) {
			if got, r := payURLOf(t, buyer, base, key, nil); got != sessionURL {
				t.Errorf("the buyer's POST /checkout (JSON): %d %q, want pay_url %s", r.status, r.body, sessionURL)
			}
			if r := do(t, buyer, base, hreq{method: http.MethodGet, path: "/pay/" + key}); r.status != http.StatusSeeOther || r.header.Get("Location") != sessionURL {
				t.Errorf("the buyer's GET /pay: %d to %q, want 303 to %s", r.status, r.header.Get("Location"), sessionURL)
			}
			body, hdr := form("key", key)
			if r := do(t, buyer, base, hreq{method: http.MethodPost, path: "/buy", body: body, header: hdr}); r.status != http.StatusSeeOther || r.header.Get("Location") != sessionURL {
				t.Errorf("the buyer's Buy again: %d to %q, want 303 to %s", r.status, r.header.Get("Location"), sessionURL)
			}
			body, hdr = form("key", key)
			if r := do(t, buyer, base, hreq{method: http.MethodPost, path: "/buy", body: body, header: withHeader(hdr, "X-Store-Script", "1")}); r.status != http.StatusOK || r.header.Get("X-Store-Go-To") != sessionURL {
				t.Errorf("the buyer's Buy again from the page's script: %d, X-Store-Go-To %q, want 200 and %s", r.status, r.header.Get("X-Store-Go-To"), sessionURL)
			}
			op := noRedirectClient(30 * time.Second)
			if got, r := payURLOf(t, op, base, key, adminHdr); got != sessionURL {
				t.Errorf("the operator's POST /checkout (JSON): %d %q, want pay_url %s", r.status, r.body, sessionURL)
			}
			if r := do(t, op, base, hreq{method: http.MethodGet, path: "/pay/" + key, header: adminHdr}); r.status != http.StatusSeeOther || r.header.Get("Location") != sessionURL {
				t.Errorf("the operator's GET /pay: %d to %q, want 303 to %s", r.status, r.header.Get("Location"), sessionURL)
			}
			// The operator signed in in a browser (the operator session cookie).
			opBrowser := session(t, "")
			body, hdr = form("admin_token", admin)
			if r := do(t, opBrowser, base, hreq{method: http.MethodPost, path: "/admin/login", body: body, header: hdr}); r.status != http.StatusSeeOther {
				t.Fatalf("operator sign-in: %d %q", r.status, r.body)
			}
			body, hdr = form("key", key)
			if r := do(t, opBrowser, base, hreq{method: http.MethodPost, path: "/buy", body: body, header: hdr}); r.status != http.StatusSeeOther || r.header.Get("Location") != sessionURL {
				t.Errorf("the signed-in operator's Buy with the key: %d to %q, want 303 to %s", r.status, r.header.Get("Location"), sessionURL)
			}
			if n := len(st.mock.SessionCreates()[key]); n != 1 {
				t.Errorf("%d session creates for %s, want 1", n, key)
			}
			if r := do(t, op, base, hreq{method: http.MethodGet, path: "/order/" + orderID, header: adminHdr}); r.status != http.StatusOK || !strings.Contains(r.body, `"status":"PENDING"`) {
				t.Errorf("order %s: %d %.200q, want PENDING", orderID, r.status, r.body)
			}
		})

		phase(t, "a browser whose Buy is its first request (no cookie yet) goes to its session", func(t *testing.T) {
			for _, script := range []bool{false, true} {
				fresh := session(t, "")
				k := NewKey()
				body, hdr := form("key", k)
				if script {
					hdr = withHeader(hdr, "X-Store-Script", "1")
				}
				r := do(t, fresh, base, hreq{method: http.MethodPost, path: "/buy", body: body, header: hdr})
				to := r.header.Get("Location")
				if script {
					to = r.header.Get("X-Store-Go-To")
				}
				if !strings.HasPrefix(to, stripeSessionURL) {
					t.Errorf("a first Buy (script %v): %d, Location %q, X-Store-Go-To %q; want the session", script, r.status, r.header.Get("Location"), r.header.Get("X-Store-Go-To"))
				}
				if got, r := payURLOf(t, fresh, base, k, nil); !strings.HasPrefix(got, stripeSessionURL) {
					t.Errorf("that browser's JSON checkout of its key: %d %q, want the session (its cookie was set)", r.status, r.body)
				}
			}
		})

		phase(t, "an API-bought key's session goes to whoever presents the key; its pay page keeps the stand-in's rule", func(t *testing.T) {
			apiKey := NewKey()
			first, r := payURLOf(t, noRedirectClient(30*time.Second), base, apiKey, nil)
			if !strings.HasPrefix(first, stripeSessionURL) {
				t.Fatalf("API checkout: %d %q, want a session URL", r.status, r.body)
			}
			for name, c := range clients {
				if got, r := payURLOf(t, c, base, apiKey, nil); got != first {
					t.Errorf("%s: replay of the API key: %d %q, want pay_url %s", name, r.status, r.body, first)
				}
				if r := do(t, c, base, hreq{method: http.MethodGet, path: "/pay/" + apiKey}); r.status != http.StatusNotFound || strings.Contains(r.header.Get("Location"), stripeSessionURL) {
					t.Errorf("%s: GET /pay/%s without a signed link: %d to %q, want 404 (the stand-in's rule)", name, apiKey, r.status, r.header.Get("Location"))
				}
				signed := "/pay/" + apiKey + "?sig=" + web.PayLinkSignature(secret, apiKey)
				if r := do(t, c, base, hreq{method: http.MethodGet, path: signed}); r.status != http.StatusSeeOther || r.header.Get("Location") != first {
					t.Errorf("%s: the signed pay link: %d to %q, want 303 to %s", name, r.status, r.header.Get("Location"), first)
				}
			}
			if n := len(st.mock.SessionCreates()[apiKey]); n != 1 {
				t.Errorf("%d session creates for %s, want 1", n, apiKey)
			}
		})
	})
}
