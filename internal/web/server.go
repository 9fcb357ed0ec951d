// Package web is the store's HTTP layer: the JSON API, the pages and the
// fragments htmx polls, the payment webhook and the operator actions.
//
// The design, once:
//
//   - Routes. NewServer builds one http.Handler; addRoutes is the one place
//     every URL is declared, each mapped to a handler made by a function that
//     takes exactly the dependencies it uses. There is no server struct and
//     no package-level mutable state, so several stores can run in one test
//     process.
//   - Errors. Handlers return an error instead of writing it, and one adapter
//     (responder.handle, respond.go) turns it into the answer: the shop.Kind
//     of the error picks the status (NotFound 404, Conflict 409, Invalid 400,
//     Busy 503, Unauthorized 401, TooMany 429 with its Retry-After), an
//     *http.MaxBytesError is a 413, a client
//     that went away gets nothing, and anything else is the server's own
//     failure: a 500 with a generic message. Only 5xx are logged. Failures
//     found here (an unreadable form, a bad query value) are shop errors too,
//     so there is one error type from the database to the wire. The answer
//     is JSON, or the HTML error page for a browser or htmx.
//   - Rendering. Pages are rendered to a buffer first, so a failure half-way
//     becomes a clean error answer instead of half a page.
//   - Who may do what. access.go decides, once per concern: an order is
//     its buyer's (the browser session that bought it) and the operator's
//     (the admin token, or a browser signed in with it); store-wide reads
//     and operator actions are the operator's; in demo mode (no ADMIN_TOKEN)
//     everyone is the operator. The payment webhook needs an HMAC signature
//     when a secret is configured (auth.go), Stripe's events their Stripe
//     signature (stripe.go). A store open to the public
//     bounds each client's unpaid holds (limits.go). Cross-site browser
//     posts are refused for every route, every answer carries the security
//     headers (securityHeaders), and every body is capped at 64 KB.
//
// Starting checkouts and applying payments is not this package's business: it
// goes through the Checkout interface, which internal/checkout satisfies.
package web

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"widget-store/internal/metrics"
	"widget-store/internal/provider"
	"widget-store/internal/shop"
	"widget-store/internal/store"
	"widget-store/internal/timeline"
	"widget-store/views"
)

// Checkout is how the web layer starts checkouts and applies payments;
// internal/checkout satisfies it.
type Checkout interface {
	// Start starts (or, for a key seen before, finds) the checkout of key and
	// waits for its first step. soldOut reports that it found no stock.
	// shopper is the buying browser's session ("" for an API client), client
	// its address when the hold limit is on (else ""). Errors carry shop
	// kinds (shop.Busy: still starting, retry). items is the cart, nil for
	// one unit of product 1; with a cart, a short line is a shop.Conflict
	// that names the short lines.
	Start(ctx context.Context, key, shopper, client string, items []shop.Line) (soldOut bool, err error)
	// Pay applies payment status ("paid"/"failed", already validated by web)
	// to the order behind payment id pid and returns its order id.
	// shop.NotFound: unknown payment id; shop.Conflict: it contradicts the
	// order's fate (message already written for the client); shop.Busy:
	// still processing.
	Pay(ctx context.Context, pid, status string) (orderID int64, err error)
	// PayURL is where the buyer of checkout key pays, once Start answered
	// that it holds an order: the stand-in's /pay/{key}, or the session the
	// checkout opened at Stripe (waited for). shop.Conflict: the provider
	// opened none and the order is cancelled; shop.Busy: still opening.
	PayURL(ctx context.Context, key string) (string, error)
	// ApplyEvent applies a verified provider event (Stripe's), once per
	// event id, and says what it did. An error means the event must come
	// again; everything recorded is answered 200 (a late payment included).
	ApplyEvent(ctx context.Context, ev provider.Event) (string, error)
}

// Timelines reads the durable execution behind an order.
type Timelines interface {
	Order(ctx context.Context, o shop.Order) (timeline.Timeline, error)
}

// Process is the running process as the pages and the crash buttons see it.
// All three fields must be set.
type Process struct {
	RunID int64       // this process run (the demo crash button's ?run= check)
	Ready func() bool // /healthz answers 200 only while true (and the database takes writes)
	Crash func()      // exits the process at once (os.Exit(1) in production)
}

