package store

import "widget-store/internal/shop"

// The reads the pages make on every load (the store page, an order page and
// its timeline, a page of GET /orders, the internals panel), kept here as
// constants so that the methods that run them and the large-store test
// (internal/storetest/large_test.go), which EXPLAINs each on a seeded
// database and fails when one would read a whole table, share one text.
const (
	sqlProduct    = `SELECT ` + productColumns + ` FROM products p LEFT JOIN product_pictures pp ON pp.product_id = p.product_id WHERE p.product_id = $1`
	sqlProducts   = `SELECT ` + productColumns + ` FROM products p LEFT JOIN product_pictures pp ON pp.product_id = p.product_id ORDER BY p.product_id`
	sqlOrderLines = `SELECT product_id, quantity, unit_price_cents FROM order_lines WHERE order_id = $1 ORDER BY product_id`
	// The lines of a page of orders (GET /orders): its ids are a range.
	sqlPageLines = `SELECT order_id, product_id, quantity, unit_price_cents FROM order_lines
		WHERE order_id BETWEEN $1 AND $2 ORDER BY order_id, product_id`
	sqlOrderByID     = `SELECT ` + orderColumns + ` FROM orders WHERE order_id = $1`
	sqlRecentOrders  = `SELECT ` + orderColumns + ` FROM orders ORDER BY order_id DESC LIMIT $1`
	sqlShopperOrders = `SELECT ` + orderColumns + ` FROM orders WHERE shopper = $1 ORDER BY order_id DESC LIMIT $2`
	sqlOrdersPage    = `SELECT ` + orderColumns + ` FROM orders WHERE order_id > $1 ORDER BY order_id LIMIT $2`
	sqlNewestOrderID = `SELECT COALESCE(MAX(order_id), 0) FROM orders`

	// The hold limit's reads (HOLD_LIMIT): a client's or a browser's
	// unpaid orders created since $2, and the oldest of them.
	sqlClientHolds = `SELECT COUNT(*), COALESCE(MIN(h.created_at), 0) FROM hold_clients h
		JOIN orders o ON o.order_id = h.order_id
		WHERE h.client = $1 AND h.created_at > $2 AND o.order_status = 0`
	sqlShopperHolds = `SELECT COUNT(*), COALESCE(MIN(created_at), 0) FROM orders
		WHERE shopper = $1 AND created_at > $2 AND order_status = 0`

	sqlRecentLatePayments = `SELECT l.payment_id, l.order_id, l.received_at, r.refunded_at, r.provider_refund_id
		FROM late_payments l LEFT JOIN refunds r ON r.payment_id = l.payment_id
		ORDER BY l.received_at DESC, l.payment_id DESC LIMIT $1`

	// The reconciler's read, every RECONCILE_EVERY on every instance.
	sqlUnfinishedOrders = `SELECT ` + orderColumns + ` FROM orders
		WHERE order_status IN (0, 2) AND created_at < $1 AND order_id > $2 ORDER BY order_id LIMIT $3`

	sqlRunsSince = `
		SELECT run_id, executor_id, started_at FROM process_runs
		WHERE executor_id = $1 AND started_at >= (
			SELECT COALESCE(MAX(started_at), 0) FROM process_runs WHERE executor_id = $1 AND started_at <= $2)
		ORDER BY started_at, run_id
		LIMIT 200`
)

// PageQuery is one of the pages' reads, with arguments of the right types
// for EXPLAIN.
type PageQuery struct {
	Name string
	SQL  string
	Args []any
	// KeyOrder: the query reads rows in an index's order and stops at its
	// LIMIT, so a plan that walks that index (SQLite: SCAN orders) is the
	// right one, not a full scan.
	KeyOrder bool
}

// PageQueries lists the pages' reads.
func PageQueries() []PageQuery {
	return []PageQuery{
		{Name: "product", SQL: sqlProduct, Args: []any{1}},
		{Name: "an order's lines", SQL: sqlOrderLines, Args: []any{int64(42)}},
		{Name: "a page's lines", SQL: sqlPageLines, Args: []any{int64(500_000), int64(500_100)}},
		{Name: "order by id", SQL: sqlOrderByID, Args: []any{int64(42)}},
		{Name: "newest orders", SQL: sqlRecentOrders, Args: []any{20}, KeyOrder: true},
		{Name: "a shopper's orders", SQL: sqlShopperOrders, Args: []any{"0123456789abcdef0123456789abcdef", 10}},
		{Name: "a page of orders", SQL: sqlOrdersPage, Args: []any{int64(500_000), 101}},
		{Name: "newest order id", SQL: sqlNewestOrderID},
		{Name: "a client's holds", SQL: sqlClientHolds, Args: []any{"192.0.2.1", int64(1_700_000_000_000)}},
		{Name: "a shopper's holds", SQL: sqlShopperHolds, Args: []any{"0123456789abcdef0123456789abcdef", int64(1_700_000_000_000)}},
		{Name: "newest late payments", SQL: sqlRecentLatePayments, Args: []any{5}, KeyOrder: true},
		{Name: "process runs", SQL: sqlRunsSince, Args: []any{"node-a", int64(1_700_000_000_000)}},
	}
}

// BackgroundQueries lists the reads the background services repeat however
// large the store grows (the reconciler's unfinished orders, retention's
// finished workflows), and a checkout's first read (which answers a sold-out
// checkout), in dialect d's SQL.
func BackgroundQueries(d Dialect) []PageQuery {
	look, lookArgs := lookBeforeCheckoutSQL(d, "k-0123456789abcdef", []shop.Line{{ProductID: 1, Quantity: 1}, {ProductID: 3, Quantity: 2}})
	return []PageQuery{
		{Name: "a checkout's first read (sold out)", SQL: look, Args: lookArgs},
		{Name: "unfinished orders (attention list)", SQL: sqlUnfinishedOrders, Args: []any{int64(1_700_000_000_000), int64(0), 500}},
		{Name: "unfinished orders without a live checkout (reconciler)", SQL: unfinishedOrdersToJudgeSQL(d), Args: []any{int64(1_700_000_000_000), int64(0), 500}},
		{Name: "finished workflows (retention)", SQL: finishedWorkflowsSQL(d), Args: []any{int64(1_700_000_000_000), 0, 200}},
	}
}
