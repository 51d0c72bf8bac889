//go:build !linux

package transport

import (
	"syscall"
	"time"
)

// TCPOptions: TCP_USER_TIMEOUT is Linux-only; elsewhere keepalive alone
// bounds dead-peer detection.
func TCPOptions(time.Duration) func(string, string, syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error { return nil }
}
