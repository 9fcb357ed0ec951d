package web

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"widget-store/internal/store"
)

// TestNoRoomToWriteIs503: while the database has no room, a write request
// is answered 503 with Retry-After and the no-space message before its
// handler runs, a read still runs, and a write that failed for lack of room
// inside a handler gets the same answer.
func TestNoRoomToWriteIs503(t *testing.T) {
	full := &store.NoSpaceError{Path: "/data/store.db", Detail: "0 KiB free on its filesystem"}
	room := error(full)
	ran := 0
	rs := responder{logger: slog.New(slog.DiscardHandler), roomToWrite: func() error { return room }}
	h := rs.handle(func(w http.ResponseWriter, r *http.Request) error {
		ran++
		return writeText(w, http.StatusOK, "ok")
	})
	want503 := func(t *testing.T, rec *httptest.ResponseRecorder) {
		t.Helper()
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "the store cannot write right now") {
			t.Fatalf("%d, Retry-After %q, %q; want 503 with Retry-After saying the store cannot write right now", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
	}

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/checkout/k1", nil))
	want503(t, rec)
	if ran != 0 {
		t.Fatal("the handler of a write ran with no room to write")
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/product", nil))
	if rec.Code != http.StatusOK || ran != 1 {
		t.Fatalf("a read with no room to write: %d (handler ran %d times), want 200", rec.Code, ran)
	}
	room = nil
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/checkout/k1", nil))
	if rec.Code != http.StatusOK || ran != 2 {
		t.Fatalf("a write with room again: %d (handler ran %d times), want 200", rec.Code, ran)
	}

	rec, _ = serve(t, failWith(fmt.Errorf("checkout: %w", full)), httptest.NewRequest("POST", "/checkout/k2", nil))
	want503(t, rec)
}

// TestRoomToWriteAskedOncePerRequest: the body limit in front of every route
// goes through the same error adapter as the route's handler; only the
// handler asks whether there is room (a statfs on SQLite), so a write
// request asks once, and a full disk still answers it 503 before the
// handler runs.
func TestRoomToWriteAskedOncePerRequest(t *testing.T) {
	asked, ran := 0, 0
	var room error
	rs := responder{logger: slog.New(slog.DiscardHandler), roomToWrite: func() error { asked++; return room }}
	h := limitBody(rs, rs.handle(func(w http.ResponseWriter, r *http.Request) error {
		ran++
		return writeText(w, http.StatusOK, "ok")
	}), maxBodyBytes)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/checkout/k1", nil))
	if rec.Code != http.StatusOK || ran != 1 || asked != 1 {
		t.Fatalf("a write request: %d, handler ran %d times, room asked %d times; want 200, 1, 1", rec.Code, ran, asked)
	}
	room = &store.NoSpaceError{Path: "/data/store.db", Detail: "0 KiB free on its filesystem"}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/checkout/k2", nil))
	if rec.Code != http.StatusServiceUnavailable || ran != 1 || asked != 2 {
		t.Fatalf("a write request on a full disk: %d, handler ran %d times in all, room asked %d times in all; want 503, 1, 2", rec.Code, ran, asked)
	}
}
