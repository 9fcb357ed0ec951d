package storetest

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// Browser tests: a real headless Chromium (Debian's /usr/bin/chromium, or
// $CHROMIUM) drives the real store the way a shopper does, waiting on
// conditions in the page (never fixed sleeps). Without Chromium they skip
// locally and fail in CI. Each page they visit is saved as a PNG in
// $SCREENSHOT_DIR (default: the test's temporary directory); the README's
// screenshots in docs/ come from there.

const defaultChromium = "/usr/bin/chromium"

// browserPage is one browser tab of a test, with its helpers.
type browserPage struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string // where screenshots go
}

// newBrowser starts a fresh headless Chromium (own profile, no network
// chatter) for one test and opens a tab on base.
func newBrowser(t *testing.T, base string) *browserPage {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real browser")
	}
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = defaultChromium
	}
	if _, err := exec.LookPath(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Chromium not found (%s): CI must run the browser tests; install chromium", path)
		}
		t.Skipf("Chromium not found (%s); skipping the browser test (set CHROMIUM to its path)", path)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	dir := os.Getenv("SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The first action starts the browser and opens the tab, which then live
	// as long as the context it ran with: so run it on ctx itself, not on a
	// context with a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return &browserPage{t: t, ctx: ctx, base: base, dir: dir}
}

// phase runs one phase of a browser test as a subtest (see phase) whose
// failures the page's helpers report: p fails t while f runs.
func (p *browserPage) phase(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	phase(t, name, func(t *testing.T) {
		outer := p.t
		p.t = t
		defer func() { p.t = outer }()
		f(t)
	})
}

// do runs actions with a deadline, failing the test on error.
func (p *browserPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v\n(page: %s)", what, err, p.describe())
	}
}

// open navigates to a path of the store and waits for the page to be ready.
func (p *browserPage) open(path string) {
	p.t.Helper()
	p.do("open "+path, chromedp.Navigate(p.base+path), chromedp.WaitReady("body"))
}

// click clicks the element with that data-testid once it is visible.
func (p *browserPage) click(testid string) {
	p.t.Helper()
	sel := `[data-testid="` + testid + `"]`
	p.do("click "+testid, chromedp.WaitVisible(sel), chromedp.Click(sel))
}

