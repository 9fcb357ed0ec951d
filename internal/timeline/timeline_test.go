package timeline

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// buildWorkflow is pure: these cases feed it records shaped like DBOS's (the
// browser tests cover the real ones end to end).

func TestTimelineMarksEachRecoveryAndLabelsSteps(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	runs := []store.ProcessRun{
		{ID: 4, Executor: "x", StartedAt: at(-5000)}, // started before the workflow
		{ID: 5, Executor: "x", StartedAt: at(2500)},  // crash after leg 2
		{ID: 6, Executor: "x", StartedAt: at(2600)},  // crashed again at once
	}
	var steps []dbos.StepInfo
	for i := range 4 {
		ms := 1000 * (i + 1)
		if i >= 2 {
			ms += 1700 // resumed by run 6
		}
		steps = append(steps, dbos.StepInfo{StepID: i, StepName: "dispatch-leg", StartedAt: at(ms), CompletedAt: at(ms + 1)})
	}
	st := dbos.WorkflowStatus{ID: "dispatch/1", Name: shop.DispatchWorkflow, Status: dbos.WorkflowStatusPending, ExecutorID: "x",
		Attempts: 3, CreatedAt: at(0), UpdatedAt: at(2600), StartedAt: at(2610)}
	w := buildWorkflow("Dispatch", st, steps, runs, at(5000))

	var got []string
	for _, r := range w.Rows {
		if r.Recovery {
			got = append(got, "R"+itoa(r.Run)+"/a"+itoa(int64(r.Attempt)))
		} else {
			got = append(got, "S"+itoa(r.Run))
		}
	}
	want := "S4 S4 R5/a2 R6/a3 S6 S6"
	if strings.Join(got, " ") != want {
		t.Fatalf("rows %v, want %s", got, want)
	}
	last := w.Rows[3]
	if !last.FromDBOS || !last.At.Equal(st.StartedAt) {
		t.Fatalf("latest recovery %+v: want DBOS's own time %v", last, st.StartedAt)
	}
	if w.Rows[0].Title != "dispatch-leg 1/10" || w.Rows[5].Title != "dispatch-leg 4/10" {
		t.Fatalf("titles %q … %q", w.Rows[0].Title, w.Rows[5].Title)
	}
	if w.Waiting == "" || w.Terminal() {
		t.Fatalf("a pending dispatch should say what it waits for: %+v", w)
	}
}

func TestTimelineRecoveryWithoutRecordedRun(t *testing.T) {
	// Taken over by another executor: no run of it inside the workflow's
	// life, but DBOS recorded the restart. The row comes from DBOS alone.
	t0 := time.UnixMilli(1_800_000_000_000)
	st := dbos.WorkflowStatus{ID: "k", Name: shop.CheckoutWorkflow, Status: dbos.WorkflowStatusSuccess, ExecutorID: "y",
		Attempts: 2, CreatedAt: t0, UpdatedAt: t0.Add(3 * time.Second), StartedAt: t0.Add(2 * time.Second)}
	steps := []dbos.StepInfo{
		{StepID: 0, StepName: "reserve", StartedAt: t0, CompletedAt: t0.Add(time.Millisecond)},
		{StepID: 1, StepName: "DBOS.recv", StartedAt: t0.Add(2500 * time.Millisecond), CompletedAt: t0.Add(2501 * time.Millisecond)},
	}
	w := buildWorkflow("Checkout", st, steps, nil, t0.Add(time.Hour))
	if len(w.Rows) != 3 || !w.Rows[1].Recovery || !w.Rows[1].FromDBOS || w.Rows[1].Attempt != 2 {
		t.Fatalf("rows %+v: want the recovery between the two steps", w.Rows)
	}
	if w.Rows[0].Title != "reserve" || w.Rows[2].Title != "DBOS.recv" {
		t.Fatalf("titles %q, %q", w.Rows[0].Title, w.Rows[2].Title)
	}
}

