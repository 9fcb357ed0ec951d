// Package stripetest runs Stripe's own API simulator, stripe-mock, for tests
// and the load tool, and builds the signed webhook events Stripe would send.
//
// stripe-mock is pinned as a Go tool in go.mod, so a machine with Go and the
// module proxy has everything it needs: Start asks `go tool -n stripe-mock`
// for the binary, which the go command builds once from the module cache and
// keeps in the Go build cache (later calls, in this process or the next, take
// a fraction of a second). stripe-mock validates every request against
// Stripe's OpenAPI spec and answers with fixtures; it keeps no state, so it
// does not replay idempotent requests the way Stripe does. That is why the
// Mock puts a recording reverse proxy in front of it: a test counts what
// Stripe was asked (and with which Idempotency-Key) instead of trusting
// stripe-mock's answers to reveal a duplicate.
//
// The package does not depend on package testing, so cmd/loadtest uses it
// too.
package stripetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// SecretKey is the API key the store is given in tests: stripe-mock accepts
// any key that looks like a test-mode secret key.
const SecretKey = "sk_test_123"

// WebhookSecret is the endpoint signing secret the store is given in tests
// (STRIPE_WEBHOOK_SECRET); events signed with it verify.
const WebhookSecret = "whsec_widgetstore_test_secret"

// WrongWebhookSecret signs events that must not verify.
const WrongWebhookSecret = "whsec_someone_else"

// The Idempotency-Key headers the store sends with PAYMENT_PROVIDER=stripe:
// one session per checkout key, one expiry per checkout key, and a refund
// keyed by the payment id, which is the checkout key. The tests and the
// chaos run check the store against these.

// SessionIdempotencyKey is the Idempotency-Key of the store's session
// create for checkout key.
func SessionIdempotencyKey(key string) string { return "widget-store-session-" + key }

// ExpireIdempotencyKey is the Idempotency-Key of the store's session expiry
// for checkout key.
func ExpireIdempotencyKey(key string) string { return "widget-store-expire-" + key }

// The paths of the calls the store makes.
const (
	SessionsPath = "/v1/checkout/sessions"
	RefundsPath  = "/v1/refunds"
)

// Request is one request the proxy forwarded to stripe-mock.
type Request struct {
	Method         string
	Path           string
	IdempotencyKey string     // the Idempotency-Key header, "" when absent
	Form           url.Values // the parsed form body (Stripe's API takes forms); do not modify
	At             time.Time  // when the proxy received it

	// Status is stripe-mock's answer: 0 while it has not answered yet, 502
	// when the proxy got no answer (the caller went away mid-request, or
	// stripe-mock failed); such a request may or may not have reached
	// stripe-mock, so count it as asked.
	Status int
	// ObjectID is the "id" of the object stripe-mock answered with (a
	// session's cs_..., a refund's re_...), "" for errors.
	ObjectID string
}

// Mock is a running stripe-mock behind a recording proxy.
type Mock struct {
	// URL is the proxy's base URL, http://127.0.0.1:<port>: what the
	// store's STRIPE_API_BASE gets.
	URL string

	cmd      *exec.Cmd
	exited   chan struct{} // closed when stripe-mock's process has exited
	dir      string        // holds stripe-mock's socket
	server   *http.Server
	proxy    *httputil.ReverseProxy
	mu       sync.Mutex
	requests []Request
	changed  chan struct{} // closed (and replaced) whenever requests changes
}

// Start runs stripe-mock and the proxy in front of it, and returns once
// stripe-mock answers. stripe-mock listens on a Unix socket in a fresh
// temporary directory, only the proxy on a loopback port the kernel picks:
// stripe-mock's TCP flags either bind every interface (-http-port) or leave
// its HTTPS listener on the fixed port 12112 (-http-addr), and parallel
// tests must not share a port. logf receives stripe-mock's own output and
// the proxy's errors, one line per call (nil discards them). Start needs the
// go command and a working directory inside the module. Close stops it all.
func Start(ctx context.Context, logf func(string, ...any)) (*Mock, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bin, err := Binary(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "stripe-mock-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "http.sock")
	m := &Mock{dir: dir, exited: make(chan struct{}), changed: make(chan struct{})}

	m.cmd = exec.Command(bin, "-http-unix", sock)
	m.cmd.SysProcAttr = dieWithParent()
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir) // best effort: a temporary directory
		return nil, err
	}
	m.cmd.Stderr = m.cmd.Stdout
	if err := m.cmd.Start(); err != nil {
		os.RemoveAll(dir) // best effort: a temporary directory
		return nil, fmt.Errorf("start stripe-mock: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			logf("stripe-mock: %s", sc.Text())
		}
		// The pipe ends when the process exits; Wait may only run after
		// every read from it is done.
		err := m.cmd.Wait()
		logf("stripe-mock: exited: %v", err)
		close(m.exited)
	}()

	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 64,
	}
	if err := m.waitReady(ctx, transport); err != nil {
		m.Close()
		return nil, err
	}

	upstream := &url.URL{Scheme: "http", Host: "stripe-mock"}
	m.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
			r.Out.Host = "api.stripe.com"
		},
		Transport:      transport,
		ModifyResponse: m.noteObjectID,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			logf("stripetest proxy: %s %s: %v", r.Method, r.URL.Path, err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		m.Close()
		return nil, err
	}
	m.URL = "http://" + ln.Addr().String()
	m.server = &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := m.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("stripetest proxy: %v", err)
		}
	}()
	return m, nil
}

