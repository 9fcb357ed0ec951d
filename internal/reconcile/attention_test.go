package reconcile

import (
	"testing"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
)

// orderAttention's decision for each state an unfinished order can be in.
func TestOrderAttention(t *testing.T) {
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
		listed    bool
		wantRetry string
	}{
		{"paid, dispatching", paid, wf("k-7", "SUCCESS", "dispatch/7", "PENDING"), false, ""},
		{"paid, dispatch cancelled: the reconciler redispatches", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED"), false, ""},
		{"paid, dispatch and redispatch stopped", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED", "redispatch/7", "ERROR"), true, "redispatch/7"},
		{"paid, both stopped, an operator's retry running", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED", "redispatch/7", "ERROR", "redispatch/7/retry-1", "PENDING"), false, ""},
		{"paid, both stopped, a cancel on its way", paid, wf("k-7", "SUCCESS", "dispatch/7", "CANCELLED", "redispatch/7", "ERROR", "cancel/7", "PENDING"), false, ""},
		{"paid, live dispatch that has not moved", shop.Order{ID: 7, Key: "k-7", Status: shop.StatusPaid, LastUpdate: now.Add(-2 * Stuck)}, wf("dispatch/7", "PENDING"), true, ""},
		{"pending, waiting for its payment", pending, wf("k-8", "PENDING"), false, ""},
		{"pending, checkout cancelled: the reconciler releases", pending, wf("k-8", "CANCELLED"), false, ""},
		{"pending, its release stopped", pending, wf("k-8", "CANCELLED", "release/8", "ERROR"), true, "release/8"},
		{"pending past its window", shop.Order{ID: 8, Key: "k-8", Status: shop.StatusPending, CreatedAt: now.Add(-window - 2*Stuck)}, wf("k-8", "PENDING"), true, ""},
	}
	for _, c := range cases {
		a, listed := orderAttention(c.o, c.status, now, window)
		if listed != c.listed || a.Retry != c.wantRetry {
			t.Errorf("%s: listed %v retry %q, want listed %v retry %q (reason %q)", c.name, listed, a.Retry, c.listed, c.wantRetry, a.Reason)
		}
		if listed && (a.Reason == "" || !a.CanCancel) {
			t.Errorf("%s: listed without a reason or without Cancel: %+v", c.name, a)
		}
	}
}
