package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"widget-store/internal/shop"
)

// Settlement is what retention (internal/retention) may do with the DBOS
// records of an order's workflows.
type Settlement int

// Settlements. The zero value is NoOrder: a key or id that made no order.
const (
	NoOrder   Settlement = iota // no such order (a sold-out checkout, a fork that did nothing)
	Settled                     // final (DISPATCHED or CANCELLED), no refund still to make
	Unsettled                   // not final, or a late payment for it not refunded yet
)

// Settlements are the settlement of some orders, by id and by checkout key.
type Settlements struct {
	ByID  map[int64]Settlement
	ByKey map[string]Settlement
}

// SettledOrders reads, in one query, the settlement of the orders with
// these ids or checkout keys.
func (db *DB) SettledOrders(ctx context.Context, ids []int64, keys []string) (Settlements, error) {
	out := Settlements{ByID: map[int64]Settlement{}, ByKey: map[string]Settlement{}}
	if len(ids) == 0 && len(keys) == 0 {
		return out, nil
	}
	args := make([]any, 0, len(ids)+len(keys))
	var where []string
	in := func(col string, n int) {
		marks := make([]string, n)
		for i := range marks {
			marks[i] = "$" + strconv.Itoa(len(args)-n+i+1)
		}
		where = append(where, col+" IN ("+strings.Join(marks, ", ")+")")
	}
	if len(ids) > 0 {
		for _, id := range ids {
			args = append(args, id)
		}
		in("o.order_id", len(ids))
	}
	if len(keys) > 0 {
		for _, k := range keys {
			args = append(args, k)
		}
		in("o.checkout_key", len(keys))
	}
	rows, err := db.q.Query(ctx, `
		SELECT o.order_id, o.checkout_key, o.order_status,
			EXISTS (SELECT 1 FROM late_payments l WHERE l.payment_id = o.checkout_key
				AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = l.payment_id))
		FROM orders o WHERE `+strings.Join(where, " OR "), args...)
	if err != nil {
		return out, fmt.Errorf("read settlements: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var key string
		var status shop.Status
		var refundPending bool
		if err := rows.Scan(&id, &key, &status, &refundPending); err != nil {
			return out, fmt.Errorf("read settlements: %w", err)
		}
		s := Unsettled
		if (status == shop.StatusDispatched || status == shop.StatusCancelled) && !refundPending {
			s = Settled
		}
		out.ByID[id], out.ByKey[key] = s, s
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("read settlements: %w", err)
	}
	return out, nil
}

// RecordRetentionPass notes a retention pass that deleted records, at ran
// with cutoff.
func (db *DB) RecordRetentionPass(ctx context.Context, ran, cutoff time.Time) error {
	if _, err := db.q.Exec(ctx, `INSERT INTO retention_passes (ran_at, cutoff) VALUES ($1, $2)`, ran.UnixMilli(), cutoff.UnixMilli()); err != nil {
		return fmt.Errorf("record the retention pass: %w", err)
	}
	return nil
}

// RetentionPassAfter returns when the first retention pass whose cutoff is
// later than t ran: the pass that deleted the records of a workflow
// finished at t. ok is false when no pass has (yet).
func (db *DB) RetentionPassAfter(ctx context.Context, t time.Time) (ran time.Time, ok bool, err error) {
	var ms int64
	err = db.q.QueryRow(ctx, `SELECT ran_at FROM retention_passes WHERE cutoff > $1 ORDER BY cutoff LIMIT 1`, t.UnixMilli()).Scan(&ms)
	if IsNoRows(err) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read retention passes: %w", err)
	}
	return time.UnixMilli(ms), true, nil
}
