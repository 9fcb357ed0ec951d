//go:build !linux

package stripetest

import "syscall"

// dieWithParent: see procattr_linux.go.
func dieWithParent() *syscall.SysProcAttr { return nil }
