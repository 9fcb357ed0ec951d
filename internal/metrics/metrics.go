// Package metrics holds the store's Prometheus metrics. They live in a
// registry of their own (never the client library's global one), so several
// stores in one test process do not collide; internal/web serves the
// registry at /metrics and times every request.
//
// Counters count what THIS process executed. A step's function runs only when
// DBOS has no checkpoint for it, so a checkout recovered or taken over by
// another instance is not counted twice; sum over instances for the store's
// totals. (A step that runs and is then rolled back, e.g. fenced off because
// another instance took its workflow, is counted where it ran: rare.)
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"widget-store/internal/critpath"
)

// Metrics are one store process's metrics.
type Metrics struct {
	Registry   *prometheus.Registry
	checkouts  *prometheus.CounterVec
	recovered  prometheus.Counter
	takenOver  prometheus.Counter
	peersTaken prometheus.Counter
	heartbeats *prometheus.CounterVec
	steps      *prometheus.HistogramVec
	requests   *prometheus.HistogramVec
	statements prometheus.Counter
	critical   map[string]*prometheus.CounterVec // widget_critical_path_*, by what they count
	awaiting   *prometheus.GaugeVec
	legs       prometheus.Counter
	legBatches prometheus.Counter
	atGate     prometheus.Gauge
}

// Checkout outcomes, the values of the "outcome" label.
const (
	CheckoutStarted  = "started"   // a unit was reserved and the order created
	CheckoutSoldOut  = "sold_out"  // no unit left: no order
	CheckoutPaid     = "paid"      // the order was marked PAID
	CheckoutDeclined = "declined"  // the payment failed: order cancelled
	CheckoutTimedOut = "timed_out" // no payment in PAYMENT_TIMEOUT: order cancelled
)

// New makes the metrics, registered in a registry of their own with the Go
// runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
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
		statements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "widget_db_round_trips_total",
			Help: "Statements the store's pool (DBOS's work included) sent to Postgres, one round trip each; 0 on SQLite.",
		}),
		atGate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "widget_checkouts_at_recovery_gate",
			Help: "Checkouts this process did not start (recovered, taken over, resumed) waiting for a slot of the recovery gate before they replay " +
				"(internal/paywait). After a restart its rise is DBOS starting the recovered workflows; its fall, their replay.",
		}),
		awaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "widget_checkouts_awaiting_payment",
			Help: "Checkouts of this process waiting for their payment now, by execution: new (the order was created by this very execution) " +
				"or replayed (recovered at start, taken over from a peer, or resumed by an operator). After a restart, replayed reaching " +
				"the number of checkouts that were waiting says recovery is done.",
		}, []string{"execution"}),
		legs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "widget_dispatch_legs_batched_total",
			Help: "Dispatch legs this process wrote in batches (internal/legs); with widget_dispatch_leg_batches_total, the legs per commit.",
		}),
		legBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "widget_dispatch_leg_batches_total",
			Help: "Batches of dispatch legs this process wrote, one statement and one commit each.",
		}),
	}
	m.critical = map[string]*prometheus.CounterVec{}
	for what, help := range map[string]string{
		"requests":     "Requests whose critical path was counted, by kind (checkout: arrival → payment id; webhook: arrival → order id).",
		"statements":   "Statements sent to the database (BEGIN and COMMIT included; DBOS's too) on behalf of a request between its arrival and its answer, by kind (internal/critpath).",
		"commits":      "Transactions that wrote and committed between a request's arrival and its answer, by kind.",
		"waits":        "Waits for the database between a request's arrival and its answer (SQLite: the process's write lock; Postgres: a connection of the pool), by kind.",
		"wait_seconds": "Time spent in those waits, by kind.",
	} {
		m.critical[what] = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "widget_critical_path_" + what + "_total", Help: help}, []string{"kind"})
		m.Registry.MustRegister(m.critical[what])
		for _, kind := range []string{critpath.Checkout, critpath.Webhook} {
			m.critical[what].WithLabelValues(kind) // at zero from the start
		}
	}
	m.Registry.MustRegister(m.checkouts, m.recovered, m.takenOver, m.peersTaken, m.heartbeats, m.steps, m.requests, m.statements, m.awaiting, m.legs, m.legBatches, m.atGate,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Show every outcome from the start, at zero, so a rate() has a series.
	for _, o := range []string{CheckoutStarted, CheckoutSoldOut, CheckoutPaid, CheckoutDeclined, CheckoutTimedOut} {
		m.checkouts.WithLabelValues(o)
	}
	m.heartbeats.WithLabelValues("ok")
	m.heartbeats.WithLabelValues("error")
	m.awaiting.WithLabelValues("new")
	m.awaiting.WithLabelValues("replayed")
	return m
}

// LegBatch counts one batch of n dispatch legs written (internal/legs).
func (m *Metrics) LegBatch(n int) {
	m.legs.Add(float64(n))
	m.legBatches.Inc()
}

// Checkout counts one checkout transition (one of the Checkout* outcomes).
func (m *Metrics) Checkout(outcome string) { m.checkouts.WithLabelValues(outcome).Inc() }

// Step records how long a step's work took; use as
// defer m.Step("checkout", "reserve", time.Now()).
func (m *Metrics) Step(workflow, step string, began time.Time) {
	m.steps.WithLabelValues(workflow, step).Observe(time.Since(began).Seconds())
}

// Recovered counts workflows found PENDING at start, handed to DBOS recovery.
func (m *Metrics) Recovered(n int) { m.recovered.Add(float64(n)) }

// TookOver counts one claimed peer and the n workflows resumed from it.
func (m *Metrics) TookOver(n int) {
	m.peersTaken.Inc()
	m.takenOver.Add(float64(n))
}

// Heartbeat counts one heartbeat write.
func (m *Metrics) Heartbeat(ok bool) {
	if ok {
		m.heartbeats.WithLabelValues("ok").Inc()
		return
	}
	m.heartbeats.WithLabelValues("error").Inc()
}

// Request records one HTTP request under its route pattern.
func (m *Metrics) Request(route, method string, code int, took time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(code)).Observe(took.Seconds())
}

// RoundTrip counts one statement sent to Postgres.
func (m *Metrics) RoundTrip() { m.statements.Inc() }

// CriticalPath adds one request's critical path (internal/critpath) to the
// counts of its kind.
func (m *Metrics) CriticalPath(kind string, c critpath.Counts) {
	m.critical["requests"].WithLabelValues(kind).Inc()
	m.critical["statements"].WithLabelValues(kind).Add(float64(c.Statements))
	m.critical["commits"].WithLabelValues(kind).Add(float64(c.Commits))
	m.critical["waits"].WithLabelValues(kind).Add(float64(c.Waits))
	m.critical["wait_seconds"].WithLabelValues(kind).Add(c.Waited.Seconds())
}

// AtGate counts a checkout waiting at the recovery gate until done.
func (m *Metrics) AtGate() (done func()) {
	m.atGate.Inc()
	return m.atGate.Dec
}

// Awaiting counts one checkout now waiting for its payment (replayed: this
// execution did not create the order); call the returned function when it
// stops waiting.
func (m *Metrics) Awaiting(replayed bool) (done func()) {
	g := m.awaiting.WithLabelValues("new")
	if replayed {
		g = m.awaiting.WithLabelValues("replayed")
	}
	g.Inc()
	return g.Dec
}
