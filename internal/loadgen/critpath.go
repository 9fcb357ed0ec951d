package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CriticalPath is what the store counted on its requests' critical paths
// (internal/critpath, widget_critical_path_* on /metrics), by request kind
// ("checkout", "webhook"): the deterministic counts beside the timings.
type CriticalPath map[string]PathCounts

// PathCounts are one kind's sums.
type PathCounts struct {
	Requests, Statements, Commits, Waits float64
	Waited                               time.Duration
}

// PathKinds are the request kinds the store counts, in the order printed.
var PathKinds = []string{"checkout", "webhook"}

// ReadCriticalPath reads the counters from the store's /metrics.
func ReadCriticalPath(ctx context.Context, base string) (CriticalPath, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() // read to the end below, or abandoned on an error
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	cp := CriticalPath{}
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "widget_critical_path_")
		if !ok {
			continue
		}
		// e.g. statements_total{kind="webhook"} 1234
		name, rest, ok1 := strings.Cut(rest, `_total{kind="`)
		kind, value, ok2 := strings.Cut(rest, `"} `)
		if !ok1 || !ok2 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics: widget_critical_path_%s{%s}: %w", name, kind, err)
		}
		found = true
		c := cp[kind]
		switch name {
		case "requests":
			c.Requests = v
		case "statements":
			c.Statements = v
		case "commits":
			c.Commits = v
		case "waits":
			c.Waits = v
		case "wait_seconds":
			c.Waited = time.Duration(v * float64(time.Second))
		}
		cp[kind] = c
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("/metrics has no widget_critical_path_* (a build from before they were counted)")
	}
	return cp, nil
}

// Sub is c − d, kind by kind.
func (c CriticalPath) Sub(d CriticalPath) CriticalPath {
	out := CriticalPath{}
	for k, v := range c {
		w := d[k]
		out[k] = PathCounts{Requests: v.Requests - w.Requests, Statements: v.Statements - w.Statements, Commits: v.Commits - w.Commits,
			Waits: v.Waits - w.Waits, Waited: v.Waited - w.Waited}
	}
	return out
}

// PerRequest is the average of kind: statements, commits and waits for the
// database per request, and the time waited per request; ok is false when
// none was counted.
func (c CriticalPath) PerRequest(kind string) (statements, commits, waits float64, waited time.Duration, ok bool) {
	v := c[kind]
	if v.Requests == 0 {
		return 0, 0, 0, 0, false
	}
	return v.Statements / v.Requests, v.Commits / v.Requests, v.Waits / v.Requests, time.Duration(float64(v.Waited) / v.Requests), true
}

// Print writes one line per kind; the waits are for SQLite's write lock or,
// on Postgres, for a connection of the store's pool.
func (c CriticalPath) Print(w io.Writer, sqlite bool) {
	for _, kind := range PathKinds {
		s, cm, lw, lwt, ok := c.PerRequest(kind)
		if !ok {
			continue
		}
		what := "a pool connection"
		if sqlite {
			what = "the write lock"
		}
		fmt.Fprintf(w, "  critical path      %-8s %5.2f statements, %4.2f commits per request (%.0f requests); waits for %s %.2f per request, %.2f ms\n",
			kind, s, cm, c[kind].Requests, what, lw, millis(lwt))
	}
}
