package storetest

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"widget-store/internal/shop"
)

// TestBrowserCart is a buyer's cart in the browser, under the
// Content-Security-Policy: add products with quantities, change and remove
// lines, reload (the cart stays), a line that sells out between adding and
// checking out (nothing held, the short line named, the cart kept), check
// out and pay (the pay page and the order page show the lines and the
// total; the cart empties), and decline (every unit back).
func TestBrowserCart(t *testing.T) {
	base := Start(t, NewSQLiteDB(t)).Base()
	p := newBrowser(t, base)
	item := func(id int) string {
		return `document.querySelector('[data-testid=catalog-item][data-product-id="` + strconv.Itoa(id) + `"]')`
	}
	add := func(id, qty int) {
		eval[chromedp.Void](p, `(() => { const it = `+item(id)+`; it.querySelector("[data-testid=add-qty]").value = "`+strconv.Itoa(qty)+`"; it.querySelector("[data-add-to-cart]").click(); })()`)
	}
	setQty := func(id, qty int) {
		eval[chromedp.Void](p, `(() => { const q = document.querySelector('[data-testid=cart-line][data-product-id="`+strconv.Itoa(id)+`"] [data-testid=cart-qty]'); q.value = "`+strconv.Itoa(qty)+`"; q.dispatchEvent(new Event("change", {bubbles: true})); })()`)
	}
	cartIs := func(what string, lines int, total string) {
		p.t.Helper()
		p.waitFor(what, `document.querySelectorAll("[data-testid=cart-line]").length === `+strconv.Itoa(lines)+
			` && document.querySelector("[data-testid=cart-total]").textContent === "`+total+`"`, 10*time.Second)
	}
	watchCSP := func() {
		eval[chromedp.Void](p, `window.__csp = []; document.addEventListener("securitypolicyviolation", e => window.__csp.push(e.violatedDirective + " " + e.blockedURI)); void 0`)
	}
	noCSPViolations := func() {
		p.t.Helper()
		if v := eval[[]string](p, `window.__csp || []`); len(v) > 0 {
			p.t.Fatalf("Content-Security-Policy violations: %q", v)
		}
	}

	p.phase(t, "add, change, remove", func(t *testing.T) {
		p.open("/")
		watchCSP()
		p.waitFor("an empty cart", `!document.querySelector("[data-testid=cart-empty]").hidden && document.querySelector("[data-testid=cart-checkout]").disabled`, 10*time.Second)
		add(2, 3)
		add(1, 1)
		add(3, 2)
		cartIs("three lines", 3, "$749.94") // 3 × 49.99 + 99.99 + 2 × 249.99
		setQty(2, 2)
		cartIs("product 2 down to 2", 3, "$699.95")
		eval[chromedp.Void](p, `document.querySelector('[data-testid=cart-line][data-product-id="1"] [data-testid=cart-remove]').click()`)
		cartIs("product 1 removed", 2, "$599.96")
		p.shot("cart")
		noCSPViolations()
	})

	p.phase(t, "the cart survives a reload", func(t *testing.T) {
		p.open("/")
		cartIs("the same cart after a reload", 2, "$599.96")
	})

	p.phase(t, "a line sold out between adding and checking out: nothing held, the line named", func(t *testing.T) {
		MustCall(t, "POST", base+"/restock?product_id=3&inventory=1", http.StatusOK)
		before := stockOf(t, base)
		p.click("cart-checkout")
		p.waitFor("sold out", `location.pathname.startsWith("/pay/") && !!document.querySelector("[data-testid=sold-out]")`, 30*time.Second)
		if got := eval[string](p, `document.querySelector("[data-testid=short-lines]").textContent.trim()`); got != "Widget Pro Max: 2 wanted, 1 left" {
			t.Fatalf("short lines %q", got)
		}
		p.shot("cart-sold-out")
		if after := stockOf(t, base); after[2] != before[2] || after[3] != before[3] {
			t.Fatalf("stock %v after a short cart, want %v", after, before)
		}
		p.open("/")
		cartIs("the cart kept", 2, "$599.96")
	})

	var orderID string
	p.phase(t, "check out and pay: the lines and the total on the pay and order pages; the cart empties", func(t *testing.T) {
		setQty(3, 1)
		cartIs("product 3 down to 1", 2, "$349.97")
		p.click("cart-checkout")
		p.waitFor("the pay page", `location.pathname.startsWith("/pay/") && !!document.querySelector("[data-testid=pay]")`, 30*time.Second)
		watchCSP()
		if got := eval[string](p, `document.querySelector("[data-testid=pay-amount]").textContent + " | " + document.querySelector("[data-testid=pay-items]").innerText.replace(/\s*\n\s*/g, "; ")`); got != "$349.97 | 2 × Pocket Widget; 1 × Widget Pro Max" {
			t.Fatalf("pay page: %q", got)
		}
		p.shot("cart-payment")
		p.click("pay")
		p.waitFor("the order page", `location.pathname.startsWith("/track/") && !!document.querySelector("[data-testid=order-live]")`, 30*time.Second)
		orderID = p.path()[len("/track/"):]
		if got := eval[string](p, `[...document.querySelectorAll("[data-testid=order-line]")].map(r => r.innerText.replace(/\s+/g, " ").trim()).join("; ") + " | " + document.querySelector("[data-testid=order-total]").textContent`); got != "Pocket Widget $49.99 2 $99.98; Widget Pro Max $249.99 1 $249.99 | $349.97" {
			t.Fatalf("order page: %q", got)
		}
		p.waitFor("dispatch under way", `document.querySelector("[data-testid=order-live]").dataset.remaining <= 8`, 30*time.Second)
		p.shot("cart-order")
		noCSPViolations()
		if s := stockOf(t, base); s[2] != 48 || s[3] != 0 {
			t.Fatalf("stock after the cart was paid: %v", s)
		}
		p.open("/")
		p.waitFor("an empty cart", `!document.querySelector("[data-testid=cart-empty]").hidden && document.querySelectorAll("[data-testid=cart-line]").length === 0`, 10*time.Second)
	})

	p.phase(t, "decline: every unit of every line back", func(t *testing.T) {
		before := stockOf(t, base)
		add(4, 5)
		add(2, 1)
		cartIs("two lines", 2, "$114.94") // 5 × 12.99 + 49.99
		p.click("cart-checkout")
		p.waitFor("the pay page", `location.pathname.startsWith("/pay/") && !!document.querySelector("[data-testid=decline]")`, 30*time.Second)
		if s := stockOf(t, base); s[4] != before[4]-5 || s[2] != before[2]-1 {
			t.Fatalf("stock while held: %v (before %v)", s, before)
		}
		p.click("decline")
		p.waitFor("CANCELLED", `location.pathname.startsWith("/track/") && document.querySelector("[data-testid=order-live]").dataset.status === "CANCELLED"`, 30*time.Second)
		if s := stockOf(t, base); s[4] != before[4] || s[2] != before[2] {
			t.Fatalf("stock after the decline: %v, want %v", s, before)
		}
	})
	_ = orderID
}

