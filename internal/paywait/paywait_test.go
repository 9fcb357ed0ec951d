package paywait

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"

	"widget-store/internal/loadgen"
	"widget-store/internal/metrics"
	"widget-store/internal/store"
)

// TestDBOSNotificationsAsRelied is the tripwire for the store's read of
// DBOS's notifications table: a checkout looks for its payment message there
// (Hub.paymentSent). It is not the store's only run-time statement on DBOS's
// tables (retention reads workflow_status, internal/store/retention.go), but
// it is the one this test guards. If an SDK upgrade renames the table or its
// columns, or deletes a message once Recv consumed it, this test fails,
// instead of checkouts silently waiting out their payment window.
func TestDBOSNotificationsAsRelied(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			url := "sqlite:" + t.TempDir() + "/dbos.db"
			if kind == "postgres" {
				admin := os.Getenv("TEST_DATABASE_URL")
				if admin == "" {
					if os.Getenv("CI") != "" {
						t.Fatal("TEST_DATABASE_URL is not set: CI must test Postgres")
					}
					t.Skip("TEST_DATABASE_URL not set")
				}
				pg, err := loadgen.NewPostgresDB(ctx, admin)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := pg.Drop(context.Background()); err != nil {
						t.Logf("drop test database: %v", err)
					}
				})
				url = pg.URL
			}
			db, err := store.Open(ctx, url, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg := dbos.Config{AppName: "paywait-test", ApplicationVersion: "test", ExecutorID: "test", Logger: logger}
			db.ConfigureDBOS(&cfg)
			dctx, err := dbos.NewContext(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			receive := func(ctx dbos.Context, _ string) (string, error) {
				return dbos.Recv[string](ctx, Topic, 30*time.Second)
			}
			dbos.RegisterWorkflow(dctx, receive, dbos.WithWorkflowName("receive"))
			if err := dbos.Launch(dctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := dbos.Shutdown(dctx, 5*time.Second); err != nil {
					t.Logf("dbos shutdown: %v", err)
				}
			})
			hub := New(db, dctx, logger, metrics.New())

			const key = "checkout-key-1"
			sent, err := hub.paymentSent(ctx, key)
			if err != nil {
				t.Fatalf("the query on DBOS's notifications table failed (schema changed?): %v", err)
			}
			if sent {
				t.Fatal("a payment message is reported before any was sent")
			}
			h, err := dbos.RunWorkflow(dctx, receive, "", dbos.WithWorkflowID(key))
			if err != nil {
				t.Fatal(err)
			}
			if err := dbos.Send(dctx, key, "paid", Topic); err != nil {
				t.Fatal(err)
			}
			if sent, err := hub.paymentSent(ctx, key); err != nil || !sent {
				t.Fatalf("after Send: sent=%v err=%v; want the unconsumed message visible", sent, err)
			}
			got, err := h.GetResult()
			if err != nil || got != "paid" {
				t.Fatalf("Recv got %q, %v; want paid", got, err)
			}
			if sent, err := hub.paymentSent(ctx, key); err != nil || !sent {
				t.Fatalf("after Recv consumed it: sent=%v err=%v; a consumed message must stay visible, "+
					"or a recovered checkout whose Recv is checkpointed would wait out its window", sent, err)
			}
			if sent, err := hub.paymentSent(ctx, "another-key"); err != nil || sent {
				t.Fatalf("another key: sent=%v err=%v; want false", sent, err)
			}
		})
	}
}
