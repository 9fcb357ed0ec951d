// Package supervisor keeps the store answering through its own crashes.
//
// By default (SUPERVISE=1, what `go run .` does) the store runs as two
// processes. The parent, the supervisor, owns the listening socket and runs
// the store as a child process that inherits it as file descriptor 3 (the
// first of exec.Cmd.ExtraFiles; the child learns so from an environment
// variable and finds it with InheritedListener). Whenever the child dies (the
// Crash button, a panic, SIGKILL) the supervisor starts a new one within
// milliseconds. Because the socket outlives every child, a request made
// during a restart waits in the kernel's accept queue instead of being
// refused, and the new child answers it as soon as it serves.
//
// A child that exits 0 (a graceful stop) ends the supervisor too; one that
// exits with ExitConfig had a start-up error that a restart would repeat, and
// the supervisor exits with it. A child that keeps dying right after starting
// (a database that went away, say) is restarted with a growing delay, up to
// 5 s, instead of in a tight loop. A child whose supervisor dies stops itself
// (WatchParent): an orphan would hold the database and the socket forever.
//
// On SQLite a store holds its file (store.Open locks PATH.lock): a second
// store on the file refuses to start. The next child is started only after
// the last one was reaped, when the kernel has released its lock whatever
// killed it, so it always takes the file over. A supervisor killed outright
// is the exception: its child lives on for up to a second (WatchParent) plus
// its graceful stop, and a new supervisor started meanwhile on the same file
// has its child refused, and exits with it (ExitConfig).
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Exit statuses. The supervisor restarts a child that exits with anything but
// 0 or ExitConfig: a configuration error would only fail again.
const (
	ExitCrash  = 1 // the crash button, a panic, a lost database: restart
	ExitConfig = 2 // bad flags or environment, or a failed start: do not restart
)

// ExitError carries an exit status out of the program's run function, for
// main to exit with (and so for a supervisor to read).
type ExitError int

func (e ExitError) Error() string { return "exit status " + strconv.Itoa(int(e)) }

const (
	// listenFDEnv tells a child store that its listening socket is inherited
	// as file descriptor 3 (the first of exec.Cmd.ExtraFiles).
	listenFDEnv = "WIDGET_STORE_LISTEN_FD"
	// parentPIDEnv tells a child store its supervisor's process ID, for
	// WatchParent.
	parentPIDEnv = "WIDGET_STORE_SUPERVISOR_PID"
)

// InheritedListener returns the socket a supervisor handed down, and whether
// this process is such a child at all. A child whose socket cannot be used
// gets a nil listener (and isChild true): it then listens itself.
func InheritedListener(getenv func(string) string) (ln net.Listener, isChild bool) {
	if getenv(listenFDEnv) != "3" {
		return nil, false
	}
	f := os.NewFile(3, "listener")
	ln, err := net.FileListener(f)
	f.Close() // FileListener made its own copy of the descriptor; this one's close error changes nothing
	if err != nil {
		return nil, true
	}
	return ln, true
}

// Run is the supervisor: it listens on addr (host:port), then runs this very program
// (os.Executable with os.Args[1:]) as a child store that inherits the socket,
// restarting it whenever it dies, until ctx is done (when it passes SIGTERM on
// and waits up to 20 s for a graceful stop) or the child exits 0 or
// ExitConfig (then Run returns ExitError(ExitConfig)). The child writes to
// stdout and stderr.
func Run(ctx context.Context, addr string, logger *slog.Logger, stdout, stderr io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close() // Run is ending and every child has exited: a close error would change nothing
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return fmt.Errorf("listener file: %w", err)
	}
	defer lf.Close() // a duplicate of ln's descriptor, closed for tidiness only
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	logger = logger.With("component", "supervisor")
	logger.Info("supervising the store; it restarts by itself when it crashes (SUPERVISE=0 to run it directly)", "addr", "http://"+DisplayAddr(ln.Addr()))

	var quickCrashes int
	for restarts := 0; ; restarts++ {
		cmd := exec.Command(exe, os.Args[1:]...)
		cmd.Env = append(os.Environ(), listenFDEnv+"=3", parentPIDEnv+"="+strconv.Itoa(os.Getpid()))
		cmd.ExtraFiles = []*os.File{lf}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		started := time.Now()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start store: %w", err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()

		var waitErr error
		select {
		case waitErr = <-done:
		case <-ctx.Done():
			// Pass the stop on and let the store shut down gracefully.
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
				logger.Warn("signal store", "err", err)
			}
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				logger.Warn("store did not stop in 20s; killing it")
				cmd.Process.Kill() // best effort: it may have just exited, and Wait below reaps it either way
				<-done
			}
			return nil
		}

		code := cmd.ProcessState.ExitCode() // -1 when killed by a signal
		switch {
		case waitErr == nil:
			logger.Info("store stopped")
			return nil
		case code == ExitConfig:
			return ExitError(ExitConfig)
		}
		// Restart at once, but back off if the store keeps dying right after
		// starting instead of spinning.
		if time.Since(started) < 2*time.Second {
			quickCrashes++
		} else {
			quickCrashes = 0
		}
		delay := time.Duration(0)
		if quickCrashes > 3 {
			delay = min(time.Duration(quickCrashes-3)*500*time.Millisecond, 5*time.Second)
		}
		logger.Warn("store exited; restarting", "status", cmd.ProcessState.String(), "restart", restarts+1, "delay", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
	}
}

// WatchParent stops a child store whose supervisor died (it was killed, say):
// it calls stop once the process's parent is no longer the supervisor that
// started it. It returns at once in a process no supervisor started, and
// otherwise when ctx is done or after calling stop; run it on its own
// goroutine.
func WatchParent(ctx context.Context, getenv func(string) string, stop context.CancelFunc) {
	ppid, err := strconv.Atoi(getenv(parentPIDEnv))
	if err != nil {
		return // not started by a supervisor: there is nothing to watch
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if os.Getppid() != ppid {
				stop()
				return
			}
		}
	}
}

// DisplayAddr turns a wildcard listen address into one a browser can open:
// "[::]:8080" becomes "localhost:8080".
func DisplayAddr(addr net.Addr) string {
	s := addr.String()
	if tcp, ok := addr.(*net.TCPAddr); ok && (tcp.IP == nil || tcp.IP.IsUnspecified()) {
		return "localhost:" + strconv.Itoa(tcp.Port)
	}
	return s
}
