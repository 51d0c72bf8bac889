//go:build !linux

package main

import "syscall"

// tcpOptions: TCP_USER_TIMEOUT is Linux-only; elsewhere keepalive alone
// bounds dead-peer detection.
func (s *Server) tcpOptions(string, string, syscall.RawConn) error { return nil }
