package stripetest

import "syscall"

// dieWithParent makes the kernel kill stripe-mock when the process that
// started it dies (a test binary that times out or is killed never reaches
// Close). Linux only: elsewhere a killed parent leaves stripe-mock running
// on its Unix socket, which nothing else uses.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
