package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"time"

	"github.com/a-h/templ"

	"widget-store/views"
)

// routes is the one place every URL of the store is declared.
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	addRoutes(mux, a)
	// Browser form posts from another site are refused (Sec-Fetch-Site /
	// Origin checks); API clients that send neither header pass.
	var h http.Handler = http.NewCrossOriginProtection().Handler(mux)
	return a.observeHTTP(a.limitBody(h, maxBodyBytes))
}

func addRoutes(mux *http.ServeMux, a *app) {
	// JSON API, compatible with the reference widget store.
	mux.Handle("GET /healthz", handleHealthz(a))
	mux.Handle("GET /product", a.handle(handleGetProduct(a)))
	mux.Handle("GET /orders", a.handle(handleListOrders(a)))
	mux.Handle("GET /order/{id}", a.handle(handleGetOrder(a)))
	mux.Handle("POST /checkout/{key}", a.handle(handleCheckout(a)))
	mux.Handle("POST /payment_webhook/{payment_id}/{status}", a.handle(handlePaymentWebhook(a)))
	mux.Handle("POST /restock", a.handle(handleRestock(a)))
	mux.Handle("POST /crash_application", a.handle(handleCrash(a)))
	mux.Handle("GET /late_payments", a.handle(handleLatePayments(a)))

	// Pages and the fragments they poll.
	mux.Handle("GET /{$}", a.handle(handleStorePage(a)))
	mux.Handle("POST /buy", a.handle(handleBuy(a)))
	mux.Handle("GET /pay/{key}", a.handle(handlePayPage(a)))
	mux.Handle("POST /pay/{key}", a.handle(handlePay(a)))
	mux.Handle("GET /track/{id}", a.handle(handleOrderPage(a)))
	mux.Handle("GET /partials/stock", a.handle(handleStockPartial(a)))
	mux.Handle("GET /partials/my-orders", a.handle(handleMyOrdersPartial(a)))
	mux.Handle("GET /partials/internals", a.handle(handleInternalsPartial(a)))
	mux.Handle("GET /partials/track/{id}", a.handle(handleOrderPartial(a)))
	mux.Handle("GET /partials/timeline/{id}", a.handle(handleTimelinePartial(a)))
	mux.Handle("GET /partials/internals/timeline", a.handle(handleInternalsTimelinePartial(a)))
	mux.Handle("POST /demo/crash", a.handle(handleDemoCrash(a)))
	mux.Handle("GET /static/", handleStatic())

	// Operations: Prometheus metrics (metrics.go).
	mux.Handle("GET /metrics", handleMetrics(a))
	// Anything else gets the mux's own 404, or 405 with an Allow header
	// for a known path with the wrong method.
}

// handlerFunc is a handler that returns its error instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// httpError is an error with the status and the message the client sees.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// handle is the one adapter from handlerFunc to http.Handler: it maps errors
// to status codes, answers in JSON or HTML as the client prefers, and logs
// only the server's own failures (5xx).
func (a *app) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		status, msg := http.StatusInternalServerError, "internal error; it has been logged"
		var he *httpError
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &he):
			status, msg = he.status, he.msg
		case errors.As(err, &mbe):
			status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit)
		case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
			return // the client went away; nobody to answer
		}
		if status >= 500 {
			a.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
		}
		if wantsHTML(r) {
			var buf bytes.Buffer
			if rerr := views.ErrorPage(a.pageInfo(), status, msg).Render(r.Context(), &buf); rerr == nil {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(status)
				w.Write(buf.Bytes()) // a failed write means the client left
				return
			}
		}
		writeJSON(w, status, map[string]string{"error": msg})
	})
}

// wantsHTML tells a browser navigation (or htmx) from an API client.
func wantsHTML(r *http.Request) bool {
	if r.Header.Get("HX-Request") != "" {
		return true
	}
	accept := r.Header.Get("Accept")
	return len(accept) >= 9 && bytes.Contains([]byte(accept), []byte("text/html"))
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

func writeText(w http.ResponseWriter, status int, s string) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write([]byte(s))
	return err
}

