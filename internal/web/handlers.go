package web

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"widget-store/internal/shop"
	"widget-store/internal/store"
	"widget-store/internal/timeline"
	"widget-store/views"
)

// newKey is a fresh random key: a shopper id, or the idempotency key of the
// store page's next Buy.
func newKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+): it crashes the program instead
	return hex.EncodeToString(b)
}

// ----- JSON API -----

// GET /healthz is in health.go.

// productJSON is the reference store's product shape.
type productJSON struct {
	ProductID   int     `json:"product_id"`
	Product     string  `json:"product"`
	Description string  `json:"description"`
	Inventory   int     `json:"inventory"`
	Price       float64 `json:"price"`
}

func toProductJSON(p shop.Product) productJSON {
	return productJSON{
		ProductID: p.ID, Product: p.Name, Description: p.Description,
		Inventory: p.Inventory, Price: float64(p.PriceCents) / 100,
	}
}

// handleGetProduct is GET /product: product 1, the reference store's.
func handleGetProduct(db *store.DB) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := db.Product(r.Context())
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, toProductJSON(p))
	}
}

// handleGetProducts is GET /products: the catalog, one GET /product object
// per product, by product id.
func handleGetProducts(db *store.DB) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ps, err := db.Products(r.Context())
		if err != nil {
			return err
		}
		out := make([]productJSON, 0, len(ps))
		for _, p := range ps {
			out = append(out, toProductJSON(p))
		}
		return writeJSON(w, http.StatusOK, out)
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
	// Items and TotalCents are the order's lines (GET /order/{id} only;
	// the lists leave them out).
	Items      []shop.Line `json:"items,omitempty"`
	TotalCents *int64      `json:"total_cents,omitempty"`
}

func toOrderJSON(o shop.Order) orderJSON {
	return orderJSON{
		OrderID: o.ID, OrderStatus: int(o.Status), Status: o.StatusName(), LastUpdateTime: o.LastUpdate.UTC(),
		ProgressRemaining: o.ProgressRemaining, ProductID: o.ProductID, CreatedAt: o.CreatedAt.UTC(),
		Price: float64(o.PriceCents) / 100,
	}
}

// toOrderWithLinesJSON is an order with its lines read (GET /order/{id},
// every order of GET /orders): the reference's fields, its items and total.
func toOrderWithLinesJSON(o shop.Order) orderJSON {
	out := toOrderJSON(o)
	total := shop.Total(o.Lines)
	out.Items, out.TotalCents = o.Lines, &total
	return out
}

// handleListOrders is GET /orders: every order, oldest first (ascending
// order_id), one page at a time: ?limit=N orders per page (default
// defaultPageSize = 100, at most maxPageSize = 1000), ?after=CURSOR from the
// previous page's Link rel="next" header; the last page has no Link. Orders
// created while a client follows the pages land after its cursor, so it sees
// every order exactly once (store.OrdersPage). See paging.go.
func handleListOrders(db *store.DB) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		limit, after, err := parsePage(r, "orders", orderCursorPos)
		if err != nil {
			return err
		}
		var afterID int64
		if after != nil {
			afterID = *after
		}
		orders, more, err := db.OrdersPage(r.Context(), afterID, limit)
		if err != nil {
			return err
		}
		if orders, err = db.PageWithLines(r.Context(), orders); err != nil {
			return err
		}
		out := make([]orderJSON, 0, len(orders))
		for _, o := range orders {
			out = append(out, toOrderWithLinesJSON(o))
		}
		if more {
			setNextLink(w, "/orders", limit, orderCursor(orders[len(orders)-1].ID))
		}
		return writeJSON(w, http.StatusOK, out)
	}
}

// handleGetOrder is GET /order/{id}: the order, for its buyer's session or
// the operator (in demo mode, anyone).
func handleGetOrder(db *store.DB, acc access) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		o, err := acc.orderFromPath(db, r)
		if err != nil {
			return err
		}
		if o, err = db.WithLines(r.Context(), o); err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, toOrderWithLinesJSON(o))
	}
}

