//go:build linux

package store

import (
	"net"
	"syscall"
	"time"
)

// tcpUserTimeoutOption is TCP_USER_TIMEOUT (linux/tcp.h), which the syscall
// package does not name.
const tcpUserTimeoutOption = 0x12

// setTCPUserTimeout bounds how long data sent on c may stay unacknowledged
// before the kernel drops the connection (see dialForFailover).
func setTCPUserTimeout(c *net.TCPConn, d time.Duration) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeoutOption, int(d.Milliseconds()))
	}); err != nil {
		return err
	}
	return serr
}
