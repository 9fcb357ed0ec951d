package storetest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// previousBuild is the last commit of application version widget-store-2,
// whose steps DBOS recorded under Go symbol names
// ("main.checkoutTx.reserveAndCreateOrder-fm", …). The current build names
// its steps explicitly and carries the previous build's unfinished workflows
// over at startup (store.UpgradeWorkflows).
const previousBuild = "50207665fb6ed45a28139640a95f9d651c774fda"

// buildPrevious builds the previous build from this repository's history,
// the way an operator still has the old binary: git archive of the commit,
// go build (same module cache, CGO_ENABLED=0).
func buildPrevious(t *testing.T) string {
	t.Helper()
	root, err := loadgen.FindModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := loadgen.BuildRevision(root, previousBuild, t.TempDir())
	if err != nil {
		t.Fatalf("build the previous build %s (a clone with history is needed): %v", previousBuild[:7], err)
	}
	return bin
}

// TestUpgradeFromPreviousBuild runs the previous build, stops it (SIGKILL)
// with one checkout waiting for its payment and one order mid-dispatch, and
// starts the current build on the same database under the same executor ID:
// both orders must finish, exactly once, with no stock lost, and the
// workflows carried over must run under the new step names.
func TestUpgradeFromPreviousBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the previous build")
	}
	prev := buildPrevious(t)
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		const executor = "upgrade-test"
		old := &loadgen.Store{Bin: prev, DB: db, Log: LogWriter(t, "previous build: "),
			Env: []string{"EXECUTOR_ID=" + executor, "PAYMENT_TIMEOUT=90s"}}
		t.Cleanup(old.Kill)
		var waiting, dispatching, declined string // checkout keys
		var dispatchingID string

		t.Run("the previous build takes orders", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			if _, err := old.Start(ctx); err != nil {
				t.Fatal(err)
			}
			waiting, dispatching, declined = NewKey(), NewKey(), NewKey()
			for _, k := range []string{waiting, dispatching, declined} {
				if pid := MustCall(t, "POST", old.Base()+"/checkout/"+k, 200); pid != k {
					t.Fatalf("checkout %s: payment id %q", k, pid)
				}
			}
			dispatchingID = MustCall(t, "POST", old.Base()+"/payment_webhook/"+dispatching+"/paid", 200)
			MustCall(t, "POST", old.Base()+"/payment_webhook/"+declined+"/failed", 200)
			WaitOrder(t, old.Base(), dispatchingID, 20*time.Second, func(o Order) bool {
				return o.Status == "PAID" && o.ProgressRemaining <= 8
			})
		})

		t.Run("it dies mid-checkout and mid-dispatch", func(t *testing.T) {
			old.Kill()
			// Those two are unfinished under the old step names.
			steps := stepNamesByWorkflow(t, db)
			if !hasOldName(steps[waiting]) || !hasOldName(steps["dispatch/"+dispatchingID]) {
				t.Fatalf("the previous build should have recorded Go-symbol step names; got %v", steps)
			}
		})

		st := Start(t, db, "EXECUTOR_ID="+executor)
		t.Run("the new build finishes both orders", func(t *testing.T) {
			waitingID := MustCall(t, "POST", st.URL("/payment_webhook/"+waiting+"/paid"), 200)
			for _, id := range []string{waitingID, dispatchingID} {
				WaitOrder(t, st.Base(), id, 30*time.Second, func(o Order) bool { return IsFinal(o) })
				if o := GetJSON[Order](t, st.URL("/order/"+id)); o.Status != "DISPATCHED" || o.ProgressRemaining != 0 {
					t.Errorf("order %s: %s, %d legs to go; want DISPATCHED, 0", id, o.Status, o.ProgressRemaining)
				}
			}
			orders := Orders(t, st.Base())
			if len(orders) != 3 {
				t.Fatalf("%d orders, want 3 (one per key): %+v", len(orders), orders)
			}
			// 100 at the start; two sold, the declined one's unit back.
			if got := Inventory(t, st.Base()); got != 98 {
				t.Errorf("inventory %d, want 98", got)
			}
			if late := LatePayments(t, st.Base()); len(late) != 0 {
				t.Errorf("late payments %+v, want none", late)
			}
		})

		t.Run("the carried-over workflows hold no Go-symbol step names", func(t *testing.T) {
			steps := stepNamesByWorkflow(t, db)
			if got, want := strings.Join(steps[waiting], " "), "reserve DBOS.recv DBOS.sleep mark-paid dispatch"; !sameNames(got, want) {
				t.Errorf("checkout %s recorded %q, want %q", waiting, got, want)
			}
			// The previous build checkpointed the legs it ran; the current one
			// writes the rest without checkpoints. Those carried over are renamed.
			legs := steps["dispatch/"+dispatchingID]
			if len(legs) == 0 || len(legs) >= shop.DispatchLegs || slices.ContainsFunc(legs, func(n string) bool { return n != shop.StepDispatchLeg }) {
				t.Errorf("dispatch/%s recorded %q: want the previous build's legs (some, not all), renamed %s", dispatchingID, legs, shop.StepDispatchLeg)
			}
			page := MustCall(t, "GET", st.URL("/partials/timeline/"+dispatchingID), 200)
			if !strings.Contains(page, "dispatch-leg 10/10") {
				t.Errorf("the timeline of order %s does not show its last leg as dispatch-leg 10/10", dispatchingID)
			}
		})
	})
}

// stepNamesByWorkflow is the recorded step names of each workflow, in order.
func stepNamesByWorkflow(t *testing.T, db *loadgen.Database) map[string][]string {
	out := map[string][]string{}
	for _, s := range RecordedSteps(t, db) {
		out[s.WorkflowID] = append(out[s.WorkflowID], s.Name)
	}
	return out
}

func hasOldName(names []string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, "main.") || strings.HasSuffix(n, "-fm") {
			return true
		}
	}
	return false
}

// sameNames compares two space-separated lists of step names, allowing the
// checkout's DBOS.sleep (Recv's deadline checkpoint) to be absent: DBOS
// records it only when the Recv had to wait.
func sameNames(got, want string) bool {
	return got == want || got == strings.Replace(want, " DBOS.sleep", "", 1)
}
