// Package views renders the store's pages with templ. It holds the view
// models, the components and the embedded static files (CSS, JS, htmx).
package views

import (
	"embed"
	"fmt"
	"time"
)

// Static holds the files served under /static/: our CSS and JS, and the
// unmodified htmx.min.js of npm htmx.org 2.0.11 (see scripts/fetch-htmx.sh).
//
//go:embed static
var Static embed.FS

// PageInfo is what every page shows in its frame.
type PageInfo struct {
	Demo       bool   // no ADMIN_TOKEN: crash and restock are open to anyone
	Database   string // "sqlite" or "postgres"
	ExecutorID string
	// UnsignedWebhooks: no PAYMENT_WEBHOOK_SECRET, so the payment webhook
	// accepts unsigned calls.
	UnsignedWebhooks bool
}

// Product is the store's one product.
type Product struct {
	ID          int
	Name        string
	Description string
	PriceCents  int64
	Inventory   int
}

// Price formats the price, e.g. "$99.99".
func (p Product) Price() string { return money(p.PriceCents) }

func money(cents int64) string { return fmt.Sprintf("$%d.%02d", cents/100, cents%100) }

// Order statuses (as stored).
const (
	StatusCancelled  = -1
	StatusPending    = 0
	StatusDispatched = 1
	StatusPaid       = 2
)

// DispatchSteps is the number of legs a dispatch takes (progress_remaining at the start).
const DispatchSteps = 10

// Order is one order as the pages show it.
type Order struct {
	ID                int64
	Key               string
	ProductID         int
	PriceCents        int64
	Status            int
	ProgressRemaining int
	CreatedAt         time.Time
	LastUpdate        time.Time
}

// StatusName is the status as a word.
func (o Order) StatusName() string {
	switch o.Status {
	case StatusPending:
		return "PENDING"
	case StatusPaid:
		return "PAID"
	case StatusDispatched:
		return "DISPATCHED"
	case StatusCancelled:
		return "CANCELLED"
	}
	return fmt.Sprintf("UNKNOWN(%d)", o.Status)
}

// Final reports an order that will not change any more.
func (o Order) Final() bool { return o.Status == StatusDispatched || o.Status == StatusCancelled }

// ProgressPercent is how far the dispatch has got.
func (o Order) ProgressPercent() int {
	switch o.Status {
	case StatusDispatched:
		return 100
	case StatusPaid:
		return (DispatchSteps - o.ProgressRemaining) * 100 / DispatchSteps
	}
	return 0
}

// Price formats the price paid.
func (o Order) Price() string { return money(o.PriceCents) }

// Store is the store page.
type Store struct {
	Product   Product
	NewKey    string // idempotency key of the next Buy: a double submit buys once
	MyOrders  []Order
	AllOrders []Order
}

// Pay is the payment page of one checkout.
type Pay struct {
	Key     string
	Product Product
	Order   *Order // nil when the checkout sold out
	SoldOut bool
}
