package main

import (
	"container/list"
	"time"

	"github.com/glockd/glockd/internal/transport"
	"github.com/prometheus/client_golang/prometheus"
)

// Connections that have not authenticated yet (with -acl-file): what a
// client without a credential can hold (docs/security.md).
//
//   - They have their own cap, -max-unauth-conns. A new connection that finds
//     it reached, or -max-conns reached, closes the oldest unauthenticated
//     connection to make room: strangers that connect and say nothing can
//     never keep a client with a credential out, only make it race them.
//   - One that has not authenticated within -auth-timeout is closed.
//   - Before it authenticates, a connection buffers at most transport.UnauthBuffer
//     bytes of input: a line, a websocket message, the lines queued behind a
//     failed auth's delay.
const (
	// DefaultAuthTimeout is -auth-timeout's default.
	DefaultAuthTimeout = 10 * time.Second
	// unauthShare is -max-unauth-conns' default: this fraction of
	// -max-conns.
	unauthShare = 4
)

// unauthConns is the Server's list of unauthenticated connections, oldest
// first, guarded by Server.mu.
type unauthConns struct {
	max  int
	list list.List // of *conn
}

// admitUnauth makes room for a new unauthenticated connection: it closes the
// oldest unauthenticated ones while there are too many of them or, with
// full, while the server is full. It skips (and forgets) those that have
// authenticated meanwhile. Called with s.mu held.
func (s *Server) admitUnauth(full func() bool) {
	u := &s.unauth
	for u.list.Len() > 0 && (u.list.Len() >= u.max || full()) {
		c := u.list.Remove(u.list.Front()).(*conn)
		c.unauthElem = nil
		if c.state.identified.Load() {
			continue // counted as any connection from now on
		}
		c.evicted = true
		s.live--
		s.metrics.unauthClosed.WithLabelValues("evicted").Inc()
		if c.state.kill != nil {
			c.state.kill()
		}
	}
}

// forgetUnauth takes c off the list, if it is there. Called with s.mu held.
func (s *Server) forgetUnauth(c *conn) {
	if c.unauthElem != nil {
		s.unauth.list.Remove(c.unauthElem)
		c.unauthElem = nil
	}
}

// identified takes a connection that has just authenticated off the list.
func (s *Server) identified(c *conn) {
	s.mu.Lock()
	s.forgetUnauth(c)
	s.mu.Unlock()
}

// unauthenticated reports whether c needs a credential it has not given
// yet: it must keep to the small buffers.
func (c *conn) unauthenticated() bool {
	return c.srv.cfg.Security.ACLFile != "" && !c.state.identified.Load()
}

// noteIdentified takes c off the list of unauthenticated connections once
// the manager has identified it. Called with c.mu held, after each batch.
func (c *conn) noteIdentified() {
	if c.listedUnauth && c.state.identified.Load() {
		c.listedUnauth = false
		c.srv.identified(c)
	}
}

// startAuthTimer closes c unless it has authenticated within -auth-timeout;
// the returned timer is stopped when c ends.
func (c *conn) startAuthTimer() *time.Timer {
	return time.AfterFunc(c.srv.cfg.Security.AuthTimeout, func() {
		if !c.state.identified.Load() && c.state.kill != nil {
			c.srv.metrics.unauthClosed.WithLabelValues("auth_timeout").Inc()
			c.srv.cfg.Logger.Debug("closing a connection that did not authenticate in time", "conn", c.state.name)
			c.state.kill()
		}
	})
}

// maxQueued is how many bytes of lines c may queue behind a wait or a failed
// auth's delay.
func (c *conn) maxQueued() int {
	if c.unauthenticated() {
		return transport.UnauthBuffer
	}
	return max(maxQueued, 2*c.srv.cfg.MaxLine)
}

// unauthGauge exports how many connections have not authenticated yet.
func (s *Server) unauthGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "glockd_unauthenticated_connections",
		Help: "Live connections that have not authenticated yet (with -acl-file); at most -max-unauth-conns.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for e := s.unauth.list.Front(); e != nil; e = e.Next() {
			if !e.Value.(*conn).state.identified.Load() {
				n++
			}
		}
		return float64(n)
	})
}
