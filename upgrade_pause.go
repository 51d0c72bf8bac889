package main

// The hand-over's pause (upgrade.go): the listeners and the connections
// stopped at a batch boundary, each connection's state captured while the
// manager is frozen, a kill during the pause made to win, and the
// resumption when the hand-over fails.

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/glockd/glockd/internal/handover"
	"github.com/glockd/glockd/internal/transport"
)

// pause is one hand-over's stop of the listeners and connections.
type pause struct {
	gate    chan struct{} // closed to resume; never closed once handed over
	conns   map[*conn]struct{}
	accepts int
}

// pausableListener is a listener whose Accept can be stopped and resumed
// without closing it: a hand-over sets a deadline in the past on it.
type pausableListener struct {
	net.Listener
	kind   string
	path   string // unix
	u      *upgrader
	parkAt atomic.Pointer[pause]
}

type deadliner interface{ SetDeadline(time.Time) error }

func (l *pausableListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return nc, err
		}
		p := l.parkAt.Swap(nil)
		if p == nil {
			return nc, err
		}
		l.u.mu.Lock()
		p.accepts++
		l.u.mu.Unlock()
		<-p.gate
	}
}

// listen opens, or takes from the old process, the listener of kind.
func (s *Server) listen(lc *net.ListenConfig, kind, addr string) (net.Listener, error) {
	l := s.up.takeInherited(kind)
	if l == nil {
		var err error
		if l, err = lc.Listen(context.Background(), "tcp", addr); err != nil {
			return nil, err
		}
	}
	return s.up.pausable(kind, "", l), nil
}

// listenUnixSocket is listenUnix, or the unix listener of the old process.
func (s *Server) listenUnixSocket() (net.Listener, error) {
	l := s.up.takeInherited("unix")
	if l == nil {
		var err error
		if l, err = transport.ListenUnix(s.cfg.UnixPath, s.cfg.UnixMode); err != nil {
			return nil, err
		}
	}
	return s.up.pausable("unix", s.cfg.UnixPath, l), nil
}

func (u *upgrader) takeInherited(kind string) net.Listener {
	u.mu.Lock()
	defer u.mu.Unlock()
	l := u.inherited[kind]
	delete(u.inherited, kind)
	return l
}

func (u *upgrader) pausable(kind, path string, l net.Listener) net.Listener {
	pl := &pausableListener{Listener: l, kind: kind, path: path, u: u}
	u.mu.Lock()
	if u.listeners == nil {
		u.listeners = make(map[string]*pausableListener)
	}
	u.listeners[kind] = pl
	u.mu.Unlock()
	return pl
}

// park stops the reader at a batch boundary for a hand-over: the read that
// ended with a deadline error was asked to stop by pauseAll. It reports
// whether the reader was asked to, and returns when it may go on (never,
// once the connection is handed over: the process then exits).
//
//go:noinline
func (c *conn) park(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	p := c.parkAt.Swap(nil)
	if p == nil || c.killed.Load() {
		return false // a kill's deadline: the connection ends
	}
	c.srv.up.mu.Lock()
	p.conns[c] = struct{}{}
	c.srv.up.mu.Unlock()
	<-p.gate
	return true
}

// pauseAll stops the listeners and the connections for a hand-over, or
// fails by deadline, and returns the connections stopped, to hand over. On
// error the caller resumes.
func (s *Server) pauseAll(p *pause, deadline time.Time, ph *phases) ([]*conn, error) {
	u := &s.up
	u.mu.Lock()
	u.cur = p
	var ls []*pausableListener
	for _, l := range u.listeners {
		ls = append(ls, l)
	}
	u.mu.Unlock()
	past := time.Unix(1, 0)
	for _, l := range ls {
		l.parkAt.Store(p)
		if d, ok := l.Listener.(deadliner); ok {
			d.SetDeadline(past)
		}
	}
	accepting := func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return p.accepts == len(ls)
	}
	if !waitUntil(deadline, accepting) {
		return nil, errors.New("the listeners did not stop in time")
	}
	ph.mark("stop_listeners")
	// Nothing is accepted now; connections being admitted (TLS
	// handshakes, websocket upgrades) are refused while paused (track).
	s.mu.Lock()
	s.closeHandshakes()
	var plain, others []*conn
	for c := range s.conns {
		if _, ok := c.t.Handover(); ok {
			plain = append(plain, c)
		} else {
			others = append(others, c)
		}
	}
	s.mu.Unlock()
	for _, c := range plain {
		nc, _ := c.t.Handover()
		c.parkAt.Store(p)
		nc.SetReadDeadline(past)
	}
	for _, c := range others {
		u.noteClosed(c.state.transport, 1)
		c.t.Close()
	}
	// Every connection has stopped, or ended. (u.mu is taken inside s.mu,
	// never the other way round: track does so.)
	stopped := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		u.mu.Lock()
		defer u.mu.Unlock()
		for c := range s.conns {
			if _, ok := p.conns[c]; !ok {
				return false
			}
		}
		return true
	}
	if !waitUntil(deadline, stopped) {
		return nil, errors.New("connections did not stop at a batch boundary in time (a client that does not read its replies?)")
	}
	ph.mark("stop_conns")
	var handed []*conn
	s.mu.Lock()
	for c := range s.conns {
		handed = append(handed, c)
	}
	s.mu.Unlock()
	return handed, nil
}

