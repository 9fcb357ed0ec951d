package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests build the real binary and kill it for real (SIGKILL: no
// deferred function, no shutdown hook runs), then start it again on the
// same database and check that every order reaches its right final state.

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// storeBinary builds the store once per test run (CGO_ENABLED=0, as shipped).
func storeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "widget-store-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "widget-store")
		cmd := exec.Command("go", "build", "-o", builtBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// storeProc is one running store process.
type storeProc struct {
	cmd  *exec.Cmd
	base string
	done chan struct{}
}

// startProc starts the binary with env (plus defaults) and waits until it
// serves. port "0" picks a free port; pass the previous one to restart in place.
func startProc(t *testing.T, dbURL, port string, env ...string) *storeProc {
	t.Helper()
	cmd := exec.Command(storeBinary(t))
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "PORT="+port, "SUPERVISE=0", "EXECUTOR_ID=recovery-test", "LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testLogWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &storeProc{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	go func() {
		cmd.Wait() // the exit status is read by the test where it matters
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	select {
	case a := <-addr:
		p.base = a
	case <-p.done:
		t.Fatalf("store exited before serving: %v", cmd.ProcessState)
	case <-time.After(30 * time.Second):
		t.Fatal("store did not start within 30s")
	}
	waitHealthy(t, p.base, 10*time.Second)
	return p
}

func (p *storeProc) port() string {
	_, port, _ := cutLast(p.base, ":")
	return port
}

func cutLast(s, sep string) (string, string, bool) {
	for i := len(s) - len(sep); i >= 0; i-- {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *storeProc) kill() {
	if p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL) // fails only if it already exited
	<-p.done
}

func TestRecoveryAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	forEachDB(t, func(t *testing.T, dbURL string) {
		p := startProc(t, dbURL, "0")
		base := p.base

		// A: paid, and killed mid-dispatch.
		pidA := mustCall(t, "POST", base+"/checkout/"+newTestKey(), http.StatusOK)
		orderA := mustCall(t, "POST", base+"/payment_webhook/"+pidA+"/paid", http.StatusOK)
		// B: killed while its checkout waits for payment.
		pidB := mustCall(t, "POST", base+"/checkout/"+newTestKey(), http.StatusOK)
		// C: declined before the kill: final already.
		pidC := mustCall(t, "POST", base+"/checkout/"+newTestKey(), http.StatusOK)
		orderC := mustCall(t, "POST", base+"/payment_webhook/"+pidC+"/failed", http.StatusOK)

		before := waitOrder(t, base, orderA, 15*time.Second, func(o apiOrder) bool { return o.ProgressRemaining <= 7 })
		if before.OrderStatus != statusPaid {
			t.Fatalf("order A before the kill: %+v, want PAID mid-dispatch", before)
		}
		// D..H: checkouts in flight at the moment of the kill. Their clients
		// may see an error; they retry with the same key after the restart.
		var inflight []string
		var wg sync.WaitGroup
		for range 5 {
			key := newTestKey()
			inflight = append(inflight, key)
			wg.Go(func() { http.Post(base+"/checkout/"+key, "", nil) }) // an error is expected for some
		}
		time.Sleep(2 * time.Millisecond) // let some of them start before the kill
		p.kill()
		wg.Wait()

		p = startProc(t, dbURL, p.port())
		base = p.base

		// A resumes where it was: its progress never goes back up.
		last := before.ProgressRemaining
		a := waitOrder(t, base, orderA, 30*time.Second, func(o apiOrder) bool {
			if o.ProgressRemaining > last {
				t.Errorf("order A progress went back up after recovery: %d after %d", o.ProgressRemaining, last)
			}
			last = o.ProgressRemaining
			return isFinal(o)
		})
		if a.OrderStatus != statusDispatched {
			t.Fatalf("order A after recovery: %+v, want DISPATCHED", a)
		}
		// B's checkout is still waiting for payment, and takes it.
		orderB := mustCall(t, "POST", base+"/payment_webhook/"+pidB+"/paid", http.StatusOK)
		// The interrupted checkouts: retrying a key gives one order each.
		paidInflight := 0
		for _, key := range inflight {
			pid := mustCall(t, "POST", base+"/checkout/"+key, http.StatusOK)
			mustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK)
			paidInflight++
		}
		b := waitOrder(t, base, orderB, 30*time.Second, isFinal)
		if b.OrderStatus != statusDispatched {
			t.Fatalf("order B: %+v, want DISPATCHED", b)
		}
		if c := getJSON[apiOrder](t, base+"/order/"+orderC); c.OrderStatus != statusCancelled {
			t.Fatalf("order C: %+v, want CANCELLED", c)
		}
		orders := getJSON[[]apiOrder](t, base+"/orders")
		if want := 3 + len(inflight); len(orders) != want {
			t.Fatalf("%d orders, want %d (one per key)", len(orders), want)
		}
		for _, o := range orders {
			o = waitOrder(t, base, strconv.FormatInt(o.OrderID, 10), 30*time.Second, isFinal)
			if o.OrderStatus == statusDispatched && o.ProgressRemaining != 0 {
				t.Errorf("order %d DISPATCHED with progress %d", o.OrderID, o.ProgressRemaining)
			}
		}
		sold := 2 + paidInflight // A, B and the in-flight ones were paid; C was declined
		if got := inventory(t, base); got != 100-sold {
			t.Fatalf("inventory = %d, want %d: stock not conserved", got, 100-sold)
		}
	})
}

