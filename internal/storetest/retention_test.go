package storetest

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// Retention (issue 11): with RETENTION set, DBOS's records of purchases
// finished longer ago are deleted through DBOS's API; never those of an
// order not final, nor of a payment not refunded yet. The store goes on
// answering for the deleted ones from its own records.

// workflowIDs reads which of ids are in DBOS's workflow_status.
func workflowIDs(t testing.TB, db *loadgen.Database, ids ...string) map[string]string {
	t.Helper()
	quoted := make([]string, len(ids))
	for i, id := range ids {
		quoted[i] = "'" + strings.ReplaceAll(id, "'", "''") + "'"
	}
	got := map[string]string{}
	query(t, db, `SELECT workflow_uuid, status FROM `+dbosSchema(db)+`workflow_status WHERE workflow_uuid IN (`+strings.Join(quoted, ", ")+`)`,
		func(scan func(...any) error) error {
			var id, status string
			if err := scan(&id, &status); err != nil {
				return err
			}
			got[id] = status
			return nil
		})
	return got
}

func TestRetentionDeletesOnlyWhatIsSettled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		prov := newTestProvider(t, providerDown)
		st := startBehind(t, db, prov, "RETENTION=3s", "RECONCILE_EVERY=500ms", "PAYMENT_TIMEOUT=120s")
		base := st.Base()
		initial := Inventory(t, base)
		stock := initial

		// A: bought, paid, dispatched. B: waiting for its payment. C:
		// declined, then paid after all: a refund the provider refuses for now.
		keyA := NewKey()
		MustCall(t, "POST", base+"/checkout/"+keyA, http.StatusOK)
		idA := MustCall(t, "POST", base+"/payment_webhook/"+keyA+"/paid", http.StatusOK)
		keyB := NewKey()
		MustCall(t, "POST", base+"/checkout/"+keyB, http.StatusOK)
		c := declineThenPay(t, base)
		WaitOrder(t, base, idA, 30*time.Second, IsFinal)
		stock -= 2 // A shipped, B's unit reserved
		orderA, err := strconv.ParseInt(idA, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		dispatchA := shop.DispatchWorkflowID(orderA)

		phase(t, "the settled purchase's workflows are deleted; the waiting checkout and the unrefunded payment are kept", func(t *testing.T) {
			WaitUntil(t, 30*time.Second, "retention deletes "+keyA+" and "+dispatchA, func() bool {
				got := workflowIDs(t, db, keyA, dispatchA)
				return len(got) == 0
			})
			got := workflowIDs(t, db, keyB, c.Key, shop.RefundWorkflowID(c.Key))
			if got[keyB] != "PENDING" {
				t.Errorf("the checkout waiting for its payment is %q, want PENDING (kept)", got[keyB])
			}
			if _, ok := got[c.Key]; !ok {
				t.Errorf("the checkout of the unrefunded late payment %s was deleted", c.Key)
			}
			if _, ok := got[shop.RefundWorkflowID(c.Key)]; !ok {
				t.Errorf("the refund workflow of the unrefunded late payment %s was deleted", c.Key)
			}
			// DBOS's own CLI agrees: the deleted workflow is gone.
			if out := dbosCLI(t, db, "list", "--limit", "1000"); strings.Contains(out, `"`+keyA+`"`) {
				t.Errorf("dbos workflow list still shows %s:\n%s", keyA, out)
			}
		})

		phase(t, "the store answers for the deleted purchase from its own records", func(t *testing.T) {
			if got := MustCall(t, "POST", base+"/checkout/"+keyA, http.StatusOK); got != keyA {
				t.Errorf("checkout retried after retention: %q, want the key", got)
			}
			if got := MustCall(t, "POST", base+"/payment_webhook/"+keyA+"/paid", http.StatusOK); got != idA {
				t.Errorf("payment retried after retention: %q, want order %s", got, idA)
			}
			if got := Inventory(t, base); got != stock {
				t.Errorf("inventory %d after the retried checkout, want %d: a deleted checkout's key took another unit", got, stock)
			}
			before := len(Orders(t, base))
			if o := GetJSON[Order](t, base+"/order/"+idA); o.OrderStatus != shop.StatusDispatched {
				t.Errorf("order %s is %s after the retries, want DISPATCHED", idA, o.Status)
			}
			MustCall(t, "POST", base+"/checkout/"+keyA, http.StatusOK)
			if n := len(Orders(t, base)); n != before {
				t.Errorf("%d orders after retrying a deleted checkout, want %d", n, before)
			}
			page := MustCall(t, "GET", base+"/track/"+idA, http.StatusOK)
			if !strings.Contains(page, "DISPATCHED") {
				t.Errorf("the order page of %s does not say DISPATCHED", idA)
			}
			tl := MustCall(t, "GET", base+"/partials/timeline/"+idA, http.StatusOK)
			if !strings.Contains(tl, `data-testid="wf-deleted"`) || !strings.Contains(tl, "Deleted by retention on") {
				t.Errorf("the timeline of order %s does not say its records were deleted by retention:\n%s", idA, tl)
			}
		})

		var idB string
		phase(t, "once refunded and settled, the rest goes too", func(t *testing.T) {
			prov.mode.Store(providerUp)
			waitRefunded(t, base, c.Key, 90*time.Second)
			idB = MustCall(t, "POST", base+"/payment_webhook/"+keyB+"/failed", http.StatusOK)
			stock++ // B's unit back
			WaitUntil(t, 30*time.Second, "retention deletes the refunded and the declined purchases", func() bool {
				return len(workflowIDs(t, db, keyB, c.Key, shop.RefundWorkflowID(c.Key))) == 0
			})
			if got := Inventory(t, base); got != stock {
				t.Errorf("inventory %d, want %d", got, stock)
			}
		})

		purchases := []loadgen.Purchase{
			{Key: keyA, Checkout: loadgen.Answer{Status: 200, Body: keyA}, Sent: shop.PaymentPaid, Payment: loadgen.Answer{Status: 200, Body: idA}},
			{Key: keyB, Checkout: loadgen.Answer{Status: 200, Body: keyB}, Sent: shop.PaymentFailed, Payment: loadgen.Answer{Status: 200, Body: idB}},
			c,
		}
		CheckInvariants(t, st, initial, purchases, Settle(t, st, 30*time.Second))
	})
}
