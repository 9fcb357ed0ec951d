package storetest

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// These tests kill the real binary for real (SIGKILL: no deferred function,
// no shutdown hook runs), start it again on the same database and port, and
// check that every order reaches its right final state.

func TestRecoveryAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := Start(t, db)
		base := st.Base()
		var bought []loadgen.Purchase // every acknowledgement, for the invariants
		ack := func(key, pid, sent, orderID string) {
			bought = append(bought, loadgen.Purchase{Key: key, Sent: sent,
				Checkout: loadgen.Answer{Status: http.StatusOK, Body: pid},
				Payment:  loadgen.Answer{Status: http.StatusOK, Body: orderID}})
		}
		var keyA, pidA, orderA, keyB, pidB, orderC string
		var before Order
		var inflight []string

		phase(t, "before the kill: A paid and dispatching, B awaiting payment, C declined", func(t *testing.T) {
			keyA = NewKey()
			pidA = MustCall(t, "POST", base+"/checkout/"+keyA, http.StatusOK)
			orderA = MustCall(t, "POST", base+"/payment_webhook/"+pidA+"/paid", http.StatusOK)
			ack(keyA, pidA, "paid", orderA)
			keyB = NewKey()
			pidB = MustCall(t, "POST", base+"/checkout/"+keyB, http.StatusOK)
			keyC := NewKey()
			pidC := MustCall(t, "POST", base+"/checkout/"+keyC, http.StatusOK)
			orderC = MustCall(t, "POST", base+"/payment_webhook/"+pidC+"/failed", http.StatusOK)
			ack(keyC, pidC, "failed", orderC)
			before = WaitOrder(t, base, orderA, 15*time.Second, func(o Order) bool { return o.ProgressRemaining <= shop.DispatchLegs-3 })
			if before.OrderStatus != shop.StatusPaid {
				t.Fatalf("order A before the kill: %+v, want PAID mid-dispatch", before)
			}
		})

		phase(t, "SIGKILL with five checkouts in flight", func(t *testing.T) {
			// D..H: their clients may see an error; they retry with the same
			// key after the restart. The kill comes as soon as the first of
			// them has made its order, so some are still on their way.
			var wg sync.WaitGroup
			for range 5 {
				key := NewKey()
				inflight = append(inflight, key)
				wg.Go(func() {
					if resp, err := http.Post(base+"/checkout/"+key, "", nil); err == nil { // an error is expected for some
						resp.Body.Close()
					}
				})
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(Orders(t, base)) < 4 {
				if time.Now().After(deadline) {
					t.Fatal("none of the five checkouts made an order within 10s")
				}
				time.Sleep(time.Millisecond) // the polling interval
			}
			st.Kill()
			wg.Wait()
		})

		phase(t, "restarted: A resumes where it was, its progress never going back", func(t *testing.T) {
			st.Restart(t)
			last := before.ProgressRemaining
			a := WaitOrder(t, base, orderA, 30*time.Second, func(o Order) bool {
				if o.ProgressRemaining > last {
					t.Errorf("order A progress went back up after recovery: %d after %d", o.ProgressRemaining, last)
				}
				last = o.ProgressRemaining
				return IsFinal(o)
			})
			if a.OrderStatus != shop.StatusDispatched {
				t.Fatalf("order A after recovery: %+v, want DISPATCHED", a)
			}
		})

		phase(t, "B's checkout still waits and takes its payment; each retried key makes one order", func(t *testing.T) {
			orderB := MustCall(t, "POST", base+"/payment_webhook/"+pidB+"/paid", http.StatusOK)
			ack(keyB, pidB, "paid", orderB)
			for _, key := range inflight {
				pid := MustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
				ack(key, pid, "paid", MustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK))
			}
			if b := WaitOrder(t, base, orderB, 30*time.Second, IsFinal); b.OrderStatus != shop.StatusDispatched {
				t.Fatalf("order B: %+v, want DISPATCHED", b)
			}
			if c := GetJSON[Order](t, base+"/order/"+orderC); c.OrderStatus != shop.StatusCancelled {
				t.Fatalf("order C: %+v, want CANCELLED", c)
			}
		})

		phase(t, "every order final and right, stock conserved", func(t *testing.T) {
			orders := Orders(t, base)
			if want := 3 + len(inflight); len(orders) != want {
				t.Fatalf("%d orders, want %d (one per key)", len(orders), want)
			}
			for _, o := range orders {
				o = WaitOrder(t, base, strconv.FormatInt(o.OrderID, 10), 30*time.Second, IsFinal)
				if o.OrderStatus == shop.StatusDispatched && o.ProgressRemaining != 0 {
					t.Errorf("order %d DISPATCHED with progress %d", o.OrderID, o.ProgressRemaining)
				}
			}
			sold := 2 + len(inflight) // A, B and the in-flight ones were paid; C was declined
			if got := Inventory(t, base); got != 100-sold {
				t.Fatalf("inventory = %d, want %d: stock not conserved", got, 100-sold)
			}
		})

		phase(t, "invariants on the database", func(t *testing.T) {
			obs := Settle(t, st, 30*time.Second)
			CheckInvariants(t, st, 100, bought, obs)
		})

		phase(t, "each step recorded once, under its explicit name", func(t *testing.T) {
			checkRecordedSteps(t, db, len(bought)-1, 1)
		})
	})
}