// waitFor polls a JavaScript condition until it is truthy or timeout passes.
// An evaluation that fails (the page is navigating, the element is not there
// yet) counts as "not yet".
func (p *browserPage) waitFor(what, cond string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+cond+")"))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		if p.ctx.Err() != nil || time.Now().After(deadline) {
			p.t.Fatalf("waiting for %s (%s): not within %v (last error: %v)\n(page: %s)", what, cond, timeout, lastErr, p.describe())
		}
		time.Sleep(25 * time.Millisecond) // the polling interval, not a wait for an outcome
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](p *browserPage, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// describe is the page's URL and visible text, for failure messages.
func (p *browserPage) describe() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + (document.body ? document.body.innerText.slice(0, 1500) : "(no body)")`))
	if err != nil {
		return "unavailable: " + err.Error()
	}
	return s
}

// shot saves a full-page PNG screenshot as name.png.
func (p *browserPage) shot(name string) { p.saveShot(name, chromedp.FullScreenshot(100)) }

// shotViewport saves what the window shows (fixed banners included).
func (p *browserPage) shotViewport(name string) { p.saveShot(name, chromedp.CaptureScreenshot()) }

func (p *browserPage) saveShot(name string, action chromedp.Action[[]byte]) {
	p.t.Helper()
	var raw []byte
	var err error
	// A page that has just navigated may not be laid out yet ("Cannot take
	// screenshot with 0 width"): wait for it, and try again if need be.
	for attempt := 0; attempt < 5; attempt++ {
		p.waitFor("the page laid out", `document.readyState === "complete" && document.documentElement.clientWidth > 0`, 10*time.Second)
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		raw, err = chromedp.Run(ctx, action)
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	// Chromium encodes for speed; re-encoding at best compression makes the
	// files small enough to keep in the repository.
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, img); err != nil {
		p.t.Fatal(err)
	}
	file := filepath.Join(p.dir, name+".png")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot %s (%d KB)", file, buf.Len()>>10)
}

func (p *browserPage) path() string {
	return eval[string](p, "location.pathname")
}

// buyAndPay goes from the store page through Buy and Pay (or Decline) to the
// order page, and returns the order id and the checkout key.
func (p *browserPage) buyAndPay(button, shotPrefix string) (orderID, key string) {
	p.t.Helper()
	p.open("/")
	p.waitFor("the Buy button", `!!document.querySelector('[data-testid=buy]:not([disabled])')`, 10*time.Second)
	if shotPrefix != "" {
		p.shot(shotPrefix + "store")
	}
	p.click("buy")
	p.waitFor("the payment page", `location.pathname.startsWith("/pay/") && !!document.querySelector("[data-testid=pay]")`, 30*time.Second)
	if shotPrefix != "" {
		p.shot(shotPrefix + "payment")
	}
	key = strings.TrimPrefix(p.path(), "/pay/")
	p.click(button)
	p.waitFor("the order page", `location.pathname.startsWith("/track/") && !!document.querySelector("[data-testid=order-live]")`, 60*time.Second)
	return strings.TrimPrefix(p.path(), "/track/"), key
}

// installProgressMonitor records every progress value the order page shows,
// to check afterwards that it never went back up.
func (p *browserPage) installProgressMonitor() {
	eval[chromedp.Void](p, `window.__seen = []; document.addEventListener("htmx:afterSwap", function () {
		var el = document.querySelector("[data-testid=order-live]");
		if (el) window.__seen.push(+el.dataset.remaining);
	}); void 0`)
}

func (p *browserPage) checkProgressMonotonic() {
	p.t.Helper()
	seen := eval[[]int](p, `window.__seen || []`)
	for i := 1; i < len(seen); i++ {
		if seen[i] > seen[i-1] {
			p.t.Fatalf("the order page showed progress going back up: %v", seen)
		}
	}
}

// stepTitles is the step titles of one workflow's timeline ("Checkout",
// "Dispatch"), in order.
func (p *browserPage) stepTitles(workflow string) []string {
	return eval[[]string](p, `[...document.querySelectorAll('[data-testid=wf-`+workflow+`] [data-testid=step-title]')].map(e => e.textContent)`)
}

// hasStep reports whether titles has a step recorded under name: the
// timeline shows recorded names as they are, numbered when repeated
// ("dispatch-leg 3/10") and marked when the step starts a child workflow
// ("dispatch (starts the workflow)").
func hasStep(titles []string, name string) bool {
	return slices.ContainsFunc(titles, func(s string) bool { return s == name || strings.HasPrefix(s, name+" ") })
}

// checkDispatchTimeline checks the finished timeline: every checkout step
// once, under its recorded name, and the ten dispatch legs once each, in
// order, numbered "dispatch-leg N/10".
func (p *browserPage) checkDispatchTimeline() {
	p.t.Helper()
	p.waitFor("a final timeline", `document.querySelector("#timeline[data-final=true]") !== null`, 30*time.Second)
	legs := p.stepTitles("Dispatch")
	if len(legs) != shop.DispatchLegs {
		p.t.Fatalf("dispatch timeline has %d steps, want %d: %q", len(legs), shop.DispatchLegs, legs)
	}
	for i, l := range legs {
		if want := fmt.Sprintf("dispatch-leg %d/%d", i+1, shop.DispatchLegs); l != want {
			p.t.Fatalf("dispatch step %d is %q, want %q", i+1, l, want)
		}
	}
	checkout := p.stepTitles("Checkout")
	for _, want := range []string{"reserve", "settle", "dispatch"} {
		if !hasStep(checkout, want) {
			p.t.Fatalf("checkout timeline lacks the step %q: %q", want, checkout)
		}
	}
	// Polling stopped: the final fragments carry no trigger.
	if eval[bool](p, `!!document.querySelector("#order-live[hx-trigger], #timeline[hx-trigger]")`) {
		p.t.Fatal("the order page still polls after the order and its workflows are final")
	}
}

func TestBrowserPurchase(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := Start(t, db).Base()
		p := newBrowser(t, base)
		prefix := db.Kind + "-"
		var orderID, key string
		p.phase(t, "buy and pay", func(t *testing.T) {
			orderID, key = p.buyAndPay("pay", prefix)
		})
		p.phase(t, "the dispatch fills in, the timeline lists every step", func(t *testing.T) {
			p.installProgressMonitor()
			p.waitFor("dispatch under way", `document.querySelector("[data-testid=order-live]").dataset.remaining <= 7 && document.querySelectorAll("[data-testid=wf-Dispatch] [data-testid=step]").length >= 3`, 30*time.Second)
			p.shot(prefix + "order-in-progress")
			p.waitFor("DISPATCHED", `document.querySelector("[data-testid=order-live]").dataset.status === "DISPATCHED"`, 30*time.Second)
			p.checkDispatchTimeline()
			p.checkProgressMonotonic()
			p.shot(prefix + "order-dispatched")
			if got := eval[string](p, `document.querySelector("[data-testid=status]").textContent`); got != "DISPATCHED" {
				t.Fatalf("status badge %q, want DISPATCHED", got)
			}
		})
		p.phase(t, "a reload, the payment page and the store page show the order as it is", func(t *testing.T) {
			p.open("/track/" + orderID)
			p.waitFor("DISPATCHED after reload", `document.querySelector("[data-testid=order-live]").dataset.status === "DISPATCHED"`, 10*time.Second)
			p.open("/pay/" + key)
			p.waitFor("the settled payment page", `(document.querySelector("[data-testid=settled]")||{}).textContent === "Order #`+orderID+` is DISPATCHED"`, 10*time.Second)
			// The store lists it under "Your orders" (the shopper cookie).
			p.open("/")
			p.waitFor("the order in Your orders", `[...document.querySelectorAll("[data-testid=my-orders] a")].some(a => a.textContent === "Order #`+orderID+`")`, 10*time.Second)
			// The internals panel follows the newest order's workflows.
			p.waitFor("the internals timeline", `!!document.querySelector("#internals-timeline [data-testid=wf-Dispatch][data-status=SUCCESS]")`, 10*time.Second)
			p.shot(prefix + "store-with-orders")
			if n := Inventory(t, base); n != 99 {
				t.Fatalf("inventory %d after one sale, want 99", n)
			}
		})
	})
}

// TestBrowserHardenedBuyer is the buyer's own path in a store run in public
// (ADMIN_TOKEN and PAYMENT_WEBHOOK_SECRET set): buy, pay and track, and
// decline, in the browser, under the Content-Security-Policy (no violation
// reported); the timeline names the workflows by the order; another browser
// cannot open the order or its payment page.
func TestBrowserHardenedBuyer(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		base := Start(t, db, "ADMIN_TOKEN=admin-test-token", "PAYMENT_WEBHOOK_SECRET=whsec-test").Base()
		p := newBrowser(t, base)
		var orderID, key string
		p.phase(t, "buy, pay, and the order dispatches", func(t *testing.T) {
			orderID, key = p.buyAndPay("pay", "")
			eval[chromedp.Void](p, `window.__csp = []; document.addEventListener("securitypolicyviolation", e => window.__csp.push(e.violatedDirective + " " + e.blockedURI)); void 0`)
			p.waitFor("DISPATCHED", `document.querySelector("[data-testid=order-live]").dataset.status === "DISPATCHED"`, 40*time.Second)
			p.checkDispatchTimeline()
			if got := eval[string](p, `document.querySelector("[data-testid=wf-Checkout] .mono").textContent`); got != "checkout of order #"+orderID {
				t.Fatalf("the buyer's timeline names the checkout %q, want %q", got, "checkout of order #"+orderID)
			}
			if eval[bool](p, `document.body.innerHTML.includes(`+strconv.Quote(key)+`)`) {
				t.Fatal("the order page shows the checkout key")
			}
			if v := eval[[]string](p, `window.__csp`); len(v) > 0 {
				t.Fatalf("Content-Security-Policy violations on the order page: %q", v)
			}
		})
		p.phase(t, "decline: the order is cancelled and the unit goes back", func(t *testing.T) {
			before := Inventory(t, base)
			p.buyAndPay("decline", "")
			p.waitFor("CANCELLED", `document.querySelector("[data-testid=order-live]").dataset.status === "CANCELLED"`, 30*time.Second)
			if n := Inventory(t, base); n != before {
				t.Fatalf("inventory %d after a decline, want %d", n, before)
			}
		})
		p.phase(t, "another browser cannot open the order or its payment page", func(t *testing.T) {
			other := newBrowser(t, base)
			other.open("/track/" + orderID)
			other.waitFor("not found", `(document.querySelector("[data-testid=error-title]")||{}).textContent === "We couldn't find that"`, 10*time.Second)
			other.open("/pay/" + key)
			other.waitFor("not found", `(document.querySelector("[data-testid=error-title]")||{}).textContent === "We couldn't find that"`, 10*time.Second)
			other.open("/")
			if eval[bool](other, `!!document.querySelector("#internals, [data-testid=crash]")`) {
				t.Fatal("a visitor's store page shows the internals panel or the crash button")
			}
		})
	})
}

func TestBrowserDecline(t *testing.T) {
	base := Start(t, NewSQLiteDB(t)).Base()
	p := newBrowser(t, base)
	p.buyAndPay("decline", "")
	p.waitFor("CANCELLED", `document.querySelector("[data-testid=order-live]").dataset.status === "CANCELLED"`, 30*time.Second)
	p.waitFor("a final timeline", `document.querySelector("#timeline[data-final=true]") !== null`, 30*time.Second)
	steps := p.stepTitles("Checkout")
	if !hasStep(steps, "settle") {
		t.Fatalf("checkout timeline lacks the settle step: %q", steps)
	}
	if eval[int](p, `document.querySelectorAll('[data-testid=wf-Dispatch] [data-testid=step]').length`) != 0 {
		t.Fatal("a declined order shows dispatch steps")
	}
	p.shot("order-declined")
	// The same page on a phone.
	p.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	p.shot("order-declined-phone")
	p.do("desktop viewport", chromedp.EmulateViewport(1280, 900))
	if n := Inventory(t, base); n != 100 {
		t.Fatalf("inventory %d after a decline, want 100", n)
	}
	// The way forward from a cancelled order: back to the store.
	p.do("back to the store", chromedp.Click(`#order-live a.button`))
	p.waitFor("the store", `location.pathname === "/" && !!document.querySelector("[data-testid=buy]")`, 10*time.Second)
}

