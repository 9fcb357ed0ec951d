package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Answer is a definitive HTTP answer from the store: one a careful client
// acts on rather than retries (2xx and 4xx).
type Answer struct {
	Status int
	Body   string // trimmed
}

func (a Answer) String() string { return fmt.Sprintf("%d %q", a.Status, a.Body) }

// Client is a careful store client: on any error (refused or reset
// connection, 5xx, timeout) it retries the same call with a small backoff,
// so a crash only delays its answer. It records latencies and errors.
type Client struct {
	Base string
	HTTP *http.Client
	// Stats receives latencies and errors; nil records nothing.
	Stats *Stats
	// MaxBackoff caps the wait between retries (default 100ms).
	MaxBackoff time.Duration
}

// NewClient returns a client for the store at base with its own connection pool.
func NewClient(base string, conns int, timeout time.Duration) *Client {
	return &Client{
		Base: base,
		HTTP: &http.Client{Timeout: timeout, Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 30 * time.Second,
		}},
	}
}

// Checkout is POST /checkout/{key} until a definitive answer: 200 with the
// payment id, 409 sold out, or another 4xx (a bug this client reports).
func (c *Client) Checkout(ctx context.Context, key string) (Answer, int, error) {
	return c.retry(ctx, "checkout", "/checkout/"+key, "")
}

// CheckoutCart is Checkout of a cart (its JSON body): 200 + payment id, or
// 409 with the short lines named.
func (c *Client) CheckoutCart(ctx context.Context, key, cart string) (Answer, int, error) {
	return c.retry(ctx, "checkout", "/checkout/"+key, cart)
}

// Pay is POST /payment_webhook/{pid}/{status} until a definitive answer: 200
// with the order id, or 409 (the status contradicts the order's fate).
func (c *Client) Pay(ctx context.Context, pid, status string) (Answer, int, error) {
	return c.retry(ctx, "webhook", "/payment_webhook/"+pid+"/"+status, "")
}

// retry posts to path (with JSON body, if not "") until a 2xx or 4xx answer
// or ctx ends, and returns the answer and the number of attempts.
func (c *Client) retry(ctx context.Context, op, path, body string) (Answer, int, error) {
	return c.retryRequest(ctx, op, path, func(ctx context.Context) (*http.Request, error) {
		return c.newPost(ctx, path, body)
	})
}

// newPost is a POST of path with body as JSON (none if "").
func (c *Client) newPost(ctx context.Context, path, body string) (*http.Request, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+path, rd)
	if err == nil && body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, err
}

// post makes one attempt of POST path.
func (c *Client) post(ctx context.Context, path, body string) (Answer, error) {
	return c.do(ctx, func(ctx context.Context) (*http.Request, error) { return c.newPost(ctx, path, body) })
}

// retryRequest is retry of the requests newRequest makes, one per attempt
// (what names them in errors).
func (c *Client) retryRequest(ctx context.Context, op, what string, newRequest func(context.Context) (*http.Request, error)) (Answer, int, error) {
	backoff := 2 * time.Millisecond
	maxBackoff := c.MaxBackoff
	if maxBackoff == 0 {
		maxBackoff = 100 * time.Millisecond
	}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		a, err := c.do(ctx, newRequest)
		if err == nil && a.Status < 500 {
			c.Stats.latency(op, time.Since(start))
			return a, attempt, nil
		}
		if ctx.Err() != nil {
			return Answer{}, attempt, fmt.Errorf("%s %s: gave up after %d attempts: %w (last: %v)", op, what, attempt, ctx.Err(), errOrStatus(err, a))
		}
		c.Stats.errorKind(op, errorKind(err, a))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func errOrStatus(err error, a Answer) string {
	if err != nil {
		return err.Error()
	}
	return a.String()
}

func (c *Client) do(ctx context.Context, newRequest func(context.Context) (*http.Request, error)) (Answer, error) {
	req, err := newRequest(ctx)
	if err != nil {
		return Answer{}, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Answer{}, err
	}
	return Answer{Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}, nil
}

// errorKind names a failed attempt for the "errors by kind" table.
func errorKind(err error, a Answer) string {
	var ne net.Error
	switch {
	case err == nil:
		return fmt.Sprintf("http %d", a.Status)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed (EOF)"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "other: " + err.Error()
}

// Stats collects latencies of answered calls and errors by kind. Safe for
// concurrent use; a nil *Stats records nothing.
type Stats struct {
	mu        sync.Mutex
	latencies map[string][]time.Duration // by op: "checkout", "webhook"
	errors    map[string]int             // "op: kind"
}

func NewStats() *Stats {
	return &Stats{latencies: map[string][]time.Duration{}, errors: map[string]int{}}
}

func (s *Stats) latency(op string, d time.Duration) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.latencies[op] = append(s.latencies[op], d)
	s.mu.Unlock()
}

func (s *Stats) errorKind(op, kind string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.errors[op+": "+kind]++
	s.mu.Unlock()
}

// Percentiles of one operation's latencies.
type Percentiles struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

func (p Percentiles) String() string {
	if p.N == 0 {
		return "n=0"
	}
	return fmt.Sprintf("n=%-6d p50 %-9s p90 %-9s p99 %-9s max %s", p.N, ms(p.P50), ms(p.P90), ms(p.P99), ms(p.Max))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// Latency returns the percentiles of op's answered calls.
func (s *Stats) Latency(op string) Percentiles {
	s.mu.Lock()
	l := slices.Clone(s.latencies[op])
	s.mu.Unlock()
	if len(l) == 0 {
		return Percentiles{}
	}
	slices.Sort(l)
	at := func(q float64) time.Duration { return l[min(len(l)-1, int(q*float64(len(l))))] }
	return Percentiles{N: len(l), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: l[len(l)-1]}
}

// Errors returns the failed attempts by "op: kind".
func (s *Stats) Errors() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.errors))
	for k, v := range s.errors {
		m[k] = v
	}
	return m
}

// ErrorCount sums the failed attempts whose kind contains substr.
func (s *Stats) ErrorCount(substr string) int {
	n := 0
	for k, v := range s.Errors() {
		if strings.Contains(k, substr) {
			n += v
		}
	}
	return n
}
