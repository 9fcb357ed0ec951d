package web

import "testing"

// TestWebhookSignatureVector pins the signing scheme to a value computed
// independently (openssl dgst -sha256 -hmac, as in the README).
func TestWebhookSignatureVector(t *testing.T) {
	got := SignWebhook("whsec", "1767225600", "POST", "/payment_webhook/abc/paid")
	const want = "sha256=01800ae73f3ee419b3a7fcb4fd7b344b30642ece2893f2a36eaf82765e13bb77"
	if got != want {
		t.Fatalf("SignWebhook = %s, want %s", got, want)
	}
}