// Binary returns the path of the pinned stripe-mock binary, building it from
// the module cache into the Go build cache if it is not there yet (`go tool
// -n` builds a tool and prints where it is, without running it).
func Binary(ctx context.Context) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "tool", "-n", "stripe-mock")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build stripe-mock (go tool -n stripe-mock, from a directory inside the module): %v\n%s", err, stderr.Bytes())
	}
	bin := strings.TrimSpace(string(out))
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("go tool -n stripe-mock printed %q: %w", bin, err)
	}
	return bin, nil
}

// waitReady polls stripe-mock until it answers any HTTP request (it loads
// Stripe's spec first, well under a second), fails at once if it exited,
// and gives up after 30 s.
func (m *Mock) waitReady(ctx context.Context, transport http.RoundTripper) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &http.Client{Transport: transport, Timeout: 2 * time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://stripe-mock/", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close() // any answer means it is serving
			return nil
		}
		select {
		case <-m.exited:
			return errors.New("stripe-mock exited before it answered (its output went to logf)")
		case <-ctx.Done():
			return fmt.Errorf("stripe-mock did not answer: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

type recordIndex struct{}

// ServeHTTP records r, forwards it to stripe-mock and records the answer's
// status. The request is recorded when it arrives, before it is forwarded,
// so a caller killed mid-request still shows up as having asked.
func (m *Mock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		// The caller went away before it finished sending: Stripe would
		// not have acted on a partial request either.
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, err := url.ParseQuery(string(body))
	if err != nil {
		form = url.Values{} // not a form: stripe-mock answers it with its own error
	}
	m.mu.Lock()
	i := len(m.requests)
	m.requests = append(m.requests, Request{
		Method:         r.Method,
		Path:           r.URL.Path,
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
		Form:           form,
		At:             time.Now(),
	})
	m.notifyLocked()
	m.mu.Unlock()

	sw := &statusWriter{ResponseWriter: w}
	m.proxy.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), recordIndex{}, i)))

	m.mu.Lock()
	m.requests[i].Status = sw.status
	m.notifyLocked()
	m.mu.Unlock()
}

// notifyLocked wakes every Await; m.mu is held.
func (m *Mock) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Await returns the first request (in arrival order) that match accepts,
// waiting for it until ctx ends. A request is offered to match again as its
// answer comes in, so match can ask for a Status.
func (m *Mock) Await(ctx context.Context, match func(Request) bool) (Request, error) {
	next := 0 // requests before next are answered and did not match: never again
	for {
		m.mu.Lock()
		changed := m.changed
		done := true
		for i := next; i < len(m.requests); i++ {
			r := m.requests[i]
			if match(r) {
				m.mu.Unlock()
				return r, nil
			}
			if done && r.Status != 0 {
				next = i + 1
			} else {
				done = false
			}
		}
		m.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Request{}, ctx.Err()
		}
	}
}

// noteObjectID records the "id" of the object in stripe-mock's answer.
func (m *Mock) noteObjectID(resp *http.Response) error {
	i, ok := resp.Request.Context().Value(recordIndex{}).(int)
	if !ok || resp.StatusCode >= 300 {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close() // read in full; replaced below
	if err != nil {
		return err // the proxy answers 502
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(body, &obj) == nil {
		m.mu.Lock()
		m.requests[i].ObjectID = obj.ID
		m.mu.Unlock()
	}
	return nil
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Requests returns every request the proxy received, in the order they
// arrived.
func (m *Mock) Requests() []Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Request(nil), m.requests...)
}

// Matching returns the requests with this method whose path starts with
// pathPrefix, in order.
func (m *Mock) Matching(method, pathPrefix string) []Request {
	var out []Request
	for _, r := range m.Requests() {
		if r.Method == method && strings.HasPrefix(r.Path, pathPrefix) {
			out = append(out, r)
		}
	}
	return out
}

// Count is len(Matching(method, pathPrefix)).
func (m *Mock) Count(method, pathPrefix string) int {
	return len(m.Matching(method, pathPrefix))
}

// ByIdempotencyKey groups every request by its Idempotency-Key header
// (requests without one under ""), each group in order.
func (m *Mock) ByIdempotencyKey() map[string][]Request {
	out := map[string][]Request{}
	for _, r := range m.Requests() {
		out[r.IdempotencyKey] = append(out[r.IdempotencyKey], r)
	}
	return out
}

// SessionCreates returns the session-create requests (POST
// /v1/checkout/sessions, not the expiries under it) grouped by the
// checkout key they name (client_reference_id).
func (m *Mock) SessionCreates() map[string][]Request {
	out := map[string][]Request{}
	for _, r := range m.Matching(http.MethodPost, SessionsPath) {
		if r.Path != SessionsPath {
			continue // .../{id}/expire
		}
		k := r.Form.Get("client_reference_id")
		out[k] = append(out[k], r)
	}
	return out
}

// Close stops the proxy and stripe-mock and removes the socket's directory.
func (m *Mock) Close() {
	if m.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m.server.Shutdown(ctx) // best effort: the process below goes anyway
		cancel()
	}
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill() // an error means it has exited already
		<-m.exited
	}
	os.RemoveAll(m.dir) // best effort: a temporary directory
}
