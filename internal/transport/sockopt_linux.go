package transport

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TCPOptions is a net.ListenConfig's Control that sets TCP_USER_TIMEOUT on
// a listening socket, when userTimeout is positive; accepted sockets inherit
// it. It bounds how long a reply may stay unacknowledged before the kernel
// gives up on the peer and the connection's locks are orphaned.
func TCPOptions(userTimeout time.Duration) func(network, address string, rc syscall.RawConn) error {
	return func(network, _ string, rc syscall.RawConn) error {
		if userTimeout <= 0 || network == "unix" {
			return nil
		}
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds()))
		})
		if err != nil {
			return err
		}
		return serr
	}
}
