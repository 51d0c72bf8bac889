package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpOptions sets TCP_USER_TIMEOUT on a listening socket; accepted sockets
// inherit it. It bounds how long a reply may stay unacknowledged before the
// kernel gives up on the peer and the connection's locks are orphaned.
func (s *Server) tcpOptions(network, _ string, rc syscall.RawConn) error {
	if s.cfg.UserTimeout <= 0 || network == "unix" {
		return nil
	}
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(s.cfg.UserTimeout.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}
