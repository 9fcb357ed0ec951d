package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
)

// The catalog and the carts: products with their pictures, an order's lines,
// and the cart a sold-out checkout asked for.

// productColumns are the columns scanProduct reads (products p, its picture pp).
const productColumns = `p.product_id, p.name, p.description, p.price_cents, p.inventory, pp.picture`

func scanProduct(row interface{ Scan(dest ...any) error }) (shop.Product, error) {
	var p shop.Product
	var picture sql.NullString
	err := row.Scan(&p.ID, &p.Name, &p.Description, &p.PriceCents, &p.Inventory, &picture)
	p.Picture = picture.String
	return p, err
}

// Products lists the catalog, by product id.
func (db *DB) Products(ctx context.Context) ([]shop.Product, error) {
	rows, err := db.q.Query(ctx, sqlProducts)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	var out []shop.Product
	for rows.Next() {
		p, err := scanProduct(rows)
		if err != nil {
			return nil, fmt.Errorf("list products: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	return out, nil
}

// OrderLines reads the lines of order o on q (the handle, or a transaction),
// by product id. An order made before carts has none in the table: it is one
// unit of its product at its price.
func OrderLines(ctx context.Context, q dbos.Querier, o shop.Order) ([]shop.Line, error) {
	rows, err := q.Query(ctx, sqlOrderLines, o.ID)
	if err != nil {
		return nil, fmt.Errorf("read the lines of order %d: %w", o.ID, err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	var out []shop.Line
	for rows.Next() {
		var l shop.Line
		if err := rows.Scan(&l.ProductID, &l.Quantity, &l.UnitPriceCents); err != nil {
			return nil, fmt.Errorf("read the lines of order %d: %w", o.ID, err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the lines of order %d: %w", o.ID, err)
	}
	if len(out) == 0 {
		out = []shop.Line{{ProductID: o.ProductID, Quantity: 1, UnitPriceCents: o.PriceCents}}
	}
	return out, nil
}

// PageWithLines reads the lines of a page of orders (ascending ids, as
// OrdersPage returns them) into each, in one query over the page's id range;
// an order with none in the table is one unit of its product, as in
// OrderLines.
func (db *DB) PageWithLines(ctx context.Context, page []shop.Order) ([]shop.Order, error) {
	if len(page) == 0 {
		return page, nil
	}
	rows, err := db.q.Query(ctx, sqlPageLines, page[0].ID, page[len(page)-1].ID)
	if err != nil {
		return nil, fmt.Errorf("read the lines of a page of orders: %w", err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	lines := map[int64][]shop.Line{}
	for rows.Next() {
		var id int64
		var l shop.Line
		if err := rows.Scan(&id, &l.ProductID, &l.Quantity, &l.UnitPriceCents); err != nil {
			return nil, fmt.Errorf("read the lines of a page of orders: %w", err)
		}
		lines[id] = append(lines[id], l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the lines of a page of orders: %w", err)
	}
	for i, o := range page {
		page[i].Lines = lines[o.ID]
		if len(page[i].Lines) == 0 {
			page[i].Lines = []shop.Line{{ProductID: o.ProductID, Quantity: 1, UnitPriceCents: o.PriceCents}}
		}
	}
	return page, nil
}

// WithLines reads order o's lines into it.
func (db *DB) WithLines(ctx context.Context, o shop.Order) (shop.Order, error) {
	lines, err := OrderLines(ctx, db.q, o)
	o.Lines = lines
	return o, err
}

// SoldOutLines reads the cart a sold-out checkout asked for, each line with
// the stock it found; a line with Available < Quantity was short. None for a
// checkout that made an order, or sold out before carts.
func (db *DB) SoldOutLines(ctx context.Context, key string) ([]shop.Shortage, error) {
	rows, err := db.q.Query(ctx, `SELECT product_id, quantity, available FROM sold_out_lines WHERE checkout_key = $1 ORDER BY product_id`, key)
	if err != nil {
		return nil, fmt.Errorf("read the cart of checkout %s: %w", key, err)
	}
	defer rows.Close() // its error is rows.Err's, returned below
	var out []shop.Shortage
	for rows.Next() {
		var s shop.Shortage
		if err := rows.Scan(&s.ProductID, &s.Quantity, &s.Available); err != nil {
			return nil, fmt.Errorf("read the cart of checkout %s: %w", key, err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// CartOfKey is the cart checkout key asked for, as its first step recorded
// it: its order's lines, or its sold-out record's. ok is false when neither
// is there (yet).
func (db *DB) CartOfKey(ctx context.Context, key string) (cart []shop.Line, ok bool, err error) {
	o, err := db.OrderByKey(ctx, key)
	if err == nil {
		cart, err = OrderLines(ctx, db.q, o)
		return cart, err == nil, err
	}
	if shop.KindOf(err) != shop.NotFound {
		return nil, false, err
	}
	short, err := db.SoldOutLines(ctx, key)
	if err != nil {
		return nil, false, err
	}
	if len(short) == 0 { // sold out before carts (one unit of product 1), or nothing yet
		state, err := db.CheckoutState(ctx, key)
		return shop.DefaultCart(), state == CheckoutSoldOut, err
	}
	for _, s := range short {
		cart = append(cart, shop.Line{ProductID: s.ProductID, Quantity: s.Quantity})
	}
	return cart, true, nil
}
