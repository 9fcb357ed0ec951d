package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/storetest"
)

// The root tests run the store in-process: run itself, on port 0, against a
// real SQLite file and a real Postgres database (storetest.ForEachDB; CI
// sets TEST_DATABASE_URL, without it the Postgres cases skip locally and
// fail in CI). This file tests run; workflow_test.go the workflows through
// it. The tests that need the real binary (crashes, signals, the supervisor,
// a browser) live with the shared rig in internal/storetest.

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

// waitAddr waits for the "listening on" line and returns the address in it,
// or fails the test when r ends first or timeout passes.
func (l *lineWaiter) waitAddr(t testing.TB, r *inProcess, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line := <-l.lines:
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				return strings.Replace(m[1], "localhost", "127.0.0.1", 1)
			}
		case <-r.finished:
			t.Fatalf("run returned before the store served: %v", r.err)
		case <-deadline:
			t.Fatalf("store did not report its address within %v", timeout)
		}
	}
}

// inProcess is run running in a goroutine of the test.
type inProcess struct {
	base     string
	finished chan struct{} // closed when run has returned
	err      error         // what run returned, once finished is closed
	// stop cancels run's context and waits up to 20 s for run to return:
	// stopped is false if it did not. Calls after the first return the same.
	stop func() (err error, stopped bool)
}

// runStore runs the store in-process with exactly the environment vars and
// returns once /healthz answers. It is stopped at the end of the test at
// the latest.
func runStore(t testing.TB, vars map[string]string, stderr io.Writer) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &inProcess{finished: make(chan struct{})}
	r.stop = sync.OnceValues(func() (error, bool) {
		cancel()
		select {
		case <-r.finished:
			return r.err, true
		case <-time.After(20 * time.Second):
			return nil, false
		}
	})
	t.Cleanup(func() { r.stop() })
	out := newLineWaiter()
	go func() {
		defer close(r.finished)
		r.err = run(ctx, []string{"widget-store"}, func(k string) string { return vars[k] }, out, stderr)
	}()
	r.base = out.waitAddr(t, r, 30*time.Second)
	storetest.WaitHealthy(t, r.base, 10*time.Second)
	return r
}

// startStore runs the real store in-process on port 0 against dbURL, with
// extra environment, and returns its base URL. It stops at the end of the
// test, and run must then return nil within 20 s.
func startStore(t testing.TB, dbURL string, env map[string]string) string {
	t.Helper()
	vars := map[string]string{
		"PORT": "0", "SUPERVISE": "0", "DATABASE_URL": dbURL,
		"EXECUTOR_ID": "test-" + storetest.RandomHex(4), "LOG_LEVEL": "warn",
	}
	for k, v := range env {
		vars[k] = v
	}
	r := runStore(t, vars, storetest.LogWriter(t, ""))
	t.Cleanup(func() { // before runStore's own (last registered, first run)
		switch err, stopped := r.stop(); {
		case !stopped:
			t.Errorf("store did not stop within 20s")
		case err != nil:
			t.Errorf("run: %v", err)
		}
	})
	return r.base
}