// render renders a component to a buffer first, so a failure mid-page becomes
// a clean error response rather than half a page.
func render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) error {
	var buf bytes.Buffer
	if err := c.Render(r.Context(), &buf); err != nil {
		return fmt.Errorf("render: %w", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// maxBodyBytes bounds every request body; the store's forms are tiny.
const maxBodyBytes = 64 << 10

// limitBody refuses a declared oversized body at once (413, before any
// handler runs, so nothing starts or changes) and caps an undeclared
// (chunked) one while it is read: parseForm turns that into a 413 too.
func (a *app) limitBody(h http.Handler, n int64) http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		if r.ContentLength > n {
			return &http.MaxBytesError{Limit: n}
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		h.ServeHTTP(w, r)
		return nil
	})
}

// parseForm reads the query and a urlencoded or multipart body, and reports
// an oversized (413) or unreadable (400) body instead of dropping it the way
// r.FormValue does: a form cut short must not be taken for an empty one.
//
// ParseForm comes first because ParseMultipartForm discards its error when
// the body is not multipart.
func parseForm(r *http.Request) error {
	err := r.ParseForm()
	if err == nil {
		err = r.ParseMultipartForm(maxBodyBytes)
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil, errors.Is(err, http.ErrNotMultipart):
		return nil
	case errors.As(err, &mbe):
		return err
	default:
		return errorf(http.StatusBadRequest, "could not read the form: %v", err)
	}
}

// maxKeyLen bounds idempotency keys. A key is a workflow ID, which DBOS puts
// in Postgres NOTIFY payloads (capped at 8000 bytes); an unbounded key would
// hang a checkout instead of failing it.
const maxKeyLen = 128

// validateKey accepts 1–128 characters of A–Z a–z 0–9 - _ . ~ : (URL-safe,
// never "/"), which covers UUIDs and the keys the reference clients send.
func validateKey(what, key string) error {
	if key == "" || len(key) > maxKeyLen {
		return errorf(http.StatusBadRequest, "%s must be 1 to %d characters long (got %d)", what, maxKeyLen, len(key))
	}
	for _, c := range key {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' || c == ':') {
			return errorf(http.StatusBadRequest, "%s may contain only A-Z a-z 0-9 - _ . ~ : (found %q)", what, c)
		}
	}
	// "." and ".." are path segments the router cleans away: a checkout with
	// such a key could never be reached at /pay/{key} or by the webhook.
	if key == "." || key == ".." {
		return errorf(http.StatusBadRequest, "%s cannot be %q", what, key)
	}
	return nil
}

// orderFromPath reads the order named by the request's {id}: 400 for an id
// that is not a positive integer, 404 for one that does not exist.
func (a *app) orderFromPath(r *http.Request) (views.Order, error) {
	id, err := parseOrderID(r.PathValue("id"))
	if err != nil {
		return views.Order{}, err
	}
	return a.orderByID(r.Context(), id)
}

func parseOrderID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, errorf(http.StatusBadRequest, "order id must be a positive integer (got %.40q)", s)
	}
	return id, nil
}

func newKey() string {
	b := make([]byte, 16)
	rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// ----- JSON API -----

func handleHealthz(a *app) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			writeText(w, http.StatusServiceUnavailable, "starting\n")
			return
		}
		writeText(w, http.StatusOK, "ok\n")
	})
}

// productJSON is the reference store's product shape.
type productJSON struct {
	ProductID   int     `json:"product_id"`
	Product     string  `json:"product"`
	Description string  `json:"description"`
	Inventory   int     `json:"inventory"`
	Price       float64 `json:"price"`
}

func handleGetProduct(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := a.product(r.Context())
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, productJSON{
			ProductID: p.ID, Product: p.Name, Description: p.Description,
			Inventory: p.Inventory, Price: float64(p.PriceCents) / 100,
		})
	}
}

// orderJSON is the reference store's order shape (plus a few extras).
type orderJSON struct {
	OrderID           int64     `json:"order_id"`
	OrderStatus       int       `json:"order_status"`
	Status            string    `json:"status"`
	LastUpdateTime    time.Time `json:"last_update_time"`
	ProgressRemaining int       `json:"progress_remaining"`
	ProductID         int       `json:"product_id"`
	CreatedAt         time.Time `json:"created_at"`
	Price             float64   `json:"price"`
}