func TestBrowserSoldOutAndErrors(t *testing.T) {
	base := Start(t, NewSQLiteDB(t)).Base()
	p := newBrowser(t, base)
	MustCall(t, "POST", base+"/restock?inventory=0", http.StatusOK)
	p.open("/")
	p.waitFor("a disabled Buy", `document.querySelector("[data-testid=buy]").disabled && document.querySelector("[data-testid=stock]").dataset.inventory === "0"`, 10*time.Second)
	p.shot("store-sold-out")
	// Live stock: a restock enables Buy without a reload.
	MustCall(t, "POST", base+"/restock?inventory=1", http.StatusOK)
	p.waitFor("Buy enabled by the live stock", `!document.querySelector("[data-testid=buy]").disabled`, 10*time.Second)
	// The last unit goes to someone else while this page still offers it:
	// Buy then leads to the sold-out page.
	MustCall(t, "POST", base+"/restock?inventory=0", http.StatusOK)
	eval[chromedp.Void](p, `document.querySelector("form.buy").requestSubmit(); void 0`)
	p.waitFor("the sold-out page", `!!document.querySelector("[data-testid=sold-out]")`, 30*time.Second)
	if !strings.HasPrefix(p.path(), "/pay/") {
		t.Fatalf("sold-out page at %s, want /pay/<key> (reloadable)", p.path())
	}
	p.shot("sold-out")
	if got := Orders(t, base); len(got) != 0 {
		t.Fatalf("a sold-out checkout made orders: %+v", got)
	}
	p.click("back-to-store")
	p.waitFor("the store", `location.pathname === "/"`, 10*time.Second)

	// Errors a shopper can reach by URL have a message and a way back.
	p.open("/track/424242")
	p.waitFor("the not-found page", `(document.querySelector("[data-testid=error-message]")||{}).textContent === "There is no order 424242"`, 10*time.Second)
	p.shot("error-not-found")
	p.click("back-to-store")
	p.waitFor("the store", `location.pathname === "/"`, 10*time.Second)
	p.open("/pay/no-such-checkout")
	p.waitFor("the unknown-checkout page", `!!document.querySelector("[data-testid=error-message]")`, 10*time.Second)
}

