package shop

import "testing"

// OrderOfWorkflowID undoes every per-order workflow ID, and nothing else.
func TestOrderOfWorkflowID(t *testing.T) {
	for _, id := range []string{DispatchWorkflowID(42), RedispatchWorkflowID(42), ReleaseWorkflowID(42), CancelOrderWorkflowID(42)} {
		if n, ok := OrderOfWorkflowID(id); !ok || n != 42 {
			t.Errorf("OrderOfWorkflowID(%q) = %d, %v; want 42, true", id, n, ok)
		}
	}
	for _, id := range []string{"k-42", RefundWorkflowID("k-42"), "dispatch/", "dispatch/x", "dispatch/0", "dispatch/42/retry-1", "undispatch/42"} {
		if n, ok := OrderOfWorkflowID(id); ok {
			t.Errorf("OrderOfWorkflowID(%q) = %d, true; want false", id, n)
		}
	}
}