func toOrderJSON(o views.Order) orderJSON {
	return orderJSON{
		OrderID: o.ID, OrderStatus: o.Status, Status: o.StatusName(), LastUpdateTime: o.LastUpdate.UTC(),
		ProgressRemaining: o.ProgressRemaining, ProductID: o.ProductID, CreatedAt: o.CreatedAt.UTC(),
		Price: float64(o.PriceCents) / 100,
	}
}

func handleListOrders(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		orders, err := a.recentOrders(r.Context(), "", 1000)
		if err != nil {
			return err
		}
		out := make([]orderJSON, 0, len(orders))
		for _, o := range orders {
			out = append(out, toOrderJSON(o))
		}
		return writeJSON(w, http.StatusOK, out)
	}
}

func handleGetOrder(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		o, err := a.orderFromPath(r)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, toOrderJSON(o))
	}
}

func handleCheckout(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key := r.PathValue("key")
		if err := validateKey("idempotency key", key); err != nil {
			return err
		}
		pid, err := a.startCheckout(r.Context(), key, "")
		if err != nil {
			return err
		}
		if pid == "" {
			return errorf(http.StatusConflict, "sold out: no widgets left for checkout %s", key)
		}
		return writeText(w, http.StatusOK, pid)
	}
}

func handlePaymentWebhook(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := a.verifyWebhook(r); err != nil {
			return err
		}
		pid, status := r.PathValue("payment_id"), r.PathValue("status")
		if err := validatePayment(pid, status); err != nil {
			return err
		}
		orderID, err := a.pay(r.Context(), pid, status)
		if err != nil {
			return err
		}
		return writeText(w, http.StatusOK, strconv.FormatInt(orderID, 10))
	}
}

func validatePayment(pid, status string) error {
	if err := validateKey("payment id", pid); err != nil {
		return err
	}
	if status != paymentPaid && status != paymentFailed {
		return errorf(http.StatusBadRequest, "payment status must be %q or %q (got %.40q); nothing was changed", paymentPaid, paymentFailed, status)
	}
	return nil
}

// pay applies a payment status to the order behind payment id pid and
// returns the order id. Replays are answered from the order's state; a status
// that contradicts the order's fate is a 409, and a payment for an order that
// was already cancelled is recorded for refund.
func (a *app) pay(ctx context.Context, pid, status string) (int64, error) {
	o, err := a.deliverPayment(ctx, pid, status)
	if err != nil {
		return 0, err
	}
	switch {
	case status == paymentPaid && (o.Status == statusPaid || o.Status == statusDispatched):
		return o.ID, nil
	case status == paymentFailed && o.Status == statusCancelled:
		return o.ID, nil
	case status == paymentPaid && o.Status == statusCancelled:
		if err := a.recordLatePayment(ctx, pid, o.ID); err != nil {
			return 0, err
		}
		return 0, errorf(http.StatusConflict, "order %d was already cancelled (declined, or not paid within the payment window); this payment is recorded for refund", o.ID)
	default: // failed, but the order is paid
		return 0, errorf(http.StatusConflict, "order %d is already paid; a decline cannot cancel it", o.ID)
	}
}

func handleRestock(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := a.requireAdmin(r); err != nil {
			return err
		}
		if err := parseForm(r); err != nil {
			return err
		}
		n := 100
		if s := r.FormValue("inventory"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 || v > 1_000_000 {
				return errorf(http.StatusBadRequest, "inventory must be a whole number from 0 to 1000000 (got %.40q)", s)
			}
			n = v
		}
		if err := a.restock(r.Context(), n); err != nil {
			return err
		}
		if r.Header.Get("HX-Request") != "" {
			return handleInternalsPartial(a)(w, r)
		}
		return handleGetProduct(a)(w, r)
	}
}

func handleCrash(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := a.requireAdmin(r); err != nil {
			return err
		}
		a.logger.Warn("crash requested: exiting now, without cleanup")
		a.exit(exitCrash)
		return nil
	}
}