// TestRunRejectsBadConfig: a bad flag or environment variable makes run
// return at once with an error that names the setting and the bad value
// (never a password), without serving.
func TestRunRejectsBadConfig(t *testing.T) {
	db := "sqlite:" + t.TempDir() + "/store.db"
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string // substring of the error
	}{
		{"port not a number", nil, map[string]string{"PORT": "http"}, `PORT "http": want a number from 0 to 65535`},
		{"port too large", nil, map[string]string{"PORT": "65536"}, `PORT "65536"`},
		{"port flag wins over PORT", []string{"-port", "-1"}, map[string]string{"PORT": "0"}, `PORT "-1"`},
		{"supervise", nil, map[string]string{"SUPERVISE": "maybe"}, `SUPERVISE "maybe": want 1 or 0`},
		{"payment timeout not a duration", nil, map[string]string{"PAYMENT_TIMEOUT": "120"}, `PAYMENT_TIMEOUT "120": want a positive duration`},
		{"payment timeout negative", nil, map[string]string{"PAYMENT_TIMEOUT": "-5s"}, `PAYMENT_TIMEOUT "-5s"`},
		{"takeover too short", nil, map[string]string{"TAKEOVER_AFTER": "1ms"}, `TAKEOVER_AFTER "1ms": want 0 (off) or a duration of at least`},
		{"log level", nil, map[string]string{"LOG_LEVEL": "loud"}, `LOG_LEVEL "loud": want debug, info, warn or error`},
		{"log format", nil, map[string]string{"LOG_FORMAT": "xml"}, `LOG_FORMAT "xml": want text or json`},
		{"executor id too long", nil, map[string]string{"EXECUTOR_ID": strings.Repeat("x", 129)}, "EXECUTOR_ID must be 1 to 128 characters"},
		{"crash point workflow", nil, map[string]string{"CRASH_AT": "payment:reserve"}, `CRASH_AT "payment:reserve": want one of checkout:reserve, checkout:payment-create`},
		{"payment provider", nil, map[string]string{"PAYMENT_PROVIDER": "paypal"}, `PAYMENT_PROVIDER "paypal": want standin (the store's own pay page) or stripe`},
		{"stripe without keys", nil, map[string]string{"PAYMENT_PROVIDER": "stripe"}, `PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY (sk_test_…`},
		{"stripe without webhook secret", nil, map[string]string{"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "sk_test_123"}, `PAYMENT_PROVIDER=stripe needs STRIPE_WEBHOOK_SECRET (whsec_…`},
		{"stripe publishable key", nil, map[string]string{"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "pk_test_123", "STRIPE_WEBHOOK_SECRET": "whsec_x"}, `STRIPE_SECRET_KEY: want a secret key`},
		{"stripe webhook secret", nil, map[string]string{"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_WEBHOOK_SECRET": "sk_test_123"}, `STRIPE_WEBHOOK_SECRET: want the endpoint's signing secret, whsec_…`},
		{"stripe API base", nil, map[string]string{"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_API_BASE": "ftp://x"}, `STRIPE_API_BASE "ftp://x": want an http:// or https:// URL`},
		{"public URL", nil, map[string]string{"PUBLIC_URL": "shop.example"}, `PUBLIC_URL "shop.example": want an http:// or https:// URL`},
		{"provider URL scheme", nil, map[string]string{"PROVIDER_URL": "ftp://provider.example/v1"}, `PROVIDER_URL "ftp://provider.example/v1": want an http:// or https:// URL`},
		{"provider URL no host", nil, map[string]string{"PROVIDER_URL": "http:///refunds"}, `PROVIDER_URL "http:///refunds"`},
		{"provider URL password hidden", nil, map[string]string{"PROVIDER_URL": "https://shop:s3cret@provider.example/v1?x=1"}, `PROVIDER_URL "https://shop:xxxxx@provider.example/v1?x=1"`},
		{"crash point step", nil, map[string]string{"CRASH_AT": "checkout:markpaid"}, `CRASH_AT "checkout:markpaid"`},
		{"crash point by number", nil, map[string]string{"CRASH_AT": "checkout:4"}, `CRASH_AT "checkout:4": want one of`},
		{"crash point leg", nil, map[string]string{"CRASH_AT": "dispatch:dispatch-leg:11"}, `CRASH_AT "dispatch:dispatch-leg:11"`},
		{"database URL scheme", nil, map[string]string{"DATABASE_URL": "mysql://shop:s3cret@db/widgets"}, `DATABASE_URL "mysql://shop:xxxxx@db/widgets": want sqlite:PATH or postgres://`},
		{"in-memory SQLite", nil, map[string]string{"DATABASE_URL": "sqlite::memory:"}, "DATABASE_URL: SQLite needs a file"},
		{"reconcile interval", nil, map[string]string{"RECONCILE_EVERY": "1ms"}, `RECONCILE_EVERY "1ms": want a duration of at least 100ms`},
		{"retention without a unit", nil, map[string]string{"RETENTION": "30"}, `RETENTION "30": want off, a number of days such as 30d`},
		{"retention too short", nil, map[string]string{"RETENTION": "10ms"}, `RETENTION "10ms"`},
		{"retention days not a number", nil, map[string]string{"RETENTION": "xd"}, `RETENTION "xd"`},
		{"retention negative", nil, map[string]string{"RETENTION": "-5d"}, `RETENTION "-5d"`},
		{"sqlite synchronous", nil, map[string]string{"SQLITE_SYNCHRONOUS": "off"}, `SQLITE_SYNCHRONOUS "off": want normal or full`},
		{"unknown flag", []string{"-prot", "8080"}, nil, "flag provided but not defined: -prot"},
		{"stray argument", []string{"serve"}, nil, `unexpected arguments: ["serve"]`},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			vars := map[string]string{"PORT": "0", "SUPERVISE": "0", "DATABASE_URL": db, "LOG_LEVEL": "warn"}
			for k, v := range tc.env {
				vars[k] = v
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out, stderr := newLineWaiter(), &strings.Builder{}
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, append([]string{"widget-store"}, tc.args...), func(k string) string { return vars[k] }, out, stderr)
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("run: %v, want an error containing %q", err, tc.want)
				}
				if strings.Contains(err.Error()+stderr.String(), "s3cret") {
					t.Fatalf("run: %v (log %q): the database password is shown", err, stderr.String())
				}
			case line := <-out.lines:
				cancel()
				<-done
				t.Fatalf("run started (%q) despite the bad setting; want an error containing %q", line, tc.want)
			case <-time.After(10 * time.Second):
				cancel()
				<-done
				t.Fatalf("run did not return within 10s; want an error containing %q", tc.want)
			}
		})
	}
}

