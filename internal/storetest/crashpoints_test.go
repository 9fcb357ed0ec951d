package storetest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"widget-store/internal/crashpoint"
	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
)

// TestCrashPoints kills the store at every named point: right after each
// step of both workflows commits and before the next, and after each of the
// checkout's hand-offs (CRASH_AT=workflow:step makes the process exit with
// status 1 there; internal/crashpoint names the points). A careful client keeps retrying through
// the crash; the store restarts without CRASH_AT on the same database and
// port, and the order must reach its right final state with the stock
// conserved, one order for the key, and the same answers to repeated calls.
//
// CRASH_POINTS=dispatch:dispatch-leg:3,checkout:settle runs only those
// points.
func TestCrashPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and crashes it at every step")
	}
	type crashCase struct{ point, status string }
	var cases []crashCase
	for _, point := range crashpoint.Points() {
		switch workflow, step, _ := strings.Cut(point, ":"); {
		case workflow == shop.DispatchWorkflow:
			for n := 1; n <= shop.DispatchLegs; n++ {
				cases = append(cases, crashCase{workflow + ":" + crashpoint.Leg(n), "paid"})
			}
		case workflow != shop.CheckoutWorkflow: // release, refund, cancel-order: their own tests
		case step == shop.StepPaymentCreate || step == shop.StepPaymentRecord || step == shop.StepPaymentClose:
			// a provider that is asked (Stripe) only: TestCrashPointsStripe
		case step == shop.DispatchWorkflow: // paid orders only
			cases = append(cases, crashCase{point, "paid"})
		default:
			cases = append(cases, crashCase{point, "paid"}, crashCase{point, "failed"})
		}
	}
	if only := os.Getenv("CRASH_POINTS"); only != "" {
		var some []crashCase
		for _, c := range cases {
			if slices.Contains(strings.Split(only, ","), c.point) {
				some = append(some, c)
			}
		}
		cases = some
	}
	Binary(t) // build once, before the cases race to it
	for _, fl := range Flavours() {
		t.Run(fl.Name, func(t *testing.T) {
			t.Parallel()
			// Most cases wait out a 10 s dispatch: run them side by side (t.Run
			// may be called from several goroutines), but few enough at once for
			// a 2-core machine and Postgres's connection limit.
			sem := make(chan struct{}, 6)
			var wg sync.WaitGroup
			for _, c := range cases {
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					t.Run(c.point+"_"+c.status, func(t *testing.T) {
						runCrashCase(t, fl.New(t), c.point, c.status, nil)
					})
				})
			}
			wg.Wait()
		})
	}
}

// TestCrashPointsCart crashes a cart's checkout where its lines are held
// (checkout:reserve, paid and declined) and where they are given back
// (checkout:settle, declined): after the restart, every unit of every line is held
// once, or back once.
func TestCrashPointsCart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and crashes it")
	}
	cart := []shop.Line{{ProductID: 2, Quantity: 3}, {ProductID: 1, Quantity: 2}, {ProductID: 4, Quantity: 1}}
	Binary(t)
	for _, fl := range Flavours() {
		t.Run(fl.Name, func(t *testing.T) {
			t.Parallel()
			for _, c := range []struct{ point, status string }{
				{shop.CheckoutWorkflow + ":" + shop.StepReserve, "paid"},
				{shop.CheckoutWorkflow + ":" + shop.StepReserve, "failed"},
				{shop.CheckoutWorkflow + ":" + shop.StepSettle, "failed"},
			} {
				t.Run(c.point+"_"+c.status, func(t *testing.T) { runCrashCase(t, fl.New(t), c.point, c.status, cart) })
			}
		})
	}
}