// handleCheckout starts a checkout and answers its payment id, which is the
// checkout's key itself (which the client already knows: it tells a stranger
// who replays a key nothing new). In hardened mode the hold limit applies.
// With Content-Type: application/json the body is the cart (readCart);
// without, the checkout buys one unit of product 1, as the reference store's.
// With Accept: application/json the answer also says where to pay, to a
// caller who may know (access.mayHavePayURL); to anyone else it is the pay
// page's 404, and nothing changed (a replayed key finds its checkout).
func handleCheckout(db *store.DB, acc access, checkout Checkout, buyer buyerOf, atStripe bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key := r.PathValue("key")
		if err := shop.ValidateKey("idempotency key", key); err != nil {
			return err
		}
		items, err := readCart(r)
		if err != nil {
			return err
		}
		soldOut, err := buyer.start(r, checkout, key, "", items)
		if err != nil {
			return err
		}
		if soldOut {
			return shop.Errorf(shop.Conflict, "sold out: no widgets left for checkout %s", key)
		}
		payURL, mine, err := payURLFor(r, sessionOf(r), db, acc, checkout, key, atStripe)
		if err != nil {
			return err
		}
		if acceptsJSON(r) {
			if !mine {
				return notYours(key)
			}
			return writeJSON(w, http.StatusOK, checkoutJSON{PaymentID: key, PayURL: payURL})
		}
		return writeText(w, http.StatusOK, key)
	}
}

// payURLFor is where r, of browser session session ("" for none), pays for
// checkout key, once Start has answered that the key holds an order:
// checkout.PayURL (which, at Stripe, waits for the session to be recorded),
// with mine true. At Stripe in hardened mode, to a caller who may not have
// the session's URL (access.mayHavePayURL), it is
// "" with mine false, and nothing is waited for or said of the order: a
// stranger gets the stand-in's answers, not the order's state (PayURL's
// errors name it). With the stand-in, and in demo mode, everyone may.
func payURLFor(r *http.Request, session string, db *store.DB, acc access, checkout Checkout, key string, atStripe bool) (payURL string, mine bool, err error) {
	if atStripe && acc.hardened() {
		o, err := db.OrderByKey(r.Context(), key)
		if err != nil && shop.KindOf(err) != shop.NotFound {
			return "", false, err
		}
		if err != nil || !acc.mayHavePayURL(r, session, o) {
			return "", false, nil // no order (not this caller's to ask about) or another buyer's
		}
	}
	payURL, err = checkout.PayURL(r.Context(), key)
	return payURL, err == nil, err
}

// checkoutJSON is POST /checkout/{key}'s answer under Accept:
// application/json: the payment id (the key) and where the buyer pays (the
// stand-in's /pay/{key}, relative to the store, or Stripe's session URL).
type checkoutJSON struct {
	PaymentID string `json:"payment_id"`
	PayURL    string `json:"pay_url"`
}

// acceptsJSON reports a client that asks for JSON (Accept: application/json).
func acceptsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}

// maxCartBytes bounds a cart's body: 20 lines fit in well under 2 KB.
const maxCartBytes = 8 << 10

// readCart reads the cart of a checkout whose Content-Type is
// application/json: nil without one (any other body is ignored, as it always
// was). A body over maxCartBytes, or one that is not a cart, is a
// shop.Invalid error; over the store's body limit, its 413.
func readCart(r *http.Request) ([]shop.Line, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxCartBytes+1))
	if err != nil {
		return nil, err // the store's body limit (413), or a broken connection
	}
	if len(body) > maxCartBytes {
		return nil, shop.Errorf(shop.Invalid, "the cart is larger than %d bytes; nothing was held", maxCartBytes)
	}
	return shop.ParseCart(body)
}

// handlePaymentWebhook is the payment provider's call: authenticated first
// (auth.go), so an unsigned call learns nothing, then validated and applied.
func handlePaymentWebhook(acc access, now func() time.Time, checkout Checkout) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := acc.verifyWebhook(now(), r); err != nil {
			return err
		}
		pid, status := r.PathValue("payment_id"), r.PathValue("status")
		if err := shop.ValidatePayment(pid, status); err != nil {
			return err
		}
		orderID, err := checkout.Pay(r.Context(), pid, status)
		if err != nil {
			return err
		}
		return writeText(w, http.StatusOK, strconv.FormatInt(orderID, 10))
	}
}

