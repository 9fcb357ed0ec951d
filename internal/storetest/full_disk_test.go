package storetest

import (
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"widget-store/internal/loadgen"
	"widget-store/internal/shop"
)

// TestFullDiskSQLite: the store on SQLite, on a filesystem that fills up (a
// small tmpfs, filled by a file beside the database). While it is full, a
// write request is answered 503 with Retry-After ("the store cannot write
// right now"), /healthz answers 503 "database not writable", reads still
// answer, and the workflows in flight meet refused writes (SQLITE_FULL): the
// dispatch legs, and a checkout whose payment window closes meanwhile (its
// cancel step). When the file is deleted, everything resumes by itself:
// /healthz 200, the refused checkout goes through when retried, every order
// reaches its end (the unpaid one CANCELLED), and no workflow is left in
// ERROR or unfinished. Mounting needs
// root (CI has it); elsewhere the test skips.
func TestFullDiskSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" && os.Geteuid() == 0 {
			t.Fatalf("mount a tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	// Registered before the store starts, so it runs after the store stopped.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	db := loadgen.NewSQLiteDB(dir)
	log := &capturedLog{}
	const payWindow = 4 * time.Second
	st := StartWith(t, db, Options{Log: io.MultiWriter(log, LogWriter(t, "")), Env: []string{"PAYMENT_TIMEOUT=" + payWindow.String()}})
	base := st.Base()

	var dispatching []string
	var pendingPID, pendingID string
	var pendingAt time.Time
	phase(t, "orders before the disk fills: three dispatching, one awaiting payment", func(t *testing.T) {
		for range 3 {
			pid := MustCall(t, "POST", base+"/checkout/"+NewKey(), http.StatusOK)
			dispatching = append(dispatching, MustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK))
		}
		pendingPID, pendingAt = MustCall(t, "POST", base+"/checkout/"+NewKey(), http.StatusOK), time.Now()
		pendingID = strconv.FormatInt(NewestOrder(t, base).OrderID, 10)
	})

	filler := filepath.Join(dir, "filler")
	refusedKey := NewKey()
	phase(t, "the disk is full: writes answer 503 with Retry-After, /healthz 503, reads 200", func(t *testing.T) {
		fillDisk(t, filler)
		for _, path := range []string{"/checkout/" + refusedKey, "/payment_webhook/" + pendingPID + "/paid"} {
			resp, err := http.Post(base+path, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body) // a short read shows in the message below
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
				!strings.Contains(string(body), "the store cannot write right now") {
				t.Fatalf("POST %s on a full disk: %d, Retry-After %q, %q; want 503 with Retry-After saying the store cannot write right now",
					path, resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
		}
		// /healthz caches its answer for a second.
		for deadline := time.Now().Add(3 * time.Second); ; {
			status, body := Call(t, "GET", base+"/healthz")
			if status == http.StatusServiceUnavailable && strings.Contains(body, "database not writable") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/healthz on a full disk: %d %q, want 503 database not writable", status, body)
			}
			time.Sleep(100 * time.Millisecond) // the polling interval
		}
		MustCall(t, "GET", base+"/product", http.StatusOK)
		// The dispatches in flight write a leg a second: let them meet the
		// full disk for a while.
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(log.String(), "SQLITE_FULL") {
			if time.Now().After(deadline) {
				t.Fatal("no write of the workflows in flight was refused with SQLITE_FULL within 15 s")
			}
			time.Sleep(100 * time.Millisecond) // the polling interval
		}
		// The outage goes on past the unpaid checkout's payment window, so
		// its cancel step meets the full disk too, and DBOS's retries pause
		// longer each time.
		time.Sleep(time.Until(pendingAt.Add(payWindow + 3*time.Second)))
		if o := GetJSON[Order](t, base+"/order/"+pendingID); o.OrderStatus != shop.StatusPending {
			t.Fatalf("the unpaid order during the outage: %+v, want it still PENDING (its cancel cannot be written)", o)
		}
	})

	phase(t, "room again: everything resumes by itself", func(t *testing.T) {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		WaitHealthy(t, base, 10*time.Second)
		pid := MustCall(t, "POST", base+"/checkout/"+refusedKey, http.StatusOK)
		dispatching = append(dispatching, MustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK))
		WaitOrder(t, base, pendingID, 90*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusCancelled })
		for _, id := range dispatching {
			WaitOrder(t, base, id, 90*time.Second, func(o Order) bool { return o.OrderStatus == shop.StatusDispatched })
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			unfinished := map[string]int{}
			query(t, db, `SELECT status, count(*) FROM workflow_status WHERE status <> 'SUCCESS' GROUP BY status`, func(scan func(...any) error) error {
				var status string
				var n int
				err := scan(&status, &n)
				unfinished[status] = n
				return err
			})
			if unfinished["ERROR"] > 0 {
				t.Fatalf("workflows in ERROR after the disk was full: %v", unfinished)
			}
			if len(unfinished) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("workflows still unfinished 30 s after their orders were dispatched: %v", unfinished)
			}
			time.Sleep(100 * time.Millisecond) // the polling interval
		}
	})
}

// fillDisk writes the file at path until its filesystem has no room left.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // written with Write, nothing buffered
	for _, size := range []int{1 << 20, 4 << 10, 512} {
		chunk := make([]byte, size)
		for {
			if _, err := f.Write(chunk); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill the disk: %v", err)
				}
				break
			}
		}
	}
}