// runCrashCase is one named-point crash: a purchase of one key, paid or
// declined, with the store set to exit right after step point; of cart, or
// (nil) one unit of product 1, on a new database (the seeded catalog).
func runCrashCase(t *testing.T, db *loadgen.Database, point, status string, cart []shop.Line) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// PAYMENT_TIMEOUT=10s bounds a possible stall: a payment that a recovering
	// store would miss waits out the window, then the order is cancelled and
	// the test fails on it rather than hanging for the default 120 s.
	const payWindow = "PAYMENT_TIMEOUT=10s"
	const initialStock = 100 // the schema's seed
	st := StartWith(t, db, Options{Env: []string{"CRASH_AT=" + point, payWindow}, Log: LogWriter(t, point+" "+status+": ")})

	// The shopper: the same key, then the same payment call, until answered.
	client := loadgen.NewClient(st.Base(), 2, 30*time.Second)
	key := "crash-" + strings.ReplaceAll(point, ":", "-") + "-" + status
	p := loadgen.Purchase{Key: key, Sent: status, Cart: cart}
	checkout := func() (loadgen.Answer, int, error) {
		if cart != nil {
			return client.CheckoutCart(ctx, key, cartJSON(cart))
		}
		return client.Checkout(ctx, key)
	}
	bought := make(chan error, 1)
	go func() {
		var err error
		if p.Checkout, _, err = checkout(); err != nil {
			bought <- err
			return
		}
		if p.Checkout.Status != http.StatusOK {
			bought <- fmt.Errorf("checkout answered %v", p.Checkout)
			return
		}
		p.Payment, _, err = client.Pay(ctx, p.Checkout.Body, status)
		bought <- err
	}()

	phase(t, "the store exits with status 1 at the crash point", func(t *testing.T) {
		code, err := st.WaitExit(45 * time.Second)
		if err != nil {
			st.Kill()
			snap, serr := loadgen.ReadSnapshot(ctx, db)
			t.Fatalf("the store did not exit at the crash point: %v; database: orders %+v, workflows %v (%v)", err, snap.Orders, snap.Workflows, serr)
		}
		if code != 1 {
			t.Fatalf("the store exited with status %d at the crash point, want 1", code)
		}
		if point == shop.CheckoutWorkflow+":"+crashpoint.Outcome && status == "paid" {
			// The webhook's answer is handed over once the order is PAID,
			// before the dispatch starts (workflow.go): at this crash the
			// order is PAID and no dispatch workflow exists yet; the
			// restarted store's recovery must start it (checked below: the
			// order ends DISPATCHED).
			snap, err := loadgen.ReadSnapshot(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			for k, n := range snap.Workflows {
				if strings.HasPrefix(k, shop.DispatchWorkflow+" ") {
					t.Errorf("at the crash after the outcome: %d %s workflows, want none (the answer must not wait for the dispatch's start)", n, k)
				}
			}
			if len(snap.Orders) != 1 || snap.Orders[0].Status != shop.StatusPaid {
				t.Errorf("at the crash after the outcome: orders %+v, want one PAID", snap.Orders)
			}
		}
	})

	phase(t, "restarted without CRASH_AT, the retrying client gets its answers", func(t *testing.T) {
		st.RestartWith(t, payWindow)
		select {
		case err := <-bought:
			if err != nil {
				t.Fatalf("purchase: %v", err)
			}
		case <-ctx.Done():
			t.Fatalf("purchase not answered: %v", ctx.Err())
		}
		if p.Payment.Status != http.StatusOK {
			t.Fatalf("payment %s answered %v, want 200 and the order id", status, p.Payment)
		}
	})

	// Repeated calls give the same answers, before and after the order settles.
	replay := func(t *testing.T) {
		t.Helper()
		again, _, err := checkout()
		if err != nil {
			t.Fatal(err)
		}
		p.Replays = append(p.Replays, loadgen.Replay{Call: "checkout " + key, Got: again, Want: p.Checkout})
		again, _, err = client.Pay(ctx, p.Checkout.Body, status)
		if err != nil {
			t.Fatal(err)
		}
		p.Replays = append(p.Replays, loadgen.Replay{Call: "payment " + status, Got: again, Want: p.Payment})
	}
	var obs loadgen.Observed
	phase(t, "repeated calls, then the order settles", func(t *testing.T) {
		replay(t)
		obs = Settle(t, st, 30*time.Second)
		replay(t)
	})

	phase(t, "invariants and the final order", func(t *testing.T) {
		initial := map[int]int{shop.ProductID: initialStock}
		if cart != nil {
			initial = seededStock
		}
		snap := CheckInvariantsStocks(t, st, initial, []loadgen.Purchase{p}, obs)
		want := shop.StatusDispatched
		if status == "failed" {
			want = shop.StatusCancelled
		}
		if len(snap.Orders) != 1 || snap.Orders[0].Status != want || strconv.FormatInt(snap.Orders[0].ID, 10) != p.Payment.Body {
			t.Errorf("orders %+v, want one, %s, id %s", snap.Orders, want, p.Payment.Body)
		}
	})
}

