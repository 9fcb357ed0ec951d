package loadgen

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the same pure-Go driver the store uses

	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
)

// Order is one row of the store's orders table.
type Order struct {
	ID       int64
	Key      string
	Status   shop.Status
	Progress int
	// Lines are the units it holds, by product (order_lines); nil is one
	// unit of ProductID (0: product 1), an order of a build before carts.
	Lines     []shop.Line
	ProductID int
}

// units is what order o holds: quantity by product.
func (o Order) units() []shop.Line {
	if o.Lines != nil {
		return o.Lines
	}
	return []shop.Line{{ProductID: max(o.ProductID, shop.ProductID), Quantity: 1}}
}

// Snapshot is the store's state read straight from its database.
type Snapshot struct {
	Stock int // product 1's
	// Stocks is every product's stock by id; nil: only Stock (product 1).
	Stocks       map[int]int
	Orders       []Order
	LatePayments map[string]int64 // payment id → order id
	// ProviderRefunds counts the stand-in provider's refunds by payment id
	// (table provider_refunds: one per idempotency key).
	ProviderRefunds map[string]int
	// Refunded is the late payments whose refund the store recorded (table
	// refunds): payment id → the provider's refund id.
	Refunded map[string]string
	// NoRefunds: the database has no refund tables, a build from before the
	// refund workflow (-mode ab compares against such builds); check 6 then
	// checks only that no paid acknowledgement went unanswered by a widget.
	NoRefunds bool
	// Workflows counts DBOS workflows by "name status", e.g. "checkout SUCCESS".
	Workflows map[string]int
	// PaymentSessions is each checkout's payment at a provider that is
	// asked (table payment_sessions: checkout key → Stripe's session id);
	// PaymentIntents the money a paid event named (payment_intents: checkout
	// key → PaymentIntent). Empty for the stand-in, nil for a build without
	// the tables.
	PaymentSessions, PaymentIntents map[string]string
}

