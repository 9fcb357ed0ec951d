package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/a-h/templ"

	"widget-store/internal/shop"
	"widget-store/internal/store"
	"widget-store/views"
)

// handlerFunc is a handler that returns its error instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// responder answers failed requests: it logs the server's own failures and
// knows the page frame the HTML error page is drawn in.
type responder struct {
	logger *slog.Logger
	page   views.PageInfo
	// roomToWrite, when set, is store.DB.RoomToWrite: while it reports an
	// error, every write request is answered 503 before its handler runs
	// (health.go).
	roomToWrite func() error
}

// internalMessage is all a client learns of the server's own failures.
const internalMessage = "internal error; it has been logged"

// kindStatus is the HTTP status of each kind of shop error; ok is false for
// a kind it does not know.
func kindStatus(k shop.Kind) (status int, ok bool) {
	switch k {
	case shop.NotFound:
		return http.StatusNotFound, true
	case shop.Conflict:
		return http.StatusConflict, true
	case shop.Invalid:
		return http.StatusBadRequest, true
	case shop.Busy:
		return http.StatusServiceUnavailable, true
	case shop.Unauthorized:
		return http.StatusUnauthorized, true
	case shop.TooMany:
		return http.StatusTooManyRequests, true
	}
	return 0, false
}

// statusOf maps an error to the status and message the client gets. An error
// it does not recognise is the server's own failure.
func statusOf(err error) (status int, msg string) {
	var se *shop.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &se):
		if s, ok := kindStatus(se.Kind); ok {
			return s, se.Message
		}
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit)
	case store.IsNoSpace(err): // health.go
		return http.StatusServiceUnavailable, noSpaceMessage
	case store.IsUnavailable(err): // health.go
		return http.StatusServiceUnavailable, unavailableMessage
	}
	return http.StatusInternalServerError, internalMessage
}

// handle is the one adapter from handlerFunc to http.Handler: it maps errors
// to status codes (statusOf), answers in JSON or HTML as the client prefers,
// and logs only the server's own failures (5xx). A write request that comes
// while the database has no room (roomToWrite) is refused before h runs.
func (rs responder) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := rs.refuseWrite(r)
		if err == nil {
			err = h(w, r)
		}
		if err == nil {
			return
		}
		status, msg := statusOf(err)
		if status == http.StatusInternalServerError && errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			return // the client went away; nobody to answer
		}
		switch {
		case store.IsNoSpace(err): // expected until room comes back, and said by /healthz
			rs.logger.Warn("request refused: no room to write", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
		case store.IsUnavailable(err): // a failover: expected for seconds, and said by /healthz
			rs.logger.Warn("request failed: no writable database", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
		case status >= 500:
			rs.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
		}
		if status == http.StatusServiceUnavailable {
			setRetryHeaders(w, r, wantsHTML(r))
		}
		var se *shop.Error
		if errors.As(err, &se) && se.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(max(se.RetryAfter, time.Second).Round(time.Second)/time.Second)))
		}
		if wantsHTML(r) {
			var buf bytes.Buffer
			if rerr := views.ErrorPage(rs.page, status, msg).Render(r.Context(), &buf); rerr == nil {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(status)
				_, _ = w.Write(buf.Bytes()) // a failed write means the client left: nobody to tell
				return
			}
			// The error page itself failed to render: answer in JSON below.
		}
		// A map of strings always marshals, so only the write can fail, and
		// that means the client left: nobody to tell.
		_ = writeJSON(w, status, map[string]string{"error": msg})
	})
}

// refuseWrite is the reason not to start a write request now: no room for
// the database (health.go). Reads (GET, HEAD, OPTIONS) always go ahead.
func (rs responder) refuseWrite(r *http.Request) error {
	if rs.roomToWrite == nil {
		return nil
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	return rs.roomToWrite()
}

// wantsHTML tells a browser navigation (or htmx) from an API client.
func wantsHTML(r *http.Request) bool {
	if r.Header.Get("HX-Request") != "" {
		return true
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

func writeText(w http.ResponseWriter, status int, s string) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write([]byte(s))
	return err
}

// render renders a component to a buffer first, so a failure mid-page becomes
// a clean error response rather than half a page.
func render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) error {
	var buf bytes.Buffer
	if err := c.Render(r.Context(), &buf); err != nil {
		return fmt.Errorf("render: %w", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// parseForm reads the query and a urlencoded or multipart body, and reports
// an oversized (413) or unreadable (400) body instead of dropping it the way
// r.FormValue does: a form cut short must not be taken for an empty one.
//
// ParseForm comes first because ParseMultipartForm discards its error when
// the body is not multipart.
func parseForm(r *http.Request) error {
	err := r.ParseForm()
	if err == nil {
		err = r.ParseMultipartForm(maxBodyBytes)
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil, errors.Is(err, http.ErrNotMultipart):
		return nil
	case errors.As(err, &mbe):
		return err
	default:
		return shop.Errorf(shop.Invalid, "could not read the form: %v", err)
	}
}