// seededStock is the stock schema.sql seeds a new database with.
var seededStock = map[int]int{1: 100, 2: 50, 3: 10, 4: 200}

// cartJSON is a cart as POST /checkout/{key} takes it.
func cartJSON(cart []shop.Line) string {
	var pq []int
	for _, l := range cart {
		pq = append(pq, l.ProductID, l.Quantity)
	}
	return cartBody(pq...)
}

// TestCrashPointsStripe crashes a checkout that pays through Stripe
// (stripe-mock behind the rig's recording proxy) right after each step that
// asks Stripe or records its answer, and a late payment's refund right after
// its call: restarted without CRASH_AT, the order reaches its right final
// state, stock is conserved, and Stripe was asked exactly once per key,
// since after the step's checkpoint nothing is asked again (and before it,
// the same Idempotency-Key would make a second ask the same session).
func TestCrashPointsStripe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and crashes it")
	}
	type crashCase struct {
		point string
		paid  bool // paid by a completed event; else the window closes unpaid and a late payment comes
	}
	cases := []crashCase{
		{shop.CheckoutWorkflow + ":" + shop.StepPaymentCreate, true},
		{shop.CheckoutWorkflow + ":" + shop.StepPaymentRecord, true},
		{shop.CheckoutWorkflow + ":" + shop.StepPaymentClose, false},
		{shop.RefundWorkflow + ":" + shop.StepRefundCall, false},
		// an operator's Cancel and refund of the order while it waits: its
		// session expired once, then a late payment refunded once
		{shop.CancelOrderWorkflow + ":" + shop.StepPaymentClose, false},
	}
	Binary(t)
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		for _, c := range cases {
			t.Run(c.point, func(t *testing.T) {
				runStripeCrashCase(t, db, c.point, c.paid)
			})
		}
	})
}

