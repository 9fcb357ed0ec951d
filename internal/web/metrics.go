package web

import (
	"bytes"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"widget-store/internal/metrics"
	"widget-store/internal/shop"
)

// handleProfile serves one of the process's runtime profiles, the
// operator's (requireAdmin): heap (with ?gc=1, after a garbage collection,
// so it shows what is live), goroutine, allocs, or cpu (?seconds=, 1–60,
// default 10: where the CPU went meanwhile; one at a time), in pprof's
// format, for `go tool pprof URL`. It answers where the memory of many waiting
// checkouts goes (docs/BENCHMARKS.md). A profile stops the world only for
// a moment; the goroutine profile of 100,000 waiting checkouts takes a
// second or so.
func handleProfile() handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("profile")
		if name == "cpu" {
			return cpuProfile(w, r)
		}
		if name != "heap" && name != "goroutine" && name != "allocs" {
			return shop.Errorf(shop.NotFound, "no profile %q: heap, goroutine, allocs or cpu", name)
		}
		if name == "heap" && r.URL.Query().Get("gc") == "1" {
			runtime.GC()
		}
		var buf bytes.Buffer
		if err := pprof.Lookup(name).WriteTo(&buf, 0); err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		buf.WriteTo(w) // a failed write is a client gone away: nobody to tell
		return nil
	}
}

// cpuProfile profiles the CPU for ?seconds= (default 10) and serves the
// profile.
func cpuProfile(w http.ResponseWriter, r *http.Request) error {
	seconds := 10
	if v := r.URL.Query().Get("seconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 60 {
			return shop.Errorf(shop.Invalid, "seconds=%q: want a whole number from 1 to 60", v)
		}
		seconds = n
	}
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return shop.Errorf(shop.Conflict, "a CPU profile is already being taken: %v", err)
	}
	t := time.NewTimer(time.Duration(seconds) * time.Second)
	select {
	case <-t.C:
	case <-r.Context().Done():
		t.Stop()
	}
	pprof.StopCPUProfile()
	w.Header().Set("Content-Type", "application/octet-stream")
	buf.WriteTo(w) // a failed write is a client gone away: nobody to tell
	return nil
}

// handleMetrics serves the process's own registry in Prometheus's format.
func handleMetrics(logger *slog.Logger, m *metrics.Metrics) http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		ErrorLog:      promLogger{logger},
		ErrorHandling: promhttp.ContinueOnError, // serve what could be gathered
	})
}

// promLogger passes the metrics handler's gathering errors to the logger.
type promLogger struct{ logger *slog.Logger }

func (l promLogger) Println(v ...any) { l.logger.Error("metrics", "err", v) }

// observeHTTP times every request under the route pattern the mux matched
// (r.Pattern, set on the request by ServeMux), so /order/1 and /order/2 are one
// series. Requests no route matched are "unmatched".
func observeHTTP(m *metrics.Metrics, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.Request(route, methodLabel(r.Method), sw.status, time.Since(began))
	})
}

// statusWriter remembers the status code written. Unwrap lets
// http.ResponseController reach the real writer (flush, deadlines).
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// methodLabel is the request's method as a metric label: one of the methods
// the router knows, or "other". The label set stays fixed whatever methods
// clients make up (each new value would be a new series, kept until the
// process exits, and the method token is as long as a client likes). The
// route label is already fixed (a declared pattern, or "unmatched"), and so
// is the status code, which the server writes.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}
