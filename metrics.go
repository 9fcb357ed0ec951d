package main

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are this process's Prometheus metrics, served at /metrics. They
// live in a registry of their own on the app (never the client library's
// global one), so several apps in one test process do not collide.
//
// Counters count what THIS process executed. A step's function runs only when
// DBOS has no checkpoint for it, so a checkout recovered or taken over by
// another instance is not counted twice; sum over instances for the store's
// totals. (A step that runs and is then rolled back, e.g. fenced off because
// another instance took its workflow, is counted where it ran: rare.)
type metrics struct {
	reg        *prometheus.Registry
	checkouts  *prometheus.CounterVec
	recovered  prometheus.Counter
	takenOver  prometheus.Counter
	peersTaken prometheus.Counter
	heartbeats *prometheus.CounterVec
	steps      *prometheus.HistogramVec
	requests   *prometheus.HistogramVec
}

// Checkout outcomes, the values of the "outcome" label.
const (
	checkoutStarted  = "started"   // a unit was reserved and the order created
	checkoutSoldOut  = "sold_out"  // no unit left: no order
	checkoutPaid     = "paid"      // the order was marked PAID
	checkoutDeclined = "declined"  // the payment failed: order cancelled
	checkoutTimedOut = "timed_out" // no payment in PAYMENT_TIMEOUT: order cancelled
)

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		checkouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "widget_checkouts_total",
			Help: "Checkout transitions executed by this instance, by outcome (started, sold_out, paid, declined, timed_out).",
		}, []string{"outcome"}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "widget_workflows_recovered_total",
			Help: "Workflows of this instance's own executor ID found PENDING at start and handed to DBOS recovery.",
		}),
		takenOver: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "widget_workflows_taken_over_total",
			Help: "PENDING workflows of dead peer instances this instance claimed and resumed.",
		}),
		peersTaken: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "widget_peers_taken_over_total",
			Help: "Dead peer instances this instance claimed (one claim per silence, whoever wins it).",
		}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "widget_heartbeats_total",
			Help: "Heartbeats this instance wrote to the instances table, by result (ok, error).",
		}, []string{"result"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "widget_step_duration_seconds",
			Help: "Time spent in a workflow step's own work: the SQL of a transactional step " +
				"(BEGIN, DBOS's checkpoint and COMMIT excluded), or the wait for the payment.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"workflow", "step"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "widget_http_request_duration_seconds",
			Help:    "HTTP requests by route pattern (as declared in addRoutes), method and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method", "code"}),
	}
	m.reg.MustRegister(m.checkouts, m.recovered, m.takenOver, m.peersTaken, m.heartbeats, m.steps, m.requests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Show every outcome from the start, at zero, so a rate() has a series.
	for _, o := range []string{checkoutStarted, checkoutSoldOut, checkoutPaid, checkoutDeclined, checkoutTimedOut} {
		m.checkouts.WithLabelValues(o)
	}
	m.heartbeats.WithLabelValues("ok")
	m.heartbeats.WithLabelValues("error")
	return m
}

// checkout counts one checkout transition.
func (m *metrics) checkout(outcome string) { m.checkouts.WithLabelValues(outcome).Inc() }

// cancelOutcome names why checkout cancels an order, from the payment status.
func cancelOutcome(paymentStatus string) string {
	if paymentStatus == paymentTimedOut {
		return checkoutTimedOut
	}
	return checkoutDeclined
}

// step records how long a step's work took; use as
// defer a.metrics.step("checkout", "reserve", time.Now()).
func (m *metrics) step(workflow, step string, began time.Time) {
	m.steps.WithLabelValues(workflow, step).Observe(time.Since(began).Seconds())
}

func handleMetrics(a *app) http.Handler {
	return promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{a},
		ErrorHandling: promhttp.ContinueOnError, // serve what could be gathered
	})
}

// promLogger passes the metrics handler's gathering errors to the app's logger.
type promLogger struct{ a *app }

func (l promLogger) Println(v ...any) { l.a.logger.Error("metrics", "err", v) }

// observeHTTP times every request under the route pattern the mux matched
// (r.Pattern, set on the request by ServeMux), so /order/1 and /order/2 are one
// series. Requests no route matched are "unmatched".
func (a *app) observeHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		a.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.status)).Observe(time.Since(began).Seconds())
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
