//go:build unix && !linux

package failover

import "syscall"

// childAttr: only Linux can tie a child's life to its parent's; elsewhere
// the children are stopped when the run ends normally.
func childAttr() *syscall.SysProcAttr { return nil }
