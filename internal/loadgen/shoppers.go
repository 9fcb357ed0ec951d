package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"widget-store/internal/shop"
)

// Purchase is everything one shopper was told about one key: the
// acknowledgements the invariants are checked against.
type Purchase struct {
	Key      string
	Cart     []shop.Line // nil: no cart (one unit of product 1)
	Started  time.Time
	Finished time.Time // zero while in flight

	Checkout Answer // 200 + payment id, 409 sold out, or an unexpected 4xx
	Sent     string // payment status sent: shop.PaymentPaid, shop.PaymentFailed, or "" (not paid: sold out, abandoned, gave up)
	Payment  Answer // 200 + order id, or 409
	// Replays are the answers to the same calls made again after the
	// purchase completed; a careful client may repeat a call whose answer it
	// lost, so they must equal the first answers.
	Replays []Replay
	GaveUp  string // why the client stopped retrying without an answer

	// Stripe mode (ShopperConfig.Stripe): the events sent, in order, with
	// their answers (Payment is the answer to the one that decided the
	// payment); Late: the payment was sent only after the store had asked
	// Stripe to expire the session; PaymentIntent: the pi_... the events
	// named.
	Events        []SentEvent
	Late          bool
	PaymentIntent string
}

// Replay is one repeated call and its answer.
type Replay struct {
	Call string
	Got  Answer
	Want Answer
}

// PaymentID is the payment id the checkout answered, or "".
func (p *Purchase) PaymentID() string {
	if p.Checkout.Status == http.StatusOK {
		return p.Checkout.Body
	}
	return ""
}

// Ledger is every purchase made in a run, in the order they started.
type Ledger struct {
	mu        sync.Mutex
	purchases []*Purchase
}

func (l *Ledger) add(p *Purchase) {
	l.mu.Lock()
	l.purchases = append(l.purchases, p)
	l.mu.Unlock()
}

// record changes a purchase under the ledger's lock.
func (l *Ledger) record(change func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	change()
}

func (l *Ledger) gaveUp(p *Purchase, why string) { l.record(func() { p.GaveUp = why }) }

// Purchases returns a copy of the records. Call it after the shoppers stop.
func (l *Ledger) Purchases() []Purchase {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Purchase, len(l.purchases))
	for i, p := range l.purchases {
		out[i] = *p
	}
	return out
}

// ShopperConfig is the shoppers' behaviour.
type ShopperConfig struct {
	Concurrency  int
	MaxPurchases int     // stop starting purchases after this many in all (0: no limit)
	Decline      float64 // fraction of payments sent as "failed"
	Abandon      float64 // fraction of checkouts never paid (they time out)
	Replay       float64 // fraction of purchases whose calls are repeated afterwards
	Seed         int64
	KeyPrefix    string
	// RetryFor bounds how long a call is retried after the load stops
	// (default 2 minutes): a careful client retries, but not forever.
	RetryFor time.Duration
	// Carts: each purchase is a random cart of 1–3 lines of CartProducts
	// (quantities 1–3), sent as JSON (the caller must be a CartCaller).
	Carts        bool
	CartProducts []int
	// Stripe: pay with signed Stripe events (see StripePayer) instead of
	// the stand-in's payment calls; nil: the stand-in.
	Stripe *StripePayer
}

// CartCaller checks out a cart (Client does).
type CartCaller interface {
	CheckoutCart(ctx context.Context, key, cart string) (Answer, int, error)
}

// randomCart is 1–3 distinct products of products, 1–3 units each.
func randomCart(rng *rand.Rand, products []int) []shop.Line {
	n := 1 + rng.IntN(min(3, len(products)))
	var cart []shop.Line
	for _, i := range rng.Perm(len(products))[:n] {
		cart = append(cart, shop.Line{ProductID: products[i], Quantity: 1 + rng.IntN(3)})
	}
	return cart
}

// cartJSON is a cart as POST /checkout/{key} takes it.
func cartJSON(cart []shop.Line) string {
	b, _ := json.Marshal(map[string][]shop.Line{"items": cart}) // a slice of plain structs always marshals
	return string(b)
}

