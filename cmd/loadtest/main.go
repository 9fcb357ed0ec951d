// Command loadtest drives the real widget-store binary over HTTP.
//
//	go run ./cmd/loadtest -mode load -db sqlite -c 8 -duration 10s
//	go run ./cmd/loadtest -mode chaos -db postgres -kills 20 -seed 42
//	go run ./cmd/loadtest -mode chaos -provider stripe -db sqlite -kills 25
//	go run ./cmd/loadtest -mode restart -db sqlite
//	go run ./cmd/loadtest -mode ab -base 5020766 -db postgres -rounds 3
//	go run ./cmd/loadtest -mode flash -db sqlite -c 64 -kills 2
//
// load prints latency, throughput, memory, startup time and (Postgres)
// commits per paid purchase; chaos SIGKILLs the store at seeded random
// moments, restarts it at once, and prints each invariant with PASS/FAIL
// (exit status 1 on any FAIL); restart presses the crash button under the
// built-in supervisor and measures what clients saw; ab measures the -base
// build and this one alternately, with pgbench between rounds, and prints
// the ratios (ab.go); flash sells -stock units (1000) to -c shoppers and
// prints the sold-out answers per second, latencies, memory and the
// invariants. Every run uses a fresh
// SQLite file or a fresh Postgres database, dropped afterwards.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"widget-store/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "loadtest: %s\n", err)
		os.Exit(1)
	}
}

