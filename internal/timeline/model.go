package timeline

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"widget-store/internal/shop"
)

// Timeline is the durable execution behind one order: its checkout workflow
// and, once paid, its dispatch workflow, as DBOS recorded them.
type Timeline struct {
	OrderID   int64
	Workflows []Workflow
	// Final: the order and every workflow behind it will not change any more,
	// so the panel stops polling.
	Final bool
	// PollURL is the fragment's own URL; Follow keeps polling even when Final
	// (the internals panel follows the newest order, which changes).
	PollURL string
	Follow  bool
	// DOMID is the element id, unique per page ("timeline" on the order page).
	DOMID string
	// CurrentRun is this process's run, to mark "this process" in the list.
	CurrentRun int64
}

// Workflow is one workflow's status and steps.
type Workflow struct {
	Title      string // "Checkout", "Dispatch"
	ID         string
	Status     string // DBOS status: PENDING, SUCCESS, ERROR, …; "" = not started yet
	ExecutorID string
	Attempts   int // DBOS recovery attempts: 1 for a workflow never recovered
	CreatedAt  time.Time
	UpdatedAt  time.Time
	Error      string
	Rows       []Row
	// Waiting describes what a PENDING workflow does between its checkpoints,
	// or, for one not in DBOS's records, why.
	Waiting string
	// Deleted reports a workflow whose DBOS records are gone (retention, or
	// an operator's delete): Waiting says which.
	Deleted bool
	// Writes: the rows are idempotent writes, not checkpoints (a dispatch's
	// legs, which DBOS does not record).
	Writes bool
}

// Terminal reports a workflow status that will not change.
func (w Workflow) Terminal() bool {
	switch w.Status {
	case "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED":
		return true
	}
	return false
}

// StepsText counts the rows for the card's header: checkpointed steps, or
// for a dispatch the legs written.
func (w Workflow) StepsText() string {
	if w.Writes {
		return strconv.Itoa(w.StepCount()) + " of " + strconv.Itoa(shop.DispatchLegs) + " legs written (idempotent writes, not checkpoints)"
	}
	return strconv.Itoa(w.StepCount()) + " steps checkpointed"
}

// RecoveryText says what a recovery row means for the rows above it.
func (w Workflow) RecoveryText() string {
	if w.Writes {
		return "— the legs above were written before the crash; the recovered dispatch writes the leg due now, once"
	}
	return "— the steps above were checkpointed before the crash and are not run again"
}

// StepCount is how many checkpointed steps (or written legs) the workflow has.
func (w Workflow) StepCount() int {
	n := 0
	for _, r := range w.Rows {
		if !r.Recovery {
			n++
		}
	}
	return n
}

// Row is either a checkpointed step or the moment a process run
// recovered the workflow.
type Row struct {
	Recovery bool

	// A step.
	StepID      int
	Title       string // the recorded name, numbered if repeated: "reserve", "dispatch-leg 3/10"
	Raw         string // DBOS's recorded step name, e.g. "reserve"
	StartedAt   time.Time
	CompletedAt time.Time // zero for the start of a child workflow (DBOS records no completion)
	Error       string
	Child       string // the child workflow's ID, for a child start

	// Run is the process run that executed the step (or, for a recovery,
	// that recovered the workflow); 0 when unknown.
	Run      int64
	RunIndex int // 0, 1, 2… in order of the runs seen in this timeline, for colours

	// A recovery.
	At       time.Time
	Executor string
	Attempt  int  // DBOS's recovery attempt number
	FromDBOS bool // At and Attempt are DBOS's own record (the latest recovery)
}

// Duration is how long a step took, as text.
func (r Row) Duration() string {
	if r.CompletedAt.IsZero() || r.StartedAt.IsZero() {
		return ""
	}
	d := r.CompletedAt.Sub(r.StartedAt)
	if d < 0 {
		d = 0
	}
	if d < time.Second {
		return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
}

// Public is the timeline as anyone but the operator may see it: each workflow
// named by what it is for ("checkout of order #12") instead of by its ID,
// since a checkout's ID is the buyer's key and payment id and a refund's
// contains it; no child workflow's ID; and failures said in the store's words
// ("refund needs attention"), never as the error recorded, which can quote a
// payment provider's answer with the payment id in it. Everything else (the
// steps, their times, the recoveries) is the same.
func (t Timeline) Public() Timeline {
	out := t
	out.Workflows = make([]Workflow, len(t.Workflows))
	for i, w := range t.Workflows {
		w.ID = publicName(w.Title, t.OrderID)
		if w.Error != "" {
			w.Error = strings.ToLower(w.Title) + " needs attention: the operator has the details"
		}
		rows := slices.Clone(w.Rows)
		for j := range rows {
			if rows[j].Child != "" {
				rows[j].Child = publicName(rows[j].Raw, t.OrderID)
			}
			if rows[j].Error != "" {
				rows[j].Error = "failed"
			}
		}
		w.Rows = rows
		out.Workflows[i] = w
	}
	return out
}

// publicName names a workflow of kind (a title or a workflow name: "Checkout",
// "dispatch") by its order.
func publicName(kind string, orderID int64) string {
	return strings.ToLower(kind) + " of order #" + strconv.FormatInt(orderID, 10)
}
