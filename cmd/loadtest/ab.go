package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"widget-store/internal/loadgen"
)

// The A/B mode: the previous build and this one, measured back to back on
// the same machine in one run, alternating (A B, then B A, …) so that a
// machine that slows down or speeds up during the run weighs on both alike,
// with a pgbench run between rounds as the yardstick of what the machine
// (and its Postgres) could do meanwhile. It prints medians and the ratios
// new/old and purchases/s ÷ pgbench TPS: absolute figures from one day do
// not hold on the next on a shared machine, ratios measured together do.

// abRun is one build's load runs.
type abRun struct {
	name    string
	bin     string
	reports []*loadgen.LoadReport
	// load runs one round (loadgen.Load when nil) on a database made by
	// newDB (runAB's when nil): the reference store (-reference) has its
	// own of both, and always runs on Postgres.
	load  func(context.Context, loadgen.Options) (*loadgen.LoadReport, error)
	newDB func() (*loadgen.Database, func(), error)
}

// runAB measures builds a (the baseline) and b over rounds rounds. newDB
// makes each run's fresh database; pgAdmin, when set, is where pgbench runs.
func runAB(ctx context.Context, w io.Writer, a, b *abRun, rounds int, opts loadgen.Options, newDB func() (*loadgen.Database, func(), error), pgAdmin string) error {
	var tps []float64
	for round := 1; round <= rounds; round++ {
		order := []*abRun{a, b}
		if round%2 == 0 {
			order = []*abRun{b, a}
		}
		for _, run := range order {
			mk, load := newDB, loadgen.Load
			if run.newDB != nil {
				mk = run.newDB
			}
			if run.load != nil {
				load = run.load
			}
			db, drop, err := mk()
			if err != nil {
				return err
			}
			o := opts
			o.Bin, o.DB, o.Progress = run.bin, db, io.Discard
			fmt.Fprintf(w, "round %d: %s…\n", round, run.name)
			r, err := load(ctx, o)
			drop()
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", run.name, round, err)
			}
			if !r.Checks.OK() {
				r.Print(w)
				return errFailed
			}
			run.reports = append(run.reports, r)
			storeCPU, pgCPU, _ := r.PerPurchase()
			fmt.Fprintf(w, "  %.1f purchases/s, checkout p99 %v, webhook p99 %v, CPU/purchase %.2f ms (store %.2f + its database's backends %.2f; the whole Postgres server %.2f)\n",
				r.PurchasesPerSec(), r.Checkout.P99, r.Webhook.P99, ms(time.Duration(totalCPU(r))), ms(storeCPU), ms(backendPerPurchase(r)), ms(pgCPU))
		}
		ra, rb := a.reports[len(a.reports)-1], b.reports[len(b.reports)-1]
		fmt.Fprintf(w, "  round %d, new/old: purchases/s %.2f×, CPU/purchase %.2f×, webhook p99 %.2f×\n", round,
			rb.PurchasesPerSec()/ra.PurchasesPerSec(), totalCPU(rb)/totalCPU(ra), ms(rb.Webhook.P99)/ms(ra.Webhook.P99))
		if pgAdmin != "" {
			t, err := pgbench(ctx, pgAdmin, opts.Concurrency)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "  pgbench -N -c %d: %.0f TPS\n", opts.Concurrency, t)
			tps = append(tps, t)
		}
	}
	printAB(w, a, b, tps, opts)
	return nil
}

