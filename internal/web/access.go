package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"widget-store/internal/shop"
	"widget-store/internal/store"
	"widget-store/views"
)

// Who may see and do what. This file decides it, once per concern, and every
// handler asks it; no handler re-derives a rule.
//
// There are three kinds of callers:
//
//   - The operator: a request that presents the admin token (auth.go), or a
//     browser signed in with it (an operator session, below). In
//     demo mode (no ADMIN_TOKEN) every caller is the operator: the store
//     then listens on 127.0.0.1 only (main.go), so "every caller" is whoever
//     uses this machine.
//   - The buyer of an order: the browser session (the shopper cookie) that
//     started its checkout, recorded on the order by the checkout's first
//     step; or, for paying, whoever holds a pay link signed with the webhook
//     secret (PayLinkSignature), which only the merchant can make and hands
//     only to its buyer; or a payment provider's webhook call signed with that
//     secret (auth.go).
//   - Everyone else, a stranger, who may read the product and the stock, buy,
//     and follow their own orders, and nothing more.
//
// What a stranger must never learn is a checkout key: the key is the payment
// id, so with it and a hole anywhere an order could be paid, declined or
// "late-paid" into a refund by someone else. So a key, a payment id or a
// workflow ID containing one (checkout, refund/…) is shown only to its buyer
// and the operator; a stranger asking for another buyer's order gets the same
// 404 as for an order that does not exist, so order ids cannot be walked to
// learn which exist either; store-wide reads (every order, the late payments,
// the internals panel and its timelines) are the operator's. Nor may a
// stranger get a browser buyer's pay URL at a provider (Stripe's Checkout
// Session), where its order can be seen and paid: mayHavePayURL.
type access struct {
	adminToken    string // ADMIN_TOKEN; "" is demo mode
	webhookSecret string // PAYMENT_WEBHOOK_SECRET; signs pay links too
	now           func() time.Time
}

// hardened reports a store run in public: ADMIN_TOKEN is set.
func (a access) hardened() bool { return a.adminToken != "" }

// operator reports whether r comes from the operator: demo mode, the admin
// token in a header, or a browser signed in as the operator (an operator
// session cookie, see operatorSession). A token in a form is read only by
// the admin actions themselves, in requireAdmin.
func (a access) operator(r *http.Request) bool {
	if !a.hardened() {
		return true
	}
	if tok := adminTokenFrom(r); tok != "" {
		return tokenEqual(tok, a.adminToken)
	}
	c, err := r.Cookie(operatorCookie)
	return err == nil && a.validSession(c.Value, a.now())
}

// The operator's browser session. Signing in (POST /admin/login with the
// admin token) sets a cookie "operator" = "<expiry unix>.<hex HMAC-SHA256(
// token, "operator session <expiry>")>": it proves the token was presented,
// without storing anything, until it expires (operatorSessionTTL) or the
// token changes. HttpOnly, SameSite=Strict (no other site's request carries
// it; cross-origin posts are refused anyway), Secure over TLS.
const (
	operatorCookie     = "operator"
	operatorSessionTTL = 12 * time.Hour
)

func (a access) sessionValue(expiry time.Time) string {
	exp := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(a.adminToken))
	_, _ = mac.Write([]byte("operator session " + exp)) // a hash.Hash never fails to write
	return exp + "." + hex.EncodeToString(mac.Sum(nil))
}

func (a access) validSession(v string, now time.Time) bool {
	exp, _, ok := strings.Cut(v, ".")
	secs, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil || !now.Before(time.Unix(secs, 0)) {
		return false
	}
	return hmac.Equal([]byte(v), []byte(a.sessionValue(time.Unix(secs, 0))))
}

// page is the page frame for r: who is asking decides which buttons it has.
func (a access) page(p views.PageInfo, r *http.Request) views.PageInfo {
	p.Operator = a.operator(r)
	return p
}

// ownsOrder reports whether r may see order o: the operator, or the browser
// session that bought it.
func (a access) ownsOrder(r *http.Request, o shop.Order) bool {
	return a.operator(r) || (o.Shopper != "" && o.Shopper == sessionOf(r))
}

