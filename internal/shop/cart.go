package shop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Line is one line of a cart or an order: a quantity of a product and, on an
// order, the unit price the product had when the checkout held it.
type Line struct {
	ProductID      int   `json:"product_id"`
	Quantity       int   `json:"quantity"`
	UnitPriceCents int64 `json:"unit_price_cents,omitempty"`
}

// A cart's bounds: a line's quantity, and its number of lines.
const (
	MaxLineQuantity = 10
	MaxCartLines    = 20
)

// DefaultCart is what a checkout without a cart buys: one unit of product 1,
// the reference store's checkout.
func DefaultCart() []Line { return []Line{{ProductID: ProductID, Quantity: 1}} }

// Total is the lines' total at their unit prices.
func Total(lines []Line) int64 {
	var t int64
	for _, l := range lines {
		t += int64(l.Quantity) * l.UnitPriceCents
	}
	return t
}

// Units is how many units the lines hold.
func Units(lines []Line) int {
	n := 0
	for _, l := range lines {
		n += l.Quantity
	}
	return n
}

// SortLines orders lines by product id: the order every checkout takes its
// products' stock in, so two checkouts never wait on each other's rows.
func SortLines(lines []Line) {
	slices.SortFunc(lines, func(a, b Line) int { return a.ProductID - b.ProductID })
}

// SameCart reports whether two carts hold the same quantities of the same
// products (unit prices aside; order aside).
func SameCart(a, b []Line) bool {
	if len(a) != len(b) {
		return false
	}
	qty := make(map[int]int, len(a))
	for _, l := range a {
		qty[l.ProductID] = l.Quantity
	}
	for _, l := range b {
		if q, ok := qty[l.ProductID]; !ok || q != l.Quantity {
			return false
		}
	}
	return true
}

// ParseCart reads a checkout's cart, {"items":[{"product_id":2,"quantity":3},
// ...]}, and checks its shape: 1 to MaxCartLines lines, each a product id
// (positive) and a quantity from 1 to MaxLineQuantity, no product twice, no
// other fields. Whether each product exists is the catalog's to say. Every
// mistake is an Invalid error that says what is wrong.
func ParseCart(data []byte) ([]Line, error) {
	var body struct {
		Items []struct {
			ProductID json.RawMessage `json:"product_id"`
			Quantity  json.RawMessage `json:"quantity"`
		} `json:"items"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return nil, Errorf(Invalid, "the cart must be JSON like {\"items\":[{\"product_id\":1,\"quantity\":2}]}: %.200s", err.Error())
	}
	if dec.More() {
		return nil, Errorf(Invalid, "the cart must be one JSON object, with nothing after it")
	}
	if len(body.Items) == 0 {
		return nil, Errorf(Invalid, "the cart has no lines: \"items\" needs 1 to %d lines", MaxCartLines)
	}
	if len(body.Items) > MaxCartLines {
		return nil, Errorf(Invalid, "the cart has %d lines; at most %d", len(body.Items), MaxCartLines)
	}
	lines := make([]Line, 0, len(body.Items))
	seen := make(map[int]bool, len(body.Items))
	for i, it := range body.Items {
		id, ok := wholeNumber(it.ProductID)
		if !ok || id < 1 {
			return nil, Errorf(Invalid, "line %d: product_id must be a positive whole number (got %.40s)", i+1, orNothing(it.ProductID))
		}
		q, ok := wholeNumber(it.Quantity)
		if !ok || q < 1 || q > MaxLineQuantity {
			return nil, Errorf(Invalid, "line %d: quantity must be a whole number from 1 to %d (got %.40s)", i+1, MaxLineQuantity, orNothing(it.Quantity))
		}
		if seen[int(id)] {
			return nil, Errorf(Invalid, "line %d: product %d is on two lines; put its whole quantity on one", i+1, id)
		}
		seen[int(id)] = true
		lines = append(lines, Line{ProductID: int(id), Quantity: int(q)})
	}
	return lines, nil
}

// wholeNumber reads a JSON integer (no fraction, no exponent, no string)
// that fits in 32 bits.
func wholeNumber(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || len(raw) > 11 {
		return 0, false
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || bytes.ContainsAny(raw, ".eE") {
		return 0, false
	}
	return n, n >= -1<<31 && n < 1<<31
}

func orNothing(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	return string(raw)
}

// Shortage is a line a checkout could not hold: Quantity asked, Available
// found.
type Shortage struct {
	ProductID int `json:"product_id"`
	Quantity  int `json:"quantity"`
	Available int `json:"available"`
}

// ShortMessage names the short lines of a sold-out checkout.
func ShortMessage(key string, short []Shortage) string {
	parts := make([]string, 0, len(short))
	for _, s := range short {
		parts = append(parts, fmt.Sprintf("product %d: %d wanted, %d left", s.ProductID, s.Quantity, s.Available))
	}
	return fmt.Sprintf("sold out: checkout %s holds nothing; short: %s", key, strings.Join(parts, "; "))
}
