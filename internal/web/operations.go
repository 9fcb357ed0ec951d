package web

import (
	"context"
	"net/http"

	"widget-store/internal/shop"
	"widget-store/views"
)

// Operations are the operator's actions on orders that need attention (the
// internals panel's list, with Retry and Cancel-and-refund);
// internal/reconcile satisfies it (operations.go), on the reconciler's
// verdicts and DBOS's own APIs.
type Operations interface {
	// Attention lists what an operator should look at.
	Attention(ctx context.Context) ([]shop.Attention, error)
	// Retry runs again the stopped workflow behind order id and returns the
	// ID of the execution that does: the workflow itself, resumed, when it
	// was cancelled, or a fork from its failed step when a step failed (a
	// resume would replay the checkpointed error). shop.Conflict when it has
	// none to retry.
	Retry(ctx context.Context, orderID int64) (string, error)
	// CancelOrder cancels unfinished order id, returns its unit, and
	// refunds its payment if it was paid; shop.Conflict when it is final.
	CancelOrder(ctx context.Context, orderID int64) (shop.Order, error)
}

// attentionJSON is one entry of GET /admin/attention.
type attentionJSON struct {
	OrderID     int64                `json:"order_id"`
	OrderStatus string               `json:"order_status"`
	PaymentID   string               `json:"payment_id,omitempty"`
	Reason      string               `json:"reason"`
	Workflows   []shop.WorkflowState `json:"workflows"`
	Retry       string               `json:"retry_workflow,omitempty"`
	CanCancel   bool                 `json:"can_cancel"`
}

// handleAttention is GET /admin/attention: the list, with the workflows'
// IDs (which hold payment ids: admin only).
func handleAttention(ops Operations) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		list, err := ops.Attention(r.Context())
		if err != nil {
			return err
		}
		out := make([]attentionJSON, 0, len(list))
		for _, a := range list {
			out = append(out, attentionJSON{OrderID: a.Order.ID, OrderStatus: a.Order.Status.String(), PaymentID: a.PaymentID,
				Reason: a.Reason, Workflows: a.Workflows, Retry: a.Retry, CanCancel: a.CanCancel})
		}
		return writeJSON(w, http.StatusOK, out)
	}
}

// orderIDParam reads the {id} of an /admin/orders/{id}/… path.
func orderIDParam(r *http.Request) (int64, error) { return shop.ParseOrderID(r.PathValue("id")) }

// handleRetry is POST /admin/orders/{id}/retry. htmx gets the internals
// panel back; an API client, the ID of the execution that runs the workflow
// again (the workflow's own when resumed, the fork's when forked), under the
// key "resumed_workflow" the API has always had.
func handleRetry(ops Operations, internals handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := orderIDParam(r)
		if err != nil {
			return err
		}
		wid, err := ops.Retry(r.Context(), id)
		if err != nil {
			return err
		}
		if r.Header.Get("HX-Request") != "" {
			return internals(w, r)
		}
		return writeJSON(w, http.StatusOK, map[string]any{"order_id": id, "resumed_workflow": wid})
	}
}

// handleCancelOrder is POST /admin/orders/{id}/cancel: Cancel-and-refund.
// htmx gets the internals panel back; an API client, the order.
func handleCancelOrder(ops Operations, internals handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := orderIDParam(r)
		if err != nil {
			return err
		}
		o, err := ops.CancelOrder(r.Context(), id)
		if err != nil {
			return err
		}
		if r.Header.Get("HX-Request") != "" {
			return internals(w, r)
		}
		return writeJSON(w, http.StatusOK, toOrderJSON(o))
	}
}

// attentionViews is the list as the internals panel shows it: by order and
// workflow kind, never a payment id or a checkout's ID (both are the
// client's key, which the public page must not show).
func attentionViews(list []shop.Attention) []views.Attention {
	out := make([]views.Attention, 0, len(list))
	for _, a := range list {
		v := views.Attention{Order: a.Order, Reason: a.Reason, CanRetry: a.Retry != "", CanCancel: a.CanCancel, Refund: a.PaymentID != ""}
		for _, wf := range a.Workflows {
			label := wf.ID
			switch wf.ID {
			case a.Order.Key:
				label = "checkout"
			case shop.RefundWorkflowID(a.Order.Key):
				label = "refund"
			}
			v.Workflows = append(v.Workflows, views.WorkflowState{Label: label, Status: wf.Status})
		}
		out = append(out, v)
	}
	return out
}
