package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"widget-store/internal/shop"
)

// serve runs h through the error adapter for one request and returns the
// recorded answer and what was logged.
func serve(t *testing.T, h handlerFunc, req *http.Request) (*httptest.ResponseRecorder, string) {
	t.Helper()
	var log bytes.Buffer
	rs := responder{logger: slog.New(slog.NewTextHandler(&log, nil))}
	rec := httptest.NewRecorder()
	rs.handle(h).ServeHTTP(rec, req)
	return rec, log.String()
}

func failWith(err error) handlerFunc {
	return func(http.ResponseWriter, *http.Request) error { return err }
}

func TestErrorAdapterStatuses(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
		msg    string
		logged bool
	}{
		{"not found", shop.Errorf(shop.NotFound, "there is no order %d", 7), http.StatusNotFound, "there is no order 7", false},
		{"conflict", shop.Errorf(shop.Conflict, "sold out"), http.StatusConflict, "sold out", false},
		{"invalid", shop.Errorf(shop.Invalid, "bad key"), http.StatusBadRequest, "bad key", false},
		{"busy", shop.Errorf(shop.Busy, "still starting"), http.StatusServiceUnavailable, "still starting", true},
		{"unauthorized", shop.Errorf(shop.Unauthorized, "wrong admin token"), http.StatusUnauthorized, "wrong admin token", false},
		{"wrapped kind", fmt.Errorf("pay: %w", shop.Errorf(shop.NotFound, "unknown payment id x")), http.StatusNotFound, "unknown payment id x", false},
		{"unknown kind", shop.Errorf("weird", "secret detail"), http.StatusInternalServerError, internalMessage, true},
		{"body too large", fmt.Errorf("read: %w", &http.MaxBytesError{Limit: maxBodyBytes}), http.StatusRequestEntityTooLarge, "request body larger than 65536 bytes", false},
		{"plain error", errors.New("database is on fire"), http.StatusInternalServerError, internalMessage, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, log := serve(t, failWith(tc.err), httptest.NewRequest("GET", "/x", nil))
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if want := fmt.Sprintf("{\"error\":%q}\n", tc.msg); rec.Body.String() != want {
				t.Errorf("body %q, want %q", rec.Body.String(), want)
			}
			if got := strings.Contains(log, "request failed"); got != tc.logged {
				t.Errorf("logged %v, want %v (log %q)", got, tc.logged, log)
			}
			if tc.logged && !strings.Contains(log, tc.err.Error()) {
				t.Errorf("log %q does not name the error %q", log, tc.err)
			}
		})
	}
}

func TestErrorAdapterSuccessWritesNothing(t *testing.T) {
	rec, log := serve(t, func(w http.ResponseWriter, _ *http.Request) error {
		return writeText(w, http.StatusOK, "fine")
	}, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "fine" || log != "" {
		t.Errorf("got %d %q, log %q; want 200 \"fine\" and no log", rec.Code, rec.Body.String(), log)
	}
}

func TestErrorAdapterClientGone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest("GET", "/x", nil).WithContext(ctx)
	rec, log := serve(t, failWith(fmt.Errorf("query: %w", context.Canceled)), req)
	if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" || log != "" {
		t.Errorf("answered a gone client: %d %q, log %q", rec.Code, rec.Body.String(), log)
	}

	// The same error while the client is still there is the server's own.
	rec, _ = serve(t, failWith(fmt.Errorf("query: %w", context.Canceled)), httptest.NewRequest("GET", "/x", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("canceled with the client present: %d, want 500", rec.Code)
	}
}

func TestErrorAdapterHTML(t *testing.T) {
	for _, h := range []map[string]string{{"HX-Request": "true"}, {"Accept": "text/html,application/xhtml+xml"}} {
		req := httptest.NewRequest("GET", "/x", nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		rec, _ := serve(t, failWith(shop.Errorf(shop.NotFound, "there is no order 7")), req)
		if rec.Code != http.StatusNotFound {
			t.Errorf("%v: status %d, want 404", h, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("%v: Content-Type %q, want HTML", h, ct)
		}
		if !strings.Contains(rec.Body.String(), `data-testid="error-message">There is no order 7<`) { // the page makes it a sentence
			t.Errorf("%v: the error page does not show the message: %q", h, rec.Body.String())
		}
	}
}

func TestLimitBodyRefusesDeclaredOversizedBody(t *testing.T) {
	called := false
	inner := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })
	rs := responder{logger: slog.New(slog.DiscardHandler)}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/buy", strings.NewReader(strings.Repeat("k", 11)))
	limitBody(rs, inner, 10).ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge || called {
		t.Errorf("status %d, handler called %v; want 413 before the handler", rec.Code, called)
	}
}
