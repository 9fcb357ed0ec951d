package storetest

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// Operator actions with DBOS's own CLI (go tool dbos, the module's tool at
// the SDK's version), run for real against the running store's database, and
// what the store must do so that no order is left stuck: see the decision
// table in README.md (Operating it).

// dbosCLI runs `go tool dbos workflow ARGS… -D <db>` and returns its output.
func dbosCLI(t *testing.T, db *loadgen.Database, args ...string) string {
	t.Helper()
	root, err := loadgen.FindModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	url := db.URL
	if db.Kind == "sqlite" {
		url = "sqlite:" + db.Path
	}
	cmd := exec.Command("go", append(append([]string{"tool", "dbos", "workflow"}, args...), "-D", url)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dbos workflow %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// workflowStatus is `dbos workflow get ID`'s status.
func workflowStatus(t *testing.T, db *loadgen.Database, id string) string {
	t.Helper()
	out := dbosCLI(t, db, "get", id)
	var st struct {
		Status string `json:"Status"`
	}
	if i := strings.IndexByte(out, '{'); i < 0 || json.Unmarshal([]byte(out[i:]), &st) != nil {
		t.Fatalf("dbos workflow get %s: unreadable output:\n%s", id, out)
	}
	return st.Status
}

func TestOperatorCLIActionsLeaveNothingStuck(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the store and DBOS's CLI")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := Start(t, db, "RECONCILE_EVERY=300ms", "PAYMENT_TIMEOUT=120s")
		stock := Inventory(t, st.Base())

		phase(t, "cancel a checkout waiting for payment: the order is released, its unit back", func(t *testing.T) {
			key := NewKey()
			MustCall(t, "POST", st.URL("/checkout/"+key), http.StatusOK)
			dbosCLI(t, db, "cancel", key)
			if s := workflowStatus(t, db, key); s != "CANCELLED" {
				t.Fatalf("checkout %s is %s after dbos workflow cancel", key, s)
			}
			WaitUntil(t, 15*time.Second, "the reconciler releases the order", func() bool {
				o := NewestOrder(t, st.Base())
				return o.OrderStatus == shop.StatusCancelled
			})
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d after the release, want %d", got, stock)
			}
			if s := workflowStatus(t, db, shop.ReleaseWorkflowID(NewestOrder(t, st.Base()).OrderID)); s != "SUCCESS" {
				t.Errorf("the release workflow is %s", s)
			}
		})

		phase(t, "a payment for a cancelled checkout is answered at once: 409, recorded for refund", func(t *testing.T) {
			key := NewKey()
			MustCall(t, "POST", st.URL("/checkout/"+key), http.StatusOK)
			dbosCLI(t, db, "cancel", key)
			began := time.Now()
			code, body := Call(t, "POST", st.URL("/payment_webhook/"+key+"/paid"))
			took := time.Since(began)
			if code != http.StatusConflict || !strings.Contains(body, "recorded for refund") {
				t.Fatalf("payment for a cancelled checkout: %d %q, want 409 recorded for refund", code, body)
			}
			// A second is the orphan check's pace; the old build waited 60 s
			// and answered 503.
			if took > 10*time.Second {
				t.Errorf("the payment took %v to answer", took)
			}
			t.Logf("MEASURED payment for a cancelled checkout answered in %v", took.Round(time.Millisecond))
			if !containsPayment(LatePayments(t, st.Base()), key) {
				t.Errorf("payment %s is not in the late payments (refunds)", key)
			}
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d, want %d", got, stock)
			}
		})

		phase(t, "cancel a dispatch mid-way: the paid order is dispatched all the same", func(t *testing.T) {
			key := NewKey()
			MustCall(t, "POST", st.URL("/checkout/"+key), http.StatusOK)
			id := MustCall(t, "POST", st.URL("/payment_webhook/"+key+"/paid"), http.StatusOK)
			WaitOrder(t, st.Base(), id, 10*time.Second, func(o Order) bool { return o.ProgressRemaining <= shop.DispatchLegs-2 })
			orderID, err := strconv.ParseInt(id, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			dbosCLI(t, db, "cancel", shop.DispatchWorkflowID(orderID))
			o := WaitOrder(t, st.Base(), id, 30*time.Second, IsFinal)
			if o.OrderStatus != shop.StatusDispatched || o.ProgressRemaining != 0 {
				t.Fatalf("order %s ended %s with %d legs to go, want DISPATCHED", id, o.Status, o.ProgressRemaining)
			}
			// The cancelled dispatch's legs make no DBOS call, so nothing stops
			// it; the reconciler starts a second one all the same. Both write
			// the same idempotent legs, and the second ends as soon as it finds
			// the order DISPATCHED.
			WaitUntil(t, 15*time.Second, "the second dispatch ends", func() bool {
				return workflowStatus(t, db, shop.RedispatchWorkflowID(orderID)) == "SUCCESS"
			})
			stock-- // one widget shipped
		})

		phase(t, "fork a finished checkout: no second order, no second stock movement", func(t *testing.T) {
			key := NewKey()
			MustCall(t, "POST", st.URL("/checkout/"+key), http.StatusOK)
			id := MustCall(t, "POST", st.URL("/payment_webhook/"+key+"/paid"), http.StatusOK)
			WaitOrder(t, st.Base(), id, 30*time.Second, IsFinal)
			stock--
			before := len(Orders(t, st.Base()))
			var fork struct {
				ID string `json:"workflow_uuid"`
			}
			out := dbosCLI(t, db, "fork", key)
			if i := strings.IndexByte(out, '{'); i < 0 || json.Unmarshal([]byte(out[i:]), &fork) != nil || fork.ID == "" {
				t.Fatalf("dbos workflow fork %s: unreadable output:\n%s", key, out)
			}
			// The forked execution runs under its own ID and does nothing.
			WaitUntil(t, 20*time.Second, "the forked execution ends", func() bool {
				return workflowStatus(t, db, fork.ID) == "SUCCESS"
			})
			if n := len(Orders(t, st.Base())); n != before {
				t.Errorf("%d orders after the fork, want %d: a forked execution made an order", n, before)
			}
			if got := Inventory(t, st.Base()); got != stock {
				t.Errorf("inventory %d after the fork, want %d", got, stock)
			}
		})
	})
}

func containsPayment(late []LatePayment, pid string) bool {
	for _, p := range late {
		if p.PaymentID == pid {
			return true
		}
	}
	return false
}
