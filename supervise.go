package main

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

// listenFDEnv tells a child store that its listening socket is inherited as
// file descriptor 3 (the first of exec.Cmd.ExtraFiles).
const listenFDEnv = "WIDGET_STORE_LISTEN_FD"

// inheritedListener returns the socket a supervisor handed down, and whether
// this process is such a child at all.
func inheritedListener(getenv func(string) string) (net.Listener, bool) {
	if getenv(listenFDEnv) != "3" {
		return nil, false
	}
	f := os.NewFile(3, "listener")
	ln, err := net.FileListener(f)
	f.Close() // FileListener made its own copy of the descriptor
	if err != nil {
		return nil, true // the caller falls back to listening itself
	}
	return ln, true
}

// supervise is `go run .` by default: the parent process owns the listening
// socket and runs the store as a child that inherits it, restarting the child
// within milliseconds whenever it dies (the Crash button, a panic, SIGKILL).
// Because the socket outlives every child, a request made during a restart
// waits in the kernel's accept queue instead of being refused.
//
// A child that exits 0 (a graceful stop) ends the supervisor too; one that
// exits with exitConfig had a start-up error that a restart would repeat.
func supervise(ctx context.Context, cfg config, logger *slog.Logger, stdout io.Writer) error {
	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return fmt.Errorf("listener file: %w", err)
	}
	defer lf.Close()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	logger = logger.With("component", "supervisor")
	logger.Info("supervising the store; it restarts by itself when it crashes (SUPERVISE=0 to run it directly)", "addr", "http://"+displayAddr(ln.Addr()))

	var quickCrashes int
	for restarts := 0; ; restarts++ {
		cmd := exec.Command(exe, os.Args[1:]...)
		cmd.Env = append(os.Environ(), listenFDEnv+"=3", "WIDGET_STORE_SUPERVISOR_PID="+strconv.Itoa(os.Getpid()))
		cmd.ExtraFiles = []*os.File{lf}
		cmd.Stdout, cmd.Stderr = stdout, os.Stderr
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
				cmd.Process.Kill() // best effort: it may have just exited
				<-done
			}
			return nil
		}

		code := cmd.ProcessState.ExitCode() // -1 when killed by a signal
		switch {
		case waitErr == nil:
			logger.Info("store stopped")
			return nil
		case code == exitConfig:
			return exitError(exitConfig)
		}
		// Restart at once, but back off if the store keeps dying right after
		// starting (a database that went away, say) instead of spinning.
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

// watchSupervisor stops a child store whose supervisor died (it was killed,
// say): an orphan would hold the database and the socket forever.
func watchSupervisor(ctx context.Context, getenv func(string) string, stop context.CancelFunc) {
	ppid, err := strconv.Atoi(getenv("WIDGET_STORE_SUPERVISOR_PID"))
	if err != nil {
		return
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
