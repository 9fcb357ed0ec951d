package storetest

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// Settle polls the store's API (every 100 ms) until every order it lists is
// final, for at most timeout, and returns what the polls saw for
// CheckInvariants: the samples, any status or progress that went backwards,
// and whether the orders settled in time.
func Settle(t testing.TB, st *Store, timeout time.Duration) loadgen.Observed {
	t.Helper()
	var reads atomic.Int64 // the sampler counts its requests; unused here
	sampler := loadgen.NewSampler(st.Base(), 100*time.Millisecond, &reads)
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	_, err := sampler.WaitSettled(ctx, timeout)
	samples, _, _, violations := sampler.Result()
	return loadgen.Observed{Samples: samples, Violations: violations, SettleErr: err}
}

// CheckInvariants stops the store, reads its database and checks loadgen's
// six invariants (stock conserved, one order per key, every acknowledgement
// matches its order, status only forward, everything settled, every payment
// shipped or refunded exactly once) against the
// purchases the clients made, as they were acknowledged, and obs (see
// Settle). A violation fails the test with every check's verdict. It returns
// the snapshot for the test's own assertions.
//
// A graceful stop leaves unfinished workflows pending; then the store is
// started again to finish them, up to 5 times (loadgen.StopAndSnapshot).
// SQLite is read only while the store is stopped: one handle to the file.
func CheckInvariants(t testing.TB, st *Store, initialStock int, purchases []loadgen.Purchase, obs loadgen.Observed) loadgen.Snapshot {
	t.Helper()
	return CheckInvariantsExcusing(t, st, initialStock, purchases, obs, nil)
}

// CheckInvariantsExcusing is CheckInvariants for a test whose operator
// deliberately left some workflows other than SUCCESS (say "checkout
// CANCELLED": a cancelled checkout whose order was released): excused
// counts them by "name status". Each must be there exactly that many times,
// and is then left out of check 5; any other non-SUCCESS workflow still
// fails it.
func CheckInvariantsExcusing(t testing.TB, st *Store, initialStock int, purchases []loadgen.Purchase, obs loadgen.Observed, excused map[string]int) loadgen.Snapshot {
	t.Helper()
	return checkInvariants(t, st, map[int]int{shop.ProductID: initialStock}, purchases, obs, excused)
}

// CheckInvariantsStocks is CheckInvariants for a run that began with initial
// stock by product (carts): stock is conserved per product.
func CheckInvariantsStocks(t testing.TB, st *Store, initial map[int]int, purchases []loadgen.Purchase, obs loadgen.Observed) loadgen.Snapshot {
	t.Helper()
	return checkInvariants(t, st, initial, purchases, obs, nil)
}

func checkInvariants(t testing.TB, st *Store, initial map[int]int, purchases []loadgen.Purchase, obs loadgen.Observed, excused map[string]int) loadgen.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	snap, err := loadgen.StopAndSnapshot(ctx, st.Store, 5)
	if err != nil {
		t.Fatalf("stop the store and read its database: %v", err)
	}
	for k, n := range excused {
		if got := snap.Workflows[k]; got != n {
			t.Errorf("%d workflows %q at the end, want %d", got, k, n)
		}
		if snap.Workflows[k] -= n; snap.Workflows[k] <= 0 {
			delete(snap.Workflows, k)
		}
	}
	report(t, loadgen.CheckInvariantsStocks(initial, snap, purchases, obs))
	return snap
}

// report logs every check's verdict, and fails the test with them when any
// check failed.
func report(t testing.TB, checks loadgen.Checks) {
	t.Helper()
	var b strings.Builder
	checks.Print(&b)
	if !checks.OK() {
		t.Errorf("invariants violated:\n%s", b.String())
	} else {
		t.Logf("invariants:\n%s", b.String())
	}
}
