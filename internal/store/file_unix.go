//go:build unix

package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// lockFile takes the SQLite file's lock (see holdFile): an exclusive flock
// on path+".lock", without waiting. It writes holder into the lock file for
// the next one to read. A lock already held is an *InUseError naming what
// its holder wrote.
func lockFile(path, holder string) (*os.File, error) {
	lockPath := path + ".lock"
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		var who []byte
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who, _ = io.ReadAll(io.LimitReader(f, 512)) // best effort: an unreadable holder is shown as unknown
		}
		f.Close() // the lock error is the one to report
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		return nil, &InUseError{Path: path, LockPath: lockPath, Holder: strings.TrimSpace(string(who))}
	}
	if err := f.Truncate(0); err != nil {
		f.Close() // releases the lock; the write error is the one to report
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if _, err := f.WriteAt([]byte(holder+"\n"), 0); err != nil {
		f.Close() // releases the lock; the write error is the one to report
		return nil, fmt.Errorf("lock file: %w", err)
	}
	return f, nil
}

// freeBytes is the space an unprivileged process may still use on the
// filesystem that holds path (statfs(2) of its directory).
func freeBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