// ReadSnapshot reads the database. SQLite must be read only while the store
// is stopped (the store's rule: one handle to the file); it is opened with
// query_only so this reader cannot change anything.
func ReadSnapshot(ctx context.Context, db *Database) (Snapshot, error) {
	snap := Snapshot{LatePayments: map[string]int64{}, ProviderRefunds: map[string]int{}, Refunded: map[string]string{}, Workflows: map[string]int{}}
	// Every read below is of one snapshot of the database (one read-only
	// transaction), so a store still running beside the reader cannot commit
	// between two of them: a checkout timing out between the stock read and
	// the orders read would otherwise look like a unit lost.
	var q querier
	workflowTable := "workflow_status"
	if db.Kind == "postgres" {
		conn, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			return snap, err
		}
		defer conn.Close(ctx)
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return snap, err
		}
		defer tx.Rollback(ctx) // read-only: nothing to commit
		q = pgxQ{tx}
		workflowTable = "dbos.workflow_status"
	} else {
		sdb, err := sql.Open("sqlite", "file:"+url.PathEscape(db.Path)+"?_pragma=query_only(1)&_pragma=busy_timeout(5000)")
		if err != nil {
			return snap, err
		}
		defer sdb.Close()
		// A deferred transaction: its first read fixes the snapshot (WAL)
		// for every later read in it.
		tx, err := sdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return snap, err
		}
		defer tx.Rollback() // read-only: nothing to commit
		q = sqlQ{tx}
	}
	snap.Stocks = map[int]int{}
	err := each(ctx, q, `SELECT product_id, inventory FROM products`, func(r scanner) error {
		var id, n int
		if err := r.Scan(&id, &n); err != nil {
			return err
		}
		snap.Stocks[id] = n
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read stock: %w", err)
	}
	snap.Stock = snap.Stocks[shop.ProductID]
	err = each(ctx, q, `SELECT order_id, checkout_key, order_status, progress_remaining, product_id FROM orders ORDER BY order_id`, func(r scanner) error {
		var o Order
		if err := r.Scan(&o.ID, &o.Key, &o.Status, &o.Progress, &o.ProductID); err != nil {
			return err
		}
		snap.Orders = append(snap.Orders, o)
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read orders: %w", err)
	}
	if err := readLines(ctx, q, db.Kind, snap.Orders); err != nil {
		return snap, err
	}
	err = each(ctx, q, `SELECT payment_id, order_id FROM late_payments`, func(r scanner) error {
		var pid string
		var id int64
		if err := r.Scan(&pid, &id); err != nil {
			return err
		}
		snap.LatePayments[pid] = id
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read late payments: %w", err)
	}
	hasRefunds := `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'provider_refunds')`
	if db.Kind == "postgres" {
		hasRefunds = `SELECT to_regclass('provider_refunds') IS NOT NULL`
	}
	var has bool
	if err := q.queryRow(ctx, hasRefunds).Scan(&has); err != nil {
		return snap, fmt.Errorf("look for the refund tables: %w", err)
	}
	snap.NoRefunds = !has
	if snap.NoRefunds {
		return readWorkflows(ctx, q, workflowTable, snap)
	}
	err = each(ctx, q, `SELECT payment_id FROM provider_refunds`, func(r scanner) error {
		var pid string
		if err := r.Scan(&pid); err != nil {
			return err
		}
		snap.ProviderRefunds[pid]++
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read provider refunds: %w", err)
	}
	if err := readPayments(ctx, q, db.Kind, &snap); err != nil {
		return snap, err
	}
	err = each(ctx, q, `SELECT payment_id, provider_refund_id FROM refunds`, func(r scanner) error {
		var pid, id string
		if err := r.Scan(&pid, &id); err != nil {
			return err
		}
		snap.Refunded[pid] = id
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read refunds: %w", err)
	}
	return readWorkflows(ctx, q, workflowTable, snap)
}

// readLines reads the orders' lines (order_lines), if the build has them.
func readLines(ctx context.Context, q querier, kind string, orders []Order) error {
	has := `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'order_lines')`
	if kind == "postgres" {
		has = `SELECT to_regclass('order_lines') IS NOT NULL`
	}
	var ok bool
	if err := q.queryRow(ctx, has).Scan(&ok); err != nil || !ok {
		return err
	}
	byID := make(map[int64]int, len(orders))
	for i, o := range orders {
		byID[o.ID] = i
	}
	return each(ctx, q, `SELECT order_id, product_id, quantity FROM order_lines`, func(r scanner) error {
		var id int64
		var l shop.Line
		if err := r.Scan(&id, &l.ProductID, &l.Quantity); err != nil {
			return err
		}
		i, ok := byID[id]
		if !ok {
			return fmt.Errorf("order_lines has a line of order %d, which does not exist", id)
		}
		orders[i].Lines = append(orders[i].Lines, l)
		return nil
	})
}

// readPayments reads the payments opened at the provider and the money
// taken (payment_sessions, payment_intents), if the build has the tables.
func readPayments(ctx context.Context, q querier, kind string, snap *Snapshot) error {
	has := `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'payment_sessions')`
	if kind == "postgres" {
		has = `SELECT to_regclass('payment_sessions') IS NOT NULL`
	}
	var ok bool
	if err := q.queryRow(ctx, has).Scan(&ok); err != nil || !ok {
		return err
	}
	snap.PaymentSessions, snap.PaymentIntents = map[string]string{}, map[string]string{}
	read := func(query string, into map[string]string) error {
		return each(ctx, q, query, func(r scanner) error {
			var k, v string
			if err := r.Scan(&k, &v); err != nil {
				return err
			}
			into[k] = v
			return nil
		})
	}
	if err := read(`SELECT checkout_key, session_id FROM payment_sessions`, snap.PaymentSessions); err != nil {
		return fmt.Errorf("read payment sessions: %w", err)
	}
	if err := read(`SELECT checkout_key, payment_intent FROM payment_intents`, snap.PaymentIntents); err != nil {
		return fmt.Errorf("read payment intents: %w", err)
	}
	return nil
}

// readWorkflows adds the count of DBOS workflows by name and status.
func readWorkflows(ctx context.Context, q querier, workflowTable string, snap Snapshot) (Snapshot, error) {
	err := each(ctx, q, `SELECT name, status, count(*) FROM `+workflowTable+` GROUP BY name, status`, func(r scanner) error {
		var name, status string
		var n int
		if err := r.Scan(&name, &status, &n); err != nil {
			return err
		}
		snap.Workflows[name+" "+status] += n
		return nil
	})
	if err != nil {
		return snap, fmt.Errorf("read workflows: %w", err)
	}
	return snap, nil
}

type scanner interface{ Scan(dest ...any) error }

// rows is a query's result, as database/sql and pgx both give it.
type rows interface {
	scanner
	Next() bool
	Err() error
	Close() error
}

type querier interface {
	queryRow(ctx context.Context, q string) scanner
	query(ctx context.Context, q string) (rows, error)
}

// each runs q and calls f on each row. The rows of a query that failed
// (perhaps a nil pointer inside the interface) are never touched.
func each(ctx context.Context, db querier, q string, f func(scanner) error) error {
	rs, err := db.query(ctx, q)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		if err := f(rs); err != nil {
			return err
		}
	}
	return rs.Err()
}

type sqlQ struct{ db *sql.Tx }

func (s sqlQ) queryRow(ctx context.Context, q string) scanner    { return s.db.QueryRowContext(ctx, q) }
func (s sqlQ) query(ctx context.Context, q string) (rows, error) { return s.db.QueryContext(ctx, q) }

type pgxQ struct{ c pgx.Tx }

func (p pgxQ) queryRow(ctx context.Context, q string) scanner { return p.c.QueryRow(ctx, q) }
func (p pgxQ) query(ctx context.Context, q string) (rows, error) {
	rs, err := p.c.Query(ctx, q)
	return pgxRows{rs}, err
}

// pgxRows gives pgx's rows the Close of database/sql's.
type pgxRows struct{ pgx.Rows }

func (r pgxRows) Close() error {
	r.Rows.Close()
	return nil
}

// Check is one invariant's verdict.
type Check struct {
	Name   string
	OK     bool
	Detail string // counts when it passes, the first offences when it fails
}

// Checks is a list of verdicts.
type Checks []Check

// OK reports whether every check passed.
func (cs Checks) OK() bool {
	for _, c := range cs {
		if !c.OK {
			return false
		}
	}
	return true
}

// Print writes one PASS/FAIL line per check.
func (cs Checks) Print(w io.Writer) {
	for _, c := range cs {
		verdict := "PASS"
		if !c.OK {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "  %s  %s: %s\n", verdict, c.Name, c.Detail)
	}
}

// offences collects the first few failures of one check.
type offences struct {
	list []string
	n    int
}

func (o *offences) add(format string, args ...any) {
	o.n++
	if len(o.list) < 5 {
		o.list = append(o.list, fmt.Sprintf(format, args...))
	}
}

func (o *offences) check(name, okDetail string) Check {
	if o.n == 0 {
		return Check{Name: name, OK: true, Detail: okDetail}
	}
	d := strings.Join(o.list, "; ")
	if o.n > len(o.list) {
		d += fmt.Sprintf("; … %d in all", o.n)
	}
	return Check{Name: name, Detail: d}
}

// Observed is what the tool saw while the store ran: the sampler's result
// and how settlement went.
type Observed struct {
	Samples    int
	Violations []string // status/progress/stock violations the sampler saw
	SettleErr  error    // the orders did not all become final in time
	// Stripe: the store took payments through Stripe (stripe-mock behind
	// the recording proxy); nil: the stand-in.
	Stripe *StripeObserved
}

// StripeObserved is what Stripe was asked during a run.
type StripeObserved struct {
	Requests []stripetest.Request
}

// CheckInvariants checks the store's six invariants against the database
// snapshot taken after the run and the clients' acknowledgements, for a run
// that started with initialStock units of product 1 (and sold nothing else).
func CheckInvariants(initialStock int, snap Snapshot, purchases []Purchase, obs Observed) Checks {
	return CheckInvariantsStocks(map[int]int{shop.ProductID: initialStock}, snap, purchases, obs)
}

// CheckInvariantsStocks is CheckInvariants for a run that started with
// initial stock by product: check 1 holds for every product, and a product
// not in initial must have no unit held by any order.
func CheckInvariantsStocks(initial map[int]int, snap Snapshot, purchases []Purchase, obs Observed) Checks {
	if obs.Stripe != nil {
		// Refunds are made at Stripe: counted at the proxy, one per
		// distinct Idempotency-Key (Stripe makes one refund per key).
		snap.ProviderRefunds = stripeRefunds(obs.Stripe.Requests, purchases)
	}
	byKey := map[string]Order{}
	count := map[shop.Status]int{}
	held := map[int]int{} // units in PAID, DISPATCHED and PENDING orders, by product
	for _, o := range snap.Orders {
		count[o.Status]++
		if o.Status == shop.StatusPaid || o.Status == shop.StatusDispatched || o.Status == shop.StatusPending {
			for _, l := range o.units() {
				held[l.ProductID] += l.Quantity
			}
		}
	}
	stocks := snap.Stocks
	if stocks == nil {
		stocks = map[int]int{shop.ProductID: snap.Stock}
	}
	var cs Checks

	// 1. Stock conservation, per product.
	var o1 offences
	var ok1 []string
	for _, id := range slices.Sorted(maps.Keys(initial)) {
		final, have := stocks[id]
		if !have {
			o1.add("product %d: no stock read", id)
			continue
		}
		if initial[id]-final != held[id] {
			o1.add("product %d: initial %d − final %d = %d, but PAID/DISPATCHED/PENDING orders hold %d units",
				id, initial[id], final, initial[id]-final, held[id])
		}
		ok1 = append(ok1, fmt.Sprintf("product %d: %d − %d = %d", id, initial[id], final, held[id]))
	}
	for id, n := range held {
		if _, ok := initial[id]; !ok && n != 0 {
			o1.add("product %d: orders hold %d units of a product the run did not stock", id, n)
		}
	}
	for id, n := range stocks {
		if n < 0 {
			o1.add("product %d: final stock %d < 0", id, n)
		}
	}
	for _, v := range obs.Violations {
		if strings.HasPrefix(v, "stock") {
			o1.add("seen while running: %s", v)
		}
	}
	cs = append(cs, o1.check("1 stock conserved per product (initial − final = units held by PAID + DISPATCHED + PENDING orders), never negative",
		fmt.Sprintf("%s; orders PAID %d + DISPATCHED %d + PENDING %d", strings.Join(ok1, ", "),
			count[shop.StatusPaid], count[shop.StatusDispatched], count[shop.StatusPending])))

	// 2. One key → at most one order; every order made by a key a client sent.
	var o2 offences
	tried := map[string]bool{}
	for _, p := range purchases {
		tried[p.Key] = true
	}
	for _, o := range snap.Orders {
		if prev, dup := byKey[o.Key]; dup {
			o2.add("key %s has orders %d and %d", o.Key, prev.ID, o.ID)
		}
		byKey[o.Key] = o
		if !tried[o.Key] {
			o2.add("order %d has key %q that no client sent", o.ID, o.Key)
		}
	}
	acked, soldOut, noPayment := 0, 0, 0
	for _, p := range purchases {
		switch p.Checkout.Status {
		case http.StatusOK:
			acked++
			if p.Checkout.Body != p.Key {
				o2.add("checkout %s answered payment id %q, want the key", p.Key, p.Checkout.Body)
			}
			if _, ok := byKey[p.Key]; !ok {
				o2.add("checkout %s answered a payment id but made no order", p.Key)
			}
		case http.StatusConflict:
			o, ok := byKey[p.Key]
			switch {
			case !ok:
				soldOut++
			case obs.Stripe != nil && o.Status == shop.StatusCancelled:
				// A provider that is asked can fail to open the payment
				// before the order's window closes (kills, a slow machine,
				// Stripe unreachable): the checkout cancels the order, every
				// unit back, and answers 409.
				noPayment++
			default:
				o2.add("checkout %s answered %v but made order %d, which is %s", p.Key, p.Checkout, o.ID, o.Status)
			}
		case 0: // never answered: at most one order, which settles like an abandoned one
		default:
			o2.add("checkout %s answered %v", p.Key, p.Checkout)
		}
	}
	detail2 := fmt.Sprintf("%d orders from %d keys (%d payment ids, %d sold out)", len(snap.Orders), len(purchases), acked, soldOut)
	if noPayment > 0 {
		detail2 += fmt.Sprintf("; %d answered 409 with the order CANCELLED: the provider opened no payment before the window closed", noPayment)
	}
	cs = append(cs, o2.check("2 one key → at most one order, no order without a key", detail2))

	// 3. Payment acknowledgements match the orders' fates (Stripe mode: the
	// events' answers, see checkStripeFates).
	if obs.Stripe != nil {
		cs = append(cs, checkStripeFates(byKey, count, snap, purchases))
	} else {
		cs = append(cs, checkStandinFates(byKey, count, snap, purchases))
	}

	// 4. Forward only; DISPATCHED ⇔ progress 0; progress never rises.
	var o4 offences
	for _, v := range obs.Violations {
		if !strings.HasPrefix(v, "stock") {
			o4.add("seen while running: %s", v)
		}
	}
	for _, o := range snap.Orders {
		if (o.Status == shop.StatusDispatched) != (o.Progress == 0) {
			o4.add("order %d is %s with progress %d", o.ID, o.Status, o.Progress)
		}
	}
	cs = append(cs, o4.check("4 status only forward, DISPATCHED ⇔ progress 0, progress never rises",
		fmt.Sprintf("%d samples while running, %d orders at the end", obs.Samples, len(snap.Orders))))

	// 5. Everything settled.
	var o5 offences
	if obs.SettleErr != nil {
		o5.add("%v", obs.SettleErr)
	}
	for _, o := range snap.Orders {
		if o.Status == shop.StatusPending || o.Status == shop.StatusPaid {
			o5.add("order %d still %s", o.ID, o.Status)
		}
	}
	for k, n := range snap.Workflows {
		if !strings.HasSuffix(k, " SUCCESS") {
			o5.add("%d workflows %s", n, k)
		}
	}
	for _, p := range purchases {
		if p.GaveUp != "" {
			o5.add("client gave up on %s: %s", p.Key, p.GaveUp)
		}
	}
	wf := 0
	for _, n := range snap.Workflows {
		wf += n
	}
	cs = append(cs, o5.check("5 everything settled",
		fmt.Sprintf("no order PENDING or PAID, all %d workflows SUCCESS (refunds included), every call answered", wf)))

	// 6. Every payment received ships a widget or is refunded, exactly once.
	// A payment is received when a paid call was acknowledged (200: its
	// order ships; 409: its order was cancelled and it is a late payment)
	// or when the store recorded it as a late payment (a call whose answer
	// the client never saw).
	var o6 offences
	shipped, refunded := 0, 0

	for _, p := range purchases {
		if p.Sent != shop.PaymentPaid || (p.Payment.Status != http.StatusOK && p.Payment.Status != http.StatusConflict) {
			continue
		}
		o, has := byKey[p.Key]
		_, late := snap.LatePayments[p.Key]
		switch {
		case has && o.Status == shop.StatusDispatched && !late:
			shipped++
			if n := snap.ProviderRefunds[p.Key]; n != 0 {
				o6.add("payment %s shipped order %d and was refunded %d times too", p.Key, o.ID, n)
			}
		case late:
			// checked with every late payment below
		default:
			o6.add("payment %s was acknowledged (%d) but neither shipped a widget nor is recorded for refund", p.Key, p.Payment.Status)
		}
	}
	for pid, orderID := range snap.LatePayments {
		if o, has := byKey[pid]; has && o.Status != shop.StatusCancelled {
			o6.add("late payment %s is for order %d, which is %s, not CANCELLED", pid, orderID, o.Status)
		}
		if snap.NoRefunds {
			continue // a build from before refunds: recorded for refund is all it does
		}
		switch n := snap.ProviderRefunds[pid]; {
		case n == 0:
			o6.add("late payment %s (order %d) was not refunded", pid, orderID)
		case n > 1:
			o6.add("late payment %s (order %d) was refunded %d times", pid, orderID, n)
		default:
			refunded++
		}
		if _, ok := snap.Refunded[pid]; !ok {
			o6.add("late payment %s (order %d): the store has not recorded its refund", pid, orderID)
		}
	}
	for pid, n := range snap.ProviderRefunds {
		if _, late := snap.LatePayments[pid]; !late {
			o6.add("payment %s was refunded %d times but is no late payment", pid, n)
		}
	}
	for pid := range snap.Refunded {
		if _, late := snap.LatePayments[pid]; !late {
			o6.add("the store recorded a refund of %s, which is no late payment", pid)
		}
	}
	detail := fmt.Sprintf("%d paid shipped, %d late payments refunded once each", shipped, refunded)
	if snap.NoRefunds {
		detail = fmt.Sprintf("%d paid shipped; refunds not checked: this build has no refund tables", shipped)
	}
	cs = append(cs, o6.check("6 every payment received ships a widget or is refunded, exactly once", detail))
	if obs.Stripe != nil {
		cs = append(cs, checkStripeCalls(byKey, snap, purchases, obs.Stripe.Requests))
	}
	return cs
}

// checkStandinFates is check 3 of a stand-in run: every payment
// acknowledgement matches its order's fate.
func checkStandinFates(byKey map[string]Order, count map[shop.Status]int, snap Snapshot, purchases []Purchase) Check {
	var o3 offences
	paidAcks, failedAcks, lateAcks, unpaid := 0, 0, 0, 0
	for _, p := range purchases {
		o, has := byKey[p.Key]
		if !has {
			if p.Payment.Status != 0 {
				o3.add("payment %s answered %v but there is no order", p.Key, p.Payment)
			}
			continue
		}
		wantID := strconv.FormatInt(o.ID, 10)
		switch {
		case p.Sent == shop.PaymentPaid && p.Payment.Status == http.StatusOK:
			paidAcks++
			if o.Status != shop.StatusPaid && o.Status != shop.StatusDispatched {
				o3.add("paid acknowledged for order %d but it is %s", o.ID, o.Status)
			}
			if p.Payment.Body != wantID {
				o3.add("paid for %s answered order %q, want %s", p.Key, p.Payment.Body, wantID)
			}
		case p.Sent == shop.PaymentFailed && p.Payment.Status == http.StatusOK:
			failedAcks++
			if o.Status != shop.StatusCancelled {
				o3.add("decline acknowledged for order %d but it is %s", o.ID, o.Status)
			}
			if p.Payment.Body != wantID {
				o3.add("failed for %s answered order %q, want %s", p.Key, p.Payment.Body, wantID)
			}
		case p.Sent == shop.PaymentPaid && p.Payment.Status == http.StatusConflict:
			// The payment window closed first: the order is cancelled and the
			// payment recorded for refund.
			lateAcks++
			if o.Status != shop.StatusCancelled {
				o3.add("paid for order %d answered 409 but it is %s", o.ID, o.Status)
			}
			if _, ok := snap.LatePayments[p.Key]; !ok {
				o3.add("paid for cancelled order %d answered 409 but is not recorded for refund", o.ID)
			}
		case p.Payment.Status != 0:
			o3.add("%s for order %d answered %v", p.Sent, o.ID, p.Payment)
		default: // never paid (abandoned, or the client gave up): the window closes
			unpaid++
			if o.Status != shop.StatusCancelled && o.Status != shop.StatusPending {
				o3.add("order %d was never paid but is %s", o.ID, o.Status)
			}
		}
		for _, r := range p.Replays {
			if r.Got != r.Want {
				o3.add("%s repeated answered %v, first %v", r.Call, r.Got, r.Want)
			}
		}
	}
	if got := count[shop.StatusPaid] + count[shop.StatusDispatched]; got != paidAcks {
		o3.add("%d orders PAID/DISPATCHED but %d paid acknowledgements", got, paidAcks)
	}
	if got, want := count[shop.StatusCancelled]+count[shop.StatusPending], failedAcks+lateAcks+unpaid; got != want {
		o3.add("%d orders CANCELLED/PENDING but %d declines + %d late payments + %d unpaid", got, failedAcks, lateAcks, unpaid)
	}
	return o3.check("3 every acknowledgement matches the order",
		fmt.Sprintf("%d paid = %d PAID/DISPATCHED; %d declined + %d paid too late + %d unpaid = %d CANCELLED",
			paidAcks, count[shop.StatusPaid]+count[shop.StatusDispatched], failedAcks, lateAcks, unpaid, count[shop.StatusCancelled]))
}

// unfinished counts the work not yet finished: workflows PENDING, or
// ENQUEUED (DBOS recovers a workflow by putting it on its internal queue,
// which a poller drains, so a just-restarted store holds ENQUEUED ones for a
// moment), and late payments whose refund is not recorded (a crash between
// recording one and starting its refund leaves it to the reconciler's next
// pass, which a restarted store runs at once).
func (s Snapshot) unfinished() int {
	n := 0
	for pid := range s.LatePayments {
		if s.NoRefunds {
			break
		}
		if _, ok := s.Refunded[pid]; !ok {
			n++
		}
	}
	for k, c := range s.Workflows {
		if strings.HasSuffix(k, " PENDING") || strings.HasSuffix(k, " ENQUEUED") {
			n += c
		}
	}
	return n
}

// StopAndSnapshot stops the store gracefully and reads its database. A
// graceful stop leaves workflows still running PENDING, to resume at the
// next start; when any are left it starts the store again, gives it a moment
// to finish them, and looks again, up to rounds times. (SQLite must not be
// read while the store runs: one handle to the file.)
func StopAndSnapshot(ctx context.Context, st *Store, rounds int) (Snapshot, error) {
	for round := 1; ; round++ {
		if err := st.Stop(20 * time.Second); err != nil {
			return Snapshot{}, err
		}
		snap, err := ReadSnapshot(ctx, st.DB)
		if err != nil || snap.unfinished() == 0 || round >= rounds {
			return snap, err
		}
		if _, err := st.Start(ctx); err != nil {
			return snap, err
		}
		time.Sleep(2 * time.Second)
	}
}