// Config is what the web layer reads from the store's configuration.
type Config struct {
	AdminToken    string           // ADMIN_TOKEN; "" is demo mode
	WebhookSecret string           // PAYMENT_WEBHOOK_SECRET; "" accepts unsigned webhooks (demo mode only)
	ExecutorID    string           // shown in every page's frame
	Now           func() time.Time // clock for webhook timestamps; time.Now if nil
	// HoldLimit is HOLD_LIMIT: how many unpaid checkouts one client address
	// and one browser session may hold at once in hardened mode (limits.go);
	// 0 turns the limit off. PayWindow is PAYMENT_TIMEOUT, how long a hold
	// lasts.
	HoldLimit int
	PayWindow time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names the
	// client (TRUSTED_PROXIES); empty: the connection's peer is the client.
	TrustedProxies []netip.Prefix
	// StripeWebhookSecret is STRIPE_WEBHOOK_SECRET when Stripe is the
	// payment provider, "" otherwise. Set, buyers pay at Stripe: /buy and
	// the pay page send them to their Checkout Session, the stand-in's Pay
	// and Decline buttons are refused, and POST /webhooks/stripe takes
	// Stripe's signed events (stripe.go).
	StripeWebhookSecret string
}

// maxBodyBytes bounds every request body; the store's forms are tiny.
const maxBodyBytes = 64 << 10

// NewServer returns the store's HTTP handler: every route, behind the
// cross-origin protection, the body limit and the request metrics.
func NewServer(logger *slog.Logger, cfg Config, db *store.DB, checkout Checkout, ops Operations, timelines Timelines, m *metrics.Metrics, proc Process) http.Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	page := views.PageInfo{
		Demo:             cfg.AdminToken == "",
		Database:         db.Dialect.Name,
		ExecutorID:       cfg.ExecutorID,
		UnsignedWebhooks: cfg.WebhookSecret == "" && cfg.AdminToken == "", // hardened, the webhook takes the token instead
	}
	rs := responder{logger: logger, page: page, roomToWrite: db.RoomToWrite}
	mux := http.NewServeMux()
	addRoutes(mux, logger, cfg, rs, db, checkout, ops, timelines, m, proc)
	// Browser form posts from another site are refused (Sec-Fetch-Site /
	// Origin checks); API clients that send neither header pass.
	var h http.Handler = http.NewCrossOriginProtection().Handler(mux)
	return observeHTTP(m, securityHeaders(limitBody(rs, h, maxBodyBytes)))
}

// contentSecurityPolicy lets a page load only the store's own scripts,
// styles and images, and be framed by nobody: the Pay, Decline and Crash
// buttons cannot be overlaid by another site (clickjacking), and an injected
// script or inline handler would not run. htmx is served from /static and
// configured (Layout's htmx-config) to need neither eval nor inline styles;
// the pages have no inline script, style or handler.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

