package storetest

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// Refunds (issue 11): a payment for an order already cancelled is answered
// 409, recorded as a late payment, and paid back by the refund workflow
// through the payment provider (here the store's own stand-in, /provider),
// exactly once: whatever the webhook retries or the process crashes.

// latePayment is payment pid's row of GET /late_payments, if any.
func latePayment(t testing.TB, base, pid string) (LatePayment, bool) {
	t.Helper()
	for _, p := range LatePayments(t, base) {
		if p.PaymentID == pid {
			return p, true
		}
	}
	return LatePayment{}, false
}

// waitRefunded waits until GET /late_payments shows payment pid refunded.
func waitRefunded(t testing.TB, base, pid string, timeout time.Duration) LatePayment {
	t.Helper()
	var got LatePayment
	WaitUntil(t, timeout, "the late payment "+pid+" is refunded", func() bool {
		p, ok := latePayment(t, base, pid)
		got = p
		return ok && p.RefundStatus == "refunded"
	})
	if got.RefundedAt == nil || got.RefundID == "" {
		t.Fatalf("late payment %s refunded without refunded_at or refund_id: %+v", pid, got)
	}
	return got
}

// providerRefunds reads the stand-in provider's refunds of payment pid
// (a checkout key: no quoting needed): their refund ids.
func providerRefunds(t testing.TB, db *loadgen.Database, pid string) []string {
	t.Helper()
	var ids []string
	query(t, db, `SELECT refund_id FROM provider_refunds WHERE payment_id = '`+pid+`'`, func(scan func(...any) error) error {
		var id string
		if err := scan(&id); err != nil {
			return err
		}
		ids = append(ids, id)
		return nil
	})
	return ids
}

// declineThenPay makes an order, declines it and pays it after all: the
// payment is answered 409 and recorded for refund. It returns the purchase
// as the client saw it.
func declineThenPay(t *testing.T, base string) loadgen.Purchase {
	t.Helper()
	key := NewKey()
	pid := MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
	orderID := MustCall(t, "POST", base+"/payment_webhook/"+pid+"/failed", http.StatusOK)
	code, body := Call(t, "POST", base+"/payment_webhook/"+pid+"/paid")
	if code != http.StatusConflict || !strings.Contains(body, "recorded for refund") {
		t.Fatalf("paid after the decline of order %s: %d %q, want 409 recorded for refund", orderID, code, body)
	}
	return loadgen.Purchase{Key: key, Checkout: loadgen.Answer{Status: http.StatusOK, Body: pid},
		Sent: shop.PaymentPaid, Payment: loadgen.Answer{Status: code, Body: body}}
}

// providerCall is POST /provider/refunds/{pid} with Idempotency-Key key
// ("" for none) and body.
func providerCall(t *testing.T, base, pid, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/provider/refunds/"+pid, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /provider/refunds/%s: %v", pid, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST /provider/refunds/%s: read the answer: %v", pid, err)
	}
	return resp.StatusCode, string(b)
}

