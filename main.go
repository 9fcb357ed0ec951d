// Command widget-store is an online store whose checkout survives any crash.
//
// Every purchase runs as a durable DBOS workflow (workflow.go, steps.go): kill
// the process at any instant and, on restart, each checkout and dispatch in
// flight resumes from its last completed step. This file reads the
// configuration and wires the parts together; the parts live in internal/.
// See README.md.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/jackc/pgx/v5"

	"widget-store/internal/checkout"
	"widget-store/internal/cluster"
	"widget-store/internal/crashpoint"
	"widget-store/internal/critpath"
	"widget-store/internal/durable"
	"widget-store/internal/legs"
	"widget-store/internal/metrics"
	"widget-store/internal/payment"
	"widget-store/internal/paywait"
	"widget-store/internal/provider"
	"widget-store/internal/reconcile"
	"widget-store/internal/retention"
	"widget-store/internal/shop"
	"widget-store/internal/store"
	"widget-store/internal/supervisor"
	"widget-store/internal/timeline"
	"widget-store/internal/web"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "widget-store: %s\n", err)
		var ee supervisor.ExitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		os.Exit(supervisor.ExitConfig)
	}
}

// appName is the DBOS application name; instances sharing a database share it.
const appName = "widget-store"

//go:embed schema.sql
var schemaSQL string

// config is everything the store reads from flags and the environment.
// Flags mirror the environment variables and win over them.
type config struct {
	Port           string           // PORT: TCP port to listen on (0 picks a free one)
	DatabaseURL    string           // DATABASE_URL: sqlite:PATH or postgres://…
	ExecutorID     string           // EXECUTOR_ID: this process's identity for DBOS recovery
	Supervise      bool             // SUPERVISE: run the store as a restarted child process
	LogFormat      string           // LOG_FORMAT: text or json
	LogLevel       slog.Level       // LOG_LEVEL: debug, info, warn, error
	PayTimeout     time.Duration    // PAYMENT_TIMEOUT: how long checkout waits for the payment webhook
	WebhookKey     string           // PAYMENT_WEBHOOK_SECRET: require signed webhooks when set
	AdminToken     string           // ADMIN_TOKEN: the operator's token; set, the store is hardened
	TakeoverAfter  time.Duration    // TAKEOVER_AFTER: resume the workflows of a peer silent this long (Postgres; 0 off)
	SQLiteSync     store.SQLiteSync // SQLITE_SYNCHRONOUS: normal or full
	ReconcileEvery time.Duration    // RECONCILE_EVERY: how often orders no workflow will finish are looked for
	Retention      time.Duration    // RETENTION: delete DBOS's records of purchases finished this long ago (0: keep them)
	// ListenAddr is LISTEN_ADDR, host:port to listen on. Unset: 127.0.0.1
	// and PORT in demo mode (no ADMIN_TOKEN: crash and restock are open to
	// whoever reaches the store, so only this machine may), every interface
	// and PORT once ADMIN_TOKEN is set.
	ListenAddr string
	// HoldLimit is HOLD_LIMIT, the unpaid checkouts one client address or
	// browser session may hold at once with ADMIN_TOKEN set (0: no limit).
	HoldLimit int
	// TrustedProxies is TRUSTED_PROXIES: the reverse proxies whose
	// X-Forwarded-For names the client, for the hold limit.
	TrustedProxies []netip.Prefix
	// Payment is the payment provider's: PAYMENT_PROVIDER, PROVIDER_URL,
	// STRIPE_*, PUBLIC_URL (internal/provider, Config).
	Payment provider.Config

	// CrashAt is CRASH_AT, "workflow:step": exit right after that step
	// commits (tests; internal/crashpoint).
	CrashAt crashpoint.Point

	// pgTracer, when set (benchmarks only, never from the environment),
	// sees every Postgres statement the store sends: bench_test.go counts them.
	pgTracer pgx.QueryTracer
}

// defaultPaymentTimeout is the durable window a shopper has to pay.
const defaultPaymentTimeout = 120 * time.Second