func TestCrashButtonUnderSupervisor(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	base, exited := supervisedStore(t, "sqlite:"+filepath.Join(t.TempDir(), "store.db"))

	pid := mustCall(t, "POST", base+"/checkout/"+newTestKey(), http.StatusOK)
	orderID := mustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK)
	waitOrder(t, base, orderID, 10*time.Second, func(o apiOrder) bool { return o.ProgressRemaining <= 8 })

	// The crash button: the request dies with the process.
	if resp, err := http.Post(base+"/crash_application", "", nil); err == nil {
		resp.Body.Close()
		t.Fatalf("crash_application answered %d; the process should have exited", resp.StatusCode)
	}
	// The supervisor keeps the socket: requests made during the restart wait
	// for the new process rather than being refused.
	crashed := time.Now()
	for i := range 20 {
		resp, err := http.Get(base + "/product")
		if err != nil {
			t.Fatalf("request %d after the crash failed: %v (connections must not be refused)", i, err)
		}
		resp.Body.Close()
	}
	t.Logf("20 requests answered %v after the crash", time.Since(crashed).Round(time.Millisecond))
	o := waitOrder(t, base, orderID, 30*time.Second, isFinal)
	if o.OrderStatus != statusDispatched {
		t.Fatalf("order after the crash: %+v, want DISPATCHED", o)
	}
	select {
	case err := <-exited:
		t.Fatalf("supervisor exited after the crash: %v", err)
	default:
	}
}

// supervisedStore runs the real binary under its supervisor (SUPERVISE=1),
// as `go run .` does, so that a crash is followed by a restart. It returns
// the base URL and a channel that yields when the supervisor exits.
func supervisedStore(t *testing.T, dbURL string) (string, <-chan error) {
	t.Helper()
	cmd := exec.Command(storeBinary(t))
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "PORT=0", "SUPERVISE=1", "LOG_LEVEL=warn", "EXECUTOR_ID=sup-"+randomHex(3))
	out := newLineWaiter()
	cmd.Stdout = out
	cmd.Stderr = testLogWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // graceful: the supervisor stops its child; an error means it is gone already
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			t.Error("supervisor did not stop on SIGTERM")
			cmd.Process.Kill() // best effort
		}
	})
	base := out.waitAddr(t, 30*time.Second)
	waitHealthy(t, base, 10*time.Second)
	return base, exited
}
