package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// Order is an order as the JSON API reports it (GET /order/{id}, /orders).
type Order struct {
	OrderID           int64       `json:"order_id"`
	OrderStatus       shop.Status `json:"order_status"`
	Status            string      `json:"status"` // the status as a word: "PENDING", "PAID", "DISPATCHED", "CANCELLED"
	ProgressRemaining int         `json:"progress_remaining"`
}

// IsFinal reports whether the order will not change any more.
func IsFinal(o Order) bool {
	return o.OrderStatus == shop.StatusDispatched || o.OrderStatus == shop.StatusCancelled
}

// Product is GET /product.
type Product struct {
	Inventory int     `json:"inventory"`
	Price     float64 `json:"price"`
	Product   string  `json:"product"`
}

// LatePayment is one row of GET /late_payments: a payment that came for an
// order already cancelled, to refund, and its refund's state.
type LatePayment struct {
	PaymentID    string     `json:"payment_id"`
	OrderID      int64      `json:"order_id"`
	ReceivedAt   time.Time  `json:"received_at"`
	RefundStatus string     `json:"refund_status"` // "pending" or "refunded"
	RefundedAt   *time.Time `json:"refunded_at"`   // when refunded
	RefundID     string     `json:"refund_id"`     // the provider's, when refunded
}

// Call makes one request without a body and returns the status and body.
// A transport error fails the test.
func Call(t testing.TB, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// MustCall is Call that also fails the test unless the status is want; it
// returns the body.
func MustCall(t testing.TB, method, url string, want int) string {
	t.Helper()
	status, body := Call(t, method, url)
	if status != want {
		t.Fatalf("%s %s: status %d, want %d; body %q", method, url, status, want, body)
	}
	return body
}

// GetJSON is GET url, which must answer 200 with JSON for a T.
func GetJSON[T any](t testing.TB, url string) T {
	t.Helper()
	var v T
	body := MustCall(t, "GET", url, http.StatusOK)
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("GET %s: %v in %q", url, err, body)
	}
	return v
}

// Inventory is the product's stock as the store at base reports it.
func Inventory(t testing.TB, base string) int {
	t.Helper()
	return GetJSON[Product](t, base+"/product").Inventory
}

// GetPages reads a paged list (GET /orders, GET /late_payments) from url,
// following every Link rel="next" (loadgen.ReadPages), and returns the items
// of every page in order; header goes with every request. Any failed page
// fails the test.
func GetPages[T any](t testing.TB, url string, header http.Header) []T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	items, _, err := loadgen.ReadPages[T](ctx, http.DefaultClient, url, header)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// Orders is every order, oldest first: GET /orders, 1000 a page, following
// the pages.
func Orders(t testing.TB, base string) []Order {
	t.Helper()
	return GetPages[Order](t, base+"/orders?limit=1000", nil)
}

// NewestOrder is the newest order; it fails the test if there is none.
func NewestOrder(t testing.TB, base string) Order {
	t.Helper()
	o := Orders(t, base)
	if len(o) == 0 {
		t.Fatal("GET /orders: no orders")
	}
	return o[len(o)-1]
}

// LatePayments is every late payment, oldest first: GET /late_payments (in
// demo mode: no admin token), 1000 a page, following the pages.
func LatePayments(t testing.TB, base string) []LatePayment {
	t.Helper()
	return GetPages[LatePayment](t, base+"/late_payments?limit=1000", nil)
}

// WaitOrder polls order id (every 50 ms) until cond holds, and returns it;
// it fails the test if timeout passes first. cond sees every sample, so it
// can also check how the order moves.
func WaitOrder(t testing.TB, base, id string, timeout time.Duration, cond func(Order) bool) Order {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var o Order
	for time.Now().Before(deadline) {
		status, body := Call(t, "GET", base+"/order/"+id)
		if status == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &o); err != nil {
				t.Fatalf("GET /order/%s: %v in %q", id, err, body)
			}
			if cond(o) {
				return o
			}
		}
		time.Sleep(50 * time.Millisecond) // the polling interval
	}
	t.Fatalf("order %s: condition not met within %v; last seen %+v", id, timeout, o)
	return o
}

// WaitHealthy polls base/healthz (every 20 ms) until it answers 200, and
// fails the test if timeout passes first.
func WaitHealthy(t testing.TB, base string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // the polling interval
	}
	t.Fatalf("%s/healthz not ready within %v", base, timeout)
}

// MetricValue reads a metric from base/metrics: the sum of the samples of
// name whose line contains match (e.g. `outcome="paid"`; "" for all).
func MetricValue(t testing.TB, base, name, match string) float64 {
	t.Helper()
	body := MustCall(t, "GET", base+"/metrics", http.StatusOK)
	sum := 0.0
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, name) || !strings.Contains(line, match) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer name that starts with this one
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// NewKey is a fresh checkout (idempotency) key.
func NewKey() string { return "k-" + RandomHex(8) }

// RandomHex is n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