func TestTimelineShowsRecordedNames(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	step := func(id int, name string) dbos.StepInfo {
		return dbos.StepInfo{StepID: id, StepName: name, StartedAt: at(10 * id), CompletedAt: at(10*id + 1)}
	}

	// A paid checkout, its steps handed over out of order: DBOS gives the
	// Recv a lower step ID than the deadline it records first.
	checkout := []dbos.StepInfo{step(2, "DBOS.sleep"), step(0, "reserve"), step(1, "DBOS.recv"), step(3, "mark-paid"),
		{StepID: 4, StepName: shop.DispatchWorkflow, StartedAt: at(40), ChildWorkflowID: shop.DispatchWorkflowID(7)}}
	st := dbos.WorkflowStatus{ID: "k", Name: shop.CheckoutWorkflow, Status: dbos.WorkflowStatusSuccess, ExecutorID: "x",
		Attempts: 1, CreatedAt: t0, UpdatedAt: at(50)}
	w := buildWorkflow("Checkout", st, checkout, nil, at(60))
	wantTitles := []string{"reserve", "DBOS.recv", "DBOS.sleep", "mark-paid", "dispatch (starts the workflow)"}
	wantRaw := []string{"reserve", "DBOS.recv", "DBOS.sleep", "mark-paid", "dispatch"}
	if len(w.Rows) != len(wantTitles) {
		t.Fatalf("rows %+v: want %d steps", w.Rows, len(wantTitles))
	}
	for i, r := range w.Rows {
		if r.Recovery || r.StepID != i || r.Title != wantTitles[i] || r.Raw != wantRaw[i] {
			t.Errorf("row %d: step %d %q (raw %q), want step %d %q (raw %q)", i, r.StepID, r.Title, r.Raw, i, wantTitles[i], wantRaw[i])
		}
	}
	if r := w.Rows[4]; r.Child != "dispatch/7" {
		t.Errorf("child start: Child = %q, want dispatch/7", r.Child)
	}

	// A finished dispatch: every leg numbered out of shop.DispatchLegs.
	var legs []dbos.StepInfo
	for i := range shop.DispatchLegs {
		legs = append(legs, step(i, "dispatch-leg"))
	}
	st = dbos.WorkflowStatus{ID: "dispatch/7", Name: shop.DispatchWorkflow, Status: dbos.WorkflowStatusSuccess, ExecutorID: "x",
		Attempts: 1, CreatedAt: t0, UpdatedAt: at(200)}
	w = buildWorkflow("Dispatch", st, legs, nil, at(300))
	for i, r := range w.Rows {
		want := "dispatch-leg " + strconv.Itoa(i+1) + "/10"
		if r.Title != want || r.Raw != "dispatch-leg" {
			t.Errorf("leg %d: %q (raw %q), want %q (raw dispatch-leg)", i, r.Title, r.Raw, want)
		}
	}
	if w.Waiting != "" {
		t.Errorf("a finished dispatch waits for nothing: %q", w.Waiting)
	}

	// A name repeated where no count is known: later ones get an ordinal.
	st = dbos.WorkflowStatus{ID: "w", Name: "other", Status: dbos.WorkflowStatusSuccess, Attempts: 1, CreatedAt: t0, UpdatedAt: at(30)}
	w = buildWorkflow("Other", st, []dbos.StepInfo{step(0, "DBOS.sleep"), step(1, "DBOS.sleep")}, nil, at(40))
	if w.Rows[0].Title != "DBOS.sleep" || w.Rows[1].Title != "DBOS.sleep #2" {
		t.Errorf("repeated name: %q, %q; want DBOS.sleep, DBOS.sleep #2", w.Rows[0].Title, w.Rows[1].Title)
	}
}

func TestTimelineWaitingText(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	pending := func(name string, names ...string) string {
		var steps []dbos.StepInfo
		for i, n := range names {
			steps = append(steps, dbos.StepInfo{StepID: i, StepName: n, StartedAt: t0, CompletedAt: t0})
		}
		st := dbos.WorkflowStatus{ID: "w", Name: name, Status: dbos.WorkflowStatusPending, Attempts: 1, CreatedAt: t0}
		return buildWorkflow("W", st, steps, nil, t0.Add(time.Second)).Waiting
	}
	const running = "Running the next step."
	for _, c := range []struct {
		workflow string
		steps    []string
		want     string
	}{
		{shop.CheckoutWorkflow, []string{"reserve"}, "Waiting, durably, for the payment: the deadline is the reserve step's checkpoint."},
		{shop.CheckoutWorkflow, []string{"reserve", "payment-create"}, running},
		{shop.CheckoutWorkflow, []string{"reserve", "payment-create", "payment-record"}, "Waiting, durably, for the payment: the deadline is the reserve step's checkpoint."},
		{shop.CheckoutWorkflow, []string{"reserve", "settle"}, running},
		{shop.CheckoutWorkflow, []string{"reserve", "DBOS.sleep"}, "Waiting, durably, for the payment: the deadline is checkpointed."},
		{shop.CheckoutWorkflow, []string{"reserve", "DBOS.recv", "DBOS.sleep"}, running},
		{shop.CheckoutWorkflow, []string{"reserve", "DBOS.recv"}, running}, // the status was in before the wait
		{shop.DispatchWorkflow, []string{"dispatch-leg", "dispatch-leg"}, "Waiting for leg 3 of 10: the legs' schedule is the workflow's recorded input and each leg is an idempotent write, so the wait survives a crash without a checkpoint."},
	} {
		if got := pending(c.workflow, c.steps...); got != c.want {
			t.Errorf("%s after %v: %q, want %q", c.workflow, c.steps, got, c.want)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestDispatchLegsFromProgress checks the legs the timeline shows for a
// dispatch, which DBOS does not record: as many as the order's progress says
// are written, numbered, one second apart from the dispatch's start.
func TestDispatchLegsFromProgress(t *testing.T) {
	started := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		o    shop.Order
		want int
	}{
		{shop.Order{Status: shop.StatusPaid, ProgressRemaining: shop.DispatchLegs}, 0},
		{shop.Order{Status: shop.StatusPaid, ProgressRemaining: 7}, 3},
		{shop.Order{Status: shop.StatusDispatched, ProgressRemaining: 0}, shop.DispatchLegs},
	}
	for _, tc := range cases {
		legs := dispatchLegs(tc.o, started)
		if len(legs) != tc.want {
			t.Fatalf("%s with %d to go: %d legs, want %d", tc.o.Status, tc.o.ProgressRemaining, len(legs), tc.want)
		}
		for i, l := range legs {
			if l.StepName != shop.StepDispatchLeg || l.StepID != i || !l.CompletedAt.Equal(started.Add(time.Duration(i+1)*time.Second)) {
				t.Errorf("leg %d: %+v", i+1, l)
			}
		}
		w := buildWorkflow("Dispatch", dbos.WorkflowStatus{ID: "dispatch/1", Name: shop.DispatchWorkflow, Status: dbos.WorkflowStatusPending, CreatedAt: started}, legs, nil, started.Add(time.Minute))
		for i, r := range w.Rows {
			if want := fmt.Sprintf("dispatch-leg %d/%d", i+1, shop.DispatchLegs); r.Title != want {
				t.Errorf("row %d titled %q, want %q", i, r.Title, want)
			}
		}
	}
}