// TestRunHelp: -h prints the flags, each naming its environment variable,
// and is not an error.
func TestRunHelp(t *testing.T) {
	var stdout, stderr strings.Builder
	if err := run(context.Background(), []string{"widget-store", "-h"}, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("run -h: %v, want nil", err)
	}
	for _, want := range []string{"-port", "env PORT", "-database-url", "env DATABASE_URL", "-supervise", "env SUPERVISE"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("run -h printed %q, which lacks %q", stderr.String(), want)
		}
	}
}

// TestRunServesOnPort0AndStopsOnCancel: with PORT=0 the store listens on a
// free port, says which, and serves /healthz; cancelling run's context stops
// it gracefully: run returns nil and the port is closed.
func TestRunServesOnPort0AndStopsOnCancel(t *testing.T) {
	storetest.ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		vars := map[string]string{"PORT": "0", "SUPERVISE": "0", "DATABASE_URL": db.URL,
			"EXECUTOR_ID": "run-" + storetest.RandomHex(3), "LOG_LEVEL": "warn"}
		r := runStore(t, vars, storetest.LogWriter(t, ""))
		base := r.base
		if strings.HasSuffix(base, ":0") || !strings.HasPrefix(base, "http://127.0.0.1:") {
			t.Fatalf("store reported %s, want http://localhost:<a free port>", base)
		}
		if body := storetest.MustCall(t, "GET", base+"/healthz", http.StatusOK); body == "" {
			t.Errorf("/healthz answered an empty body")
		}

		switch err, stopped := r.stop(); {
		case !stopped:
			t.Fatal("run did not return within 20s of its context being cancelled")
		case err != nil:
			t.Fatalf("run after cancel: %v, want nil", err)
		}
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		if resp, err := c.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			t.Fatalf("after run returned, %s/healthz still answers %d", base, resp.StatusCode)
		}
	})
}

// TestListenAddressFollowsMode: without ADMIN_TOKEN the store listens on
// 127.0.0.1 only (127.0.0.2, another loopback address, is refused), and its
// first log line says how to open it; with the token it listens on every
// interface; LISTEN_ADDR overrides both.
func TestListenAddressFollowsMode(t *testing.T) {
	db := storetest.NewSQLiteDB(t)
	reach := func(base string, host string) bool {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(strings.Replace(base, "127.0.0.1", host, 1) + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	for _, tc := range []struct {
		name       string
		env        map[string]string
		fromOther  bool   // 127.0.0.2 reaches it
		firstLine  string // a substring of the first log line
		reportedAt string // the host in the "listening on" line
	}{
		{"demo mode", map[string]string{}, false, "set LISTEN_ADDR=:0 and ADMIN_TOKEN", "127.0.0.1"},
		{"hardened", map[string]string{"ADMIN_TOKEN": "t", "PAYMENT_WEBHOOK_SECRET": "s"}, true, "hardened mode", "127.0.0.1"},
		{"demo mode, LISTEN_ADDR set", map[string]string{"LISTEN_ADDR": ":0"}, true, "demo mode on the network", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]string{"PORT": "0", "SUPERVISE": "0", "DATABASE_URL": db.URL, "EXECUTOR_ID": "listen-" + storetest.RandomHex(3), "LOG_LEVEL": "info"}
			for k, v := range tc.env {
				vars[k] = v
			}
			log := newLineWaiter()
			r := runStore(t, vars, log)
			if !strings.HasPrefix(r.base, "http://"+tc.reportedAt+":") {
				t.Errorf("store reported %s", r.base)
			}
			select {
			case first := <-log.lines:
				if !strings.Contains(first, tc.firstLine) {
					t.Errorf("first log line %q lacks %q", first, tc.firstLine)
				}
			default:
				t.Error("no log line")
			}
			if got := reach(r.base, "127.0.0.2"); got != tc.fromOther {
				t.Errorf("127.0.0.2 reaches the store: %v, want %v", got, tc.fromOther)
			}
			if err, stopped := r.stop(); !stopped || err != nil {
				t.Errorf("stop: %v %v", err, stopped)
			}
		})
	}
}