// securityHeaders sets, on every answer (HTML, JSON, text and static files
// alike, so no route can forget), the CSP above, X-Frame-Options for
// browsers that predate frame-ancestors, nosniff (a JSON or text answer is
// never run as a script or shown as HTML) and a Referrer-Policy that keeps
// URLs (a pay page's /pay/{key}) from leaking to other sites.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// addRoutes is the one place every URL of the store is declared. Who may
// call what is decided in access.go (the buyer, the operator, a stranger)
// and auth.go (the admin token, webhook signatures).
func addRoutes(mux *http.ServeMux, logger *slog.Logger, cfg Config, rs responder, db *store.DB,
	checkout Checkout, ops Operations, timelines Timelines, m *metrics.Metrics, proc Process) {
	handle, page := rs.handle, rs.page
	acc := access{adminToken: cfg.AdminToken, webhookSecret: cfg.WebhookSecret, now: cfg.Now}
	requireAdmin := acc.requireAdmin
	var holds *holdLimiter // the hold limit is for a store open to the public
	if acc.hardened() {
		holds = newHoldLimiter(cfg.HoldLimit, cfg.PayWindow, db, cfg.Now)
	}
	atStripe := cfg.StripeWebhookSecret != "" // buyers pay at Stripe: its session URLs are handed out by access.mayHavePayURL
	buyer := buyerOf{trusted: cfg.TrustedProxies, holds: holds, proxyWarning: &sync.Once{}, logger: logger}

	// JSON API, compatible with the reference widget store. Store-wide
	// reads are the operator's; an order is its buyer's (access.go).
	mux.Handle("GET /healthz", handleHealthz(proc.Ready, db, cfg.Now))
	mux.Handle("GET /product", handle(handleGetProduct(db)))
	mux.Handle("GET /products", handle(handleGetProducts(db)))
	mux.Handle("GET /orders", handle(requireAdmin(handleListOrders(db))))
	mux.Handle("GET /order/{id}", handle(handleGetOrder(db, acc)))
	mux.Handle("POST /checkout/{key}", handle(handleCheckout(db, acc, checkout, buyer, atStripe)))
	mux.Handle("POST /payment_webhook/{payment_id}/{status}", handle(handlePaymentWebhook(acc, cfg.Now, checkout)))
	// Stripe's events, authenticated by their signature alone (stripe.go).
	mux.Handle("POST /webhooks/stripe", handle(handleStripeWebhook(cfg.StripeWebhookSecret, checkout)))
	internalsPanel := handleInternalsPartial(db, ops, acc, page)
	mux.Handle("POST /restock", handle(requireAdmin(handleRestock(logger, db, internalsPanel))))
	mux.Handle("POST /crash_application", handle(requireAdmin(handleCrash(logger, proc.Crash))))
	mux.Handle("GET /late_payments", handle(requireAdmin(handleLatePayments(db))))

	// The demo's stand-in payment provider (provider.go), which the refund
	// workflow calls unless PROVIDER_URL names a real one. The admin token
	// stands in for the provider's API key: with ADMIN_TOKEN set, nobody but
	// the store can make the stand-in refund.
	mux.Handle("POST /provider/refunds/{payment_id}", handle(requireAdmin(handleProviderRefund(db))))

	// Pages and the fragments they poll.
	mux.Handle("GET /{$}", handle(handleStorePage(db, ops, acc, page)))
	mux.Handle("POST /buy", handle(handleBuy(db, acc, checkout, buyer, atStripe)))
	mux.Handle("GET /pay/{key}", handle(handlePayPage(db, acc, page, checkout, atStripe)))
	mux.Handle("POST /pay/{key}", handle(handlePay(db, acc, checkout, atStripe)))
	mux.Handle("GET /track/{id}", handle(handleOrderPage(db, acc, page)))
	mux.Handle("GET /partials/stock", handle(handleStockPartial(db)))
	mux.Handle("GET /partials/my-orders", handle(handleMyOrdersPartial(db)))
	mux.Handle("GET /partials/internals", handle(requireAdmin(internalsPanel)))
	mux.Handle("GET /partials/track/{id}", handle(handleOrderPartial(db, acc)))
	mux.Handle("GET /partials/timeline/{id}", handle(handleTimelinePartial(db, acc, timelines)))
	mux.Handle("GET /partials/internals/timeline", handle(requireAdmin(handleInternalsTimelinePartial(db, timelines))))
	mux.Handle("POST /demo/crash", handle(requireAdmin(handleDemoCrash(proc.RunID, handleCrash(logger, proc.Crash)))))
	mux.Handle("GET /static/", handleStatic())

	// Operator actions on what needs attention (operations.go): the
	// internals panel's Retry and Cancel-and-refund, and the list as JSON.
	mux.Handle("GET /admin/login", handle(handleOperatorLoginPage(acc, page)))
	mux.Handle("POST /admin/login", handle(handleOperatorLogin(acc)))
	mux.Handle("POST /admin/logout", handle(handleOperatorLogout()))
	mux.Handle("GET /admin/attention", handle(requireAdmin(handleAttention(ops))))
	mux.Handle("POST /admin/orders/{id}/retry", handle(requireAdmin(handleRetry(ops, internalsPanel))))
	mux.Handle("POST /admin/orders/{id}/cancel", handle(requireAdmin(handleCancelOrder(ops, internalsPanel))))

	// Operations: Prometheus metrics (metrics.go). Its labels come from
	// fixed sets, so no request can grow it.
	mux.Handle("GET /metrics", handleMetrics(logger, m))
	// The operator's profiles of this process (heap, goroutine, allocs;
	// metrics.go), for `go tool pprof`: what holds the memory.
	mux.Handle("GET /admin/debug/pprof/{profile}", handle(requireAdmin(handleProfile())))
	// Anything else gets the mux's own 404, or 405 with an Allow header
	// for a known path with the wrong method.
}

// limitBody refuses a declared oversized body at once (413, before any
// handler runs, so nothing starts or changes) and caps an undeclared
// (chunked) one while it is read: parseForm turns that into a 413 too.
//
// Its own answers (the 413) need no room check: the route's handler, which
// rs.handle wraps too, makes it once per request (it was made twice, a
// statfs each, before every write request).
func limitBody(rs responder, h http.Handler, n int64) http.Handler {
	rs.roomToWrite = nil
	return rs.handle(func(w http.ResponseWriter, r *http.Request) error {
		if r.ContentLength > n {
			return &http.MaxBytesError{Limit: n}
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		h.ServeHTTP(w, r)
		return nil
	})
}