// Caller makes a shopper's two calls until a definitive answer: *Client
// for one store, *Failover for several instances.
type Caller interface {
	Checkout(ctx context.Context, key string) (Answer, int, error)
	Pay(ctx context.Context, pid, status string) (Answer, int, error)
}

// Shoppers runs Concurrency shoppers until ctx ends (no new purchase starts)
// and every purchase in flight has its answers, or RetryFor passes.
func Shoppers(ctx context.Context, c Caller, cfg ShopperConfig, ledger *Ledger) {
	retryFor := cfg.RetryFor
	if retryFor == 0 {
		retryFor = 2 * time.Minute
	}
	// Calls outlive the load's context: a purchase in flight is finished.
	callCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		<-ctx.Done()
		select {
		case <-time.After(retryFor):
			cancel()
		case <-callCtx.Done():
		}
	}()
	var started atomic.Int64
	var wg sync.WaitGroup
	for i := range cfg.Concurrency {
		rng := rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(i)))
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				if cfg.MaxPurchases > 0 && started.Add(1) > int64(cfg.MaxPurchases) {
					return
				}
				p := &Purchase{Key: cfg.KeyPrefix + strconv.Itoa(i) + "-" + strconv.Itoa(n), Started: time.Now()}
				if cfg.Carts {
					p.Cart = randomCart(rng, cfg.CartProducts)
				}
				ledger.add(p)
				decline, abandon, replay := rng.Float64() < cfg.Decline, rng.Float64() < cfg.Abandon, rng.Float64() < cfg.Replay
				var pay func()
				if s := cfg.Stripe; s != nil {
					plan := s.drawPlan(rng, decline, abandon)
					prng := rand.New(rand.NewPCG(rng.Uint64(), 0))
					pay = func() { s.pay(callCtx, p, plan, replay, prng, ledger) }
				}
				buy(callCtx, c, p, decline, abandon, replay, pay, ledger)
			}
		})
	}
	wg.Wait()
	if cfg.Stripe != nil {
		cfg.Stripe.wait()
	}
}

// buy makes one purchase as a careful client: the same key until checkout
// answers, then the same payment call until it answers. pay, if not nil,
// pays instead of c.Pay once the checkout answered 200 (Stripe mode: it
// makes its own replays).
func buy(ctx context.Context, c Caller, p *Purchase, decline, abandon, replay bool, pay func(), ledger *Ledger) {
	defer ledger.record(func() { p.Finished = time.Now() })
	checkout := func() (Answer, int, error) {
		if cc, ok := c.(CartCaller); ok && p.Cart != nil {
			return cc.CheckoutCart(ctx, p.Key, cartJSON(p.Cart))
		}
		return c.Checkout(ctx, p.Key)
	}
	a, _, err := checkout()
	if err != nil {
		ledger.gaveUp(p, err.Error())
		return
	}
	ledger.record(func() { p.Checkout = a })
	if a.Status == http.StatusOK && pay != nil {
		pay()
		if replay {
			ca, _, err := checkout()
			if err != nil {
				ledger.gaveUp(p, "replay: "+err.Error())
				return
			}
			ledger.record(func() { p.Replays = append(p.Replays, Replay{Call: "checkout " + p.Key, Got: ca, Want: a}) })
		}
		return
	}
	if a.Status != http.StatusOK || abandon {
		return
	}
	status := shop.PaymentPaid
	if decline {
		status = shop.PaymentFailed
	}
	ledger.record(func() { p.Sent = status })
	pa, _, err := c.Pay(ctx, a.Body, status)
	if err != nil {
		ledger.gaveUp(p, err.Error())
		return
	}
	ledger.record(func() { p.Payment = pa })
	if !replay {
		return
	}
	ca, _, err := checkout()
	if err != nil {
		ledger.gaveUp(p, "replay: "+err.Error())
		return
	}
	pa2, _, err := c.Pay(ctx, a.Body, status)
	if err != nil {
		ledger.gaveUp(p, "replay: "+err.Error())
		return
	}
	ledger.record(func() {
		p.Replays = append(p.Replays,
			Replay{Call: "checkout " + p.Key, Got: ca, Want: a},
			Replay{Call: fmt.Sprintf("payment %s/%s", a.Body, status), Got: pa2, Want: pa})
	})
}
