// Command seed makes the database of a large store: N orders sold through
// checkouts, with their DBOS workflows and steps, as the store would have
// written them (internal/seed says how).
//
//	go run ./cmd/seed -database-url sqlite:/var/tmp/big.db -orders 1000000
//	go run ./cmd/seed -database-url postgres://postgres:postgres@127.0.0.1:5432/widget_big -orders 1000000
//
// The database must be empty: a SQLite file that does not exist yet, or an
// empty Postgres database (createdb it first). The store binary is built from
// this module (CGO_ENABLED=0), or -bin names one. With -check it then starts
// nothing more but reads the database back and checks loadgen's invariants
// against what the seeded clients were told.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/seed"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "seed: %s\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbURL := fs.String("database-url", getenv("DATABASE_URL"), "the empty database: sqlite:PATH or postgres://… (default $DATABASE_URL)")
	orders := fs.Int("orders", 1_000_000, "orders to seed")
	decline := fs.Float64("decline", 0.1, "fraction of payments declined (orders CANCELLED)")
	span := fs.Duration("span", 90*24*time.Hour, "how far back the first order lies")
	seedN := fs.Uint64("seed", 1, "seed for keys, shoppers, mix and times")
	bin := fs.String("bin", "", "prebuilt store binary (default: build this module's with CGO_ENABLED=0)")
	check := fs.Bool("check", false, "read the seeded database back and check the invariants")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the seeding to this file")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *dbURL == "" {
		return errors.New("-database-url is required")
	}
	if *orders < 1 || *orders > 100_000_000 {
		return fmt.Errorf("-orders %d: want 1 to 100000000", *orders)
	}
	if *decline < 0 || *decline >= 1 {
		return fmt.Errorf("-decline %v: want at least 0 and below 1", *decline)
	}
	db, err := loadgen.DatabaseAt(*dbURL)
	if err != nil {
		return err
	}
	if db.Kind == "sqlite" {
		if _, err := os.Stat(db.Path); err == nil {
			return fmt.Errorf("%s exists: seed a new file", db.Path)
		}
	}
	if *bin == "" {
		root, err := loadgen.FindModuleRoot()
		if err != nil {
			return err
		}
		tmp, err := os.MkdirTemp("", "seed-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		fmt.Fprintln(stdout, "building the store (CGO_ENABLED=0)…")
		if *bin, err = loadgen.Build(root, tmp); err != nil {
			return err
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rate := *decline
	if rate == 0 {
		rate = 1e-12 // seed.Config reads 0 as "the default"; this declines none
	}
	res, err := seed.Run(ctx, seed.Config{Bin: *bin, DB: db, Orders: *orders, DeclineRate: rate, Span: *span, Seed: *seedN,
		Progress: stdout, StoreLog: stderr})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "initial stock %d, final %d; a shopper with %d orders: shopper=%s\n",
		res.InitialStock, res.FinalStock, res.ShopperOrders, res.Shopper)
	if !*check {
		return nil
	}
	snap, err := loadgen.ReadSnapshot(ctx, db)
	if err != nil {
		return err
	}
	cs := loadgen.CheckInvariants(res.InitialStock, snap, res.Purchases(), loadgen.Observed{})
	cs.Print(stdout)
	if !cs.OK() {
		return errors.New("invariants violated (see above)")
	}
	return nil
}
