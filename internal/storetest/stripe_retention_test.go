package storetest

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
	"widget-store/internal/stripetest"
)

// TestStripeEventIdsPrunedAfterRedelivery: with RETENTION set, retention
// deletes the ids of Stripe events applied longer ago than both RETENTION
// and the three days Stripe may redeliver an event, and keeps the rest (an
// event redelivered within them still changes nothing); the order's payment
// session and PaymentIntent stay with the order. Both databases.
func TestStripeEventIdsPrunedAfterRedelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts stripe-mock and the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := startStripeStore(t, db, Options{Env: []string{"RETENTION=1s", "PAYMENT_TIMEOUT=60s"}})
		key := NewKey()
		st.checkoutJSON(t, key)
		id := st.orderOf(t, key)
		paid := event(stripetest.SessionCompleted, key)
		paid.PaymentIntent = "pi_kept_" + RandomHex(4)
		st.mustSend(t, paid)
		WaitOrder(t, st.Base(), id, 30*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusDispatched })

		// Events applied four days and two days ago, as an older store
		// would have them: written while the store is stopped.
		if err := st.Stop(stopTimeout); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		old, recent := "evt_old_"+RandomHex(6), "evt_2d_"+RandomHex(6)
		execSQL(t, db, `INSERT INTO stripe_events (event_id, event_type, checkout_key, received_at) VALUES ('`+old+`', 'checkout.session.completed', '', `+
			strconv.FormatInt(now.Add(-96*time.Hour).UnixMilli(), 10)+`), ('`+recent+`', 'checkout.session.completed', '', `+
			strconv.FormatInt(now.Add(-48*time.Hour).UnixMilli(), 10)+`)`)
		st.Restart(t)

		phase(t, "the event past Stripe's redelivery is deleted; the others, the session and the PaymentIntent stay", func(t *testing.T) {
			WaitUntil(t, 30*time.Second, "retention deletes "+old, func() bool { return len(stripeEventIDs(t, db, old)) == 0 })
			if got := stripeEventIDs(t, db, recent, paid.ID); len(got) != 2 {
				t.Fatalf("events kept: %v, want %s (two days old) and %s (just applied)", got, recent, paid.ID)
			}
			var sessions, intents int
			query(t, db, `SELECT (SELECT COUNT(*) FROM payment_sessions WHERE checkout_key = '`+key+`'), (SELECT COUNT(*) FROM payment_intents WHERE checkout_key = '`+key+`')`,
				func(scan func(...any) error) error { return scan(&sessions, &intents) })
			if sessions != 1 || intents != 1 {
				t.Fatalf("payment_sessions %d, payment_intents %d for %s, want 1 and 1 (kept with the order)", sessions, intents, key)
			}
		})

		phase(t, "a redelivery of the kept event changes nothing", func(t *testing.T) {
			st.mustSend(t, paid)
			if n := st.mock.Count(http.MethodPost, stripetest.RefundsPath); n != 0 {
				t.Fatalf("%d refund calls, want 0", n)
			}
			if o := WaitOrder(t, st.Base(), id, time.Second, IsFinal); o.OrderStatus != shop.StatusDispatched {
				t.Fatalf("order %s is %s, want DISPATCHED", id, o.Status)
			}
		})
	})
}

// stripeEventIDs is which of ids are in stripe_events.
func stripeEventIDs(t testing.TB, db *loadgen.Database, ids ...string) []string {
	t.Helper()
	var got []string
	query(t, db, `SELECT event_id FROM stripe_events WHERE event_id IN ('`+strings.Join(ids, "', '")+`') ORDER BY event_id`, func(scan func(...any) error) error {
		var id string
		err := scan(&id)
		got = append(got, id)
		return err
	})
	return got
}
