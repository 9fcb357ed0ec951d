package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"widget-store/internal/shop"
)

// Payment webhook signatures.
//
// When PAYMENT_WEBHOOK_SECRET is set, every call to
// POST /payment_webhook/{payment_id}/{status} must carry two headers:
//
//	X-Webhook-Timestamp: <Unix time in seconds when the call was signed>
//	X-Webhook-Signature: sha256=<lower-case hex of HMAC-SHA256(secret, canonical)>
//
// where canonical is the timestamp, a dot, the method, a space and the
// request path exactly as sent (no query string, no host):
//
//	1767225600.POST /payment_webhook/3f2a…/paid
//
// The webhook reads no body and no query, so the path is the whole message:
// a signature for ".../paid" cannot be replayed as ".../failed" or for another
// payment id. A timestamp more than webhookMaxSkew away from the store's clock,
// in either direction, is refused as a possible replay; within the window a
// replayed call is harmless anyway, since a payment status is delivered at most
// once per payment id. Missing, malformed, forged and stale signatures all get
// 401 before anything is read or changed.
//
// The store's own payment page does not go through the webhook: its Pay and
// Decline buttons post to /pay/{key}, which applies the status in-process
// (Checkout.Pay). That page is the demo's stand-in for a payment provider's
// hosted page, and like a provider's it is bound to the buyer (access.go):
// the browser session that started the checkout, or a pay link signed with
// this same secret (PayLinkSignature); knowing the key alone is not enough
// once ADMIN_TOKEN is set. Cross-site form posts to it are refused
// (http.CrossOriginProtection), and no other site may frame it (server.go).
//
// Unset, the webhook accepts unsigned calls only in demo mode (no
// ADMIN_TOKEN), which the payment page states. With ADMIN_TOKEN set and no
// secret, nobody could sign, so the webhook takes the admin token instead:
// a call with a key and nothing else never changes an order.
const (
	// WebhookTimestampHeader carries the Unix seconds a webhook call was signed at.
	WebhookTimestampHeader = "X-Webhook-Timestamp"
	// WebhookSignatureHeader carries a webhook call's signature (SignWebhook).
	WebhookSignatureHeader = "X-Webhook-Signature"
	webhookMaxSkew         = 5 * time.Minute
)

// webhookCanonical is the string a webhook signature covers.
func webhookCanonical(timestamp, method, path string) string {
	return timestamp + "." + method + " " + path
}

// webhookMAC is HMAC-SHA256(secret, canonical string) of a call.
func webhookMAC(secret, timestamp, method, path string) []byte {
	mac := hmac.New(sha256.New, []byte(secret))
	_, _ = mac.Write([]byte(webhookCanonical(timestamp, method, path))) // a hash.Hash never fails to write
	return mac.Sum(nil)
}

// SignWebhook returns the X-Webhook-Signature value for a call to the payment
// webhook; a payment provider (or a test) computes exactly this. path is the
// request path as sent, e.g. "/payment_webhook/abc/paid".
func SignWebhook(secret, timestamp, method, path string) string {
	return "sha256=" + hex.EncodeToString(webhookMAC(secret, timestamp, method, path))
}

// verifyWebhook authenticates a payment webhook call: its signature when a
// secret is configured (see the scheme above), against the clock now; else,
// in hardened mode, the admin token; else (demo mode) nothing. It returns an
// Unauthorized error for any call it cannot authenticate.
func (a access) verifyWebhook(now time.Time, r *http.Request) error {
	if a.webhookSecret == "" {
		if a.operator(r) {
			return nil // demo mode, or the operator's own call
		}
		return shop.Errorf(shop.Unauthorized, "this store takes payment webhooks signed with PAYMENT_WEBHOOK_SECRET, which is not set: set it (see the README), or send the admin token")
	}
	return verifySignature(a.webhookSecret, now, r)
}