// handleRestock sets a product's stock (?product_id=N, product 1 without
// it; ?inventory=N or form fields, 100 by default) and answers the product,
// or the internals panel for htmx.
func handleRestock(logger *slog.Logger, db *store.DB, internals handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := parseForm(r); err != nil {
			return err
		}
		id := shop.ProductID
		if s := r.FormValue("product_id"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 {
				return shop.Errorf(shop.Invalid, "product_id must be a positive whole number (got %.40q)", s)
			}
			id = v
		}
		n := 100
		if s := r.FormValue("inventory"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 || v > 1_000_000 {
				return shop.Errorf(shop.Invalid, "inventory must be a whole number from 0 to 1000000 (got %.40q)", s)
			}
			n = v
		}
		if err := db.Restock(r.Context(), id, n); err != nil {
			return err
		}
		logger.Info("restocked", "product_id", id, "inventory", n)
		if r.Header.Get("HX-Request") != "" {
			return internals(w, r)
		}
		p, err := db.ProductByID(r.Context(), id)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, toProductJSON(p))
	}
}

// handleCrash exits the process at once, without cleanup: the demo of
// durable execution. crash does not return in production; should it return
// (a test), the answer is an empty 200.
func handleCrash(logger *slog.Logger, crash func()) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		logger.Warn("crash requested: exiting now, without cleanup")
		crash()
		return nil
	}
}

// handleLatePayments lists the payments to refund: each came for an order
// that was already cancelled. Payment ids are checkout keys, so the list is
// an operator's (admin token) outside demo mode. It pages like GET /orders
// (?limit=N, default 100, at most 1000; ?after=CURSOR; Link rel="next"), in
// the order the payments were received (received_at, then payment_id).
func handleLatePayments(db *store.DB) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		limit, after, err := parsePage(r, "late_payments", latePaymentCursorPos)
		if err != nil {
			return err
		}
		late, more, err := db.LatePaymentsPage(r.Context(), after, limit)
		if err != nil {
			return err
		}
		if more {
			setNextLink(w, "/late_payments", limit, latePaymentCursor(late[len(late)-1].Pos()))
		}
		return writeJSON(w, http.StatusOK, late)
	}
}

// ----- pages -----

// shopperCookie holds the browser's session: a random 128-bit id, which the
// checkout records on the order as its buyer (access.go). HttpOnly (no
// script reads it), SameSite=Lax (no other site's form post carries it),
// Secure when the request came over TLS.
const shopperCookie = "shopper"

// shopper returns the browser's shopper id, setting the cookie if it is new.
func shopper(w http.ResponseWriter, r *http.Request) string {
	if id := sessionOf(r); id != "" {
		return id
	}
	id := newKey()
	secure := r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
	http.SetCookie(w, &http.Cookie{Name: shopperCookie, Value: id, Path: "/", MaxAge: 365 * 24 * 3600, HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode})
	return id
}

// handleStorePage is the shop. The internals panel (every order, the late
// payments, what needs attention) is on it for the operator only: in
// hardened mode a visitor's page carries none of it.
func handleStorePage(db *store.DB, ops Operations, acc access, page views.PageInfo) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		mine, err := db.RecentOrders(r.Context(), shopper(w, r), 10)
		if err != nil {
			return err
		}
		var s views.Store
		if acc.operator(r) {
			in, err := internals(r, db, ops)
			if err != nil {
				return err
			}
			s.Internals = &in
		}
		if s.Product, err = db.Product(r.Context()); err != nil {
			return err
		}
		if s.Catalog, err = db.Products(r.Context()); err != nil {
			return err
		}
		s.NewKey, s.CartKey, s.MyOrders = newKey(), newKey(), mine
		return render(w, r, http.StatusOK, views.StorePage(acc.page(page, r), s))
	}
}