// printAB prints the medians of each build and their ratios.
func printAB(w io.Writer, a, b *abRun, tps []float64, opts loadgen.Options) {
	type row struct {
		name string
		get  func(*loadgen.LoadReport) float64
		unit string
	}
	rows := []row{
		{"purchases/s", (*loadgen.LoadReport).PurchasesPerSec, ""},
		{"checkout p50", func(r *loadgen.LoadReport) float64 { return ms(r.Checkout.P50) }, "ms"},
		{"checkout p99", func(r *loadgen.LoadReport) float64 { return ms(r.Checkout.P99) }, "ms"},
		{"checkout max", func(r *loadgen.LoadReport) float64 { return ms(r.Checkout.Max) }, "ms"},
		{"webhook p50", func(r *loadgen.LoadReport) float64 { return ms(r.Webhook.P50) }, "ms"},
		{"webhook p99", func(r *loadgen.LoadReport) float64 { return ms(r.Webhook.P99) }, "ms"},
		{"webhook max", func(r *loadgen.LoadReport) float64 { return ms(r.Webhook.Max) }, "ms"},
		{"store CPU/purchase", func(r *loadgen.LoadReport) float64 { s, _, _ := r.PerPurchase(); return ms(s) }, "ms"},
	}
	for _, kind := range loadgen.PathKinds { // the critical path's counts (0: a build that does not count them)
		rows = append(rows,
			row{kind + " statements", func(r *loadgen.LoadReport) float64 { s, _, _, _, _ := r.Critical.PerRequest(kind); return s }, ""},
			row{kind + " commits", func(r *loadgen.LoadReport) float64 { _, c, _, _, _ := r.Critical.PerRequest(kind); return c }, ""})
		rows = append(rows, row{kind + " waits", func(r *loadgen.LoadReport) float64 { _, _, l, _, _ := r.Critical.PerRequest(kind); return l }, ""},
			row{kind + " waited", func(r *loadgen.LoadReport) float64 { _, _, _, d, _ := r.Critical.PerRequest(kind); return ms(d) }, "ms"})
	}
	if opts.DB.Kind == "postgres" || a.load != nil {
		rows = append(rows,
			row{"Postgres CPU/purchase", func(r *loadgen.LoadReport) float64 { _, p, _ := r.PerPurchase(); return ms(p) }, "ms"},
			row{"backends CPU/purchase", func(r *loadgen.LoadReport) float64 { return ms(backendPerPurchase(r)) }, "ms"},
			row{"CPU/purchase, total", func(r *loadgen.LoadReport) float64 { return ms(time.Duration(totalCPU(r))) }, "ms"})
	}
	if opts.DB.Kind == "postgres" {
		rows = append(rows,
			row{"round trips/purchase", func(r *loadgen.LoadReport) float64 { _, _, t := r.PerPurchase(); return t }, ""},
			row{"commits/purchase", func(r *loadgen.LoadReport) float64 { return float64(r.Commits) / float64(max(r.Tally.Paid, 1)) }, ""},
		)
	}
	fmt.Fprintf(w, "\n== A/B: %s, C=%d, %v per run, %d rounds alternating; medians (store, tool and Postgres on one machine)\n",
		opts.DB.Kind, opts.Concurrency, opts.Duration, len(a.reports))
	fmt.Fprintf(w, "  %-24s %14s %14s %10s\n", "", a.name, b.name, "new/old")
	for _, r := range rows {
		va, vb := median(a.reports, r.get), median(b.reports, r.get)
		ratio := "–"
		if va != 0 {
			ratio = fmt.Sprintf("%.2f×", vb/va)
		}
		fmt.Fprintf(w, "  %-24s %12.2f%-2s %12.2f%-2s %10s\n", r.name, va, r.unit, vb, r.unit, ratio)
	}
	if len(tps) > 0 {
		t := medianOf(tps)
		fmt.Fprintf(w, "  %-24s %14.0f (median of %d pgbench runs between the rounds)\n", "pgbench -N TPS", t, len(tps))
		fmt.Fprintf(w, "  %-24s %14.3f %14.3f\n", "purchases/s ÷ TPS",
			median(a.reports, (*loadgen.LoadReport).PurchasesPerSec)/t, median(b.reports, (*loadgen.LoadReport).PurchasesPerSec)/t)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// totalCPU is a run's CPU per paid purchase: the store's, and on Postgres
// its database's backends' (not the whole server's, which on a shared
// machine counts other work too).
func totalCPU(r *loadgen.LoadReport) float64 {
	s, _, _ := r.PerPurchase()
	return float64(s + backendPerPurchase(r))
}

// backendPerPurchase is the CPU of the run's database's backends per paid
// purchase.
func backendPerPurchase(r *loadgen.LoadReport) time.Duration {
	return r.Cost.BackendCPU / time.Duration(max(r.Tally.Paid, 1))
}

func median(rs []*loadgen.LoadReport, get func(*loadgen.LoadReport) float64) float64 {
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = get(r)
	}
	return medianOf(vs)
}

func medianOf(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pgbench runs pgbench's built-in simple-update script (-N: no updates of
// the contended branch and teller rows) with c clients for 10 s on a fresh
// database of the server at adminURL, and returns its TPS.
func pgbench(ctx context.Context, adminURL string, c int) (float64, error) {
	bin, err := findPgbench()
	if err != nil {
		return 0, err
	}
	db, err := loadgen.NewPostgresDB(ctx, adminURL)
	if err != nil {
		return 0, err
	}
	defer db.Drop(context.Background()) // a leftover database is only disk; the next run uses a new name
	if out, err := exec.CommandContext(ctx, bin, "-i", "-q", db.URL).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pgbench -i: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "-N", "-n", "-c", strconv.Itoa(c), "-j", "2", "-T", "10", db.URL).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`tps = ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no tps:\n%s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// findPgbench finds pgbench on PATH or in Debian's PostgreSQL directories.
func findPgbench() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench") // a bad pattern is impossible here
	if len(found) > 0 {
		slices.Sort(found)
		return found[len(found)-1], nil
	}
	return "", fmt.Errorf("pgbench not found (Debian: apt-get install postgresql)")
}

// baseBinary is the -base build: a binary path, or a git revision of this
// repository to build into dir.
func baseBinary(base, dir string) (string, error) {
	if st, err := os.Stat(base); err == nil && !st.IsDir() {
		return base, nil
	}
	root, err := loadgen.FindModuleRoot()
	if err != nil {
		return "", err
	}
	rev := strings.TrimSpace(base)
	return loadgen.BuildRevision(root, rev, dir)
}
