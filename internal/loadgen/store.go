// Package loadgen drives the real widget-store binary over HTTP: it builds and
// starts the store against a fresh SQLite file or Postgres database, runs
// concurrent shoppers that retry exactly as a careful client would, kills and
// restarts the process, measures latency, throughput, memory and Postgres
// commits, and checks the store's invariants against the database afterwards.
//
// It is shared by cmd/loadtest (numbers for people) and the root package's
// chaos, crash-point and load smoke tests (assertions for CI).
package loadgen

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// FindModuleRoot walks up from the working directory to the directory whose
// go.mod declares the widget-store module.
func FindModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module widget-store\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no widget-store go.mod above the working directory")
		}
		dir = parent
	}
}

// Build compiles the store in moduleDir to outDir/widget-store, statically
// (CGO_ENABLED=0) as it ships, and returns the binary's path.
func Build(moduleDir, outDir string) (string, error) {
	bin := filepath.Join(outDir, "widget-store")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// BuildRevision builds the store as it was at git revision rev of the
// repository in moduleDir (git archive into a fresh directory under outDir,
// then Build), for comparing builds and for the upgrade test. It needs the
// repository's history, so a shallow clone may lack old revisions.
func BuildRevision(moduleDir, rev, outDir string) (string, error) {
	src, err := os.MkdirTemp(outDir, "src-")
	if err != nil {
		return "", err
	}
	archive := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", moduleDir, rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive %s: %v\n%s", rev, err, out)
	}
	return Build(src, outDir)
}

// Database is the store's database for one run.
type Database struct {
	Kind string // "sqlite" or "postgres"
	URL  string // the store's DATABASE_URL
	Path string // SQLite: the file

	// Postgres: the database name, and the admin URL it was created on
	// (empty when the caller made the database and drops it itself).
	name, adminURL string
}

// NewSQLiteDB names a fresh SQLite file in dir; the store creates it.
func NewSQLiteDB(dir string) *Database {
	p := filepath.Join(dir, "store.db")
	return &Database{Kind: "sqlite", URL: "sqlite:" + p, Path: p}
}

// NewPostgresDB creates an empty database on the server adminURL points to.
// Drop removes it.
func NewPostgresDB(ctx context.Context, adminURL string) (*Database, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to the Postgres admin URL: %w", err)
	}
	defer conn.Close(ctx)
	name := "ws_load_" + randomHex(6)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, err
	}
	u.Path = "/" + name
	return &Database{Kind: "postgres", URL: u.String(), name: name, adminURL: adminURL}, nil
}

// DatabaseAt wraps a DATABASE_URL (sqlite:PATH or postgres://…) whose
// database someone else created and will remove.
func DatabaseAt(dbURL string) (*Database, error) {
	if p, ok := strings.CutPrefix(dbURL, "sqlite:"); ok {
		return &Database{Kind: "sqlite", URL: dbURL, Path: p}, nil
	}
	u, err := url.Parse(dbURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("database URL %q: want sqlite:PATH or postgres://…", dbURL)
	}
	return &Database{Kind: "postgres", URL: dbURL, name: strings.TrimPrefix(u.Path, "/")}, nil
}

// Drop deletes a Postgres database NewPostgresDB made; otherwise it does nothing.
func (d *Database) Drop(ctx context.Context) error {
	if d.Kind != "postgres" || d.adminURL == "" {
		return nil
	}
	conn, err := pgx.Connect(ctx, d.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+d.name+" WITH (FORCE)")
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// Store is the store binary run as a child process. Start it again after
// Kill or Stop and it comes back on the same port and database.
type Store struct {
	Bin       string
	DB        *Database
	Env       []string  // extra KEY=VALUE pairs, after the defaults (so they win)
	Log       io.Writer // the store's stderr (its log); nil discards it
	Supervise bool      // SUPERVISE=1: run under the built-in supervisor
	Port      int       // chosen at the first Start when 0

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Base is the store's URL.
func (s *Store) Base() string { return "http://127.0.0.1:" + strconv.Itoa(s.Port) }

// Start runs the binary and waits for the first 200 from /healthz. It returns
// the time from exec to that answer: the startup time a client sees.
func (s *Store) Start(ctx context.Context) (time.Duration, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		fresh := s.Port == 0
		if fresh {
			p, err := freePort()
			if err != nil {
				return 0, err
			}
			s.Port = p
		}
		d, err := s.start(ctx)
		if err == nil || !fresh {
			return d, err
		}
		// Another process may have taken the free port meanwhile: pick again.
		lastErr = err
		s.Port = 0
	}
	return 0, lastErr
}

func (s *Store) start(ctx context.Context) (time.Duration, error) {
	supervise := "0"
	if s.Supervise {
		supervise = "1"
	}
	cmd := exec.Command(s.Bin)
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+s.DB.URL, "PORT="+strconv.Itoa(s.Port), "SUPERVISE="+supervise,
		"EXECUTOR_ID=loadgen", "LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, s.Env...)
	if s.Log != nil {
		cmd.Stderr = s.Log
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() {
		// Drain stdout (the "listening on" line) so the store never blocks on it.
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
		}
	}()
	go func() {
		cmd.Wait() // the exit status is kept in cmd.ProcessState for ExitCode
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(s.Base() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(started), nil
			}
		}
		select {
		case <-done:
			return 0, fmt.Errorf("store exited before it was ready: %v", cmd.ProcessState)
		case <-ctx.Done():
			s.Kill()
			return 0, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return 0, errors.New("store not ready within 60s")
		}
	}
}

// handedOut holds every port freePort gave a Store in this process. A store
// keeps its port across kills, and while it is down the kernel would happily
// offer that port to another Store started concurrently (the crash-point
// test runs many): the first store's restart would then fail, or its
// clients would talk to the wrong store. This is the one piece of
// package-level state, shared on purpose by every Store in the process.
var handedOut sync.Map

func freePort() (int, error) {
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if _, taken := handedOut.LoadOrStore(port, true); !taken {
			return port, nil
		}
	}
}

// PID is the process id of the running store (under supervision, the
// supervisor's), or 0.
func (s *Store) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Kill sends SIGKILL (no deferred function, no shutdown hook runs) and waits
// until the process is gone.
func (s *Store) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL) // fails only when it has exited already
	<-done
}

// Stop asks the store to stop gracefully (SIGTERM) and kills it if it has
// not stopped within timeout.
func (s *Store) Stop(timeout time.Duration) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(syscall.SIGTERM) // fails only when it has exited already
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		s.Kill()
		return fmt.Errorf("store did not stop within %v of SIGTERM; killed it", timeout)
	}
}

// WaitExit waits for the process to exit by itself and returns its exit code
// (-1 when a signal ended it).
func (s *Store) WaitExit(timeout time.Duration) (int, error) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return 0, errors.New("store not started")
	}
	select {
	case <-done:
		return cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("store still running after %v", timeout)
	}
}

// Exited reports whether the last process started has exited.
func (s *Store) Exited() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// RSS is the resident memory of the store process in bytes, from
// /proc/PID/status (VmRSS). Under supervision it is the child store's.
func (s *Store) RSS() (int64, error) {
	pid := s.PID()
	if pid == 0 {
		return 0, errors.New("store not running")
	}
	if s.Supervise {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, errors.New("supervisor has no child")
		}
		if pid, err = strconv.Atoi(f[0]); err != nil {
			return 0, err
		}
	}
	return readRSS(pid)
}

func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}
