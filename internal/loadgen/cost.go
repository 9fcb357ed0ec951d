package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// What a purchase costs, beyond its latency: CPU in the store and in
// Postgres, and round trips to Postgres. On a saturated machine throughput is
// CPU per purchase, and round trips are most of the store's CPU on Postgres,
// so these are the figures that move when the code does; unlike purchases/s
// they hold from one noisy day to the next.

// clockTicks is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 for every architecture the store runs on.
const clockTicks = 100

// Cost is a reading of the counters; the difference of two is the cost of
// what ran between them.
type Cost struct {
	StoreCPU    time.Duration // the store process's user + system CPU
	PostgresCPU time.Duration // every process of the local Postgres server, background workers included
	// BackendCPU is the Postgres backends connected to the run's database
	// only: on a server other work shares, PostgresCPU counts that work too,
	// and this does not (nor the server's background workers).
	BackendCPU time.Duration
	RoundTrips float64 // widget_db_round_trips_total on the store's /metrics
}

// Sub is c − d.
func (c Cost) Sub(d Cost) Cost {
	return Cost{StoreCPU: c.StoreCPU - d.StoreCPU, PostgresCPU: c.PostgresCPU - d.PostgresCPU, BackendCPU: c.BackendCPU - d.BackendCPU,
		RoundTrips: c.RoundTrips - d.RoundTrips}
}

// backendCPU sums procCPU over the backends connected to the database at
// dbURL (pg_stat_activity), but the one this reading uses. A backend that
// ended between two readings takes its CPU with it; the stores' pools keep
// theirs for the whole run.
func backendCPU(ctx context.Context, dbURL string) (time.Duration, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if err != nil {
		return 0, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, pid := range pids {
		if cpu, err := procCPU(int(pid)); err == nil { // one that ended meanwhile is skipped
			total += cpu
		}
	}
	return total, nil
}

// ReadCost reads the counters of the running store st (and, on Postgres, of
// the Postgres server on this machine).
func ReadCost(ctx context.Context, st *Store) (Cost, error) {
	var c Cost
	var err error
	if c.StoreCPU, err = procCPU(st.PID()); err != nil {
		return c, fmt.Errorf("store CPU: %w", err)
	}
	if st.DB.Kind != "postgres" {
		return c, nil
	}
	if c.PostgresCPU, err = postgresCPU(); err != nil {
		return c, fmt.Errorf("postgres CPU: %w", err)
	}
	if c.BackendCPU, err = backendCPU(ctx, st.DB.URL); err != nil {
		return c, fmt.Errorf("the database's backends' CPU: %w", err)
	}
	if c.RoundTrips, err = metricValue(ctx, st.Base(), "widget_db_round_trips_total"); err != nil {
		return c, fmt.Errorf("round trips: %w", err)
	}
	return c, nil
}

// procCPU is a process's utime + stime from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing one. utime and stime are fields 14, 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// postgresCPU sums procCPU over every process named postgres: the server's
// backends (the store's connections, and the tool's) and its background
// workers (WAL writer, checkpointer, …), whose work the store's commits
// cause too. Processes that end between the listing and the read are
// skipped: their CPU is lost to the reading (backends of the store live as
// long as its pool does, so little is).
func postgresCPU() (time.Duration, error) {
	comms, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		return 0, err
	}
	var total time.Duration
	found := false
	for _, p := range comms {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) != "postgres" {
			continue // gone, or not Postgres
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		cpu, err := procCPU(pid)
		if err != nil {
			continue // ended meanwhile
		}
		total += cpu
		found = true
	}
	if !found {
		return 0, fmt.Errorf("no process named postgres on this machine (the server must be local to measure its CPU)")
	}
	return total, nil
}

// metricValue reads one counter without labels from the store's /metrics.
func metricValue(ctx context.Context, base, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close() // read to the end below, or abandoned on an error
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		return 0, err
	}
	return 0, fmt.Errorf("/metrics has no %s", name)
}