// captureConn records what a stopped connection holds besides its input: a
// pending gw or sgw and the lines queued behind it. Called while the manager
// is frozen after its snapshot, whose view of the connection it checks: it
// reports errHandoverBusy when an outcome is decided but not yet written
// (the snapshot is then taken again), or when the connection is in a failed
// auth's delay.
func captureConn(c *conn, h *handover.Conn) error {
	if !c.mu.TryLock() {
		return errHandoverBusy
	}
	defer c.mu.Unlock()
	if c.authTimer != nil || len(c.b.out) > 0 || c.waiting != (c.state.waiter != nil) || len(c.state.grants) > 0 {
		return errHandoverBusy
	}
	if box := c.state.box; box != nil {
		box.mu.Lock()
		undelivered := len(box.out)
		box.mu.Unlock()
		if undelivered > 0 {
			return errHandoverBusy
		}
	}
	h.PendingVerb, h.PendingName, h.PendingMS, h.PendingMax, h.Queued = "", "", 0, 0, nil
	if !c.waiting {
		return nil
	}
	h.PendingVerb, h.PendingName = c.pending.Verb.String(), string(c.pending.Name)
	h.PendingMS, h.PendingMax = c.pending.MS, c.pending.Max
	q := &c.queue
	for i := q.next; i < len(q.lines); i++ {
		start := int32(0)
		if i > 0 {
			start = q.lines[i-1].end
		}
		h.Queued = append(h.Queued, handover.QueuedLine{Line: string(q.data[start:q.lines[i].end]), TooLong: q.lines[i].tooLong})
	}
	return nil
}

// shutdownKilled shuts down the socket of every connection among conns
// killed during the pause, and from now on has every kill do so (handingOff).
// A kill there (kill, kill-holder, -auth-timeout, an eviction, an identity
// dropped by a reload) sets conn.killed and a read deadline: that ends the
// connection when its reader resumes after a failed hand-over (conn.park,
// Server.resume), but after a successful one the reader never resumes, and
// closing this process's descriptor would not end the connection either: the
// new process holds a duplicate of it. shutdown(2) acts on the socket that
// both descriptors share, so the new process reads the end of input and ends
// the connection, orphaning the locks it adopted. Done only from the go on,
// so that a failed hand-over before it leaves a kill as it would be
// without the hand-over (a websocket close frame, the replies of what was
// read before it). The flag is set before the killed flags are read, and a
// kill sets killed before it reads the flag: one of the two shuts it down.
func (u *upgrader) shutdownKilled(conns []*conn) {
	u.handingOff.Store(true)
	for _, c := range conns {
		if c.killed.Load() {
			shutdownHanded(c)
		}
	}
}

// shutdownHanded shuts down both directions of the socket under c, for
// every process that holds a descriptor of it; nothing for a connection
// that is not handed over (TLS).
func shutdownHanded(c *conn) {
	nc, ok := c.t.Handover()
	if !ok {
		return
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
}

// phases times the steps of a hand-over for its log line: each mark
// records the time since the previous one under its name.
type phases struct {
	last  time.Time
	attrs []any
}

func newPhases(start time.Time) *phases { return &phases{last: start} }

func (p *phases) mark(name string) {
	now := time.Now()
	p.attrs = append(p.attrs, name, now.Sub(p.last).Round(time.Microsecond))
	p.last = now
}

// waitUntil polls cond until it holds or deadline passes.
func waitUntil(deadline time.Time, cond func() bool) bool {
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// resume lets the listeners and connections go on after a failed hand-over.
// The deadlines are cleared before the gate opens: a reader that saw the
// error parks and then reads again; one that did not never sees it.
func (s *Server) resume(p *pause, conns []*conn) {
	s.up.mu.Lock()
	for _, l := range s.up.listeners {
		l.parkAt.Store(nil)
		if d, ok := l.Listener.(deadliner); ok {
			d.SetDeadline(time.Time{})
		}
	}
	s.up.mu.Unlock()
	// A connection killed during the pause keeps its kill's deadline: it
	// ends as it would have without the hand-over.
	unpark := func(c *conn) {
		c.parkAt.Store(nil)
		if nc, ok := c.t.Handover(); ok && !c.killed.Load() {
			nc.SetReadDeadline(time.Time{})
		}
	}
	s.mu.Lock()
	for c := range s.conns {
		unpark(c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		unpark(c)
	}
	close(p.gate)
}

// paused reports whether a hand-over has stopped the server: new
// connections are refused meanwhile.
func (u *upgrader) paused() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cur == nil {
		return false
	}
	select {
	case <-u.cur.gate:
		return false
	default:
		return true
	}
}
