package storetest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"widget-store/internal/loadgen"
)

// HACluster is a replicated Postgres of the test's own: one etcd member and
// three Postgres nodes run by Patroni with synchronous replication, started
// by scripts/ha-cluster.sh (the script an operator uses, so the test proves
// it too) in a directory and on ports of its own (haTestDir, ports offset by
// haTestPortOffset: Postgres 5541-5543), beside the main test server on 5432.
//
// One such cluster runs at a time on a machine: StartHA takes an exclusive
// lock (haTestDir + ".lock") for the whole test process, so two test
// binaries that both want it (go test runs packages in parallel) take turns.
type HACluster struct {
	// URL names every node with target_session_attrs=read-write: the
	// connection string a store uses to follow the leader.
	URL    string
	script string
	env    []string
}

const (
	haTestDir        = "/var/tmp/widget-ha-test"
	haTestPortOffset = "100"
)

// StartHA starts the test's HA cluster from nothing (a leftover of an
// interrupted run is purged first) and waits until it has a leader and two
// streaming replicas; it is stopped and purged when the test ends (after
// printing the nodes' logs if the test failed). Without Patroni and etcd,
// or not as root (Postgres runs as the postgres user), it skips the test,
// unless CI is set: then it fails it, since CI must run it.
func StartHA(t testing.TB) *HACluster {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root (scripts/ha-cluster.sh runs Postgres as the postgres user)"
	}
	for _, bin := range []string{"patroni", "etcd", "psql", "curl"} {
		if _, err := exec.LookPath(bin); err != nil && why == "" {
			why = bin + " not installed (Debian: apt-get install patroni etcd-server; scripts/test.sh does it as root)"
		}
	}
	if why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("HA cluster: %s: CI must run this test", why)
		}
		t.Skip("HA cluster: " + why)
	}
	root, err := loadgen.FindModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(haTestDir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // closing releases the lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock %s: %v", lock.Name(), err)
	}
	h := &HACluster{
		script: filepath.Join(root, "scripts", "ha-cluster.sh"),
		env:    append(os.Environ(), "HA_DIR="+haTestDir, "HA_PORT_OFFSET="+haTestPortOffset),
	}
	h.Run(t, "stop", "--purge")
	t.Cleanup(func() {
		if t.Failed() {
			h.logTails(t)
		}
		h.Run(t, "stop", "--purge")
	})
	began := time.Now()
	out := h.Run(t, "start")
	for line := range strings.SplitSeq(out, "\n") {
		if u, ok := strings.CutPrefix(line, "DATABASE_URL="); ok {
			h.URL = u
		}
	}
	if h.URL == "" {
		t.Fatalf("ha-cluster.sh start printed no DATABASE_URL:\n%s", out)
	}
	t.Logf("MEASURED HA cluster from nothing to a leader and two streaming replicas: %v", time.Since(began).Round(100*time.Millisecond))
	return h
}

// NewDatabase creates an empty database for the test on the cluster (on the
// leader), dropped when the test ends, and returns once every node has it.
//
// CREATE DATABASE reaches the replicas by replication, a moment after it
// returns on the leader, and pgx, trying the hosts of a multi-host URL in
// order, stops at the first one that answers "database does not exist"
// (3D000) instead of trying the next: a store started at once, with a
// replica first in its URL, failed to start that way (a fresh-clone CI run).
// So the test waits here until each node, asked on its own, lets it connect
// to the new database. (The store does not try the next host on 3D000: see
// the README, High availability.)
func (h *HACluster) NewDatabase(t testing.TB) *loadgen.Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := loadgen.NewPostgresDB(ctx, h.URL)
	if err != nil {
		t.Fatalf("create the test database on the HA cluster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.Drop(ctx); err != nil {
			t.Logf("drop the test database: %v", err)
		}
	})
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	nodes := []string{net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}
	for _, fb := range cfg.Fallbacks {
		nodes = append(nodes, net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port))))
	}
	began := time.Now()
	for i, node := range nodes {
		one := cfg.Copy()
		one.Fallbacks, one.ValidateConnect = nil, nil // this node alone, leader or replica
		if i > 0 {
			one.Host, one.Port = cfg.Fallbacks[i-1].Host, cfg.Fallbacks[i-1].Port
		}
		for {
			conn, err := pgx.ConnectConfig(ctx, one)
			if err == nil {
				conn.Close(ctx) // it connected: that is all we wanted to know
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("node %s has no database %s 30 s after it was created: %v", node, cfg.Database, err)
			}
			time.Sleep(100 * time.Millisecond) // the polling interval
		}
	}
	t.Logf("MEASURED every node (%s) has the new database %v after CREATE DATABASE", strings.Join(nodes, ", "), time.Since(began).Round(time.Millisecond))
	return db
}

// Run runs scripts/ha-cluster.sh with args on the test's cluster and returns
// its output; it fails the test if the script fails or takes over 4 minutes.
func (h *HACluster) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := h.run(4*time.Minute, args...)
	if err != nil {
		t.Fatalf("ha-cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (h *HACluster) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.script, args...)
	cmd.Env = h.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Leader is the node that leads right now ("node2 127.0.0.1:5542"), or ""
// while there is none (the leader died and no replica is promoted yet).
func (h *HACluster) Leader() string {
	out, err := h.run(10*time.Second, "leader")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// KillLeader SIGKILLs the leader's Patroni and Postgres, as the death of its
// machine would, and returns the node it killed, as Leader names it; they
// are dead when it returns.
func (h *HACluster) KillLeader(t testing.TB) string {
	t.Helper()
	out := strings.TrimSpace(h.Run(t, "kill-leader"))
	t.Log(out)
	// "killed node1 (127.0.0.1:5541): pids …"
	name, rest, _ := strings.Cut(strings.TrimPrefix(out, "killed "), " (")
	addr, _, _ := strings.Cut(rest, ")")
	return name + " " + addr
}

// logTails puts the end of each node's log (and etcd's) in the test log.
func (h *HACluster) logTails(t testing.TB) {
	logs, _ := filepath.Glob(filepath.Join(haTestDir, "*", "*.log")) // a bad pattern is impossible here
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		t.Logf("--- %s (last 40 lines)\n%s", l, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}
