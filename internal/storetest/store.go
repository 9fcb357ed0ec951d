package storetest

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"widget-store/internal/loadgen"
)

// Options configure a store process beyond its database.
type Options struct {
	// Env is extra KEY=VALUE environment, after the rig's defaults
	// (SUPERVISE=0, PORT, DATABASE_URL, LOG_LEVEL=warn and an EXECUTOR_ID
	// unique to the store), so it wins over them.
	Env []string
	// Log receives the store's stderr (its log); nil sends it to the test log.
	Log io.Writer
	// Supervise runs the store under its built-in supervisor (SUPERVISE=1):
	// the supervisor keeps the socket and restarts the store when it dies.
	Supervise bool
}

// Store is the store binary running as a child process of the test: a
// loadgen.Store (Base, PID, Kill, Stop, WaitExit, Exited, …) bound to the
// test that started it. Start it again after a Kill or a crash with Restart:
// it comes back on the same port and database, with the same executor ID.
//
// Under supervision PID and Kill are the supervisor's (a SIGKILLed
// supervisor's child notices and stops within a second); crash the store
// itself through the API (POST /crash_application).
type Store struct {
	*loadgen.Store
	t      testing.TB
	params []string // the rig's own environment, before Options.Env
}

// stopTimeout bounds a graceful stop (SIGTERM) at the end of a test.
const stopTimeout = 20 * time.Second

// Start runs the store binary on db with extra KEY=VALUE environment and
// returns once it answers /healthz. It is stopped (SIGTERM) at the end of the
// test, and must exit 0 then.
func Start(t testing.TB, db *loadgen.Database, env ...string) *Store {
	t.Helper()
	return StartWith(t, db, Options{Env: env})
}

// StartWith is Start with every option.
func StartWith(t testing.TB, db *loadgen.Database, o Options) *Store {
	t.Helper()
	log := o.Log
	if log == nil {
		log = LogWriter(t, "")
	}
	s := &Store{
		Store:  &loadgen.Store{Bin: Binary(t), DB: db, Log: log, Supervise: o.Supervise},
		t:      t,
		params: []string{"EXECUTOR_ID=test-" + RandomHex(4)},
	}
	s.Env = append(slices.Clone(s.params), o.Env...)
	t.Cleanup(s.stop)
	s.start(t)
	return s
}

// Restart starts the store again, on the same port and database with the
// same environment, after it was killed or crashed, and waits until it
// answers /healthz. t is the running test (or phase): it fails if the store
// does not come up.
func (s *Store) Restart(t testing.TB) {
	t.Helper()
	s.start(t)
}

// RestartWith is Restart with env replacing the extra environment the store
// was started with (the rig's defaults, the executor ID among them, stay).
func (s *Store) RestartWith(t testing.TB, env ...string) {
	t.Helper()
	s.Env = append(slices.Clone(s.params), env...)
	s.start(t)
}

func (s *Store) start(t testing.TB) {
	t.Helper()
	if !s.Exited() {
		t.Fatalf("start the store on %s: it is still running (pid %d)", s.Base(), s.PID())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := s.Store.Start(ctx); err != nil {
		t.Fatalf("start the store (%s, %s): %v", s.Bin, s.DB.Kind, err)
	}
}

// URL is the store's address followed by path, e.g. s.URL("/orders").
func (s *Store) URL(path string) string { return s.Base() + path }

// ExecutorID is the store's EXECUTOR_ID.
func (s *Store) ExecutorID() string {
	id := ""
	for _, kv := range s.Env { // the last one wins, as in the process
		if v, ok := strings.CutPrefix(kv, "EXECUTOR_ID="); ok {
			id = v
		}
	}
	return id
}

// stop ends a store still running at the end of its test gracefully, as an
// operator would (SIGTERM), and fails the test unless it stops in time and
// with status 0.
func (s *Store) stop() {
	if s.Exited() {
		return
	}
	if err := s.Stop(stopTimeout); err != nil {
		s.t.Errorf("stop the store at the end of the test: %v", err)
		return
	}
	if code, err := s.WaitExit(time.Second); err != nil || code != 0 {
		s.t.Errorf("the store exited with status %d (%v) on SIGTERM, want 0", code, err)
	}
}

// LogWriter is an io.Writer that logs each write to t, prefixed (a store's
// log, when several run in one test).
func LogWriter(t testing.TB, prefix string) io.Writer { return logWriter{t, prefix} }

type logWriter struct {
	t      testing.TB
	prefix string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// capturedLog keeps what a store wrote to its log, for the test to read
// while the store still writes.
type capturedLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *capturedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything written so far.
func (l *capturedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