// verifySignature checks a webhook call's signature with secret.
func verifySignature(secret string, now time.Time, r *http.Request) error {
	ts, sig := r.Header.Get(WebhookTimestampHeader), r.Header.Get(WebhookSignatureHeader)
	if ts == "" || sig == "" {
		return shop.Errorf(shop.Unauthorized, "this webhook must be signed: send %s and %s (see the README)", WebhookTimestampHeader, WebhookSignatureHeader)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return shop.Errorf(shop.Unauthorized, "%s must be Unix seconds (got %.40q)", WebhookTimestampHeader, ts)
	}
	if skew := now.Sub(time.Unix(secs, 0)); skew > webhookMaxSkew || skew < -webhookMaxSkew {
		return shop.Errorf(shop.Unauthorized, "webhook timestamp is more than %v away from the store's clock; refused as a possible replay", webhookMaxSkew)
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil {
		return shop.Errorf(shop.Unauthorized, "%s must be sha256= followed by the HMAC in hex", WebhookSignatureHeader)
	}
	// hmac.Equal takes the same time wherever the first difference is.
	if !hmac.Equal(got, webhookMAC(secret, ts, r.Method, r.URL.EscapedPath())) {
		return shop.Errorf(shop.Unauthorized, "webhook signature does not match this request")
	}
	return nil
}

// requireAdmin guards the operator's actions and store-wide reads: next
// runs only for the operator (access.operator: demo mode, the token in a
// header, a signed-in operator session) or a post that carries the token in
// an admin_token form field. The token is never read from the query string,
// which ends up in logs, and is compared in constant time.
func (a access) requireAdmin(next handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		tok := adminTokenFrom(r)
		if tok == "" && a.operator(r) {
			return next(w, r) // demo mode, or a signed-in operator
		}
		if tok == "" && r.Method == http.MethodPost {
			if err := parseForm(r); err != nil {
				return err
			}
			tok = r.PostFormValue("admin_token")
		}
		if tok == "" || !tokenEqual(tok, a.adminToken) {
			msg := "this action needs the admin token (ADMIN_TOKEN): send it as Authorization: Bearer TOKEN or X-Admin-Token: TOKEN, or sign in at /admin/login"
			if tok != "" {
				msg = "wrong admin token"
			}
			return shop.Errorf(shop.Unauthorized, "%s", msg)
		}
		return next(w, r)
	}
}

// handleOperatorLogin is POST /admin/login: the admin token from a form
// signs this browser in as the operator (access.go) and goes to the store.
func handleOperatorLogin(a access) handlerFunc {
	return a.requireAdmin(func(w http.ResponseWriter, r *http.Request) error {
		if !a.hardened() {
			return shop.Errorf(shop.Conflict, "this store runs in demo mode (no ADMIN_TOKEN): everyone is its operator, there is nothing to sign in to")
		}
		exp := a.now().Add(operatorSessionTTL)
		http.SetCookie(w, &http.Cookie{Name: operatorCookie, Value: a.sessionValue(exp), Path: "/", Expires: exp,
			HttpOnly: true, Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https", SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return nil
	})
}

// handleOperatorLogout is POST /admin/logout: the operator session ends.
func handleOperatorLogout() handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		http.SetCookie(w, &http.Cookie{Name: operatorCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return nil
	}
}

// tokenEqual compares a presented secret with the configured one in time
// that depends on neither's content nor length: both are hashed first, so
// even a length mismatch takes the same path.
func tokenEqual(presented, want string) bool {
	p, w := sha256.Sum256([]byte(presented)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(p[:], w[:]) == 1
}

// adminTokenFrom returns the admin token a request presents, from
// "Authorization: Bearer <token>" or "X-Admin-Token: <token>", or "".
func adminTokenFrom(r *http.Request) string {
	if tok := r.Header.Get("X-Admin-Token"); tok != "" {
		return tok
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(tok)
	}
	return ""
}