// TestBrowserHiddenTabPausesPolling checks that polling pauses while the tab
// is hidden (app.js cancels a polled request at htmx:confirm while
// document.hidden) and resumes after.
func TestBrowserHiddenTabPausesPolling(t *testing.T) {
	base := Start(t, NewSQLiteDB(t)).Base()
	p := newBrowser(t, base)
	p.open("/")
	eval[chromedp.Void](p, `window.__requests = 0; document.addEventListener("htmx:beforeRequest", () => window.__requests++); void 0`)
	p.waitFor("polling", `window.__requests >= 2`, 10*time.Second)
	eval[chromedp.Void](p, `Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
		window.__hiddenAt = performance.now(); window.__before = window.__requests; void 0`)
	// Three poll periods of the fastest poll (1 s), plus one in flight.
	p.waitFor("three poll periods", `performance.now() - window.__hiddenAt > 3200`, 10*time.Second)
	if n := eval[int](p, `window.__requests - window.__before`); n > 1 {
		t.Fatalf("%d requests while the tab was hidden, want at most the one in flight", n)
	}
	eval[chromedp.Void](p, `delete document.hidden; window.__before = window.__requests; void 0`)
	p.waitFor("polling again", `window.__requests > window.__before`, 10*time.Second)
}

// TestBrowserCrashMidDispatch presses Crash on the order page while the
// order is being dispatched: the page says it is reconnecting, the store
// comes back by itself, the same order finishes, and its timeline shows the
// recovery, with the steps before it not run again.
func TestBrowserCrashMidDispatch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	st := StartWith(t, NewSQLiteDB(t), Options{Supervise: true})
	base := st.Base()
	p := newBrowser(t, base)
	var orderID string
	var before int // dispatch steps checkpointed before the crash
	p.phase(t, "a paid order dispatching", func(t *testing.T) {
		orderID, _ = p.buyAndPay("pay", "")
		p.installProgressMonitor()
		p.waitFor("dispatch under way", `document.querySelector("[data-testid=order-live]").dataset.remaining <= 7 && document.querySelectorAll("[data-testid=wf-Dispatch] [data-testid=step]").length >= 3`, 30*time.Second)
		before = eval[int](p, `document.querySelectorAll("[data-testid=wf-Dispatch] [data-testid=step]").length`)
		p.shot("crash-before")
	})

	p.phase(t, "Crash: the page says it is reconnecting, then is back online", func(t *testing.T) {
		p.click("crash")
		p.waitFor("the reconnecting banner", `getComputedStyle(document.querySelector("[data-testid=reconnecting]")).display !== "none"`, 10*time.Second)
		eval[chromedp.Void](p, `window.scrollTo(0, document.querySelector("#timeline").offsetTop - 60); void 0`)
		p.shotViewport("crash-reconnecting")
		p.waitFor("back online", `!!document.body.dataset.online && !document.body.classList.contains("offline")`, 30*time.Second)
	})

	p.phase(t, "the same order is dispatched, every step once", func(t *testing.T) {
		p.waitFor("DISPATCHED after the crash", `document.querySelector("[data-testid=order-live]").dataset.status === "DISPATCHED"`, 60*time.Second)
		p.checkDispatchTimeline()
		p.checkProgressMonotonic()
	})

	p.phase(t, "the timeline marks the recovery: steps before it from the first run, after it from the new one", func(t *testing.T) {
		p.waitFor("the recovery in the dispatch timeline", `!!document.querySelector("[data-testid=wf-Dispatch] [data-testid=recovery]")`, 10*time.Second)
		// None ran twice: checkDispatchTimeline counted ten.
		runs := eval[[]string](p, `[...document.querySelectorAll("[data-testid=wf-Dispatch] li")].map(li => (li.dataset.testid === "recovery" ? "R" : "S") + (li.dataset.run || ""))`)
		t.Logf("dispatch timeline rows (S=step, R=recovery, with run id): %v", runs)
		ri := -1
		for i, r := range runs {
			if strings.HasPrefix(r, "R") {
				ri = i
				break
			}
		}
		if ri < before {
			t.Fatalf("recovery row at %d, but %d dispatch steps were checkpointed before the crash: %v", ri, before, runs)
		}
		first, recovered := runs[0][1:], runs[ri][1:]
		if first == recovered {
			t.Fatalf("steps before and after the recovery have the same run %s: %v", first, runs)
		}
		for i, r := range runs {
			if !strings.HasPrefix(r, "S") {
				continue
			}
			if want := first; i > ri {
				want = recovered
				if r[1:] != want {
					t.Fatalf("step row %d ran in run %s, want %s (the recovering run): %v", i, r[1:], want, runs)
				}
			} else if r[1:] != want {
				t.Fatalf("step row %d ran in run %s, want %s (the first run): %v", i, r[1:], want, runs)
			}
		}
		if a := eval[string](p, `document.querySelector("[data-testid=wf-Dispatch]").dataset.attempts`); a != "2" {
			t.Fatalf("dispatch workflow attempts %s, want 2 (one recovery)", a)
		}
		eval[chromedp.Void](p, `window.scrollTo(0, document.querySelector("#timeline").offsetTop - 20); void 0`)
		p.shotViewport("crash-recovered")
		if n, _ := strconv.Atoi(eval[string](p, `document.body.dataset.reconnects || "0"`)); n < 1 {
			t.Fatalf("the page never showed reconnecting (reconnects=%d)", n)
		}
		if o := GetJSON[Order](t, base+"/order/"+orderID); o.OrderStatus != shop.StatusDispatched {
			t.Fatalf("order %s after the crash: %+v, want DISPATCHED", orderID, o)
		}
	})
}

