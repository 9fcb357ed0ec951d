package critpath

import (
	"context"
	"testing"
)

// TestAttribution: a statement counts for the open requests of its key, from
// its context or from its transaction's BEGIN; a transaction that wrote is
// a commit, one that only read is not, and a write outside any transaction
// is its own; nothing counts once the request's answer is known (Answered)
// or it has answered.
func TestAttribution(t *testing.T) {
	var got []Counts
	tr := New(func(kind string, c Counts) {
		if kind != Webhook {
			t.Errorf("kind %q", kind)
		}
		got = append(got, c)
	})
	ctx, end := tr.Begin(context.Background(), Webhook, "k1")
	bg := context.Background()
	other := With(bg, "k2")
	connA, connB := new(int), new(int)

	tr.Statement(ctx, connA, "SELECT 1")                             // 1, a read on its own
	tr.Statement(ctx, connA, "begin isolation level read committed") // 2
	tr.Statement(bg, connA, "INSERT INTO x VALUES (1)")              // 3: no key, but its BEGIN had one
	tr.Statement(other, connB, "UPDATE y SET a = 1")                 // another key: not counted
	tr.Statement(bg, connA, "commit")                                // 4, commit 1
	tr.Statement(ctx, connB, "begin")                                // 5
	tr.Statement(ctx, connB, "  (SELECT 2)")                         // 6
	tr.Statement(bg, connB, "COMMIT")                                // 7: read-only, no commit
	tr.Statement(ctx, connA, "update z set b = 2")                   // 8, commit 2: its own transaction
	tr.Answered("k1", Checkout)                                      // another kind's answer
	tr.Statement(ctx, connA, "SELECT 3")                             // 9
	tr.Answered("k1", Webhook)
	tr.Statement(ctx, connA, "INSERT INTO x VALUES (3)") // beside the answer: not on its path
	end()
	tr.Statement(ctx, connA, "INSERT INTO x VALUES (2)") // after the answer: nobody's

	want := Counts{Statements: 9, Commits: 2}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("counted %+v, want one request with %+v", got, want)
	}
	var nilTracker *Tracker
	nilTracker.Statement(ctx, connA, "begin") // a nil tracker counts nothing, and does not panic
}
