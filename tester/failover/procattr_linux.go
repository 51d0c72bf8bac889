package failover

import "syscall"

// childAttr makes the kernel kill a child when the checker dies, however
// it dies, so that no etcd or glockd outlives a run.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