// handleBuy is the store page's Buy (and a cart's Check out): it starts the
// checkout of the form's key for this browser's session and sends the
// browser where it pays (payURLFor). A key that is another buyer's gets
// the stand-in's answer, its pay page, which refuses it (404).
func handleBuy(db *store.DB, acc access, checkout Checkout, buyer buyerOf, atStripe bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := parseForm(r); err != nil {
			return err
		}
		key := r.PostFormValue("key")
		if err := shop.ValidateKey("checkout key", key); err != nil {
			return err
		}
		var items []shop.Line // Buy now: one unit of product 1
		if c := r.PostFormValue("cart"); c != "" {
			var err error
			if items, err = shop.ParseCart([]byte(c)); err != nil {
				return err
			}
		}
		// Sold out or not, the buyer goes to the payment page, which shows
		// sold out too (and a cart's short lines): the URL carries the key,
		// so a reload or a second tab shows the same checkout. With Stripe
		// the payment page is the checkout's session at Stripe.
		session := shopper(w, r) // a browser without a cookie yet gets one here
		soldOut, err := buyer.start(r, checkout, key, session, items)
		if err != nil && !soldOut {
			return err
		}
		to := "/pay/" + key
		if !soldOut {
			payURL, mine, err := payURLFor(r, session, db, acc, checkout, key, atStripe)
			if err != nil {
				return err
			}
			if mine {
				to = payURL
			}
		}
		if r.Header.Get(scriptPostHeader) != "" && !strings.HasPrefix(to, "/") {
			// The page's script posts the form with fetch (app.js, safe
			// retries), and fetch cannot follow a redirect to another site
			// (Stripe's page sends no CORS headers): it failed as if the
			// store were down, and retried. The script is told where to
			// go instead, and goes there itself.
			w.Header().Set(goToHeader, to)
			return writeText(w, http.StatusOK, to)
		}
		http.Redirect(w, r, to, http.StatusSeeOther)
		return nil
	}
}

// scriptPostHeader marks a form post made by the page's script (app.js)
// rather than by the browser's own submit; goToHeader is where the store
// tells that script to send the browser when it is another site (a form
// post the browser submits itself gets a 303 there instead).
const (
	scriptPostHeader = "X-Store-Script"
	goToHeader       = "X-Store-Go-To"
)

// payCheckout reads the checkout of key for the pay page and its buttons, if
// r may pay it (access.mayPay, with the pay link's signature sig): its order,
// or nil for a checkout that sold out. A checkout that does not exist, and one
// r may not pay, are the same NotFound.
func payCheckout(r *http.Request, db *store.DB, acc access, key, sig string) (*shop.Order, error) {
	o, err := db.OrderByKey(r.Context(), key)
	switch {
	case err == nil:
		if !acc.mayPay(r, key, &o, sig) {
			return nil, notYours(key)
		}
		return &o, nil
	case shop.KindOf(err) != shop.NotFound:
		return nil, err
	}
	// No order: either the checkout sold out, or there is no such checkout
	// (yet). Saying "sold out" to whoever knows the key reveals nothing.
	state, err := db.CheckoutState(r.Context(), key)
	if err != nil {
		return nil, err
	}
	if state != store.CheckoutSoldOut {
		if !acc.operator(r) {
			return nil, notYours(key)
		}
		return nil, shop.Errorf(shop.NotFound, "there is no checkout %s", key)
	}
	return nil, nil
}

// handlePayPage is the stand-in provider's hosted page for checkout key, for
// its buyer (payCheckout). A pay link's ?sig= is carried into the form. When
// buyers pay at Stripe (atStripe) an order waiting for its payment sends its
// buyer to its Checkout Session (303) instead; the page still shows a sold-out
// checkout and a settled order.
func handlePayPage(db *store.DB, acc access, page views.PageInfo, checkout Checkout, atStripe bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key, sig := r.PathValue("key"), r.URL.Query().Get("sig")
		if err := shop.ValidateKey("checkout key", key); err != nil {
			return err
		}
		o, err := payCheckout(r, db, acc, key, sig)
		if err != nil {
			return err
		}
		if atStripe && o != nil && o.Status == shop.StatusPending {
			to, err := checkout.PayURL(r.Context(), key)
			if err == nil {
				http.Redirect(w, r, to, http.StatusSeeOther)
				return nil
			}
			if shop.KindOf(err) != shop.Conflict {
				return err
			}
			if o, err = payCheckout(r, db, acc, key, sig); err != nil { // settled meanwhile (no payment opened): show it
				return err
			}
		}
		p, err := db.Product(r.Context())
		if err != nil {
			return err
		}
		pay := views.Pay{Key: key, Product: p, Order: o, SoldOut: o == nil, Sig: sig}
		if o != nil {
			pay.CanTrack = acc.ownsOrder(r, *o)
			if pay.Lines, err = orderLines(r, db, *o); err != nil {
				return err
			}
			pay.TotalCents = o.PriceCents
		} else if pay.Short, err = shortLines(r, db, key); err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.PayPage(acc.page(page, r), pay))
	}
}

