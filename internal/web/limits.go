package web

import (
	"context"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// The hold limit. A checkout holds a unit of stock for the whole payment
// window before anybody pays, so without a bound one client could hold every
// unit, for free, over and over. In hardened mode (ADMIN_TOKEN set) a client
// address and a browser session may each hold at most HOLD_LIMIT unpaid
// checkouts at once (20 by default); the next one is answered 429 with
// Retry-After (when its oldest hold expires) and holds nothing, while every
// other client buys as before. A key seen before is never refused: its
// replay takes nothing new.
//
// The count is the database's (store.Holds: PENDING orders created within
// the payment window, by hold_clients for addresses and orders.shopper for
// sessions), so it survives restarts and spans instances, plus the checkouts
// this process is starting right now, which the database cannot see yet. A
// holder's check and its increment happen under one of holdStripes locks
// chosen by the holder, and the increment is undone only after the
// checkout's first step committed (or failed), so two concurrent requests
// of one holder cannot both take the last slot. Across several instances,
// each counts its own starts: a burst spread over n instances at the very
// same moment can overshoot by at most n-1 per holder; the next request sees
// them all.
type holdLimiter struct {
	limit  int           // HOLD_LIMIT; 0 turns the limit off
	window time.Duration // PAYMENT_TIMEOUT: holds older than this are expiring
	db     *store.DB
	now    func() time.Time

	seed    maphash.Seed
	stripes [holdStripes]sync.Mutex
	mu      sync.Mutex     // guards starting
	started map[string]int // holder → checkouts this process is starting
}

const holdStripes = 64

func newHoldLimiter(limit int, window time.Duration, db *store.DB, now func() time.Time) *holdLimiter {
	return &holdLimiter{limit: limit, window: window, db: db, now: now, seed: maphash.MakeSeed(), started: map[string]int{}}
}

// admit decides whether the holders (a client address and, for a browser, its
// session) may start the checkout of key. It returns a done func to call once
// the checkout's first step has committed or failed, or a TooMany error.
func (l *holdLimiter) admit(ctx context.Context, key string, holders []store.Holder) (done func(), err error) {
	if l == nil || l.limit <= 0 {
		return func() {}, nil
	}
	// A key that already made an order, or sold out, takes nothing new.
	if st, err := l.db.CheckoutState(ctx, key); err != nil {
		return nil, err
	} else if st != store.CheckoutNotYet {
		return func() {}, nil
	}
	names := make([]string, 0, len(holders))
	for _, h := range holders {
		names = append(names, h.Client+"|"+h.Shopper)
	}
	unlock := l.lock(names)
	defer unlock()
	since := l.now().Add(-l.window)
	for i, h := range holders {
		n, oldest, err := l.db.Holds(ctx, h, since)
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		n += l.started[names[i]]
		l.mu.Unlock()
		if n >= l.limit {
			wait := time.Second
			if !oldest.IsZero() {
				wait = max(wait, oldest.Add(l.window).Sub(l.now()).Round(time.Second))
			}
			who := "this address"
			if h.Client == "" {
				who = "this browser"
			}
			return nil, &shop.Error{Kind: shop.TooMany, RetryAfter: wait, Message: "too many unpaid checkouts from " + who +
				" (at most " + strconv.Itoa(l.limit) + " at once): pay or decline one, or wait until one expires"}
		}
	}
	l.mu.Lock()
	for _, n := range names {
		l.started[n]++
	}
	l.mu.Unlock()
	return func() {
		unlock := l.lock(names)
		defer unlock()
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, n := range names {
			if l.started[n]--; l.started[n] <= 0 {
				delete(l.started, n)
			}
		}
	}, nil
}

// lock takes the stripes of names in ascending order (no deadlock between
// two requests that share a stripe) and returns the unlock.
func (l *holdLimiter) lock(names []string) func() {
	idx := make([]int, 0, len(names))
	for _, n := range names {
		idx = append(idx, int(maphash.String(l.seed, n)%holdStripes))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		l.stripes[i].Lock()
	}
	return func() {
		for _, i := range slices.Backward(idx) {
			l.stripes[i].Unlock()
		}
	}
}

// clientAddr is the address of the client behind r: the connection's peer,
// or, when that peer is one of the trusted proxies (TRUSTED_PROXIES), the
// rightmost address of X-Forwarded-For that is not a trusted proxy itself
// (the one the nearest trusted proxy saw; anything left of it is the
// client's own claim and could be forged).
func clientAddr(r *http.Request, trusted []netip.Prefix) string {
	peer := peerAddr(r)
	if !isTrusted(peer, trusted) {
		return peer.String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for _, h := range slices.Backward(hops) {
		a, err := netip.ParseAddr(strings.TrimSpace(h))
		if err != nil {
			break // a malformed hop: trust nothing further left
		}
		a = a.Unmap()
		if !isTrusted(a, trusted) {
			return a.String()
		}
		peer = a
	}
	return peer.String() // every hop is a trusted proxy: the leftmost one
}

func peerAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.IPv4Unspecified() // not a TCP peer (a test's handler call): one shared bucket
	}
	return a.Unmap()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParseTrustedProxies reads TRUSTED_PROXIES: a comma-separated list of
// addresses or CIDR prefixes of the reverse proxies in front of the store.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// buyerOf starts checkouts for the handlers that take them (the API's
// POST /checkout/{key} and the store page's Buy): it finds the client's
// address and holds the checkout to the hold limit.
type buyerOf struct {
	trusted []netip.Prefix
	holds   *holdLimiter // nil: no limit (demo mode)
	// proxyWarning is said once per process: a checkout came with
	// X-Forwarded-For from a peer TRUSTED_PROXIES does not name. Behind a
	// proxy that nobody declared, every buyer has the proxy's address and
	// they all share one hold limit, a store-wide cap of HOLD_LIMIT unpaid
	// checkouts: the operator must hear of it.
	proxyWarning *sync.Once
	logger       *slog.Logger
}

// start starts (or finds) the checkout of key, of cart items, for r's
// client, shopper being its browser session ("" for an API client); see
// Checkout.Start.
func (b buyerOf) start(r *http.Request, checkout Checkout, key, shopper string, items []shop.Line) (soldOut bool, err error) {
	var client string
	var holders []store.Holder
	if b.holds != nil && b.holds.limit > 0 {
		client = clientAddr(r, b.trusted)
		if r.Header.Get("X-Forwarded-For") != "" && !isTrusted(peerAddr(r), b.trusted) {
			b.proxyWarning.Do(func() {
				b.logger.Warn("a checkout came through a proxy that TRUSTED_PROXIES does not name: its X-Forwarded-For is ignored, "+
					"so every buyer behind it shares the proxy's hold limit; set TRUSTED_PROXIES to the proxy's address", "peer", peerAddr(r).String())
			})
		}
		holders = append(holders, store.Holder{Client: client})
		if shopper != "" {
			holders = append(holders, store.Holder{Shopper: shopper})
		}
	}
	done, err := b.holds.admit(r.Context(), key, holders)
	if err != nil {
		return false, err
	}
	defer done()
	return checkout.Start(r.Context(), key, shopper, client, items)
}