// requireAdmin guards the demo's operator actions (crash, restock, the
// refund list). The token comes from "Authorization: Bearer …",
// "X-Admin-Token", or an admin_token field of a posted form (never the query
// string, which ends up in logs), and is compared in constant time.
func (a *app) requireAdmin(r *http.Request) error {
	if a.cfg.AdminToken == "" {
		return nil // demo mode: the page says so
	}
	tok := adminTokenFrom(r)
	if tok == "" && r.Method == http.MethodPost {
		if err := parseForm(r); err != nil {
			return err
		}
		tok = r.PostFormValue("admin_token")
	}
	if tok == "" || !tokenEqual(tok, a.cfg.AdminToken) {
		msg := "this action needs the admin token (ADMIN_TOKEN): send it as Authorization: Bearer TOKEN or X-Admin-Token: TOKEN"
		if tok != "" {
			msg = "wrong admin token"
		}
		return errorf(http.StatusUnauthorized, "%s", msg)
	}
	return nil
}

// latePaymentJSON is a payment that came for an already cancelled order.
type latePaymentJSON struct {
	PaymentID  string    `json:"payment_id"`
	OrderID    int64     `json:"order_id"`
	ReceivedAt time.Time `json:"received_at"`
}

// handleLatePayments lists the payments to refund: each came for an order
// that was already cancelled. Payment ids are checkout keys, so the list is
// an operator's (admin token) outside demo mode.
func handleLatePayments(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := a.requireAdmin(r); err != nil {
			return err
		}
		late, err := a.latePayments(r.Context())
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, late)
	}
}

// ----- pages -----

const shopperCookie = "shopper"

// shopper returns the browser's shopper id, setting the cookie if it is new.
func shopper(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(shopperCookie); err == nil && validateKey("shopper", c.Value) == nil {
		return c.Value
	}
	id := newKey()
	http.SetCookie(w, &http.Cookie{Name: shopperCookie, Value: id, Path: "/", MaxAge: 365 * 24 * 3600, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	return id
}

func (a *app) pageInfo() views.PageInfo {
	return views.PageInfo{Demo: a.cfg.AdminToken == "", Database: a.dialect.name, ExecutorID: a.cfg.ExecutorID,
		UnsignedWebhooks: a.cfg.WebhookKey == ""}
}

func handleStorePage(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		who := shopper(w, r)
		p, err := a.product(r.Context())
		if err != nil {
			return err
		}
		mine, err := a.recentOrders(r.Context(), who, 10)
		if err != nil {
			return err
		}
		all, err := a.recentOrders(r.Context(), "", 20)
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.StorePage(a.pageInfo(), views.Store{
			Product: p, NewKey: newKey(), MyOrders: mine, AllOrders: all,
		}))
	}
}

func handleBuy(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := parseForm(r); err != nil {
			return err
		}
		key := r.PostFormValue("key")
		if err := validateKey("checkout key", key); err != nil {
			return err
		}
		if _, err := a.startCheckout(r.Context(), key, shopper(w, r)); err != nil {
			return err
		}
		// The payment page shows sold out too: the URL carries the key, so a
		// reload or a second tab shows the same checkout.
		http.Redirect(w, r, "/pay/"+key, http.StatusSeeOther)
		return nil
	}
}

func handlePayPage(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key := r.PathValue("key")
		if err := validateKey("checkout key", key); err != nil {
			return err
		}
		p, err := a.product(r.Context())
		if err != nil {
			return err
		}
		pay := views.Pay{Key: key, Product: p}
		o, err := a.orderByKey(r.Context(), key)
		var he *httpError
		switch {
		case err == nil:
			pay.Order = &o
		case errors.As(err, &he) && he.status == http.StatusNotFound:
			// No order: either the checkout sold out, or there is no such checkout.
			state, err := a.checkoutState(r.Context(), key)
			if err != nil {
				return err
			}
			if state != stepOneSoldOut {
				return errorf(http.StatusNotFound, "there is no checkout %s", key)
			}
			pay.SoldOut = true
		default:
			return err
		}
		return render(w, r, http.StatusOK, views.PayPage(a.pageInfo(), pay))
	}
}