// defaultHoldLimit is HOLD_LIMIT's default: enough for any real buyer, far
// too few to empty the shelf.
const defaultHoldLimit = 20

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	hostname, err := os.Hostname()
	if err != nil || hostname == "" {
		hostname = "local"
	}
	var cfg config
	var supervise, payTimeout, logLevel, takeoverAfter, crashAt, reconcileEvery, retain, holdLimit, trustedProxies, sqliteSync string
	fs := flag.NewFlagSet("widget-store", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Port, "port", env("PORT", "8080"), "TCP port to listen on (env PORT)")
	fs.StringVar(&cfg.ListenAddr, "listen-addr", env("LISTEN_ADDR", ""), "host:port to listen on, such as :8080; default 127.0.0.1:PORT without ADMIN_TOKEN, :PORT with it (env LISTEN_ADDR)")
	fs.StringVar(&holdLimit, "hold-limit", env("HOLD_LIMIT", strconv.Itoa(defaultHoldLimit)), "with ADMIN_TOKEN set: unpaid checkouts one client address or browser may hold at once; 0 for no limit (env HOLD_LIMIT)")
	fs.StringVar(&trustedProxies, "trusted-proxies", env("TRUSTED_PROXIES", ""), "comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For names the client (env TRUSTED_PROXIES)")
	fs.StringVar(&cfg.DatabaseURL, "database-url", env("DATABASE_URL", "sqlite:widget-store.db"), "sqlite:PATH or postgres://… (env DATABASE_URL)")
	fs.StringVar(&cfg.ExecutorID, "executor-id", env("EXECUTOR_ID", hostname), "unique name of this instance for workflow recovery (env EXECUTOR_ID)")
	fs.StringVar(&supervise, "supervise", env("SUPERVISE", "1"), "1: restart the store when it crashes; 0: run it directly (env SUPERVISE)")
	fs.StringVar(&cfg.LogFormat, "log-format", env("LOG_FORMAT", "text"), "text or json (env LOG_FORMAT)")
	fs.StringVar(&logLevel, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	fs.StringVar(&payTimeout, "payment-timeout", env("PAYMENT_TIMEOUT", defaultPaymentTimeout.String()), "how long a checkout waits for payment (env PAYMENT_TIMEOUT)")
	fs.StringVar(&crashAt, "crash-at", env("CRASH_AT", ""), "testing: exit right after the named step of a workflow commits, such as checkout:settle (env CRASH_AT)")
	fs.StringVar(&takeoverAfter, "takeover-after", env("TAKEOVER_AFTER", cluster.DefaultTakeoverAfter.String()), "resume the workflows of a peer instance silent this long; 0: never (env TAKEOVER_AFTER)")
	fs.StringVar(&sqliteSync, "sqlite-synchronous", env("SQLITE_SYNCHRONOUS", "normal"), "SQLite: normal (survives any process crash) or full (also a power loss, slower) (env SQLITE_SYNCHRONOUS)")
	fs.StringVar(&reconcileEvery, "reconcile-every", env("RECONCILE_EVERY", "10s"), "how often to look for orders whose workflow will not finish them (env RECONCILE_EVERY)")
	fs.StringVar(&retain, "retention", env("RETENTION", "off"), "delete DBOS's records of purchases finished this long ago, such as 30d or 72h; off keeps them (env RETENTION)")
	cfg.Payment = provider.ConfigFromEnv(getenv)
	cfg.Payment.AddFlags(fs)
	cfg.WebhookKey = getenv("PAYMENT_WEBHOOK_SECRET")
	cfg.AdminToken = getenv("ADMIN_TOKEN")
	if err := fs.Parse(args[1:]); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if n, err := strconv.Atoi(cfg.Port); err != nil || n < 0 || n > 65535 {
		return cfg, fmt.Errorf("PORT %q: want a number from 0 to 65535", cfg.Port)
	}
	switch {
	case cfg.ListenAddr != "":
		if _, port, err := net.SplitHostPort(cfg.ListenAddr); err != nil || port == "" {
			return cfg, fmt.Errorf("LISTEN_ADDR %q: want host:port, such as :8080 or 127.0.0.1:8080", cfg.ListenAddr)
		}
	case cfg.AdminToken == "":
		cfg.ListenAddr = "127.0.0.1:" + cfg.Port
	default:
		cfg.ListenAddr = ":" + cfg.Port
	}
	if cfg.HoldLimit, err = strconv.Atoi(holdLimit); err != nil || cfg.HoldLimit < 0 || cfg.HoldLimit > 1_000_000 {
		return cfg, fmt.Errorf("HOLD_LIMIT %q: want a whole number from 0 (no limit) to 1000000", holdLimit)
	}
	if cfg.TrustedProxies, err = web.ParseTrustedProxies(trustedProxies); err != nil {
		return cfg, fmt.Errorf("TRUSTED_PROXIES %q: want comma-separated addresses or CIDR prefixes, such as 10.0.0.0/8,127.0.0.1", trustedProxies)
	}
	switch supervise {
	case "1", "true", "on", "yes":
		cfg.Supervise = true
	case "0", "false", "off", "no":
	default:
		return cfg, fmt.Errorf("SUPERVISE %q: want 1 or 0", supervise)
	}
	if cfg.PayTimeout, err = time.ParseDuration(payTimeout); err != nil || cfg.PayTimeout <= 0 {
		return cfg, fmt.Errorf("PAYMENT_TIMEOUT %q: want a positive duration such as 120s", payTimeout)
	}
	if cfg.TakeoverAfter, err = time.ParseDuration(takeoverAfter); err != nil || (cfg.TakeoverAfter != 0 && cfg.TakeoverAfter < cluster.MinTakeoverAfter) {
		return cfg, fmt.Errorf("TAKEOVER_AFTER %q: want 0 (off) or a duration of at least %v, such as 10s", takeoverAfter, cluster.MinTakeoverAfter)
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, fmt.Errorf("LOG_LEVEL %q: want debug, info, warn or error", logLevel)
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return cfg, fmt.Errorf("LOG_FORMAT %q: want text or json", cfg.LogFormat)
	}
	if cfg.ReconcileEvery, err = time.ParseDuration(reconcileEvery); err != nil || cfg.ReconcileEvery < 100*time.Millisecond {
		return cfg, fmt.Errorf("RECONCILE_EVERY %q: want a duration of at least 100ms, such as 10s", reconcileEvery)
	}
	if cfg.Retention, err = retention.Parse(retain); err != nil {
		return cfg, err
	}
	if cfg.SQLiteSync, err = store.ParseSQLiteSync(sqliteSync); err != nil {
		return cfg, err
	}
	if cfg.ExecutorID == "" || len(cfg.ExecutorID) > 128 {
		return cfg, fmt.Errorf("EXECUTOR_ID must be 1 to 128 characters")
	}
	if err := cfg.Payment.Check(); err != nil {
		return cfg, err
	}
	if crashAt != "" {
		if cfg.CrashAt, err = crashpoint.Parse(crashAt); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// run is the whole program: main only calls it, tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logger := newLogger(cfg, stderr)

	// Supervision: the parent owns the socket and restarts the store; the
	// child it starts finds the socket handed to it as an inherited file.
	inherited, isChild := supervisor.InheritedListener(getenv)
	if !isChild {
		web.LogExposure(logger, cfg.ListenAddr, cfg.Port, cfg.webConfig())
	}
	if cfg.Supervise && !isChild {
		return supervisor.Run(ctx, cfg.ListenAddr, logger, stdout, stderr)
	}
	if isChild {
		go supervisor.WatchParent(ctx, getenv, stop)
	}
	ln := inherited
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	defer ln.Close() // closed by Shutdown already on the normal path; this covers the early returns

	cfg.Payment = cfg.Payment.Listening("http://" + loopbackAddr(ln.Addr())) // the defaults: the store's own stand-in, its own address

	began := time.Now()
	s, err := startServices(ctx, cfg, logger)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	srv := &http.Server{
		Handler:           s.handler(cfg, logger),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      3 * time.Minute, // the webhook may wait on a checkout that is recovering
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	s.ready.Store(true)
	addr := supervisor.DisplayAddr(ln.Addr())
	logger.Info("widget-store ready", "addr", "http://"+addr, "database", s.db.Dialect.Name,
		"startup_ms", time.Since(began).Milliseconds())
	fmt.Fprintf(stdout, "widget-store listening on http://%s\n", addr)

	select {
	case err := <-serveErr:
		s.shutdown(logger)
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Stop HTTP first so no new workflow starts, then DBOS: a graceful stop
	// leaves in-flight workflows PENDING, and the next start recovers them.
	logger.Info("shutting down")
	s.ready.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("http shutdown", "err", err)
	}
	s.shutdown(logger)
	return nil
}

// services are the parts of a running store, started in order by startServices and
// stopped in reverse by shutdown.
type services struct {
	db        *store.DB
	run       store.ProcessRun
	dctx      dbos.Context
	metrics   *metrics.Metrics
	handoffs  *paywait.Hub
	legs      *legs.Writer
	workflows *workflows
	provider  provider.Provider
	cluster   *cluster.Cluster
	reconcile *reconcile.Reconciler
	retention *retention.Service // nil when RETENTION is off
	ready     atomic.Bool        // /healthz answers 200 only while true
}

// webConfig is what the web layer reads of the configuration.
func (cfg config) webConfig() web.Config {
	return web.Config{AdminToken: cfg.AdminToken, WebhookSecret: cfg.WebhookKey, ExecutorID: cfg.ExecutorID,
		HoldLimit: cfg.HoldLimit, PayWindow: cfg.PayTimeout, TrustedProxies: cfg.TrustedProxies,
		StripeWebhookSecret: cfg.Payment.StripeWebhook()}
}

// handler is the store's HTTP handler, with every dependency passed in.
func (s *services) handler(cfg config, logger *slog.Logger) http.Handler {
	return web.NewServer(logger, cfg.webConfig(),
		s.db, checkout.New(s.handoffs, s.db, s.workflows, s.provider, logger), reconcile.NewOperations(s.reconcile, s.workflows, cfg.PayTimeout, logger),
		timeline.NewReader(s.db, s.dctx, s.run.ID, time.Now), s.metrics,
		web.Process{RunID: s.run.ID, Ready: s.ready.Load, Crash: func() { os.Exit(supervisor.ExitCrash) }})
}

// startServices opens the database, applies the schema, records this process run,
// carries the previous build's unfinished workflows over, registers the
// workflows and launches DBOS, which recovers this instance's pending ones.
func startServices(ctx context.Context, cfg config, logger *slog.Logger) (_ *services, err error) {
	m := metrics.New()
	db, err := store.Open(ctx, cfg.DatabaseURL, store.Options{PgTracer: cfg.pgTracer, OnStatement: m.RoundTrip, SQLiteSynchronous: cfg.SQLiteSync, ExecutorID: cfg.ExecutorID,
		Trace: critpath.New(m.CriticalPath)})
	if err != nil {
		return nil, err
	}
	s := &services{db: db, metrics: m}
	defer func() {
		if err != nil { // stop what was started, as a graceful stop would
			s.shutdown(logger)
		}
	}()
	if err := db.Migrate(ctx, schemaSQL); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	// Before Launch, which recovers pending workflows: their recovered steps
	// then fall inside this run's lifetime on the timeline.
	if s.run, err = db.RecordRun(ctx, cfg.ExecutorID, time.Now()); err != nil {
		return nil, err
	}

	dbosCfg := dbos.Config{
		AppName:            appName,
		ApplicationVersion: shop.AppVersion,
		ExecutorID:         cfg.ExecutorID,
		Logger:             logger.With("component", "dbos"),
	}
	db.ConfigureDBOS(&dbosCfg)
	// DBOS gets a context that SIGINT/SIGTERM does not cancel: a workflow
	// whose context is cancelled is durably CANCELLED, never to resume.
	// dbos.Shutdown stops the workflows instead, leaving them PENDING.
	if s.dctx, err = dbos.NewContext(context.WithoutCancel(ctx), dbosCfg); err != nil {
		return nil, fmt.Errorf("dbos: %w", err)
	}
	if err := db.IndexDBOSTables(ctx); err != nil {
		return nil, err
	}
	if n, err := db.UpgradeWorkflows(ctx, shop.PreviousAppVersion, shop.AppVersion, shop.UpgradeRenames()); err != nil {
		return nil, err
	} else if n > 0 {
		logger.Info("carried workflows of the previous build over to this one", "from", shop.PreviousAppVersion, "to", shop.AppVersion, "workflows", n)
	}
	ds, err := db.DataSource(s.dctx)
	if err != nil {
		return nil, fmt.Errorf("dbos data source: %w", err)
	}
	s.handoffs = paywait.New(db, s.dctx, logger, s.metrics, cfg.PayTimeout)
	s.legs = legs.New(db, time.Now, logger, s.metrics.LegBatch)
	s.legs.Start() // before Launch: the dispatches it recovers write legs at once
	s.provider = cfg.Payment.New(cfg.AdminToken)
	run := &durable.Runner{DS: ds, Metrics: s.metrics, Crash: cfg.CrashAt, Logger: logger}
	s.workflows = &workflows{
		dctx: s.dctx, db: db, handoffs: s.handoffs, logger: logger, run: run,
		steps:    steps{metrics: s.metrics, now: time.Now, payTimeout: cfg.PayTimeout, legs: s.legs},
		payments: payment.New(run, db, s.provider, time.Now),
	}
	s.workflows.register()
	s.cluster = cluster.New(cluster.Config{ExecutorID: cfg.ExecutorID, AppVersion: shop.AppVersion, TakeoverAfter: cfg.TakeoverAfter},
		db, s.dctx, logger, s.metrics)
	if err := s.cluster.Join(ctx); err != nil {
		return nil, fmt.Errorf("instances: %w", err)
	}
	// Listening before Launch: the checkouts Launch recovers miss no payment
	// announced from then on.
	if err := s.handoffs.Start(ctx); err != nil {
		return nil, err
	}
	if err := dbos.Launch(s.dctx); err != nil {
		return nil, fmt.Errorf("dbos launch: %w", err)
	}
	s.cluster.Start()
	s.reconcile = reconcile.New(db, s.dctx, s.workflows, cfg.ReconcileEvery, logger)
	s.reconcile.Start()
	if cfg.Retention > 0 {
		s.retention = retention.New(db, s.dctx, cfg.Retention, retention.Interval(cfg.Retention), time.Now, logger)
		s.retention.Start()
	}
	return s, nil
}

// shutdown stops the services in the reverse order of startServices, and
// stops only those that were started: it also undoes a start that failed
// halfway (after dbos.NewContext, after the first heartbeat, after Launch).
// dbos.Shutdown also closes the database handle shared with DBOS; db.Close
// then lets go of the SQLite file.
func (s *services) shutdown(logger *slog.Logger) {
	if s.reconcile != nil {
		s.reconcile.Stop() // before DBOS: a pass in progress uses it
	}
	if s.retention != nil {
		s.retention.Stop()
	}
	if s.cluster != nil {
		s.cluster.Stop()
	}
	if s.handoffs != nil {
		s.handoffs.Stop()
	}
	if s.dctx != nil {
		if err := dbos.Shutdown(s.dctx, 5*time.Second); err != nil {
			logger.Warn("dbos shutdown", "err", err)
		}
	}
	if s.legs != nil {
		s.legs.Stop() // after DBOS: the dispatches it stopped wrote their last legs through it
	}
	s.db.Close()
	logger.Info("stopped")
}

// loopbackAddr is how this process reaches its own listener: a wildcard
// address (":8080") becomes the loopback address on its port.
func loopbackAddr(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok && (tcp.IP == nil || tcp.IP.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp.Port))
	}
	return addr.String()
}

// newLogger makes the process's logger. Every line carries executor_id: with
// several instances writing to one log store, it says which one spoke.
func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)).With("executor_id", cfg.ExecutorID)
	}
	return slog.New(slog.NewTextHandler(w, opts)).With("executor_id", cfg.ExecutorID)
}
