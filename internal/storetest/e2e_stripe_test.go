package storetest

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"widget-store/internal/loadgen"
	"widget-store/internal/stripetest"
)

// stripeHost is where Checkout Session URLs point; the test's browser never
// reaches it (the tests are offline, and send traffic to 127.0.0.1 only).
const stripeHost = "checkout.stripe.com"

// stubStripe makes the tab answer every request to checkout.stripe.com
// itself, before it leaves the browser (Fetch interception at the request
// stage: no DNS lookup, no connection): a page navigation gets a small page
// that stands for Stripe's checkout, anything else (the favicon) a 404. It
// returns the navigations the browser attempted to checkout.stripe.com, in
// order, as "METHOD URL".
func (p *browserPage) stubStripe() (navigations func() []string) {
	p.t.Helper()
	var mu sync.Mutex
	var navs []string
	events := chromedp.Events(p.ctx, fetch.RequestPaused) // subscribed from here on
	p.do("intercept "+stripeHost, func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "https://" + stripeHost + "/*"}}})
		return chromedp.Void{}, err
	})
	go func() {
		for ev, err := range events {
			if err != nil {
				return // the tab closed: the test is over
			}
			answer := fetch.FulfillRequestParams{RequestID: ev.RequestID, ResponseCode: 404}
			if ev.ResourceType == network.ResourceTypeDocument {
				mu.Lock()
				navs = append(navs, ev.Request.Method+" "+ev.Request.URL)
				mu.Unlock()
				answer = fetch.FulfillRequestParams{RequestID: ev.RequestID, ResponseCode: 200,
					ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "text/html; charset=utf-8"}},
					Body:            []byte(`<!doctype html><title>Stripe Checkout (stub)</title><h1 data-testid="stripe-stub">Pay at Stripe</h1>`)}
			}
			// An error here means the tab is gone; the test's own waits report it.
			_, _ = chromedp.Run(p.ctx, func(ctx context.Context, t *chromedp.Target) (cdp.Empty, error) {
				return cdp.Call(ctx, t, fetch.FulfillRequest, answer)
			})
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), navs...)
	}
}

// TestBrowserStripeCheckout is a purchase through Stripe in a real browser,
// in a store run in public (ADMIN_TOKEN set), on both databases: Buy sends
// the browser to the Checkout Session's URL that stripe-mock returned (the
// navigation the browser attempted, caught before it leaves the machine);
// once Stripe's signed completed event arrives, the session's success URL,
// /track/<id>, opened from the Stripe page as Stripe's redirect would, shows
// the buyer the paid order (the shopper cookie goes along on the way back).
func TestBrowserStripeCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock, the store and a browser")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := startStripeStore(t, db, Options{Env: []string{"ADMIN_TOKEN=stripe-browser-admin", "PAYMENT_TIMEOUT=300s"}})
		p := newBrowser(t, st.Base())
		navigations := p.stubStripe()
		var key, sessionURL, successURL, orderID string

		p.phase(t, "Buy with Stripe sends the browser to the session stripe-mock returned", func(t *testing.T) {
			p.open("/")
			p.waitFor("the Buy button", `!!document.querySelector('[data-testid=buy]:not([disabled])')`, 10*time.Second)
			p.click("buy")
			p.waitFor("the Stripe page", `location.host === "`+stripeHost+`" && !!document.querySelector("[data-testid=stripe-stub]")`, 30*time.Second)
			creates := st.mock.SessionCreates()
			if len(creates) != 1 {
				t.Fatalf("session creates: %+v, want one", creates)
			}
			for k, c := range creates {
				key, successURL, orderID = k, c[0].Form.Get("success_url"), c[0].Form.Get("metadata[order_id]")
			}
			query(t, db, `SELECT pay_url FROM payment_sessions WHERE checkout_key = '`+key+`'`, func(scan func(...any) error) error { return scan(&sessionURL) })
			if !strings.HasPrefix(sessionURL, "https://"+stripeHost+"/") {
				t.Fatalf("recorded session URL %q", sessionURL)
			}
			if navs := navigations(); len(navs) != 1 || navs[0] != "GET "+sessionURL {
				t.Fatalf("the browser's navigations to %s: %q; want one, GET %s", stripeHost, navs, sessionURL)
			}
			if got := eval[string](p, `location.href`); got != sessionURL {
				t.Fatalf("the browser is at %q, want the session %s", got, sessionURL)
			}
			if successURL != st.URL("/track/"+orderID) {
				t.Fatalf("success_url %q, want %s", successURL, st.URL("/track/"+orderID))
			}
		})

		p.phase(t, "paid at Stripe: its success URL shows the buyer the paid order", func(t *testing.T) {
			paid := event(stripetest.SessionCompleted, key)
			paid.PaymentIntent, paid.OrderID = "pi_browser_"+RandomHex(4), orderID
			st.mustSend(t, paid)
			// Stripe sends the buyer back with a top-level navigation from its
			// own site: the store's SameSite=Lax shopper cookie goes along.
			eval[chromedp.Void](p, `location.href = `+strconv.Quote(successURL)+`; void 0`)
			p.waitFor("the order page", `location.href === `+strconv.Quote(successURL)+` && !!document.querySelector("[data-testid=order-live]")`, 30*time.Second)
			p.waitFor("the order paid", `["PAID", "DISPATCHED"].includes(document.querySelector("[data-testid=order-live]").dataset.status)`, 30*time.Second)
			if got := eval[string](p, `document.querySelector("[data-testid=status]").textContent`); got != "PAID" && got != "DISPATCHED" {
				t.Fatalf("status badge %q, want PAID or DISPATCHED", got)
			}
			if eval[bool](p, `document.body.innerHTML.includes(`+strconv.Quote(key)+`)`) {
				t.Fatal("the order page shows the checkout key")
			}
		})
	})
}