func handlePay(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := parseForm(r); err != nil {
			return err
		}
		key, status := r.PathValue("key"), r.PostFormValue("status")
		if err := validatePayment(key, status); err != nil {
			return err
		}
		orderID, err := a.pay(r.Context(), key, status)
		if err != nil {
			return err
		}
		http.Redirect(w, r, "/track/"+strconv.FormatInt(orderID, 10), http.StatusSeeOther)
		return nil
	}
}

func handleOrderPage(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		o, err := a.orderFromPath(r)
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.OrderPage(a.pageInfo(), o))
	}
}

func handleOrderPartial(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		o, err := a.orderFromPath(r)
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.OrderLive(o))
	}
}

func handleStockPartial(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := a.product(r.Context())
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.Stock(p))
	}
}

func handleMyOrdersPartial(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		mine, err := a.recentOrders(r.Context(), shopper(w, r), 10)
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.MyOrders(mine))
	}
}

func handleInternalsPartial(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := a.product(r.Context())
		if err != nil {
			return err
		}
		all, err := a.recentOrders(r.Context(), "", 20)
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.Internals(a.pageInfo(), p, all))
	}
}

func handleStatic() http.Handler {
	sub, err := fs.Sub(views.Static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})
}

// ----- workflow timeline (timeline.go) -----

// handleTimelinePartial is the order page's live timeline of the workflows
// behind the order. It polls itself until everything is final.
func handleTimelinePartial(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		o, err := a.orderFromPath(r)
		if err != nil {
			return err
		}
		tl, err := a.orderTimeline(r.Context(), o)
		if err != nil {
			return err
		}
		tl.DOMID, tl.PollURL = "timeline", "/partials/timeline/"+strconv.FormatInt(o.ID, 10)
		return render(w, r, http.StatusOK, views.TimelinePanel(tl))
	}
}

// handleInternalsTimelinePartial is the internals panel's timeline: of the
// order chosen with ?order=N, else of the newest order. It keeps polling,
// since the newest order changes.
func handleInternalsTimelinePartial(a *app) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		tl := views.Timeline{DOMID: "internals-timeline", PollURL: "/partials/internals/timeline", Follow: true}
		var id int64
		if s := r.URL.Query().Get("order"); s != "" {
			v, err := parseOrderID(s)
			if err != nil {
				return err
			}
			id = v
			tl.PollURL += "?order=" + strconv.FormatInt(id, 10)
		} else {
			v, err := a.newestOrderID(r.Context())
			if err != nil {
				return err
			}
			id = v
		}
		if id != 0 {
			o, err := a.orderByID(r.Context(), id)
			if err != nil {
				return err
			}
			got, err := a.orderTimeline(r.Context(), o)
			if err != nil {
				return err
			}
			got.DOMID, got.PollURL, got.Follow = tl.DOMID, tl.PollURL, tl.Follow
			tl = got
		}
		return render(w, r, http.StatusOK, views.TimelinePanel(tl))
	}
}

// handleDemoCrash is the pages' Crash button: POST /crash_application, except
// that the page says which process run it means to crash (?run=N, from the
// timeline it last polled) and a request meant for a run that is gone is
// refused. Chromium resends a request whose reused keep-alive connection
// closed without an answer, which is exactly what a crash does, so without
// this one press crashed the store twice: the resent request crashed the
// freshly restarted process too (the browser test caught it).
func handleDemoCrash(a *app) handlerFunc {
	crash := handleCrash(a)
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := a.requireAdmin(r); err != nil {
			return err
		}
		if s := r.FormValue("run"); s != "" {
			run, err := strconv.ParseInt(s, 10, 64)
			if err != nil || run <= 0 {
				return errorf(http.StatusBadRequest, "run must be a process run id (got %.40q)", s)
			}
			if run != a.runID {
				return errorf(http.StatusConflict, "the store has restarted since (run %d is gone, this is run %d): nothing was crashed", run, a.runID)
			}
		}
		return crash(w, r)
	}
}
