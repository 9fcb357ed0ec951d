package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
)

// buildWorkflowTimeline is pure: these cases feed it records shaped like
// DBOS's (the browser tests cover the real ones end to end).

func TestTimelineMarksEachRecoveryAndLabelsSteps(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	runs := []processRun{
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
		steps = append(steps, dbos.StepInfo{StepID: i, StepName: "main.progressTx.apply-fm", StartedAt: at(ms), CompletedAt: at(ms + 1)})
	}
	st := dbos.WorkflowStatus{ID: "dispatch/1", Name: "dispatch", Status: dbos.WorkflowStatusPending, ExecutorID: "x",
		Attempts: 3, CreatedAt: at(0), UpdatedAt: at(2600), StartedAt: at(2610)}
	wt := buildWorkflowTimeline("Dispatch", st, steps, runs, at(5000))

	var got []string
	for _, r := range wt.Rows {
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
	last := wt.Rows[3]
	if !last.FromDBOS || !last.At.Equal(st.StartedAt) {
		t.Fatalf("latest recovery %+v: want DBOS's own time %v", last, st.StartedAt)
	}
	if wt.Rows[0].Title != "Dispatch leg 1 of 10" || wt.Rows[5].Title != "Dispatch leg 4 of 10" {
		t.Fatalf("titles %q … %q", wt.Rows[0].Title, wt.Rows[5].Title)
	}
	if wt.Waiting == "" || wt.Terminal() {
		t.Fatalf("a pending dispatch should say what it waits for: %+v", wt)
	}
}

func TestTimelineRecoveryWithoutRecordedRun(t *testing.T) {
	// Taken over by another executor: no run of it inside the workflow's
	// life, but DBOS recorded the restart. The row comes from DBOS alone.
	t0 := time.UnixMilli(1_800_000_000_000)
	st := dbos.WorkflowStatus{ID: "k", Name: "checkout", Status: dbos.WorkflowStatusSuccess, ExecutorID: "y",
		Attempts: 2, CreatedAt: t0, UpdatedAt: t0.Add(3 * time.Second), StartedAt: t0.Add(2 * time.Second)}
	steps := []dbos.StepInfo{
		{StepID: 0, StepName: "widget-store.checkoutTx.reserveAndCreateOrder-fm", StartedAt: t0, CompletedAt: t0.Add(time.Millisecond)},
		{StepID: 1, StepName: "DBOS.setEvent", StartedAt: t0.Add(2500 * time.Millisecond), CompletedAt: t0.Add(2501 * time.Millisecond)},
	}
	wt := buildWorkflowTimeline("Checkout", st, steps, nil, t0.Add(time.Hour))
	if len(wt.Rows) != 3 || !wt.Rows[1].Recovery || !wt.Rows[1].FromDBOS || wt.Rows[1].Attempt != 2 {
		t.Fatalf("rows %+v: want the recovery between the two steps", wt.Rows)
	}
	if wt.Rows[0].Title != "Reserve a widget and create the order" || wt.Rows[2].Title != "Publish the payment id" {
		t.Fatalf("titles %q, %q", wt.Rows[0].Title, wt.Rows[2].Title)
	}
}

func TestPrettifyFuncName(t *testing.T) {
	for in, want := range map[string]string{
		"main.shipTx.notifyCourier-fm": "Notify courier",
		"DBOS.getWorkflowSteps":        "Get workflow steps",
		"payment":                      "Payment",
		"":                             "Step",
	} {
		if got := prettifyFuncName(in); got != want {
			t.Errorf("prettifyFuncName(%q) = %q, want %q", in, got, want)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
