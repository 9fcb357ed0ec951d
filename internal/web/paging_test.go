package web

import (
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"

	"widget-store/internal/shop"
	"widget-store/internal/store"
)

func TestCursorsRoundTrip(t *testing.T) {
	for _, id := range []int64{1, 42, 1 << 62} {
		c := orderCursor(id)
		text, ok := decodeCursor("orders", c)
		if !ok {
			t.Fatalf("order cursor %q for %d does not decode", c, id)
		}
		if got, ok := orderCursorPos(text); !ok || got != id {
			t.Errorf("order cursor %q: %d, %v; want %d", c, got, ok, id)
		}
		if _, ok := decodeCursor("late_payments", c); ok {
			t.Errorf("order cursor %q accepted as a late payment cursor", c)
		}
	}
	for _, p := range []store.LatePaymentPos{{ReceivedAtMs: 1767225600000, PaymentID: "k-3f2a"}, {ReceivedAtMs: 0, PaymentID: "a:b:c"}, {ReceivedAtMs: 5, PaymentID: strings.Repeat("~", shop.MaxKeyLen)}} {
		c := latePaymentCursor(p)
		text, ok := decodeCursor("late_payments", c)
		if !ok {
			t.Fatalf("late payment cursor %q for %+v does not decode", c, p)
		}
		if got, ok := latePaymentCursorPos(text); !ok || got != p {
			t.Errorf("late payment cursor %q: %+v, %v; want %+v", c, got, ok, p)
		}
	}
}

func TestParsePage(t *testing.T) {
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	good := orderCursor(7)
	cases := []struct {
		query     string
		limit     int
		after     int64 // 0: first page
		wantError string
	}{
		{"", defaultPageSize, 0, ""},
		{"?limit=1", 1, 0, ""},
		{"?limit=1000&after=" + good, 1000, 7, ""},
		{"?after=" + good + "&other=ignored", defaultPageSize, 7, ""},
		{"?limit=0", 0, 0, "limit must be a whole number from 1 to 1000"},
		{"?limit=1001", 0, 0, "limit must be"},
		{"?limit=x", 0, 0, "limit must be"},
		{"?limit=", 0, 0, "limit must be"},
		{"?limit=-1", 0, 0, "limit must be"},
		{"?limit=1.5", 0, 0, "limit must be"},
		{"?limit=99999999999999999999", 0, 0, "limit must be"},
		{"?limit=5&limit=6", 0, 0, "limit given 2 times"},
		{"?after=", 0, 0, "after must be a cursor"},
		{"?after=not-a-cursor", 0, 0, "after must be a cursor"},
		{"?after=" + good + "==", 0, 0, "after must be a cursor"},
		{"?after=" + good + "&after=" + good, 0, 0, "after given 2 times"},
		{"?after=" + b64("orders:0"), 0, 0, "after must be a cursor"},
		{"?after=" + b64("orders:-3"), 0, 0, "after must be a cursor"},
		{"?after=" + b64("orders:007"), 0, 0, "after must be a cursor"},
		{"?after=" + b64("orders:+7"), 0, 0, "after must be a cursor"},
		{"?after=" + b64("orders:"), 0, 0, "after must be a cursor"},
		{"?after=" + b64("orders:7 "), 0, 0, "after must be a cursor"},
		{"?after=" + b64("7"), 0, 0, "after must be a cursor"},
		{"?after=" + latePaymentCursor(store.LatePaymentPos{ReceivedAtMs: 1, PaymentID: "k"}), 0, 0, "after must be a cursor"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/orders"+tc.query, nil)
		limit, after, err := parsePage(r, "orders", orderCursorPos)
		if tc.wantError != "" {
			if shop.KindOf(err) != shop.Invalid || !strings.Contains(err.Error(), tc.wantError) {
				t.Errorf("%q: error %v, want an Invalid error containing %q", tc.query, err, tc.wantError)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		var got int64
		if after != nil {
			got = *after
		}
		if limit != tc.limit || got != tc.after {
			t.Errorf("%q: limit %d after %d; want %d, %d", tc.query, limit, got, tc.limit, tc.after)
		}
	}
	for _, bad := range []string{b64("late_payments:x:k"), b64("late_payments:1"), b64("late_payments:1:"), b64("late_payments:01:k"), b64("late_payments:1:bad/key"), good} {
		r := httptest.NewRequest("GET", "/late_payments?after="+bad, nil)
		if _, _, err := parsePage(r, "late_payments", latePaymentCursorPos); shop.KindOf(err) != shop.Invalid {
			t.Errorf("late payment cursor %q: %v, want Invalid", bad, err)
		}
	}
}

func TestNextLink(t *testing.T) {
	rec := httptest.NewRecorder()
	setNextLink(rec, "/orders", 7, orderCursor(42))
	want := `</orders?limit=7&after=` + orderCursor(42) + `>; rel="next"`
	if got := rec.Header().Get("Link"); got != want {
		t.Errorf("Link %q, want %q", got, want)
	}
}
