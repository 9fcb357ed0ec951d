package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"widget-store/internal/shop"
)

// forward reports whether from → to follows an order's only allowed path:
// PENDING, then PAID then DISPATCHED, or PENDING then CANCELLED.
func forward(from, to shop.Status) bool {
	switch {
	case from == to:
		return true
	case from == shop.StatusPending:
		return to == shop.StatusPaid || to == shop.StatusDispatched || to == shop.StatusCancelled
	case from == shop.StatusPaid:
		return to == shop.StatusDispatched
	}
	return false
}

type apiOrder struct {
	OrderID           int64       `json:"order_id"`
	OrderStatus       shop.Status `json:"order_status"`
	ProgressRemaining int         `json:"progress_remaining"`
}

type seenOrder struct {
	status   shop.Status
	progress int
}

// Sampler watches the store through its API while it runs: every order's
// status and progress over time (GET /orders, every page) and the stock
// (GET /product). It records any step backwards, a progress that rises, a
// DISPATCHED order with progress left (or the reverse) and negative stock.
type Sampler struct {
	Base   string
	HTTP   *http.Client
	Every  time.Duration
	Reads  *atomic.Int64 // counts the requests it makes (each is a read transaction in the store)
	mu     sync.Mutex
	orders map[int64]seenOrder
	bad    []string
	minInv int
	n      int
	// read fetches the orders and the stock (stockOK false: the stock read
	// failed); nil reads them through the API at Base.
	read func(ctx context.Context) (orders []apiOrder, stock int, stockOK bool, err error)
}

// NewSampler returns a sampler of the store at base; Run starts it.
func NewSampler(base string, every time.Duration, reads *atomic.Int64) *Sampler {
	return &Sampler{
		Base: base, Every: every, Reads: reads, orders: map[int64]seenOrder{}, minInv: 1 << 62,
		HTTP: &http.Client{Timeout: 5 * time.Second},
	}
}

// Run samples until ctx ends. Errors (the store is down) skip a sample.
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.Every)
	defer t.Stop()
	for {
		s.Sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample takes one sample; it reports whether every order seen was final.
func (s *Sampler) Sample(ctx context.Context) (allFinal bool, err error) {
	read := s.read
	if read == nil {
		read = s.readAPI
	}
	orders, stock, stockOK, err := read(ctx)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if stockOK {
		s.minInv = min(s.minInv, stock)
		if stock < 0 {
			s.violation("stock %d < 0", stock)
		}
	}
	allFinal = true
	for _, o := range orders {
		if o.OrderStatus == shop.StatusPending || o.OrderStatus == shop.StatusPaid {
			allFinal = false
		}
		if (o.OrderStatus == shop.StatusDispatched) != (o.ProgressRemaining == 0) {
			s.violation("order %d is %s with progress %d", o.OrderID, o.OrderStatus, o.ProgressRemaining)
		}
		prev, ok := s.orders[o.OrderID]
		if ok && !forward(prev.status, o.OrderStatus) {
			s.violation("order %d went from %s back to %s", o.OrderID, prev.status, o.OrderStatus)
		}
		if ok && o.ProgressRemaining > prev.progress {
			s.violation("order %d progress rose from %d to %d", o.OrderID, prev.progress, o.ProgressRemaining)
		}
		s.orders[o.OrderID] = seenOrder{o.OrderStatus, o.ProgressRemaining}
	}
	return allFinal, nil
}

// samplePageSize is the page size the sampler asks GET /orders for: the
// largest there is, so a sample of thousands of orders is a few requests.
const samplePageSize = 1000

// readAPI reads every order (GET /orders, following its pages, oldest first)
// and the stock through the API. A page that fails fails the whole read, so a
// sample is never a part of the orders.
func (s *Sampler) readAPI(ctx context.Context) ([]apiOrder, int, bool, error) {
	orders, requests, err := ReadPages[apiOrder](ctx, s.HTTP, s.Base+"/orders?limit="+strconv.Itoa(samplePageSize), nil)
	s.Reads.Add(int64(requests))
	if err != nil {
		return nil, 0, false, err
	}
	// Every order once. (Not necessarily in ascending order: a build from
	// before the pages, which -mode ab compares against, lists its newest
	// 1,000 newest first, without a Link.)
	seen := make(map[int64]bool, len(orders))
	for _, o := range orders {
		if seen[o.OrderID] {
			return nil, 0, false, fmt.Errorf("GET /orders: order %d listed twice", o.OrderID)
		}
		seen[o.OrderID] = true
	}
	var product struct {
		Inventory int `json:"inventory"`
	}
	perr := s.getJSON(ctx, "/product", &product)
	return orders, product.Inventory, perr == nil, nil
}

func (s *Sampler) violation(format string, args ...any) {
	if len(s.bad) < 20 {
		s.bad = append(s.bad, fmt.Sprintf(format, args...))
	} else if len(s.bad) == 20 {
		s.bad = append(s.bad, "… (more)")
	}
}

func (s *Sampler) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Base+path, nil)
	if err != nil {
		return err
	}
	s.Reads.Add(1)
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Result is what the sampler saw: samples taken, orders seen, the lowest
// stock, and the violations.
func (s *Sampler) Result() (samples, orders, minStock int, violations []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, len(s.orders), s.minInv, append([]string(nil), s.bad...)
}

// WaitSettled polls until every order the store lists is final (DISPATCHED
// or CANCELLED) or timeout passes, and returns how long it took.
func (s *Sampler) WaitSettled(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, err := s.Sample(ctx)
		if err == nil && ok {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return time.Since(start), fmt.Errorf("not settled within %v: %w", timeout, err)
			}
			return time.Since(start), fmt.Errorf("orders still PENDING or PAID %v after the load", timeout)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(s.Every):
		}
	}
}

// RSSSampler records the highest RSS of a store while it runs.
type RSSSampler struct {
	mu  sync.Mutex
	max int64
}

func (r *RSSSampler) Run(ctx context.Context, s *Store, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if v, err := s.RSS(); err == nil {
			r.mu.Lock()
			r.max = max(r.max, v)
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *RSSSampler) Max() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.max
}
