package storetest

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"widget-store/internal/loadgen"
)

// TestSecondStoreOnOneSQLiteFile: a second store started on a SQLite file
// that a running store holds refuses to start, with an error that names the
// file and the holder (its process and executor), instead of running beside
// it and recovering its workflows. The supervisor's restarted child takes the
// file over after a crash, and once the holder has stopped, the file is free.
func TestSecondStoreOnOneSQLiteFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	db := NewSQLiteDB(t)
	first := StartWith(t, db, Options{Supervise: true})
	base := first.Base()

	var holder int
	phase(t, "a second store on the file refuses to start, naming the file and the holder", func(t *testing.T) {
		holder = refusedSecondStore(t, db, first)
	})

	phase(t, "the supervisor's restarted child takes the file over", func(t *testing.T) {
		if resp, err := http.Post(base+"/crash_application", "", nil); err == nil {
			resp.Body.Close()
			t.Fatalf("crash_application answered %d; the process should have exited", resp.StatusCode)
		}
		WaitHealthy(t, base, 30*time.Second)
		pid := MustCall(t, "POST", base+"/checkout/"+NewKey(), http.StatusOK)
		MustCall(t, "POST", base+"/payment_webhook/"+pid+"/paid", http.StatusOK)
		if again := refusedSecondStore(t, db, first); again == holder {
			t.Fatalf("the holder after the crash is pid %d, the crashed child's; want the new child", again)
		}
	})

	phase(t, "once the holder stopped, another store may use the file", func(t *testing.T) {
		if err := first.Stop(stopTimeout); err != nil {
			t.Fatal(err)
		}
		if code, err := first.WaitExit(time.Second); err != nil || code != 0 {
			t.Fatalf("the first store exited with %d (%v), want 0", code, err)
		}
		next := Start(t, db)
		MustCall(t, "GET", next.URL("/product"), http.StatusOK)
	})
}

// refusedSecondStore runs a second store (unsupervised) on db, which first
// holds, and requires it to exit at once with status 2 and an error naming
// the file, first's executor and the holding process, a child of first's
// supervisor. It returns the holder's process ID.
func refusedSecondStore(t *testing.T, db *loadgen.Database, first *Store) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t))
	cmd.Env = append(os.Environ(), "SUPERVISE=0", "PORT=0", "LOG_LEVEL=warn",
		"DATABASE_URL="+db.URL, "EXECUTOR_ID=second-"+RandomHex(4))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("second store on %s: %v, want exit status 2; output:\n%s", db.Path, err, out)
	}
	msg := string(out)
	for _, want := range []string{db.Path + " is in use by another store", `executor "` + first.ExecutorID() + `"`} {
		if !strings.Contains(msg, want) {
			t.Fatalf("second store's error does not say %q:\n%s", want, msg)
		}
	}
	m := regexp.MustCompile(`\(pid (\d+),`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("second store's error names no holder pid:\n%s", msg)
	}
	pid, _ := strconv.Atoi(m[1]) // the regexp matched digits
	stat, err := os.ReadFile("/proc/" + m[1] + "/stat")
	if err != nil {
		t.Fatalf("the named holder, pid %d, is not running: %v", pid, err)
	}
	// /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces, not ")".
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) < 2 || fields[1] != strconv.Itoa(first.PID()) {
		t.Fatalf("the named holder, pid %d, is not a child of the first store's supervisor (pid %d): stat %q", pid, first.PID(), stat)
	}
	t.Logf("refused: %s", strings.TrimSpace(msg))
	return pid
}