// errFailed is a chaos or check failure already printed.
var errFailed = errors.New("invariants violated (see above)")

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "load", "load, chaos, restart, ab or flash")
	base := fs.String("base", "HEAD", "ab: the build to compare with, a binary or a git revision of this repository (built with CGO_ENABLED=0)")
	rounds := fs.Int("rounds", 3, "ab: rounds; each runs both builds, in alternating order")
	dbKind := fs.String("db", "sqlite", "sqlite or postgres")
	pgAdmin := fs.String("pg-admin-url", getenv("TEST_DATABASE_URL"), "Postgres server URL where a fresh database is created and dropped (default $TEST_DATABASE_URL)")
	c := fs.Int("c", 8, "concurrent shoppers")
	duration := fs.Duration("duration", 10*time.Second, "load: how long shoppers start purchases")
	kills := fs.Int("kills", 20, "chaos: SIGKILLs (flash: default 0)")
	seed := fs.Int64("seed", time.Now().UnixNano()%1_000_000, "seed for shoppers and kills (printed; pass it again to replay)")
	decline := fs.Float64("decline", -1, "fraction of payments declined (default 0 for load, 0.2 otherwise)")
	abandon := fs.Float64("abandon", -1, "fraction of checkouts never paid (default 0 for load, 0.05 for chaos)")
	payTimeout := fs.Duration("payment-timeout", 0, "the store's PAYMENT_TIMEOUT (default 120s for load and restart, 5s for chaos so abandoned checkouts settle fast)")
	stock := fs.Int("stock", 0, "initial stock (default 1000000; flash: 1000, the units on sale; with -carts, of each product, default 30)")
	carts := fs.Bool("carts", false, "load and chaos: random carts of 1–3 lines, quantities 1–3, of every product (chaos: little stock, lines sell out)")
	provider := fs.String("provider", "standin", "chaos: the store's PAYMENT_PROVIDER: standin, or stripe (stripe-mock behind a recording proxy, payments as signed events to /webhooks/stripe)")
	latePay := fs.Float64("late", 0.05, "chaos -provider stripe: fraction of purchases paid only after the store expired their session (refunded)")
	bin := fs.String("bin", "", "prebuilt store binary (default: build it with CGO_ENABLED=0)")
	storeLog := fs.String("store-log", "", "file for the store's log (default: a temp file, printed)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *mode != "load" && *mode != "chaos" && *mode != "restart" && *mode != "ab" && *mode != "flash" {
		return fmt.Errorf("-mode %q: want load, chaos, restart, ab or flash", *mode)
	}
	if *mode == "flash" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["kills"] {
			*kills = 0
		}
		if *stock == 0 {
			*stock = 1000
		}
	}
	if *provider != "standin" && *provider != "stripe" {
		return fmt.Errorf("-provider %q: want standin or stripe", *provider)
	}
	if *provider == "stripe" && *mode != "chaos" {
		return fmt.Errorf("-provider stripe: only -mode chaos has a Stripe mode")
	}
	if *latePay < 0 || *latePay > 1 {
		return fmt.Errorf("-late %v: want a fraction from 0 to 1", *latePay)
	}
	if *latePay == 0 {
		*latePay = -1 // Options: 0 is the default, negative none
	}
	if *rounds < 1 || *rounds > 20 {
		return fmt.Errorf("-rounds %d: want 1 to 20", *rounds)
	}
	if *decline < 0 {
		*decline = 0.2
		if *mode == "load" || *mode == "ab" || *mode == "flash" {
			*decline = 0
		}
	}
	if *abandon < 0 {
		*abandon = 0
		if *mode == "chaos" {
			*abandon = 0.05
		}
	}

	if *carts && *stock == 0 && *mode == "chaos" {
		*stock = 30
	}

	tmp, err := os.MkdirTemp("", "loadtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if *bin == "" {
		root, err := loadgen.FindModuleRoot()
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "building the store (CGO_ENABLED=0)…")
		if *bin, err = loadgen.Build(root, tmp); err != nil {
			return err
		}
	}
	logPath := *storeLog
	if logPath == "" {
		logPath = filepath.Join(os.TempDir(), fmt.Sprintf("loadtest-%s-%s-%d.log", *mode, *dbKind, *seed))
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()

	// newDB makes a fresh database for one run, and the function that drops it.
	newDB := func() (*loadgen.Database, func(), error) {
		switch *dbKind {
		case "sqlite":
			dir, err := os.MkdirTemp(tmp, "db-")
			if err != nil {
				return nil, nil, err
			}
			return loadgen.NewSQLiteDB(dir), func() {}, nil
		case "postgres":
			if *pgAdmin == "" {
				return nil, nil, errors.New("-db postgres needs -pg-admin-url (or TEST_DATABASE_URL)")
			}
			db, err := loadgen.NewPostgresDB(ctx, *pgAdmin)
			if err != nil {
				return nil, nil, err
			}
			return db, func() {
				if err := db.Drop(context.Background()); err != nil {
					fmt.Fprintf(stderr, "drop the test database: %v\n", err)
				}
			}, nil
		}
		return nil, nil, fmt.Errorf("-db %q: want sqlite or postgres", *dbKind)
	}
	db, drop, err := newDB()
	if err != nil {
		return err
	}
	defer drop()
	opts := loadgen.Options{
		Bin: *bin, DB: db, Concurrency: *c, Duration: *duration, Kills: *kills, Seed: *seed,
		Decline: *decline, Abandon: *abandon, PaymentTimeout: *payTimeout, Stock: *stock, Carts: *carts,
		StoreLog: logFile, Progress: stdout, Provider: *provider, LatePay: *latePay,
	}
	if *mode == "ab" {
		fmt.Fprintf(stdout, "building the base build %s…\n", *base)
		baseDir, err := os.MkdirTemp(tmp, "base-")
		if err != nil {
			return err
		}
		baseBin, err := baseBinary(*base, baseDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "old: %s (%s)\nnew: %s\n", *base, baseBin, *bin)
		return runAB(ctx, stdout, &abRun{name: "old", bin: baseBin}, &abRun{name: "new", bin: *bin},
			*rounds, opts, newDB, *pgAdmin)
	}
	fmt.Fprintf(stdout, "mode %s, %s, C=%d, seed %d, decline %.2f, abandon %.2f, carts %v, provider %s; store log: %s\n",
		*mode, *dbKind, *c, *seed, *decline, *abandon, *carts, *provider, logPath)
	switch *mode {
	case "load":
		r, err := loadgen.Load(ctx, opts)
		if err != nil {
			return err
		}
		return report(stdout, r, r.Checks)
	case "chaos":
		opts.Replay = 0.2
		r, err := loadgen.Chaos(ctx, opts)
		if err != nil {
			return fmt.Errorf("%w (seed %d)", err, *seed)
		}
		return report(stdout, r, r.Checks)
	case "flash":
		r, err := loadgen.Flash(ctx, opts)
		if err != nil {
			return fmt.Errorf("%w (seed %d)", err, *seed)
		}
		return report(stdout, r, r.Checks)
	case "restart":
		r, err := loadgen.Restart(ctx, opts)
		if err != nil {
			return err
		}
		return report(stdout, r, r.Checks)
	}
	return nil
}

// report prints a run's report; a failed check makes the run fail.
func report(w io.Writer, r interface{ Print(io.Writer) }, checks loadgen.Checks) error {
	r.Print(w)
	if !checks.OK() {
		return errFailed
	}
	return nil
}