func TestRefundOfALatePayment(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := Start(t, db)
		base := st.Base()
		var p loadgen.Purchase
		var refund LatePayment

		phase(t, "declined, then paid: 409, and the refund is made within seconds", func(t *testing.T) {
			began := time.Now()
			p = declineThenPay(t, base)
			refund = waitRefunded(t, base, p.Key, 10*time.Second)
			t.Logf("MEASURED late payment refunded %v after the payment was sent", time.Since(began).Round(time.Millisecond))
			if got := providerRefunds(t, db, p.Key); len(got) != 1 || got[0] != refund.RefundID {
				t.Fatalf("provider refunds of %s: %v, want exactly [%s]", p.Key, got, refund.RefundID)
			}
			// The internals panel lists it, refunded.
			panel := MustCall(t, "GET", base+"/partials/internals", http.StatusOK)
			if !strings.Contains(panel, `data-testid="internals-refunds"`) || !strings.Contains(panel, `data-refund-order-id="`+strconv.FormatInt(refund.OrderID, 10)+`"`) || !strings.Contains(panel, "refunded") {
				t.Errorf("the internals panel does not list the refund of order %d:\n%s", refund.OrderID, panel)
			}
			if strings.Contains(panel, p.Key) {
				t.Errorf("the internals panel shows payment id %s (a checkout key) on a public page", p.Key)
			}
			// The order's timeline shows the refund workflow and its steps.
			tl := MustCall(t, "GET", base+"/partials/timeline/"+strconv.FormatInt(refund.OrderID, 10), http.StatusOK)
			for _, want := range []string{"Refund", shop.StepRefundCall, shop.StepRefundRecord} {
				if !strings.Contains(tl, want) {
					t.Errorf("the order's timeline lacks %q", want)
				}
			}
		})

		phase(t, "the paid webhook replayed: 409 again, still one refund, one refund workflow", func(t *testing.T) {
			for range 3 {
				if code, body := Call(t, "POST", base+"/payment_webhook/"+p.Key+"/paid"); code != http.StatusConflict {
					t.Fatalf("replayed payment: %d %q, want 409", code, body)
				}
			}
			again := waitRefunded(t, base, p.Key, 5*time.Second)
			if again.RefundID != refund.RefundID || !again.RefundedAt.Equal(*refund.RefundedAt) {
				t.Errorf("after the replays the refund is %+v, was %+v", again, refund)
			}
			if got := providerRefunds(t, db, p.Key); len(got) != 1 {
				t.Errorf("provider refunds of %s after the replays: %v, want one", p.Key, got)
			}
			if n := len(recordedStepsOf(t, db, shop.RefundWorkflowID(p.Key))); n != 2 {
				t.Errorf("refund workflow %s recorded %d steps, want 2 (provider call, record)", shop.RefundWorkflowID(p.Key), n)
			}
		})

		phase(t, "the stand-in provider: a repeated key answers the same refund; no key, 400", func(t *testing.T) {
			code, body := providerCall(t, base, p.Key, p.Key, `{"amount_cents": 9999}`)
			var got struct {
				RefundID  string `json:"refund_id"`
				PaymentID string `json:"payment_id"`
				Replayed  bool   `json:"replayed"`
			}
			if code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil || got.RefundID != refund.RefundID || got.PaymentID != p.Key || !got.Replayed {
				t.Errorf("provider refund repeated: %d %s, want 200 replayed %s", code, body, refund.RefundID)
			}
			for _, c := range []struct{ name, key, body string }{
				{"no Idempotency-Key", "", `{"amount_cents": 9999}`},
				{"a malformed Idempotency-Key", "a b", `{"amount_cents": 9999}`},
				{"no amount", p.Key, `{}`},
				{"not JSON", p.Key, `amount=1`},
			} {
				if code, body := providerCall(t, base, p.Key, c.key, c.body); code != http.StatusBadRequest {
					t.Errorf("provider refund with %s: %d %s, want 400", c.name, code, body)
				}
			}
			if code, body := providerCall(t, base, p.Key, p.Key, `{"amount_cents": 1}`); code != http.StatusConflict {
				t.Errorf("provider refund, same key, another amount: %d %s, want 409", code, body)
			}
			if got := providerRefunds(t, db, p.Key); len(got) != 1 {
				t.Errorf("provider refunds of %s: %v, want still one", p.Key, got)
			}
		})

		phase(t, "invariants, refunds included", func(t *testing.T) {
			CheckInvariants(t, st, 100, []loadgen.Purchase{p}, Settle(t, st, 30*time.Second))
		})
	})
}