// orderFromPath reads the order named by the request's {id} for the caller:
// Invalid for an id that is not a positive integer, NotFound for one that
// does not exist or is not the caller's (one message for both, so a stranger
// learns nothing by walking ids).
func (a access) orderFromPath(db *store.DB, r *http.Request) (shop.Order, error) {
	id, err := shop.ParseOrderID(r.PathValue("id"))
	if err != nil {
		return shop.Order{}, err
	}
	o, err := db.OrderByID(r.Context(), id)
	if err != nil && shop.KindOf(err) != shop.NotFound {
		return shop.Order{}, err
	}
	if err == nil && a.ownsOrder(r, o) {
		return o, nil
	}
	if a.operator(r) {
		return shop.Order{}, err
	}
	return shop.Order{}, shop.Errorf(shop.NotFound, "there is no order %d among this browser's orders", id)
}

// mayPay reports whether r may pay or decline the checkout of key, whose
// order is o (nil when the checkout made none: it sold out, or there is no
// such checkout): the operator; the session that started it; or a caller
// with the pay link's signature (sig, from the link's query or the pay form).
func (a access) mayPay(r *http.Request, key string, o *shop.Order, sig string) bool {
	if a.operator(r) {
		return true
	}
	if o != nil && o.Shopper != "" && o.Shopper == sessionOf(r) {
		return true
	}
	return a.webhookSecret != "" && sig != "" && hmac.Equal([]byte(sig), []byte(PayLinkSignature(a.webhookSecret, key)))
}

// mayHavePayURL reports whether r may be handed the URL of the payment that
// the provider opened for checkout key, whose order is o: where the order is
// paid, the page that shows its lines and total and takes a card. With the
// stand-in that URL is the store's own /pay/{key}, which decides for itself
// (mayPay) and is handed to anyone; with Stripe it is the Checkout Session's
// URL, which is a capability, so the store hands it out under this rule, the
// same one the stand-in's pay page applies to its buyer:
//
//   - a browser-bought order (its Shopper set): its own browser session and
//     the operator only. A browser's key travels in URLs (/pay/{key}, the
//     history, a shared screenshot), so knowing it proves nothing; a
//     stranger who replays it at POST /checkout/{key} or /buy gets the
//     answers the stand-in gives a stranger (404 for the JSON answer, the
//     pay page's 404 after /buy's redirect to it), and nothing of the
//     session. The pay page itself also lets a signed pay link's holder
//     through (mayPay), as the stand-in's does.
//   - an API-bought order (no Shopper): whoever presents its key at POST
//     /checkout/{key} (or /buy). The API has no session: the client that chose the key
//     is the buyer, the key its only credential, and the store never shows
//     an API key to anyone but the operator. The stand-in answers that
//     client its pay_url the same way, to whoever presents the key. Its pay
//     page (GET /pay/{key}) keeps the stand-in's rule, a signed pay link or
//     the operator: there, as at the stand-in, the key alone opens nothing.
//     Someone who learns an API key from its client can open the session,
//     see the lines and total and pay the order, which costs the buyer
//     nothing; that is the accepted risk of a bearer key.
//
// session is the caller's browser session ("" for none): sessionOf(r), or,
// for a Buy that came without a cookie, the session it was just given, which
// the checkout recorded on the order.
func (a access) mayHavePayURL(r *http.Request, session string, o shop.Order) bool {
	return o.Shopper == "" || o.Shopper == session || a.operator(r)
}

// PayLinkSignature is the signature of the pay link of checkout key: the
// lower-case hex of HMAC-SHA256(secret, "pay " + key), with secret the
// PAYMENT_WEBHOOK_SECRET. A merchant that starts checkouts through the API
// (POST /checkout/{key}) sends its buyer to /pay/{key}?sig=<this>, the
// stand-in provider's hosted page; nobody without the secret can make one.
func PayLinkSignature(secret, key string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	_, _ = mac.Write([]byte("pay " + key)) // a hash.Hash never fails to write
	return hex.EncodeToString(mac.Sum(nil))
}

// notYours is the answer to anyone but the operator who names a checkout
// key that is not theirs, and to one that names a key that does not exist:
// one answer for both, which does not repeat the key.
func notYours(string) error {
	return shop.Errorf(shop.NotFound, "there is no checkout with this key in this browser")
}

// sessionOf is the request's shopper session, or "" if it has none (or a
// malformed one).
func sessionOf(r *http.Request) string {
	if c, err := r.Cookie(shopperCookie); err == nil && shop.ValidateKey("shopper", c.Value) == nil {
		return c.Value
	}
	return "" // no cookie (http.ErrNoCookie) or a malformed one
}
