package web

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	"widget-store/internal/shop"
	"widget-store/internal/store"
)

// The JSON lists (GET /orders, GET /late_payments) come in pages:
//
//	GET /orders?limit=N&after=CURSOR
//
// limit is the page size, defaultPageSize when absent, 1 to maxPageSize.
// after is the opaque cursor of the previous page's last row (absent: from
// the start). Every page but the last carries
//
//	Link: </orders?limit=N&after=CURSOR>; rel="next"
//
// and the last page carries no Link: a client follows Link until there is
// none. A cursor is base64url (no padding) of "<list>:<position>", e.g.
// "orders:42" or "late_payments:1767225600000:k-3f2a"; clients must not build
// or read them (the format may change), and a cursor the store did not make
// (or made for the other list) is a 400, as is a limit out of range.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// parsePage reads ?limit= and ?after= for list ("orders", "late_payments"),
// whose positions parsePos reads; after is nil for the first page. Any
// mistake is a shop.Invalid error.
func parsePage[P any](r *http.Request, list string, parsePos func(string) (P, bool)) (limit int, after *P, err error) {
	q := r.URL.Query()
	limit = defaultPageSize
	if vs, ok := q["limit"]; ok {
		if len(vs) != 1 {
			return 0, nil, shop.Errorf(shop.Invalid, "limit given %d times: give it once", len(vs))
		}
		n, err := strconv.Atoi(vs[0])
		if err != nil || n < 1 || n > maxPageSize {
			return 0, nil, shop.Errorf(shop.Invalid, "limit must be a whole number from 1 to %d (got %.40q)", maxPageSize, vs[0])
		}
		limit = n
	}
	if vs, ok := q["after"]; ok {
		if len(vs) != 1 {
			return 0, nil, shop.Errorf(shop.Invalid, "after given %d times: give it once", len(vs))
		}
		text, ok := decodeCursor(list, vs[0])
		if !ok {
			return 0, nil, badCursor(vs[0])
		}
		pos, ok := parsePos(text)
		if !ok {
			return 0, nil, badCursor(vs[0])
		}
		after = &pos
	}
	return limit, after, nil
}

func badCursor(c string) error {
	return shop.Errorf(shop.Invalid, "after must be a cursor from this list's Link header (got %.60q)", c)
}

// encodeCursor is the cursor of position pos in list.
func encodeCursor(list, pos string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(list + ":" + pos))
}

// decodeCursor returns the position a cursor of list holds. Only the
// canonical encoding is accepted (it must re-encode to itself), so one
// position has one cursor.
func decodeCursor(list, c string) (pos string, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", false
	}
	pos, ok = strings.CutPrefix(string(b), list+":")
	if !ok || pos == "" || encodeCursor(list, pos) != c {
		return "", false
	}
	return pos, true
}

// setNextLink announces the page after the one being answered.
func setNextLink(w http.ResponseWriter, path string, limit int, cursor string) {
	// A cursor is base64url: nothing in it needs escaping in a query.
	w.Header().Set("Link", "<"+path+"?limit="+strconv.Itoa(limit)+"&after="+cursor+`>; rel="next"`)
}

// orderCursorPos parses an order position: a positive order id in its
// canonical decimal form.
func orderCursorPos(pos string) (int64, bool) {
	id, err := strconv.ParseInt(pos, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != pos {
		return 0, false
	}
	return id, true
}

func orderCursor(id int64) string { return encodeCursor("orders", strconv.FormatInt(id, 10)) }

// latePaymentCursorPos parses a late payment position: "<received_at
// ms>:<payment id>" (a payment id may itself contain ':').
func latePaymentCursorPos(pos string) (store.LatePaymentPos, bool) {
	ms, pid, ok := strings.Cut(pos, ":")
	if !ok {
		return store.LatePaymentPos{}, false
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || strconv.FormatInt(n, 10) != ms || shop.ValidateKey("payment id", pid) != nil {
		return store.LatePaymentPos{}, false
	}
	return store.LatePaymentPos{ReceivedAtMs: n, PaymentID: pid}, true
}

func latePaymentCursor(p store.LatePaymentPos) string {
	return encodeCursor("late_payments", strconv.FormatInt(p.ReceivedAtMs, 10)+":"+p.PaymentID)
}
