package web

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"widget-store/internal/shop"
)

// TestMayHavePayURL is the rule for a provider's pay URL (Stripe's Checkout
// Session), caller by caller: a browser-bought order's goes to its own
// session and the operator; an API-bought order's to whoever presents the
// key; in demo mode everyone is the operator.
func TestMayHavePayURL(t *testing.T) {
	const token, mine, theirs = "admin-token", "s-0123456789abcdef", "s-fedcba9876543210"
	now := time.Unix(1767225600, 0)
	hardened := access{adminToken: token, now: func() time.Time { return now }}
	req := func(shopper, bearer, operatorSession string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/checkout/k-0123456789abcdef", nil)
		if shopper != "" {
			r.AddCookie(&http.Cookie{Name: shopperCookie, Value: shopper})
		}
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		if operatorSession != "" {
			r.AddCookie(&http.Cookie{Name: operatorCookie, Value: operatorSession})
		}
		return r
	}
	browser, api := shop.Order{Shopper: mine}, shop.Order{}
	signedIn := hardened.sessionValue(now.Add(time.Hour))
	for _, c := range []struct {
		name string
		a    access
		r    *http.Request
		o    shop.Order
		want bool
		// given is the session a Buy just gave a browser that came without
		// a cookie ("": the request's own, sessionOf).
		given string
	}{
		{"browser order, its own session", hardened, req(mine, "", ""), browser, true, ""},
		{"browser order, another session", hardened, req(theirs, "", ""), browser, false, ""},
		{"browser order, no session", hardened, req("", "", ""), browser, false, ""},
		{"browser order, a wrong token", hardened, req("", "not-the-token", ""), browser, false, ""},
		{"browser order, the operator's token", hardened, req("", token, ""), browser, true, ""},
		{"browser order, the operator signed in", hardened, req(theirs, "", signedIn), browser, true, ""},
		{"browser order, an expired operator session", hardened, req("", "", hardened.sessionValue(now.Add(-time.Second))), browser, false, ""},
		{"API order, no session", hardened, req("", "", ""), api, true, ""},
		{"API order, some browser's session", hardened, req(theirs, "", ""), api, true, ""},
		{"browser order, the session a Buy just gave it (no cookie in the request)", hardened, req("", "", ""), browser, true, mine},
		{"browser order, a fresh session a stranger's Buy was given", hardened, req("", "", ""), browser, false, theirs},
		{"demo mode, browser order, no session", access{now: func() time.Time { return now }}, req("", "", ""), browser, true, ""},
	} {
		session := sessionOf(c.r)
		if c.given != "" {
			session = c.given
		}
		if got := c.a.mayHavePayURL(c.r, session, c.o); got != c.want {
			t.Errorf("%s: mayHavePayURL = %v, want %v", c.name, got, c.want)
		}
	}
}