// TestRefundSurvivesACrash kills the store right after the provider call's
// checkpoint commits, before the refund is recorded
// (CRASH_AT=refund:refund-provider):
// restarted, the refund workflow finishes from its checkpoint, and the
// provider has refunded the payment exactly once.
func TestRefundSurvivesACrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and crashes it")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := StartWith(t, db, Options{Env: []string{"CRASH_AT=refund:refund-provider"}})
		base := st.Base()
		key := NewKey()

		phase(t, "declined, paid: the store exits after the provider refunded, before recording it", func(t *testing.T) {
			pid := MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
			MustCall(t, "POST", base+"/payment_webhook/"+pid+"/failed", http.StatusOK)
			// The answer (409) may or may not come out before the exit.
			if resp, err := http.Post(base+"/payment_webhook/"+pid+"/paid", "", nil); err == nil {
				resp.Body.Close()
			}
			code, err := st.WaitExit(30 * time.Second)
			if err != nil {
				st.Kill()
				t.Fatalf("the store did not exit at refund:refund-provider: %v", err)
			}
			if code != 1 {
				t.Fatalf("the store exited with status %d at refund:refund-provider, want 1", code)
			}
			if got := providerRefunds(t, db, key); len(got) != 1 {
				t.Fatalf("provider refunds at the crash: %v, want one", got)
			}
			recorded := 0
			query(t, db, `SELECT count(*) FROM refunds`, func(scan func(...any) error) error { return scan(&recorded) })
			if recorded != 0 {
				t.Fatalf("%d refunds recorded at the crash, want 0: the crash point is before the record", recorded)
			}
		})

		phase(t, "restarted: pending, then refunded from the checkpoint, the provider not called again", func(t *testing.T) {
			st.RestartWith(t)
			refund := waitRefunded(t, base, key, 15*time.Second)
			got := providerRefunds(t, db, key)
			if len(got) != 1 || got[0] != refund.RefundID {
				t.Fatalf("provider refunds of %s: %v, want exactly [%s]", key, got, refund.RefundID)
			}
			// The retried webhook still answers 409 and refunds nothing more.
			if code, body := Call(t, "POST", base+"/payment_webhook/"+key+"/paid"); code != http.StatusConflict {
				t.Fatalf("the paid webhook after the restart: %d %q, want 409", code, body)
			}
		})

		phase(t, "invariants, refunds included", func(t *testing.T) {
			p := loadgen.Purchase{Key: key, Checkout: loadgen.Answer{Status: http.StatusOK, Body: key},
				Sent: shop.PaymentPaid, Payment: loadgen.Answer{Status: http.StatusConflict, Body: "recorded for refund"}}
			CheckInvariants(t, st, 100, []loadgen.Purchase{p}, Settle(t, st, 30*time.Second))
		})
	})
}

// TestReconcilerStartsAMissingRefund: a late payment recorded by a process
// that died before starting its refund workflow (the record and the start
// are two writes) is refunded by the reconciler's next pass, which a
// restarted store runs at once.
func TestReconcilerStartsAMissingRefund(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the store")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := Start(t, db)
		base := st.Base()
		key := NewKey()
		pid := MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
		orderID := MustCall(t, "POST", base+"/payment_webhook/"+pid+"/failed", http.StatusOK)

		phase(t, "stopped; the late payment recorded as the dead process left it: no refund workflow", func(t *testing.T) {
			if err := st.Stop(20 * time.Second); err != nil {
				t.Fatal(err)
			}
			id, err := strconv.ParseInt(orderID, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			execSQL(t, db, `INSERT INTO late_payments (payment_id, order_id, received_at) VALUES ($1, $2, $3)`, pid, id, time.Now().UnixMilli())
			if n := len(recordedStepsOf(t, db, shop.RefundWorkflowID(pid))); n != 0 {
				t.Fatalf("refund workflow of %s has %d steps before the restart, want none", pid, n)
			}
		})

		phase(t, "restarted: the reconciler starts the refund, made once", func(t *testing.T) {
			st.Restart(t)
			refund := waitRefunded(t, base, pid, 15*time.Second)
			if got := providerRefunds(t, db, pid); len(got) != 1 || got[0] != refund.RefundID {
				t.Fatalf("provider refunds of %s: %v, want exactly [%s]", pid, got, refund.RefundID)
			}
		})

		phase(t, "invariants, refunds included", func(t *testing.T) {
			p := loadgen.Purchase{Key: key, Checkout: loadgen.Answer{Status: http.StatusOK, Body: pid},
				Sent: shop.PaymentPaid, Payment: loadgen.Answer{Status: http.StatusConflict, Body: "recorded for refund"}}
			CheckInvariants(t, st, 100, []loadgen.Purchase{p}, Settle(t, st, 30*time.Second))
		})
	})
}

// recordedStepsOf is the steps DBOS recorded for workflow id.
func recordedStepsOf(t testing.TB, db *loadgen.Database, id string) []RecordedStep {
	t.Helper()
	var out []RecordedStep
	for _, s := range RecordedSteps(t, db) {
		if s.WorkflowID == id {
			out = append(out, s)
		}
	}
	return out
}

// execSQL runs one write on db, whose store must be stopped (SQLite: one
// handle to the file). Tests only: it stands in for what a process that
// died between two writes left behind.
func execSQL(t testing.TB, db *loadgen.Database, q string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if db.Kind == "postgres" {
		conn, err := pgx.Connect(ctx, db.URL)
		if err != nil {
			t.Fatalf("connect to %s: %v", db.URL, err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return
	}
	sdb, err := sql.Open("sqlite", "file:"+url.PathEscape(db.Path)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	if _, err := sdb.ExecContext(ctx, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
