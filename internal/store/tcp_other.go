//go:build !linux

package store

import (
	"net"
	"time"
)

// setTCPUserTimeout does nothing outside Linux: keepalives alone detect a
// dead server there (see dialForFailover).
func setTCPUserTimeout(*net.TCPConn, time.Duration) error { return nil }
