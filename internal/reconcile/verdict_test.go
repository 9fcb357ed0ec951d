package reconcile

import (
	"testing"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
)

// One table for the one verdict (judge): for each state an unfinished order
// and its workflows can be in, what the reconciler's pass does (remedy) and
// whether the attention list shows it, with which Retry.
func TestVerdict(t *testing.T) {
	now := time.Now()
	window := 2 * time.Minute
	paid := shop.Order{ID: 7, Key: "k-7", Status: shop.StatusPaid, CreatedAt: now.Add(-time.Hour), LastUpdate: now.Add(-10 * time.Second)}
	pending := shop.Order{ID: 8, Key: "k-8", Status: shop.StatusPending, CreatedAt: now.Add(-30 * time.Second), LastUpdate: now.Add(-30 * time.Second)}
	wf := func(pairs ...string) map[string]dbos.WorkflowStatus {
		m := map[string]dbos.WorkflowStatus{}
		for i := 0; i < len(pairs); i += 2 {
			m[pairs[i]] = dbos.WorkflowStatus{ID: pairs[i], Status: dbos.WorkflowStatusType(pairs[i+1])}
		}
		return m
	}
	cases := []struct {
		name      string
		o         shop.Order
		status    map[string]dbos.WorkflowStatus
		remedy    remedy
		listed    bool
		wantRetry string
	}{
		{"paid, dispatching", paid, wf("k-7", "SUCCESS", "dispatch/7", "PENDING"), leave, false, ""},
		{"paid, checkout about to start the dispatch", paid, wf("k-7", "PENDING"), leave, false, ""},
		{"paid, dispatch cancelled: the reconciler redispatches", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED"), redispatch, false, ""},
		{"paid, dispatch failed: the reconciler redispatches", paid, wf("k-7", "SUCCESS", "dispatch/7", "ERROR"), redispatch, false, ""},
		{"paid, dispatch dead-lettered: the reconciler redispatches", paid, wf("k-7", "SUCCESS", "dispatch/7", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"), redispatch, false, ""},
		{"paid, dispatch deleted: the reconciler redispatches", paid, wf("k-7", "SUCCESS"), redispatch, false, ""},
		{"paid, redispatch running", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED", "redispatch/7", "PENDING"), leave, false, ""},
		{"paid, dispatch and redispatch stopped", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED", "redispatch/7", "ERROR"), leave, true, "redispatch/7"},
		{"paid, redispatch stopped, dispatch deleted", paid, wf("k-7", "SUCCESS", "redispatch/7", "CANCELLED"), leave, true, "redispatch/7"},
		{"paid, both stopped, an operator's retry running", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED", "redispatch/7", "ERROR", "redispatch/7/retry-1", "PENDING"), leave, false, ""},
		{"paid, both stopped, a cancel on its way", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED", "redispatch/7", "ERROR", "cancel/7", "PENDING"), leave, false, ""},
		{"paid, dispatch cancelled, a cancel on its way", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED", "cancel/7", "ENQUEUED"), leave, false, ""},
		{"paid, live dispatch that has not moved", shop.Order{ID: 7, Key: "k-7", Status: shop.StatusPaid, LastUpdate: now.Add(-2 * Stuck)}, wf("dispatch/7", "PENDING"), leave, true, ""},
		{"pending, waiting for its payment", pending, wf("k-8", "PENDING"), leave, false, ""},
		{"pending, checkout enqueued", pending, wf("k-8", "ENQUEUED"), leave, false, ""},
		{"pending, checkout cancelled: the reconciler releases", pending, wf("k-8", "CANCELLED"), release, false, ""},
		{"pending, checkout failed: the reconciler releases", pending, wf("k-8", "ERROR"), release, false, ""},
		{"pending, checkout deleted: the reconciler releases", pending, wf(), release, false, ""},
		{"pending, checkout finished with the order pending (a re-run of a deleted one): released", pending, wf("k-8", "SUCCESS"), release, false, ""},
		{"pending, its release running", pending, wf("k-8", "CANCELLED", "release/8", "PENDING"), leave, false, ""},
		{"pending, its release stopped", pending, wf("k-8", "CANCELLED", "release/8", "ERROR"), leave, true, "release/8"},
		{"pending, its release cancelled", pending, wf("k-8", "CANCELLED", "release/8", "CANCELLED"), leave, true, "release/8"},
		{"pending, its release dead-lettered", pending, wf("k-8", "ERROR", "release/8", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"), leave, true, "release/8"},
		{"pending, release stopped, a cancel on its way", pending, wf("k-8", "CANCELLED", "release/8", "ERROR", "cancel/8", "PENDING"), leave, false, ""},
		{"pending past its window", shop.Order{ID: 8, Key: "k-8", Status: shop.StatusPending, CreatedAt: now.Add(-window - 2*Stuck)}, wf("k-8", "PENDING"), leave, true, ""},
		{"final order: nothing", shop.Order{ID: 9, Key: "k-9", Status: shop.StatusDispatched}, wf("k-9", "SUCCESS"), leave, false, ""},
	}
	for _, c := range cases {
		if got := judge(c.o, c.status).remedy; got != c.remedy {
			t.Errorf("%s: the reconciler's remedy %d, want %d", c.name, got, c.remedy)
		}
		a, listed := orderAttention(c.o, c.status, now, window)
		if listed != c.listed || a.Retry != c.wantRetry {
			t.Errorf("%s: listed %v retry %q, want listed %v retry %q (reason %q)", c.name, listed, a.Retry, c.listed, c.wantRetry, a.Reason)
		}
		if listed && (a.Reason == "" || !a.CanCancel) {
			t.Errorf("%s: listed without a reason or without Cancel: %+v", c.name, a)
		}
	}
}
