package storetest

import (
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The operator's Retry button, clicked in a real browser: a refund the
// provider refused is listed under "Needs attention"; once the provider is
// back, Retry refunds it and the list empties.
func TestBrowserOperatorRetriesARefusedRefund(t *testing.T) {
	prov := newTestProvider(t, providerRefuses)
	db := NewSQLiteDB(t)
	st := startBehind(t, db, prov)
	base := st.Base()
	p := newBrowser(t, base)

	pay := declineThenPay(t, base)
	late, ok := latePayment(t, base, pay.Key)
	if !ok {
		t.Fatalf("the late payment %s is not listed", pay.Key)
	}
	row := `[data-attention-order-id="` + strconv.FormatInt(late.OrderID, 10) + `"]`
	p.open("/")
	p.phase(t, "the refused refund is listed, with Retry and without Cancel", func(t *testing.T) {
		p.waitFor("the attention entry", `document.querySelector('`+row+` [data-testid=attention-retry]') !== null`, 20*time.Second)
		if eval[bool](p, `document.querySelector('`+row+` [data-testid=attention-cancel]') !== null`) {
			t.Error("a late payment's entry offers Cancel: there is no order left to cancel")
		}
		p.shot("needs-attention")
	})
	p.phase(t, "Retry, with the provider back: refunded once, the list empties", func(t *testing.T) {
		prov.mode.Store(providerUp)
		sel := row + ` [data-testid=attention-retry]`
		// Clicked from the page's own script, in one task: the panel is
		// swapped in anew every second, and a click dispatched by the
		// driver between finding the button and pressing it can land on a
		// button the swap has just detached (seen once under load: the
		// request never went, the entry stayed).
		p.do("see Retry", chromedp.WaitVisible(sel))
		eval[chromedp.Void](p, `document.querySelector('`+sel+`').click(); void 0`)
		p.waitFor("the entry gone", `document.querySelector('`+row+`') === null && document.querySelector('[data-refund-order-id="`+strconv.FormatInt(late.OrderID, 10)+`"]')?.textContent.includes('refunded')`, 30*time.Second)
		waitRefunded(t, base, pay.Key, 10*time.Second)
		if got := providerRefunds(t, db, pay.Key); len(got) != 1 {
			t.Errorf("provider refunds of %s: %v, want exactly one", pay.Key, got)
		}
	})
}
