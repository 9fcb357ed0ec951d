// Command widget-store is an online store whose checkout survives any crash.
//
// Every purchase runs as a durable DBOS workflow: kill the process at any
// instant and, on restart, each checkout and dispatch in flight resumes from
// its last completed step. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

func main() {
	ctx := context.Background()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "widget-store: %s\n", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		os.Exit(exitConfig)
	}
}

// Exit statuses. The supervisor restarts a child that exits with anything but
// exitConfig: a configuration error would only fail again.
const (
	exitCrash  = 1 // the crash button, a panic, a lost database: restart
	exitConfig = 2 // bad flags or environment, or a failed start: do not restart
)

// exitError carries an exit status out of run, for the supervisor to pass on.
type exitError int

func (e exitError) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// config is everything the store reads from flags and the environment.
// Flags mirror the environment variables and win over them.
type config struct {
	Port        string        // PORT: TCP port to listen on (0 picks a free one)
	DatabaseURL string        // DATABASE_URL: sqlite:PATH or postgres://…
	ExecutorID  string        // EXECUTOR_ID: this process's identity for DBOS recovery
	Supervise   bool          // SUPERVISE: run the store as a restarted child process
	LogFormat   string        // LOG_FORMAT: text or json
	LogLevel    slog.Level    // LOG_LEVEL: debug, info, warn, error
	PayTimeout  time.Duration // PAYMENT_TIMEOUT: how long checkout waits for the payment webhook
	CrashAt     string        // CRASH_AT: "workflow:step", exit right after that step commits (tests)
	WebhookKey  string        // PAYMENT_WEBHOOK_SECRET: require signed webhooks when set
	AdminToken  string        // ADMIN_TOKEN: require it for crash/restock when set

	// pgTracer, when set (benchmarks only, never from the environment),
	// sees every Postgres statement the store sends: bench_test.go counts them.
	pgTracer pgx.QueryTracer

	// TAKEOVER_AFTER: how long a peer instance may stay silent before a live
	// one resumes its workflows (Postgres only; 0 turns takeover off).
	TakeoverAfter time.Duration
}

// defaultPaymentTimeout is the durable window a shopper has to pay.
const defaultPaymentTimeout = 120 * time.Second

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
	var supervise, payTimeout, logLevel, takeoverAfter string
	fs := flag.NewFlagSet("widget-store", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Port, "port", env("PORT", "8080"), "TCP port to listen on (env PORT)")
	fs.StringVar(&cfg.DatabaseURL, "database-url", env("DATABASE_URL", "sqlite:widget-store.db"), "sqlite:PATH or postgres://… (env DATABASE_URL)")
	fs.StringVar(&cfg.ExecutorID, "executor-id", env("EXECUTOR_ID", hostname), "unique name of this instance for workflow recovery (env EXECUTOR_ID)")
	fs.StringVar(&supervise, "supervise", env("SUPERVISE", "1"), "1: restart the store when it crashes; 0: run it directly (env SUPERVISE)")
	fs.StringVar(&cfg.LogFormat, "log-format", env("LOG_FORMAT", "text"), "text or json (env LOG_FORMAT)")
	fs.StringVar(&logLevel, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	fs.StringVar(&payTimeout, "payment-timeout", env("PAYMENT_TIMEOUT", defaultPaymentTimeout.String()), "how long a checkout waits for payment (env PAYMENT_TIMEOUT)")
	fs.StringVar(&cfg.CrashAt, "crash-at", env("CRASH_AT", ""), "testing: exit right after step N of workflow W commits, as W:N (env CRASH_AT)")
	fs.StringVar(&takeoverAfter, "takeover-after", env("TAKEOVER_AFTER", defaultTakeoverAfter.String()), "resume the workflows of a peer instance silent this long; 0: never (env TAKEOVER_AFTER)")
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
	if cfg.TakeoverAfter, err = time.ParseDuration(takeoverAfter); err != nil || (cfg.TakeoverAfter != 0 && cfg.TakeoverAfter < minTakeoverAfter) {
		return cfg, fmt.Errorf("TAKEOVER_AFTER %q: want 0 (off) or a duration of at least %v, such as 10s", takeoverAfter, minTakeoverAfter)
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, fmt.Errorf("LOG_LEVEL %q: want debug, info, warn or error", logLevel)
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return cfg, fmt.Errorf("LOG_FORMAT %q: want text or json", cfg.LogFormat)
	}
	if cfg.ExecutorID == "" || len(cfg.ExecutorID) > 128 {
		return cfg, fmt.Errorf("EXECUTOR_ID must be 1 to 128 characters")
	}
	if cfg.CrashAt != "" {
		if _, _, err := parseCrashPoint(cfg.CrashAt); err != nil {
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
	inherited, isChild := inheritedListener(getenv)
	if cfg.Supervise && !isChild {
		return supervise(ctx, cfg, logger, stdout)
	}

	if isChild {
		go watchSupervisor(ctx, getenv, stop)
	}
	ln := inherited
	if ln == nil {
		if ln, err = net.Listen("tcp", ":"+cfg.Port); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	defer ln.Close() // closed by Shutdown already on the normal path; this covers the early returns

	started := time.Now()
	a, err := newApp(ctx, cfg, logger)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      3 * time.Minute, // the webhook may wait on a checkout that is recovering
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	a.ready.Store(true)
	logger.Info("widget-store ready", "addr", "http://"+displayAddr(ln.Addr()), "database", a.dialect.name,
		"startup_ms", time.Since(started).Milliseconds())
	fmt.Fprintf(stdout, "widget-store listening on http://%s\n", displayAddr(ln.Addr()))

	select {
	case err := <-serveErr:
		a.shutdown(logger)
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Stop HTTP first so no new workflow starts, then DBOS: a graceful stop
	// leaves in-flight workflows PENDING, and the next start recovers them.
	logger.Info("shutting down")
	a.ready.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("http shutdown", "err", err)
	}
	a.shutdown(logger)
	return nil
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

// displayAddr turns a wildcard listen address into one a browser can open.
func displayAddr(addr net.Addr) string {
	s := addr.String()
	if tcp, ok := addr.(*net.TCPAddr); ok && (tcp.IP == nil || tcp.IP.IsUnspecified()) {
		return "localhost:" + strconv.Itoa(tcp.Port)
	}
	return s
}

// parseCrashPoint reads CRASH_AT, "workflow:step", where step counts the
// workflow's own durable steps from 1 (see app.afterStep).
func parseCrashPoint(s string) (workflow string, step int, err error) {
	name, num, ok := strings.Cut(s, ":")
	if ok {
		step, err = strconv.Atoi(num)
	}
	if !ok || err != nil || step < 1 || (name != "checkout" && name != "dispatch") {
		return "", 0, fmt.Errorf("CRASH_AT %q: want checkout:N or dispatch:N with N ≥ 1", s)
	}
	return name, step, nil
}