// TestBrowserCartCrash: the cart survives a crash of the store (it lives in
// the browser), and a cart's order crashed mid-dispatch is dispatched once,
// with its lines and total unchanged and each product's stock down by its
// line.
func TestBrowserCartCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	st := StartWith(t, NewSQLiteDB(t), Options{Supervise: true})
	base := st.Base()
	p := newBrowser(t, base)
	add := func(id, qty int) {
		eval[chromedp.Void](p, `(() => { const it = document.querySelector('[data-testid=catalog-item][data-product-id="`+strconv.Itoa(id)+`"]'); it.querySelector("[data-testid=add-qty]").value = "`+strconv.Itoa(qty)+`"; it.querySelector("[data-add-to-cart]").click(); })()`)
	}
	const cartShown = `document.querySelectorAll("[data-testid=cart-line]").length === 2 && document.querySelector("[data-testid=cart-total]").textContent === "$164.93"`
	before := stockOf(t, base)

	p.phase(t, "a cart, the store crashes, the cart is still there", func(t *testing.T) {
		p.open("/")
		add(2, 2)
		add(4, 5)
		p.waitFor("the cart", cartShown, 10*time.Second) // 2 × 49.99 + 5 × 12.99
		p.click("crash")
		p.waitFor("back online", `!!document.body.dataset.online && !document.body.classList.contains("offline")`, 30*time.Second)
		p.open("/")
		p.waitFor("the same cart after the crash", cartShown, 10*time.Second)
	})

	var orderID string
	p.phase(t, "checked out, paid, crashed mid-dispatch: dispatched once, lines unchanged", func(t *testing.T) {
		p.click("cart-checkout")
		p.waitFor("the pay page", `location.pathname.startsWith("/pay/") && !!document.querySelector("[data-testid=pay]")`, 30*time.Second)
		p.click("pay")
		p.waitFor("dispatch under way", `location.pathname.startsWith("/track/") && document.querySelector("[data-testid=order-live]").dataset.remaining <= 7`, 30*time.Second)
		orderID = p.path()[len("/track/"):]
		p.click("crash")
		p.waitFor("back online", `!!document.body.dataset.online && !document.body.classList.contains("offline")`, 30*time.Second)
		p.waitFor("DISPATCHED after the crash", `document.querySelector("[data-testid=order-live]").dataset.status === "DISPATCHED"`, 60*time.Second)
		p.checkDispatchTimeline()
		if got := eval[string](p, `[...document.querySelectorAll("[data-testid=order-line]")].map(r => r.dataset.productId + "×" + r.querySelector("[data-testid=line-qty]").textContent).join(" ") + " " + document.querySelector("[data-testid=order-total]").textContent`); got != "2×2 4×5 $164.93" {
			t.Fatalf("order page lines %q", got)
		}
		o := GetJSON[CartOrder](t, base+"/order/"+orderID)
		if o.OrderStatus != shop.StatusDispatched || *o.TotalCents != 16493 || len(o.Items) != 2 {
			t.Fatalf("order %s: %+v", orderID, o)
		}
		if after := stockOf(t, base); after[2] != before[2]-2 || after[4] != before[4]-5 || after[1] != before[1] || after[3] != before[3] {
			t.Fatalf("stock %v after the dispatch, before %v", after, before)
		}
	})
}
