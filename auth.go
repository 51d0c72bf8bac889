package main

import (
	"container/list"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/transport"
	"github.com/glockd/glockd/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Limits on guessing tokens (docs/security.md, "What a client without a
// credential can cost").
//
// A wrong auth is answered after -auth-failure-delay, by a timer: the
// connection goes on reading (so its end, a kill or a shutdown is seen at
// once) and queues what follows, as behind a wait (conn.failAuth). The auth
// lines read during the delay are refused without being tried. After
// maxAuthFailures failures the connection is closed, its last reply sent
// first. Failures are also limited per source address and server-wide by
// token buckets: an auth that finds either empty is refused untried.
const (
	// maxAuthFailures is how many failed auths a connection is allowed
	// before it is closed.
	maxAuthFailures = 3
	// DefaultAuthFailuresPerAddr and DefaultAuthFailuresPerSecond are the
	// refill rates of the buckets, per second; each holds
	// acl.BurstSeconds of its rate (at least one).
	DefaultAuthFailuresPerAddr   = 10
	DefaultAuthFailuresPerSecond = 100
	// authLogFirst failures are logged in each authLogInterval; the rest
	// are counted, and the count logged when the interval ends.
	authLogFirst    = 10
	authLogInterval = 10 * time.Second
)

// authOutcome is what the manager made of an auth that did not succeed; the
// connection answers it after the delay.
type authOutcome uint8

const (
	authOK      authOutcome = iota
	authWrong               // the token was tried and is wrong
	authLimited             // refused untried: a failure bucket is empty
)

// sourceAddr is the address failures are counted against: a connection's
// host without its port; "unix" for every unix socket connection.
func sourceAddr(c *connState) string {
	if c.transport == "unix" {
		return "unix"
	}
	if host, _, err := net.SplitHostPort(c.name); err == nil {
		return host
	}
	return c.name
}

// logSampler logs the first few events of each interval and counts the
// rest, logging the count when the interval ends, so that a flood of
// failures cannot flood the log.
type logSampler struct {
	mu       sync.Mutex
	log      *slog.Logger
	msg      string // of the count's line
	first    int
	interval time.Duration
	logged   int
	dropped  int
	timer    *time.Timer // runs while an interval is open
	stopped  bool
}

func newLogSampler(log *slog.Logger, msg string, first int, interval time.Duration) *logSampler {
	return &logSampler{log: log, msg: msg, first: first, interval: interval}
}

// warn logs msg, or counts it when this interval's first few are logged.
func (s *logSampler) warn(msg string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer == nil && !s.stopped {
		s.timer = time.AfterFunc(s.interval, s.endInterval)
	}
	if s.logged < s.first {
		s.logged++
		s.log.Warn(msg, args...)
		return
	}
	s.dropped++
}

func (s *logSampler) endInterval() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
}

func (s *logSampler) flushLocked() {
	if s.dropped > 0 {
		s.log.Warn(s.msg, "count", s.dropped, "interval", s.interval)
	}
	s.logged, s.dropped, s.timer = 0, 0, nil
}

// stop logs the count now and ends the intervals.
func (s *logSampler) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.timer != nil && s.timer.Stop() {
		s.flushLocked()
	}
}

// errAuthFailures ends a connection after maxAuthFailures failed auths.
var errAuthFailures = errors.New("too many failed auths")

// failAuth starts the delay of the failed auth cmd: like a wait, it leaves
// the commands after it (rest) to run when it ends, and returns the
// out-of-band ones among them, to run now. The reader goes on reading, so
// the connection's end, a kill or a shutdown is seen at once. Called with
// c.mu held; kept out of line for the idle-stack rule (docs/design.md).
//
//go:noinline
func (c *conn) failAuth(cmd *proto.Command, rest []proto.Command, inWait bool) []proto.Command {
	c.b.authFailed = authOK
	c.authFailures++
	st := c.state
	c.authTimer = time.AfterFunc(c.srv.cfg.Security.AuthFailureDelay, func() {
		st.offer(waitResult{authFailure: true}) // nothing else is pending
	})
	pending := *cmd
	pending.Name = nil // the token: not kept for the delay
	return c.startWait(&pending, rest, inWait)
}

// endAuthDelayLocked ends a failed auth's delay now: the client has sent
// all it will (end of input, or the server is stopping), so the delay
// would only hold up its replies. Called with c.mu held.
func (c *conn) endAuthDelayLocked() {
	if c.authTimer != nil && c.authTimer.Stop() {
		c.authTimer = nil
		c.state.offer(waitResult{authFailure: true})
	}
}

// answerAuthFailure answers the failed auth whose delay has ended, then
// either closes the connection, when it has failed maxAuthFailures times,
// or runs what was queued behind it, with the auth lines among them refused
// untried. Called with c.mu held by the wait goroutine.
func (c *conn) answerAuthFailure() error {
	c.authTimer = nil
	c.b.out = append(c.b.out, wire.AuthFailure...)
	c.b.ends = append(c.b.ends, len(c.b.out))
	c.pending = proto.Command{}
	c.waiting = false
	if c.authFailures >= maxAuthFailures {
		if err := c.flush(); err != nil {
			return err
		}
		c.srv.cfg.Logger.Debug("closing a connection after failed auths", "conn", c.state.name, "failures", c.authFailures)
		return errAuthFailures
	}
	c.b.refuseAuth = true
	return c.runQueue()
}

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
