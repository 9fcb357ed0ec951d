package storetest

import (
	"context"
	"net/http"
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

// buildRevision builds commit rev from this repository's history, the way
// an operator still has the old binary: git archive of the commit, go build
// (same module cache, CGO_ENABLED=0).
func buildRevision(t *testing.T, rev string) string {
	t.Helper()
	root, err := loadgen.FindModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := loadgen.BuildRevision(root, rev, t.TempDir())
	if err != nil {
		t.Fatalf("build %s (a clone with history is needed): %v", rev[:7], err)
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
	prev := buildRevision(t, previousBuild)
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
			// Carried over, it kept the layout it started with (Recv, then
			// mark-paid or cancel); this build's webhook settled the order
			// PAID and sent no message, so its Recv timed out and its cancel
			// step found the order PAID and shipped it (workflow.go,
			// settleByMessage).
			if got, want := strings.Join(steps[waiting], " "), "reserve DBOS.recv DBOS.sleep cancel dispatch"; !sameNames(got, want) {
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

// messageBuild is the last commit whose checkout took its payment as a DBOS
// message (the webhook's dbos.Send, the checkout's dbos.Recv, then mark-paid
// or cancel). It has this build's application version: this build's
// checkout settles its order from the row instead, and runs a checkout the
// message build started the way it recorded it (workflow.go,
// checkoutInput.Flow and settleByMessage).
const messageBuild = "d6deba3a94342a3cbbab0d73be7d69a271ffdff3"

// TestUpgradeFromMessageFlow runs the message build with three checkouts in
// flight and stops it dead: one waiting for its payment, one that will be
// declined, and one whose Recv took its payment, the store exiting right
// after that checkpoint (CRASH_AT=checkout:await-payment), before mark-paid.
// The current build, on the same database under the same executor ID, must
// finish each as the message build would have: the paid ones DISPATCHED, the
// declined one CANCELLED with its unit back, once each; their recorded steps
// stay in the message build's layout (a settle step where a Recv is recorded
// would fail DBOS's replay check), and a new checkout records the new one.
func TestUpgradeFromMessageFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the message build")
	}
	prev := buildRevision(t, messageBuild)
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		const executor = "upgrade-flow-test"
		const window = "PAYMENT_TIMEOUT=90s"
		old := &loadgen.Store{Bin: prev, DB: db, Log: LogWriter(t, "message build: "),
			Env: []string{"EXECUTOR_ID=" + executor, window, "CRASH_AT=checkout:await-payment"}}
		t.Cleanup(old.Kill)
		waiting, declined, received := NewKey(), NewKey(), NewKey()

		t.Run("the message build dies with its checkouts in flight", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			if _, err := old.Start(ctx); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{waiting, declined, received} {
				if pid := MustCall(t, "POST", old.Base()+"/checkout/"+k, 200); pid != k {
					t.Fatalf("checkout %s: payment id %q", k, pid)
				}
			}
			// Its answer races the exit: only the exit matters here.
			if resp, err := http.Post(old.Base()+"/payment_webhook/"+received+"/paid", "", nil); err == nil {
				resp.Body.Close()
			}
			if code, err := old.WaitExit(30 * time.Second); err != nil || code != 1 {
				t.Fatalf("the message build did not exit at checkout:await-payment: status %d, %v", code, err)
			}
			steps := stepNamesByWorkflow(t, db)
			if !slices.Contains(steps[received], "DBOS.recv") || slices.Contains(steps[received], shop.StepMarkPaid) {
				t.Fatalf("checkout %s recorded %q at the crash, want its Recv and no mark-paid yet", received, steps[received])
			}
		})

		st := Start(t, db, "EXECUTOR_ID="+executor, window)
		t.Run("the current build finishes them as they started", func(t *testing.T) {
			receivedID := MustCall(t, "POST", st.URL("/payment_webhook/"+received+"/paid"), 200) // the retried webhook
			waitingID := MustCall(t, "POST", st.URL("/payment_webhook/"+waiting+"/paid"), 200)
			declinedID := MustCall(t, "POST", st.URL("/payment_webhook/"+declined+"/failed"), 200)
			for _, id := range []string{receivedID, waitingID} {
				WaitOrder(t, st.Base(), id, 30*time.Second, IsFinal)
				if o := GetJSON[Order](t, st.URL("/order/"+id)); o.Status != "DISPATCHED" || o.ProgressRemaining != 0 {
					t.Errorf("order %s: %s, %d legs to go; want DISPATCHED, 0", id, o.Status, o.ProgressRemaining)
				}
			}
			if o := GetJSON[Order](t, st.URL("/order/"+declinedID)); o.Status != "CANCELLED" {
				t.Errorf("declined order %s: %s, want CANCELLED", declinedID, o.Status)
			}
			if orders := Orders(t, st.Base()); len(orders) != 3 {
				t.Fatalf("%d orders, want 3 (one per key): %+v", len(orders), orders)
			}
			if got := Inventory(t, st.Base()); got != 98 { // 100; two sold, the declined one's unit back
				t.Errorf("inventory %d, want 98", got)
			}
			if late := LatePayments(t, st.Base()); len(late) != 0 {
				t.Errorf("late payments %+v, want none", late)
			}
			for _, k := range []string{received, waiting, declined} {
				waitStatus(t, db, k, "SUCCESS", 30*time.Second)
			}
		})

		t.Run("each checkout recorded the layout it started with", func(t *testing.T) {
			fresh := NewKey()
			MustCall(t, "POST", st.URL("/checkout/"+fresh), 200)
			freshID := MustCall(t, "POST", st.URL("/payment_webhook/"+fresh+"/paid"), 200)
			WaitOrder(t, st.Base(), freshID, 30*time.Second, IsFinal)
			waitStatus(t, db, fresh, "SUCCESS", 30*time.Second)
			steps := stepNamesByWorkflow(t, db)
			for key, want := range map[string]string{
				received: "reserve DBOS.recv mark-paid dispatch",
				// This build's webhook settled these two orders and sent no
				// message: their Recv timed out at once, and cancel followed
				// the row (PAID: it ships; CANCELLED: nothing more to do).
				waiting:  "reserve DBOS.recv DBOS.sleep cancel dispatch",
				declined: "reserve DBOS.recv DBOS.sleep cancel",
				fresh:    "reserve settle dispatch",
			} {
				if got := strings.Join(steps[key], " "); !sameNames(got, want) {
					t.Errorf("checkout %s recorded %q, want %q", key, got, want)
				}
			}
		})
	})
}
