package storetest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// The internals panel's "needs attention" list and its operator buttons
// (issue 11): what no workflow will finish by itself is listed, Retry
// resumes the stopped workflow with DBOS's API, and Cancel-and-refund
// cancels the order, returns its unit and refunds its payment once.

// attentionEntry is one entry of GET /admin/attention.
type attentionEntry struct {
	OrderID   int64  `json:"order_id"`
	Status    string `json:"order_status"`
	PaymentID string `json:"payment_id"`
	Reason    string `json:"reason"`
	Retry     string `json:"retry_workflow"`
	CanCancel bool   `json:"can_cancel"`
}

func attentionFor(t testing.TB, base string, orderID int64) (attentionEntry, bool) {
	t.Helper()
	for _, a := range GetJSON[[]attentionEntry](t, base+"/admin/attention") {
		if a.OrderID == orderID {
			return a, true
		}
	}
	return attentionEntry{}, false
}

// htmxPost is a POST as the panel's buttons send it (HX-Request), which
// answers the refreshed panel.
func htmxPost(t testing.TB, url string, want int) string {
	t.Helper()
	req, err := http.NewRequest("POST", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("HX-Request", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read the answer: %v", url, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d %s, want %d", url, resp.StatusCode, b, want)
	}
	return string(b)
}