// TestBrowserNoDoubleSubmitAndStalePage: a double click on Buy makes one
// order (the button is disabled while its request is in flight), and a
// button on a stale page (the order was paid in another tab) answers with
// the server's message inline and a way on, instead of a dead end.
func TestBrowserNoDoubleSubmitAndStalePage(t *testing.T) {
	base := Start(t, NewSQLiteDB(t)).Base()
	p := newBrowser(t, base)
	p.open("/")
	p.waitFor("the Buy button", `!!document.querySelector('[data-testid=buy]:not([disabled])')`, 10*time.Second)
	busy := eval[bool](p, `(() => { const b = document.querySelector("[data-testid=buy]"); b.click(); const d = b.disabled && b.getAttribute("aria-busy") === "true"; b.click(); return d; })()`)
	if !busy {
		t.Fatal("Buy was not disabled and busy right after the click")
	}
	p.waitFor("the payment page", `location.pathname.startsWith("/pay/") && !!document.querySelector("[data-testid=pay]")`, 30*time.Second)
	if orders := Orders(t, base); len(orders) != 1 {
		t.Fatalf("a double click on Buy made %d orders, want 1", len(orders))
	}
	key := strings.TrimPrefix(p.path(), "/pay/")
	// Another tab pays; this page still offers Decline.
	MustCall(t, "POST", base+"/payment_webhook/"+key+"/paid", http.StatusOK)
	p.click("decline")
	p.waitFor("the inline error", `[...document.querySelectorAll(".form-error")].some(e => !e.hidden && e.textContent.includes("already paid"))`, 30*time.Second)
	p.shot("stale-decline-error")
	// The way on: the page as it is now.
	p.click("current-state")
	p.waitFor("the settled payment page", `!!document.querySelector("[data-testid=to-order]")`, 10*time.Second)
	p.click("to-order")
	p.waitFor("the order page", `location.pathname.startsWith("/track/")`, 10*time.Second)
}

