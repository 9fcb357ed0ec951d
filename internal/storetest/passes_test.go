package storetest

import (
	"testing"
	"time"
)

// The background passes (the reconciler's and retention's) on two instances
// on one Postgres (issue 17, item 10): each runs once per interval across
// both, not once per instance, and the survivor keeps the pace when the
// other stops.

// passes counts the passes named pass that the instances of c have logged
// ("background pass", at debug level).
func passes(c *Cluster, pass string) int {
	n := 0
	for _, node := range c.Nodes {
		n += len(c.LogLines(node, `msg="background pass"`, "pass="+pass))
	}
	return n
}

// timePasses waits until the cluster has logged k more passes named pass
// and returns how long they took.
func timePasses(t *testing.T, c *Cluster, pass string, k int) time.Duration {
	t.Helper()
	from := passes(c, pass)
	began := time.Now()
	WaitUntil(t, time.Duration(3*k)*time.Second, "the "+pass+" pass runs", func() bool { return passes(c, pass) >= from+k })
	return time.Since(began)
}

func TestBackgroundPassesRunOncePerIntervalAcrossInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two instances of the store")
	}
	db := NewPostgresDB(t)
	// RECONCILE_EVERY 1 s; retention's interval is a tenth of RETENTION, 1 s.
	c := StartCluster(t, db, []string{"RECONCILE_EVERY=1s", "RETENTION=10s", "LOG_LEVEL=debug"}, "turns-a", "turns-b")
	const k = 6
	for _, pass := range []string{"reconcile", "retention"} {
		// Once per interval across both: k passes take about k seconds (at
		// least 0.9 s apart). Once per instance, they took k/2.
		took := timePasses(t, c, pass, k)
		t.Logf("MEASURED %d %s passes across two instances in %v", k, pass, took.Round(time.Millisecond))
		if took < time.Duration(k-1)*900*time.Millisecond {
			t.Errorf("%d %s passes in %v across two instances with a 1 s interval: more than one per interval", k, pass, took)
		}
		for _, n := range c.Nodes {
			if len(c.LogLines(n, `msg="background pass"`, "pass="+pass)) == 0 {
				t.Logf("instance %s has run no %s pass (the other took every turn)", n.ExecutorID(), pass)
			}
		}
	}
	// One stops: the other takes every turn, at the same pace.
	if err := c.Nodes[0].Stop(stopTimeout); err != nil {
		t.Fatal(err)
	}
	took := timePasses(t, c, "reconcile", k)
	t.Logf("MEASURED %d reconcile passes on the one instance left in %v", k, took.Round(time.Millisecond))
	if took > time.Duration(k+2)*time.Second {
		t.Errorf("%d reconcile passes took %v on the instance left, want about %d s", k, took, k)
	}
}