// runStripeCrashCase is one crash of TestCrashPointsStripe, on db (each
// case its own key; the stock is checked as a difference).
func runStripeCrashCase(t *testing.T, db *loadgen.Database, point string, paid bool) {
	const payWindow = "PAYMENT_TIMEOUT=3s"
	mock := startStripeMock(t)
	st := &stripeStore{Store: StartWith(t, db, Options{Env: stripeEnv(mock, "CRASH_AT="+point, payWindow), Log: LogWriter(t, point+": ")}), mock: mock, db: db}
	stock0 := Inventory(t, st.Base())
	key := "crash-" + strings.NewReplacer(":", "-").Replace(point) + "-" + RandomHex(3)
	pi := "pi_" + RandomHex(6)

	// The buyer's checkout; the crash at payment-create or payment-record
	// cuts its request, and the buyer asks again after the restart.
	asked := make(chan hresp, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, st.URL("/checkout/"+key), nil) // a constant URL: no error
		req.Header.Set("Accept", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			asked <- hresp{}
			return
		}
		resp.Body.Close() // only the status matters here
		asked <- hresp{status: resp.StatusCode}
	}()
	if point == shop.RefundWorkflow+":"+shop.StepRefundCall {
		<-asked
		id := st.orderOf(t, key)
		WaitOrder(t, st.Base(), id, 20*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusCancelled })
		late := event(stripetest.SessionCompleted, key)
		late.PaymentIntent = pi
		// The refund the webhook starts crashes the store, which may cut the
		// webhook's answer (EOF): Stripe delivers it again, below.
		req, err := late.NewRequest(context.Background(), st.URL("/webhooks/stripe"), stripetest.WebhookSecret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close() // answered before the crash; what it said is checked at the redelivery
		}
	}

	if point == shop.CancelOrderWorkflow+":"+shop.StepPaymentClose {
		<-asked
		id := st.orderOf(t, key)
		req, _ := http.NewRequest(http.MethodPost, st.URL("/admin/orders/"+id+"/cancel"), nil) // a constant URL: no error
		if resp, err := http.DefaultClient.Do(req); err == nil {                               // the crash cuts it: no answer expected
			resp.Body.Close()
		}
	}

	phase(t, "the store exits with status 1 at the crash point", func(t *testing.T) {
		code, err := st.WaitExit(45 * time.Second)
		if err != nil {
			st.Kill()
			t.Fatalf("the store did not exit at %s: %v", point, err)
		}
		if code != 1 {
			t.Fatalf("the store exited with status %d at the crash point, want 1", code)
		}
	})

	phase(t, "restarted without CRASH_AT, the purchase reaches its end", func(t *testing.T) {
		st.RestartWith(t, stripeEnv(mock, payWindow)...)
		payURL := st.checkoutJSON(t, key) // the buyer asks again: the same session
		if !strings.HasPrefix(payURL, "https://checkout.stripe.com/") {
			t.Fatalf("pay_url %q", payURL)
		}
		id := st.orderOf(t, key)
		switch {
		case paid:
			completed := event(stripetest.SessionCompleted, key)
			completed.PaymentIntent = pi
			st.mustSend(t, completed)
			WaitOrder(t, st.Base(), id, 30*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusDispatched })
		default:
			WaitOrder(t, st.Base(), id, 20*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusCancelled })
			late := event(stripetest.SessionCompleted, key)
			late.PaymentIntent = pi
			if body := st.mustSend(t, late); !strings.Contains(body, "refund") && !strings.Contains(body, "applied before") {
				t.Fatalf("late completed: %q", body)
			}
			waitRefunded(t, st.Base(), key, 30*time.Second)
		}
	})

	phase(t, "Stripe was asked once per key: one session, one expiry, one refund", func(t *testing.T) {
		if n := len(st.mock.SessionCreates()[key]); n != 1 {
			t.Errorf("%d session creates for %s, want 1", n, key)
		}
		if n := st.requests(http.MethodPost, stripetest.SessionsPath, stripetest.SessionIdempotencyKey(key)); n != 1 {
			t.Errorf("%d requests with Idempotency-Key %s, want 1", n, stripetest.SessionIdempotencyKey(key))
		}
		wantExpires, wantRefunds := 0, 0
		if !paid {
			wantExpires, wantRefunds = 1, 1
		}
		if n := st.requests(http.MethodPost, stripetest.SessionsPath+"/", stripetest.ExpireIdempotencyKey(key)); n != wantExpires {
			t.Errorf("%d expire calls, want %d", n, wantExpires)
		}
		refunds := st.mock.Matching(http.MethodPost, stripetest.RefundsPath)
		if len(refunds) != wantRefunds {
			t.Errorf("%d refund calls, want %d: %+v", len(refunds), wantRefunds, refunds)
		}
		for _, r := range refunds {
			if r.IdempotencyKey != key || r.Form.Get("payment_intent") != pi {
				t.Errorf("refund call with key %q, payment_intent %q; want %s, %s", r.IdempotencyKey, r.Form.Get("payment_intent"), key, pi)
			}
		}
		want := stock0 - 1
		if !paid {
			want = stock0
		}
		if got := Inventory(t, st.Base()); got != want {
			t.Errorf("inventory %d, want %d", got, want)
		}
	})
}
