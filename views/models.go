// Package views renders the store's pages with templ. It holds the view
// models, the components and the embedded static files (CSS, JS, htmx).
package views

import (
	"embed"
	"time"

	"widget-store/internal/shop"
)

// Static holds the files served under /static/: our CSS and JS, and the
// unmodified htmx.min.js of npm htmx.org 2.0.11 (see scripts/fetch-htmx.sh).
//
//go:embed static
var Static embed.FS

// PageInfo is what every page shows in its frame.
type PageInfo struct {
	Demo bool // no ADMIN_TOKEN: crash and restock are open to anyone
	// Operator: this request is the operator's (demo mode, the admin token,
	// or a browser signed in as the operator), so the page has its buttons.
	Operator   bool
	Database   string // "sqlite" or "postgres"
	ExecutorID string
	// UnsignedWebhooks: no PAYMENT_WEBHOOK_SECRET, so the payment webhook
	// accepts unsigned calls.
	UnsignedWebhooks bool
}

// Store is the store page.
type Store struct {
	Product  shop.Product
	Catalog  []shop.Product // every product, by id
	CartKey  string         // idempotency key of the cart's next Check out
	NewKey   string         // idempotency key of the next Buy: a double submit buys once
	MyOrders []shop.Order
	// Internals is the operator's panel; nil for anyone else (a visitor of a
	// store with ADMIN_TOKEN set), whose page then carries none of it.
	Internals *Internals
}

// Internals is the operator's panel: every order, the late payments, what
// needs attention.
type Internals struct {
	Product   shop.Product
	AllOrders []shop.Order
	// LatePayments are the newest payments for cancelled orders, with
	// their refunds.
	LatePayments []LatePayment
	// Attention lists the orders that need an operator.
	Attention []Attention
}

// LatePayment is a payment that came for a cancelled order, as the
// internals panel shows it: by order, never by payment id (a payment id is
// a checkout key, which the public page must not show).
type LatePayment struct {
	OrderID    int64
	ReceivedAt time.Time
	Refunded   bool
	RefundedAt time.Time // when Refunded
}

// Line is one line of an order or a cart as a page shows it.
type Line struct {
	ProductID      int
	Name           string
	Quantity       int
	UnitPriceCents int64
}

// UnitPrice formats the unit price.
func (l Line) UnitPrice() string { return shop.Money(l.UnitPriceCents) }

// Subtotal formats quantity × unit price.
func (l Line) Subtotal() string { return shop.Money(int64(l.Quantity) * l.UnitPriceCents) }

// Short is a line a checkout could not hold.
type Short struct {
	Name                string
	Quantity, Available int
}

// Pay is the payment page of one checkout.
type Pay struct {
	Key     string
	Product shop.Product
	Order   *shop.Order // nil when the checkout sold out
	SoldOut bool
	// Lines and TotalCents are the order's (when there is one); Short the
	// lines that were short (a cart that sold out).
	Lines      []Line
	TotalCents int64
	Short      []Short
	// Sig is the pay link's signature the page was opened with, carried in
	// its forms (a buyer with a signed link and no session); "" otherwise.
	Sig string
	// CanTrack: the viewer may open the order's page (its buyer's session,
	// or the operator).
	CanTrack bool
}

// Attention is an order the internals panel lists as needing an operator,
// with what its buttons may do.
type Attention struct {
	Order     shop.Order
	Reason    string
	Workflows []WorkflowState
	CanRetry  bool // Retry resumes its stopped workflow (or forks it from its failed step)
	CanCancel bool // Cancel-and-refund applies
	Refund    bool // it is the order's payment refund that is stuck
}

// WorkflowState is one workflow behind an order that needs attention, as
// the panel names it ("checkout", "refund", or its ID).
type WorkflowState struct {
	Label, Status string
}