// handlePay is the payment page's Pay and Decline buttons: the status is
// applied in-process, as the webhook would, for the checkout's buyer only
// (payCheckout: its session, a signed pay link, the operator). The buyer
// then follows the order; a pay link's holder, who has no session, sees the
// settled pay page.
//
// With Stripe the buttons are not there, and a post is refused: the money
// is Stripe's to take, and only its signed events say it was.
func handlePay(db *store.DB, acc access, checkout Checkout, atStripe bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if atStripe {
			return shop.Errorf(shop.Conflict, "this store takes payments through Stripe: pay at the checkout's Stripe page (GET /pay/{key} sends you there); nothing was changed")
		}
		if err := parseForm(r); err != nil {
			return err
		}
		key, status, sig := r.PathValue("key"), r.PostFormValue("status"), r.PostFormValue("sig")
		if err := shop.ValidatePayment(key, status); err != nil {
			return err
		}
		o, err := payCheckout(r, db, acc, key, sig)
		if err != nil {
			return err
		}
		if o == nil {
			return shop.Errorf(shop.Conflict, "checkout %s sold out: there is nothing to pay", key)
		}
		orderID, err := checkout.Pay(r.Context(), key, status)
		if err != nil {
			return err
		}
		to := "/track/" + strconv.FormatInt(orderID, 10)
		if !acc.ownsOrder(r, *o) {
			to = "/pay/" + key + "?sig=" + url.QueryEscape(sig)
		}
		http.Redirect(w, r, to, http.StatusSeeOther)
		return nil
	}
}

func handleOrderPage(db *store.DB, acc access, page views.PageInfo) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		o, err := acc.orderFromPath(db, r)
		if err != nil {
			return err
		}
		lines, err := orderLines(r, db, o)
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.OrderPage(acc.page(page, r), o, lines))
	}
}

// orderLines is order o's lines as a page shows them, with product names.
func orderLines(r *http.Request, db *store.DB, o shop.Order) ([]views.Line, error) {
	o, err := db.WithLines(r.Context(), o)
	if err != nil {
		return nil, err
	}
	names, err := productNames(r, db)
	if err != nil {
		return nil, err
	}
	out := make([]views.Line, 0, len(o.Lines))
	for _, l := range o.Lines {
		out = append(out, views.Line{ProductID: l.ProductID, Name: names[l.ProductID], Quantity: l.Quantity, UnitPriceCents: l.UnitPriceCents})
	}
	return out, nil
}

// shortLines is the short lines of sold-out checkout key, with names.
func shortLines(r *http.Request, db *store.DB, key string) ([]views.Short, error) {
	cart, err := db.SoldOutLines(r.Context(), key)
	if err != nil {
		return nil, err
	}
	names, err := productNames(r, db)
	if err != nil {
		return nil, err
	}
	var out []views.Short
	for _, s := range cart {
		if s.Available < s.Quantity {
			out = append(out, views.Short{Name: names[s.ProductID], Quantity: s.Quantity, Available: s.Available})
		}
	}
	return out, nil
}

// productNames is the catalog's names by product id.
func productNames(r *http.Request, db *store.DB) (map[int]string, error) {
	ps, err := db.Products(r.Context())
	names := make(map[int]string, len(ps))
	for _, p := range ps {
		names[p.ID] = p.Name
	}
	return names, err
}

func handleOrderPartial(db *store.DB, acc access) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		o, err := acc.orderFromPath(db, r)
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.OrderLive(o))
	}
}

func handleStockPartial(db *store.DB) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := db.Product(r.Context())
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.Stock(p))
	}
}

func handleMyOrdersPartial(db *store.DB) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		mine, err := db.RecentOrders(r.Context(), shopper(w, r), 10)
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.MyOrders(mine))
	}
}