// checkRecordedSteps checks the steps DBOS recorded in db once every
// workflow finished: no name derived from a Go function (DBOS names an
// unnamed step after its function: "main.progressTx.apply-fm"); each paid
// checkout recorded reserve, settle and the start of its dispatch once, each
// declined one reserve and settle once, and no DBOS.recv (the payment is
// settled from the order row, not taken as a message), even
// across a crash; a dispatch records no step at all (its legs are idempotent
// writes on a fixed schedule; that every order ends DISPATCHED with progress
// 0, its progress never rising, is the invariants' to check).
func checkRecordedSteps(t *testing.T, db *loadgen.Database, paid, declined int) {
	t.Helper()
	byWorkflow := map[string][]string{} // workflow ID → step names in order
	kind := map[string]string{}         // workflow ID → workflow name
	funcNames := map[string]int{}       // names derived from Go functions → how often
	for _, s := range RecordedSteps(t, db) {
		if strings.Contains(s.Name, "main.") || strings.Contains(s.Name, "-fm") {
			funcNames[s.Name]++
		}
		byWorkflow[s.WorkflowID] = append(byWorkflow[s.WorkflowID], s.Name)
		kind[s.WorkflowID] = s.Workflow
	}
	if len(funcNames) > 0 {
		t.Errorf("steps recorded under a Go function's name, not an explicit step name (name: count): %v", funcNames)
	}
	var problems []string
	var gotPaid, gotDeclined int
	for id, names := range byWorkflow {
		switch kind[id] {
		case "checkout":
			want := map[string]int{"reserve": 1, "settle": 1, "DBOS.recv": 0}
			if !slices.Contains(names, "dispatch") {
				gotDeclined++
			} else {
				gotPaid++
				want["dispatch"] = 1
			}
			for name, n := range want {
				if got := countOf(names, name); got != n {
					problems = append(problems, fmt.Sprintf("checkout %s recorded %q %d times, want %d: %q", id, name, got, n, names))
				}
			}
		case "dispatch":
			problems = append(problems, fmt.Sprintf("dispatch %s recorded steps %q, want none", id, names))
		default:
			problems = append(problems, fmt.Sprintf("steps of an unknown workflow %q (%s): %q", kind[id], id, names))
		}
	}
	if gotPaid != paid || gotDeclined != declined {
		problems = append(problems, fmt.Sprintf("steps of %d paid and %d declined checkouts, want %d and %d", gotPaid, gotDeclined, paid, declined))
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		if len(problems) > 6 {
			problems = append(problems[:6], fmt.Sprintf("… %d in all", len(problems)))
		}
		t.Errorf("recorded steps:\n%s", strings.Join(problems, "\n"))
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

// TestCrashButtonUnderSupervisor: the crash button ends the store process
// mid-dispatch; the supervisor (SUPERVISE=1, as `go run .` runs) keeps the
// socket and starts it again, so no request is refused, and the order
// finishes.
func TestCrashButtonUnderSupervisor(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	st := StartWith(t, NewSQLiteDB(t), Options{Supervise: true})
	base := st.Base()
	var orderID string

	phase(t, "a paid order dispatching", func(t *testing.T) {
		pid := MustCall(t, "POST", base+"/checkout/"+NewKey(), http.StatusOK)
		orderID = MustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK)
		WaitOrder(t, base, orderID, 10*time.Second, func(o Order) bool { return o.ProgressRemaining <= shop.DispatchLegs-2 })
	})

	phase(t, "the crash button: the request dies with the process", func(t *testing.T) {
		if resp, err := http.Post(base+"/crash_application", "", nil); err == nil {
			resp.Body.Close()
			t.Fatalf("crash_application answered %d; the process should have exited", resp.StatusCode)
		}
	})

	phase(t, "requests during the restart wait for the new process, none refused", func(t *testing.T) {
		crashed := time.Now()
		for i := range 20 {
			resp, err := http.Get(base + "/product")
			if err != nil {
				t.Fatalf("request %d after the crash failed: %v (connections must not be refused)", i, err)
			}
			resp.Body.Close()
		}
		t.Logf("20 requests answered %v after the crash", time.Since(crashed).Round(time.Millisecond))
	})

	phase(t, "the order finishes; the supervisor still runs", func(t *testing.T) {
		if o := WaitOrder(t, base, orderID, 30*time.Second, IsFinal); o.OrderStatus != shop.StatusDispatched {
			t.Fatalf("order after the crash: %+v, want DISPATCHED", o)
		}
		if st.Exited() {
			code, _ := st.WaitExit(time.Second)
			t.Fatalf("the supervisor exited (status %d) after the crash", code)
		}
	})
}