// TestBrowserPollingSurvivesOutage kills the store without a supervisor, so
// the page's polls fail outright (connection refused) rather than wait in
// the supervisor's accept queue: htmx must keep polling through the errors,
// the page must say it is reconnecting, and it must pick up by itself when
// the store is started again.
func TestBrowserPollingSurvivesOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	st := Start(t, NewSQLiteDB(t))
	p := newBrowser(t, st.Base())
	p.phase(t, "a paid order dispatching", func(t *testing.T) {
		p.buyAndPay("pay", "")
		p.waitFor("dispatch under way", `document.querySelector("[data-testid=order-live]").dataset.remaining <= 8`, 30*time.Second)
	})
	p.phase(t, "SIGKILL without a supervisor: polls fail, the page says reconnecting and keeps polling", func(t *testing.T) {
		st.Kill()
		p.waitFor("the reconnecting banner after failed polls", `document.body.classList.contains("offline")`, 15*time.Second)
		eval[chromedp.Void](p, `window.__fails = 0; document.addEventListener("htmx:sendError", () => window.__fails++); void 0`)
		p.waitFor("polls failing and retried", `window.__fails >= 2`, 15*time.Second)
	})
	p.phase(t, "restarted: the page picks up by itself and the order is dispatched", func(t *testing.T) {
		st.Restart(t)
		p.waitFor("back online", `!!document.body.dataset.online && !document.body.classList.contains("offline")`, 30*time.Second)
		p.waitFor("DISPATCHED after the outage", `document.querySelector("[data-testid=order-live]").dataset.status === "DISPATCHED"`, 60*time.Second)
		p.checkDispatchTimeline()
	})
}