// internals reads what the internals panel shows, for the operator: the
// product, the newest orders, the newest late payments with their refunds,
// and what needs an operator's attention.
func internals(r *http.Request, db *store.DB, ops Operations) (views.Internals, error) {
	var s views.Internals
	var err error
	if s.Product, err = db.Product(r.Context()); err != nil {
		return s, err
	}
	if s.AllOrders, err = db.RecentOrders(r.Context(), "", 20); err != nil {
		return s, err
	}
	if s.LatePayments, err = recentLatePayments(r, db); err != nil {
		return s, err
	}
	attention, err := ops.Attention(r.Context())
	s.Attention = attentionViews(attention)
	return s, err
}

func handleInternalsPartial(db *store.DB, ops Operations, acc access, page views.PageInfo) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		s, err := internals(r, db, ops)
		if err != nil {
			return err
		}
		return render(w, r, http.StatusOK, views.InternalsPanel(acc.page(page, r), s))
	}
}

// recentLatePayments is the internals panel's few newest late payments,
// with their refunds.
func recentLatePayments(r *http.Request, db *store.DB) ([]views.LatePayment, error) {
	late, err := db.RecentLatePayments(r.Context(), 5)
	if err != nil {
		return nil, err
	}
	out := make([]views.LatePayment, 0, len(late))
	for _, l := range late {
		v := views.LatePayment{OrderID: l.OrderID, ReceivedAt: l.ReceivedAt.Local(), Refunded: l.RefundStatus == store.RefundRefunded}
		if l.RefundedAt != nil {
			v.RefundedAt = l.RefundedAt.Local()
		}
		out = append(out, v)
	}
	return out, nil
}

func handleStatic() http.Handler {
	sub, err := fs.Sub(views.Static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time: this cannot happen in a built binary
	}
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})
}

// ----- workflow timeline -----

// handleTimelinePartial is the order page's live timeline of the workflows
// behind the order, for its buyer and the operator. It polls itself until
// everything is final. Only the operator sees the workflows' IDs and errors:
// the buyer's names them by the order (timeline.Public).
func handleTimelinePartial(db *store.DB, acc access, timelines Timelines) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		o, err := acc.orderFromPath(db, r)
		if err != nil {
			return err
		}
		tl, err := timelines.Order(r.Context(), o)
		if err != nil {
			return err
		}
		if !acc.operator(r) {
			tl = tl.Public()
		}
		tl.DOMID, tl.PollURL = "timeline", "/partials/timeline/"+strconv.FormatInt(o.ID, 10)
		return render(w, r, http.StatusOK, views.TimelinePanel(tl))
	}
}

// handleInternalsTimelinePartial is the internals panel's timeline: of the
// order chosen with ?order=N, else of the newest order. It keeps polling,
// since the newest order changes.
func handleInternalsTimelinePartial(db *store.DB, timelines Timelines) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		tl := timeline.Timeline{DOMID: "internals-timeline", PollURL: "/partials/internals/timeline", Follow: true}
		var id int64
		if s := r.URL.Query().Get("order"); s != "" {
			v, err := shop.ParseOrderID(s)
			if err != nil {
				return err
			}
			id = v
			tl.PollURL += "?order=" + strconv.FormatInt(id, 10)
		} else {
			v, err := db.NewestOrderID(r.Context())
			if err != nil {
				return err
			}
			id = v
		}
		if id != 0 {
			o, err := db.OrderByID(r.Context(), id)
			if err != nil {
				return err
			}
			got, err := timelines.Order(r.Context(), o)
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
func handleDemoCrash(runID int64, crash handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		// FormValue drops a form it cannot read (as this handler always
		// has): with no run there is nothing to check, and the crash goes
		// ahead as asked. A declared oversized body got its 413 already.
		if s := r.FormValue("run"); s != "" {
			run, err := strconv.ParseInt(s, 10, 64)
			if err != nil || run <= 0 {
				return shop.Errorf(shop.Invalid, "run must be a process run id (got %.40q)", s)
			}
			if run != runID {
				return shop.Errorf(shop.Conflict, "the store has restarted since (run %d is gone, this is run %d): nothing was crashed", run, runID)
			}
		}
		return crash(w, r)
	}
}

// handleOperatorLoginPage is GET /admin/login: the form that signs a browser
// in as the operator (auth.go).
func handleOperatorLoginPage(acc access, page views.PageInfo) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		return render(w, r, http.StatusOK, views.OperatorLoginPage(acc.page(page, r)))
	}
}