func TestOperatorPanelRetryAndCancel(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		prov := newTestProvider(t, providerUp)
		env := []string{"RECONCILE_EVERY=300ms", prov.Env()}
		st := Start(t, db, append(env, "CRASH_AT=dispatch:dispatch-leg:3")...)
		prov.pointAt(t, st.Base())
		base := st.Base()
		initial := Inventory(t, base)

		// Two paid orders whose dispatch and second dispatch both stopped:
		// the store dies mid-dispatch, an operator cancels the dispatches
		// while it is down, the reconciler's second dispatches die the same
		// way and are cancelled too. Nothing alive will ship them now.
		var ids [2]int64
		var keys [2]string
		for i := range ids {
			keys[i] = NewKey()
			MustCall(t, "POST", base+"/checkout/"+keys[i], http.StatusOK)
		}
		for i := range ids {
			id, err := strconv.ParseInt(MustCall(t, "POST", base+"/payment_webhook/"+keys[i]+"/paid", http.StatusOK), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
		}
		if _, err := st.WaitExit(30 * time.Second); err != nil {
			t.Fatalf("the store did not exit at dispatch-leg 3: %v", err)
		}
		for _, id := range ids {
			dbosCLI(t, db, "cancel", shop.DispatchWorkflowID(id))
		}
		st.RestartWith(t, append(env, "CRASH_AT=dispatch:dispatch-leg:4")...)
		if _, err := st.WaitExit(30 * time.Second); err != nil {
			t.Fatalf("the store did not exit at dispatch-leg 4: %v", err)
		}
		for _, id := range ids {
			dbosCLI(t, db, "cancel", shop.RedispatchWorkflowID(id))
		}
		st.RestartWith(t, env...)
		stuck, refunded := ids[0], ids[1]

		phase(t, "both are listed as needing attention, with Retry and Cancel", func(t *testing.T) {
			for _, id := range ids {
				var a attentionEntry
				WaitUntil(t, 10*time.Second, "order "+strconv.FormatInt(id, 10)+" needs attention", func() bool {
					var ok bool
					a, ok = attentionFor(t, base, id)
					return ok
				})
				if a.Retry != shop.RedispatchWorkflowID(id) || !a.CanCancel || a.Status != "PAID" {
					t.Errorf("attention entry of order %d: %+v, want PAID, retry %s, cancel allowed", id, a, shop.RedispatchWorkflowID(id))
				}
			}
			panel := MustCall(t, "GET", base+"/partials/internals", http.StatusOK)
			for _, id := range ids {
				if !strings.Contains(panel, `data-attention-order-id="`+strconv.FormatInt(id, 10)+`"`) {
					t.Errorf("the internals panel does not list order %d as needing attention", id)
				}
			}
			if !strings.Contains(panel, `data-testid="attention-retry"`) || !strings.Contains(panel, `data-testid="attention-cancel"`) {
				t.Errorf("the panel has no Retry or Cancel button:\n%s", panel)
			}
			for _, k := range keys { // a checkout's ID is its client's key: never on the public page
				if strings.Contains(panel, k) {
					t.Errorf("the internals panel shows checkout key %s", k)
				}
			}
		})

		phase(t, "Retry resumes the stopped dispatch: the order ships", func(t *testing.T) {
			panel := htmxPost(t, base+"/admin/orders/"+strconv.FormatInt(stuck, 10)+"/retry", http.StatusOK)
			if !strings.Contains(panel, `data-testid="internals-stock"`) {
				t.Errorf("Retry did not answer the panel:\n%s", panel)
			}
			o := WaitOrder(t, base, strconv.FormatInt(stuck, 10), 30*time.Second, IsFinal)
			if o.OrderStatus != shop.StatusDispatched || o.ProgressRemaining != 0 {
				t.Fatalf("order %d after Retry: %s with %d legs to go, want DISPATCHED", stuck, o.Status, o.ProgressRemaining)
			}
			if s := workflowStatus(t, db, shop.RedispatchWorkflowID(stuck)); s != "SUCCESS" {
				t.Errorf("the resumed dispatch is %s, want SUCCESS", s)
			}
			WaitUntil(t, 10*time.Second, "the order leaves the attention list", func() bool {
				_, ok := attentionFor(t, base, stuck)
				return !ok
			})
		})

		phase(t, "Cancel and refund: the paid order is cancelled, its unit back, its payment refunded once", func(t *testing.T) {
			before := Inventory(t, base)
			panel := htmxPost(t, base+"/admin/orders/"+strconv.FormatInt(refunded, 10)+"/cancel", http.StatusOK)
			if strings.Contains(panel, `data-attention-order-id="`+strconv.FormatInt(refunded, 10)+`"`) {
				t.Errorf("the cancelled order is still listed as needing attention")
			}
			o := GetJSON[Order](t, base+"/order/"+strconv.FormatInt(refunded, 10))
			if o.OrderStatus != shop.StatusCancelled {
				t.Fatalf("order %d after Cancel: %s, want CANCELLED", refunded, o.Status)
			}
			if got := Inventory(t, base); got != before+1 {
				t.Errorf("inventory %d after Cancel, want %d (the unit back)", got, before+1)
			}
			waitRefunded(t, base, keys[1], 30*time.Second)
			if got := providerRefunds(t, db, keys[1]); len(got) != 1 {
				t.Errorf("provider refunds of %s: %v, want exactly one", keys[1], got)
			}
			// Twice is once: the second is a conflict and changes nothing.
			code, body := Call(t, "POST", base+"/admin/orders/"+strconv.FormatInt(refunded, 10)+"/cancel")
			if code != http.StatusConflict || !strings.Contains(body, "already CANCELLED") {
				t.Errorf("a second Cancel: %d %q, want 409 already CANCELLED", code, body)
			}
			if got := Inventory(t, base); got != before+1 {
				t.Errorf("inventory %d after a second Cancel, want %d", got, before+1)
			}
		})

		phase(t, "a refund the provider refused is listed; Retry calls it again and it is refunded once", func(t *testing.T) {
			prov.mode.Store(providerRefuses)
			p := declineThenPay(t, base)
			late, ok := latePayment(t, base, p.Key)
			if !ok {
				t.Fatalf("the late payment %s is not listed", p.Key)
			}
			var a attentionEntry
			WaitUntil(t, 20*time.Second, "the refused refund needs attention", func() bool {
				a, ok = attentionFor(t, base, late.OrderID)
				return ok && a.Retry != ""
			})
			if a.Retry != shop.RefundWorkflowID(p.Key) || a.PaymentID != p.Key || a.CanCancel {
				t.Errorf("attention entry of the refused refund: %+v", a)
			}
			prov.mode.Store(providerUp)
			MustCall(t, "POST", base+"/admin/orders/"+strconv.FormatInt(late.OrderID, 10)+"/retry", http.StatusOK)
			waitRefunded(t, base, p.Key, 30*time.Second)
			if got := providerRefunds(t, db, p.Key); len(got) != 1 {
				t.Errorf("provider refunds of %s: %v, want exactly one", p.Key, got)
			}
		})

		phase(t, "bad input is a clear 4xx and changes nothing", func(t *testing.T) {
			before := Inventory(t, base)
			for _, c := range []struct {
				path string
				want int
				says string
			}{
				{"/admin/orders/abc/retry", http.StatusBadRequest, "order id must be a positive integer"},
				{"/admin/orders/-3/cancel", http.StatusBadRequest, "order id must be a positive integer"},
				{"/admin/orders/99999999/cancel", http.StatusNotFound, "no order"},
				{"/admin/orders/" + strconv.FormatInt(stuck, 10) + "/retry", http.StatusConflict, "no stopped workflow"},
				{"/admin/orders/" + strconv.FormatInt(stuck, 10) + "/cancel", http.StatusConflict, "already DISPATCHED"},
			} {
				code, body := Call(t, "POST", base+c.path)
				if code != c.want || !strings.Contains(body, c.says) {
					t.Errorf("POST %s: %d %q, want %d saying %q", c.path, code, body, c.want, c.says)
				}
			}
			if got := Inventory(t, base); got != before {
				t.Errorf("inventory %d after bad requests, want %d", got, before)
			}
		})

		if got := Inventory(t, base); got != initial-1 {
			t.Errorf("inventory %d at the end, want %d: one order shipped, one cancelled and refunded, one declined", got, initial-1)
		}
	})
}
