package storetest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
)

// TestMetricsAndWorkflowLogs: /metrics counts checkouts by outcome, times
// steps and requests by route; workflow log lines are JSON with the
// workflow id, order id and executor id.
func TestMetricsAndWorkflowLogs(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		logs := &capturedLog{}
		executor := "metrics-" + RandomHex(3)
		st := StartWith(t, db, Options{Log: logs, Env: []string{"EXECUTOR_ID=" + executor, "LOG_FORMAT=json", "LOG_LEVEL=info"}})
		base := st.Base()

		paidKey, failedKey := NewKey(), NewKey()
		MustCall(t, "POST", base+"/checkout/"+paidKey, http.StatusOK)
		paidOrder := MustCall(t, "POST", base+"/payment_webhook/"+paidKey+"/paid", http.StatusOK)
		MustCall(t, "POST", base+"/checkout/"+failedKey, http.StatusOK)
		MustCall(t, "POST", base+"/payment_webhook/"+failedKey+"/failed", http.StatusOK)
		MustCall(t, "GET", base+"/order/"+paidOrder, http.StatusOK)
		// A payment after the decline (recorded for refund), and an
		// operator's cancel of the paid order mid-dispatch (demo mode: no
		// token): two refunds, whose steps, like the cancel's, are timed under
		// their durable names.
		MustCall(t, "POST", base+"/payment_webhook/"+failedKey+"/paid", http.StatusConflict)
		MustCall(t, "POST", base+"/admin/orders/"+paidOrder+"/cancel", http.StatusOK)
		for deadline := time.Now().Add(15 * time.Second); MetricValue(t, base, "widget_step_duration_seconds_count", `step="refund-record",workflow="refund"`) < 2; {
			if time.Now().After(deadline) {
				t.Fatal("the refunds' steps were not timed within 15 s")
			}
			time.Sleep(50 * time.Millisecond)
		}

		for _, c := range []struct {
			name, match string
			want        float64
		}{
			{"widget_checkouts_total", `outcome="started"`, 2},
			{"widget_checkouts_total", `outcome="paid"`, 1},
			{"widget_checkouts_total", `outcome="declined"`, 1},
			{"widget_checkouts_total", `outcome="timed_out"`, 0},
			{"widget_checkouts_total", `outcome="sold_out"`, 0},
			{"widget_step_duration_seconds_count", `step="reserve"`, 2},
			{"widget_step_duration_seconds_count", `step="await-payment"`, 2},
			{"widget_step_duration_seconds_count", `step="settle",workflow="checkout"`, 2},
			{"widget_step_duration_seconds_count", `step="cancel-order",workflow="cancel-order"`, 1},
			{"widget_step_duration_seconds_count", `step="refund-provider",workflow="refund"`, 2},
			{"widget_step_duration_seconds_count", `step="refund-record",workflow="refund"`, 2},
			{"widget_http_request_duration_seconds_count", `route="POST /checkout/{key}"`, 2},
			{"widget_http_request_duration_seconds_count", `code="200",method="GET",route="GET /order/{id}"`, 1},
			{"widget_workflows_recovered_total", "", 0},
		} {
			if got := MetricValue(t, base, c.name, c.match); got != c.want {
				t.Errorf("%s{%s} = %v, want %v", c.name, c.match, got, c.want)
			}
		}

		// The workflow's payment line, as JSON, names workflow, order and executor.
		deadline := time.Now().Add(10 * time.Second)
		for {
			found := false
			for line := range strings.SplitSeq(logs.String(), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "checkout: payment status" || rec["workflow_id"] != paidKey {
					continue
				}
				found = true
				if rec["executor_id"] != executor || rec["payment"] != "paid" || strconv.FormatFloat(toFloat(rec["order_id"]), 'f', -1, 64) != paidOrder {
					t.Errorf("workflow log line %s: want executor_id %s, order_id %s, payment paid", line, executor, paidOrder)
				}
			}
			if found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no JSON workflow log line for %s in:\n%s", paidKey, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func toFloat(v any) float64 {
	f, _ := v.(float64) // JSON numbers decode as float64; anything else reads as 0 and fails the check
	return f
}

// TestWebhookAnswersAtItsOwnCommit: a payment webhook settles the order
// itself and answers at its own commit (internal/paywait, Deliver), so what
// lies between its arrival and its answer is one transaction: one commit and
// a handful of statements (BEGIN, the order read, the settling UPDATE,
// COMMIT; the count is the store's own, internal/critpath), not the
// checkout's Recv and mark-paid (3 commits, 27 statements, two builds
// before; DBOS's Send too, one build before). Each
// answer is the order, PAID, and each order ships.
func TestWebhookAnswersAtItsOwnCommit(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := Start(t, db)
		base := st.Base()
		count := func(what string) float64 {
			return MetricValue(t, base, "widget_critical_path_"+what+"_total", `kind="webhook"`)
		}
		requests, commits, statements := count("requests"), count("commits"), count("statements")
		const n = 5
		var orders []string
		for range n {
			key := NewKey()
			MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
			orders = append(orders, MustCall(t, "POST", base+"/payment_webhook/"+key+"/paid", http.StatusOK))
		}
		if got := count("requests") - requests; got != n {
			t.Fatalf("%v webhooks counted, want %d", got, n)
		}
		perCommits, perStatements := (count("commits")-commits)/n, (count("statements")-statements)/n
		t.Logf("per webhook: %.2f commits, %.2f statements", perCommits, perStatements)
		if perCommits != 1 {
			t.Errorf("%.2f commits between a webhook's arrival and its answer, want 1 (its own transaction)", perCommits)
		}
		if perStatements > 7 {
			t.Errorf("%.2f statements between a webhook's arrival and its answer, want at most 7", perStatements)
		}
		for _, id := range orders {
			WaitOrder(t, base, id, 30*time.Second, func(o Order) bool { return o.Status == "DISPATCHED" })
		}
	})
}
