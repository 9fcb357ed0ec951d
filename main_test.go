package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The tests run the real store (run, on port 0) against a real SQLite file
// and, when TEST_DATABASE_URL names a Postgres server, a real Postgres
// database created for the test. CI sets TEST_DATABASE_URL; without it the
// Postgres cases skip locally and fail in CI.

// testDB is one database flavour a test runs against.
type testDB struct {
	name string
	// newURL returns the DATABASE_URL of a fresh, empty database.
	newURL func(t *testing.T) string
}

func testDatabases(t *testing.T) []testDB {
	return []testDB{
		{name: "sqlite", newURL: func(t *testing.T) string {
			return "sqlite:" + filepath.Join(t.TempDir(), "store.db")
		}},
		{name: "postgres", newURL: func(t *testing.T) string { return newPostgresDB(t) }},
	}
}

// forEachDB runs f once per database as parallel subtests.
func forEachDB(t *testing.T, f func(t *testing.T, dbURL string)) {
	for _, db := range testDatabases(t) {
		t.Run(db.name, func(t *testing.T) {
			t.Parallel()
			f(t, db.newURL(t))
		})
	}
}

// newPostgresDB creates an empty database on the TEST_DATABASE_URL server and
// drops it when the test ends.
func newPostgresDB(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("TEST_DATABASE_URL is not set: CI must test Postgres")
		}
		t.Skip("TEST_DATABASE_URL not set; skipping Postgres")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to TEST_DATABASE_URL: %v", err)
	}
	defer conn.Close(ctx)
	name := "ws_test_" + randomHex(6)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Logf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// lineWaiter is an io.Writer that lets a test wait for a line matching a
// pattern: the store prints its address once it serves.
type lineWaiter struct {
	mu    sync.Mutex
	buf   strings.Builder
	lines chan string
}

func newLineWaiter() *lineWaiter { return &lineWaiter{lines: make(chan string, 100)} }

func (l *lineWaiter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		s := l.buf.String()
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			break
		}
		select {
		case l.lines <- s[:i]:
		default: // nobody is waiting for more lines
		}
		l.buf.Reset()
		l.buf.WriteString(s[i+1:])
	}
	return len(p), nil
}

var listeningRE = regexp.MustCompile(`listening on (http://\S+)`)

func (l *lineWaiter) waitAddr(t testing.TB, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line := <-l.lines:
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				return strings.Replace(m[1], "localhost", "127.0.0.1", 1)
			}
		case <-deadline:
			t.Fatalf("store did not report its address within %v", timeout)
		}
	}
}

// startStore runs the real store in-process on port 0 against dbURL, with
// extra environment, and returns its base URL. It stops at the end of the test.
func startStore(t testing.TB, dbURL string, env map[string]string) string {
	t.Helper()
	vars := map[string]string{
		"PORT": "0", "SUPERVISE": "0", "DATABASE_URL": dbURL,
		"EXECUTOR_ID": "test-" + randomHex(4), "LOG_LEVEL": "warn",
	}
	for k, v := range env {
		vars[k] = v
	}
	getenv := func(k string) string { return vars[k] }
	ctx, cancel := context.WithCancel(context.Background())
	out := newLineWaiter()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"widget-store"}, getenv, out, testLogWriter{t}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("store did not stop within 20s")
		}
	})
	base := out.waitAddr(t, 30*time.Second)
	waitHealthy(t, base, 10*time.Second)
	return base
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func waitHealthy(t testing.TB, base string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s/healthz not ready within %v", base, timeout)
}

// call makes one request and returns status and body.
func call(t testing.TB, method, u string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return resp.StatusCode, string(b)
}

func mustCall(t testing.TB, method, u string, want int) string {
	t.Helper()
	status, body := call(t, method, u)
	if status != want {
		t.Fatalf("%s %s: status %d, want %d; body %q", method, u, status, want, body)
	}
	return body
}

type apiOrder struct {
	OrderID           int64  `json:"order_id"`
	OrderStatus       int    `json:"order_status"`
	Status            string `json:"status"`
	ProgressRemaining int    `json:"progress_remaining"`
}

type apiProduct struct {
	Inventory int     `json:"inventory"`
	Price     float64 `json:"price"`
	Product   string  `json:"product"`
}

func getJSON[T any](t *testing.T, u string) T {
	t.Helper()
	var v T
	body := mustCall(t, "GET", u, http.StatusOK)
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("GET %s: %v in %q", u, err, body)
	}
	return v
}

func inventory(t *testing.T, base string) int {
	return getJSON[apiProduct](t, base+"/product").Inventory
}

// waitOrder polls the order until cond holds or timeout passes.
func waitOrder(t *testing.T, base string, id string, timeout time.Duration, cond func(apiOrder) bool) apiOrder {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var o apiOrder
	for time.Now().Before(deadline) {
		status, body := call(t, "GET", base+"/order/"+id)
		if status == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &o); err != nil {
				t.Fatal(err)
			}
			if cond(o) {
				return o
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("order %s: condition not met within %v; last seen %+v", id, timeout, o)
	return o
}

func isFinal(o apiOrder) bool {
	return o.OrderStatus == statusDispatched || o.OrderStatus == statusCancelled
}

func newTestKey() string { return "k-" + randomHex(8) }
