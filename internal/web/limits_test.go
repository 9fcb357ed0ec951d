package web

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestClientAddr is the table of where the hold limit finds the client:
// the peer, unless the peer is a trusted proxy, then the rightmost
// X-Forwarded-For hop that is not one (a client can prepend anything).
func TestClientAddr(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 127.0.0.1 ,::1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		trusted    bool // use the trusted list (else none)
		want       string
	}{
		{"no proxies configured: the peer, XFF ignored", "203.0.113.7:4000", []string{"198.51.100.1"}, false, "203.0.113.7"},
		{"untrusted peer: its XFF is a claim, ignored", "203.0.113.7:4000", []string{"198.51.100.1"}, true, "203.0.113.7"},
		{"trusted proxy: the client it saw", "10.1.2.3:4000", []string{"198.51.100.1"}, true, "198.51.100.1"},
		{"a forged hop left of the real one is ignored", "10.1.2.3:4000", []string{"1.2.3.4, 198.51.100.1"}, true, "198.51.100.1"},
		{"two trusted proxies in a row", "127.0.0.1:4000", []string{"198.51.100.1, 10.9.9.9"}, true, "198.51.100.1"},
		{"several XFF headers read as one list", "10.1.2.3:4000", []string{"1.2.3.4", "198.51.100.1"}, true, "198.51.100.1"},
		{"a malformed hop stops the walk at the last good one", "10.1.2.3:4000", []string{"198.51.100.1, garbage"}, true, "10.1.2.3"},
		{"only trusted hops: the leftmost", "10.1.2.3:4000", []string{"10.0.0.5"}, true, "10.0.0.5"},
		{"IPv6 peer", "[2001:db8::1]:4000", nil, true, "2001:db8::1"},
		{"IPv4-mapped IPv6 peer", "[::ffff:203.0.113.9]:4000", nil, true, "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/checkout/k", nil)
			r.RemoteAddr = tc.peer
			for _, h := range tc.xff {
				r.Header.Add("X-Forwarded-For", h)
			}
			tr := trusted
			if !tc.trusted {
				tr = nil
			}
			if got := clientAddr(r, tr); got != tc.want {
				t.Errorf("clientAddr = %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := ParseTrustedProxies("10.0.0.0/8,not-an-address"); err == nil {
		t.Error("ParseTrustedProxies accepted a bad entry")
	}
}

// TestMethodLabel: the metric label of a method is one of a fixed set.
func TestMethodLabel(t *testing.T) {
	for m, want := range map[string]string{
		http.MethodGet: "GET", http.MethodPost: "POST", http.MethodHead: "HEAD",
		"get": "other", "X1METHOD": "other", "": "other", "PROPFIND": "other",
	} {
		if got := methodLabel(m); got != want {
			t.Errorf("methodLabel(%q) = %q, want %q", m, got, want)
		}
	}
}
