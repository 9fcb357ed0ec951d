package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
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
// (app.pay), so it needs no signature. That page is the demo's stand-in for a
// payment provider's hosted page: whoever holds a checkout key can pay or
// decline it there, exactly as the holder of a provider's payment link could.
// Cross-site form posts to it are refused (http.CrossOriginProtection).
//
// Unset, the webhook accepts unsigned calls: demo mode, which the payment
// page states.
const (
	webhookTimestampHeader = "X-Webhook-Timestamp"
	webhookSignatureHeader = "X-Webhook-Signature"
	webhookMaxSkew         = 5 * time.Minute
)

// webhookCanonical is the string a webhook signature covers.
func webhookCanonical(timestamp, method, path string) string {
	return timestamp + "." + method + " " + path
}

// webhookMAC is HMAC-SHA256(secret, canonical string) of a call.
func webhookMAC(secret, timestamp, method, path string) []byte {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(webhookCanonical(timestamp, method, path))) // a hash.Hash never fails to write
	return mac.Sum(nil)
}

// signWebhook returns the X-Webhook-Signature value for a call; a payment
// provider (or a test) computes exactly this.
func signWebhook(secret, timestamp, method, path string) string {
	return "sha256=" + hex.EncodeToString(webhookMAC(secret, timestamp, method, path))
}

// verifyWebhook checks a payment webhook's signature when a secret is
// configured (see the scheme above). It returns a 401 error for any call it
// cannot authenticate.
func (a *app) verifyWebhook(r *http.Request) error {
	secret := a.cfg.WebhookKey
	if secret == "" {
		return nil // demo mode
	}
	ts, sig := r.Header.Get(webhookTimestampHeader), r.Header.Get(webhookSignatureHeader)
	if ts == "" || sig == "" {
		return errorf(http.StatusUnauthorized, "this webhook must be signed: send %s and %s (see the README)", webhookTimestampHeader, webhookSignatureHeader)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errorf(http.StatusUnauthorized, "%s must be Unix seconds (got %.40q)", webhookTimestampHeader, ts)
	}
	if skew := a.now().Sub(time.Unix(secs, 0)); skew > webhookMaxSkew || skew < -webhookMaxSkew {
		return errorf(http.StatusUnauthorized, "webhook timestamp is more than %v away from the store's clock; refused as a possible replay", webhookMaxSkew)
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil {
		return errorf(http.StatusUnauthorized, "%s must be sha256= followed by the HMAC in hex", webhookSignatureHeader)
	}
	// hmac.Equal takes the same time wherever the first difference is.
	if !hmac.Equal(got, webhookMAC(secret, ts, r.Method, r.URL.EscapedPath())) {
		return errorf(http.StatusUnauthorized, "webhook signature does not match this request")
	}
	return nil
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
