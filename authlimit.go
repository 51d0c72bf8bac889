package main

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/wire"
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
	grants := c.state.grants
	c.authTimer = time.AfterFunc(c.srv.cfg.Security.AuthFailureDelay, func() {
		select {
		case grants <- waitResult{authFailure: true}:
		default: // cannot happen: nothing else is pending
		}
	})
	return c.startWait(cmd, rest, inWait)
}

// endAuthDelayLocked ends a failed auth's delay now: the client has sent
// all it will (end of input, or the server is stopping), so the delay
// would only hold up its replies. Called with c.mu held.
func (c *conn) endAuthDelayLocked() {
	if c.authTimer != nil && c.authTimer.Stop() {
		c.authTimer = nil
		select {
		case c.state.grants <- waitResult{authFailure: true}:
		default:
		}
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
