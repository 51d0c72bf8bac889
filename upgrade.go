package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/glockd/glockd/internal/handover"
	"github.com/glockd/glockd/internal/transport"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/glockd/glockd/internal/ha"
)

// Upgrading without dropping a lock (docs/operating.md): on SIGUSR2 the
// daemon starts the binary at its executable's path with the same
// arguments, and hands it, over an inherited unix socket pair, its
// listeners, its connections and its state. The steps:
//
//  1. The old process starts the new one, sends it a header (the format of
//     the state) and waits for it to answer that it reads that format.
//  2. It pauses: the listeners stop accepting and every connection's reader
//     stops at a batch boundary, once the replies of everything it read are
//     written (a read deadline in the past ends its read; see conn.park),
//     a websocket's possibly in the middle of a message (see
//     transport.Websocket.Unread). TLS connections are closed (their locks
//     are orphaned). A connection killed meanwhile is ended whatever the
//     outcome (shutdownKilled).
//  3. The manager takes a snapshot, then waits, frozen.
//  4. The descriptors go by SCM_RIGHTS, then the state; the new process
//     builds its server from them without serving yet, and confirms.
//  5. The old process writes the new one's pid into the pidfile and tells
//     it to go; the new one serves, the old one exits.
//
// Any failure before 5 (the binary does not start, refuses the format, does
// not answer in time, a connection does not stop in time) kills the new
// process and resumes the old one where it stopped: nothing was read or
// written meanwhile.
//
// The state's encoding, the link between the two processes, starting the
// new one and its receiving side are in internal/handover; the snapshot and
// restore of the manager's state in upgrade_snapshot.go.

// DefaultUpgradeTimeout bounds each step of a hand-over in which the old
// process waits for the new one.
const DefaultUpgradeTimeout = 30 * time.Second

// stopTimeout bounds how long the connections have to stop at a batch
// boundary: one whose client does not read its replies holds the pause up,
// and fails the hand-over instead.
const stopTimeout = 3 * time.Second

// errUpgradeUnderWay refuses a second USR2 during a hand-over.
var errUpgradeUnderWay = errors.New("a hand-over is already under way")

// upgrader is a server's part in hand-overs, on either side.
type upgrader struct {
	active atomic.Bool // a hand-over is under way (or done): refuse another
	// handingOff is set once the new process has confirmed, from just
	// before the go: a kill from then on shuts the victim's socket down,
	// since the new process serves it next (see shutdownKilled).
	handingOff atomic.Bool

	mu        sync.Mutex
	cur       *pause // the current or last pause
	listeners map[string]*pausableListener

	heirPid int // the new process, once handed over (guarded by mu)

	// The new process's: what it adopts before Start.
	inherited    map[string]net.Listener
	adopted      []*conn
	unixSeqStart int

	handovers *prometheus.CounterVec // by result
	closed    *prometheus.CounterVec // connections closed at a hand-over, by transport
	// What the two count of done and closed, since the first process:
	// carried from process to process (guarded by mu).
	done        uint64
	closedCount map[string]uint64
}

// pause is one hand-over's stop of the listeners and connections.
type pause struct {
	gate    chan struct{} // closed to resume; never closed once handed over
	conns   map[*conn]struct{}
	accepts int
}

func (u *upgrader) init(s *Server) {
	u.handovers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "glockd_upgrades_total",
		Help: "Hand-overs to a new binary (SIGUSR2) this process began, by result: done, failed, refused.",
	}, []string{"result"})
	u.closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "glockd_upgrade_closed_connections_total",
		Help: "Connections closed, not handed over, at a hand-over to a new binary, by transport (TLS ones: their keys cannot be handed over).",
	}, []string{"transport"})
	for _, result := range []string{"done", "failed", "refused"} {
		u.handovers.WithLabelValues(result) // exported at 0
	}
	for _, transport := range []string{"tls", "websocket"} { // the ones that can be closed
		u.closed.WithLabelValues(transport)
	}
	s.metrics.registry.MustRegister(u.handovers, u.closed)
}

// noteClosed counts n connections of transport closed at a hand-over.
func (u *upgrader) noteClosed(transport string, n uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closedCount == nil {
		u.closedCount = make(map[string]uint64)
	}
	u.closedCount[transport] += n
	u.closed.WithLabelValues(transport).Add(float64(n))
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

// handedConn returns the connection under c's transport when c can be
// handed over (transport.Conn.Handover).
func handedConn(c *conn) (net.Conn, bool) { return c.t.Handover() }

// unreadInput is what a stopped connection has read and not yet run
// (transport.Conn.Unread).
func unreadInput(c *conn) ([]byte, bool) { return c.t.Unread() }

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
		if _, ok := handedConn(c); ok {
			plain = append(plain, c)
		} else {
			others = append(others, c)
		}
	}
	s.mu.Unlock()
	for _, c := range plain {
		nc, _ := handedConn(c)
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
	nc, ok := handedConn(c)
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
		if nc, ok := handedConn(c); ok && !c.killed.Load() {
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

// handoverRequest is how main asks for a hand-over.
type handoverRequest struct {
	exe     string   // the binary to start
	args    []string // its arguments: this process's
	pidfile *os.File // nil without -pidfile
	timeout time.Duration
	// pauseGC stops the garbage collector from the pause on: set by main,
	// whose process the server is (the setting is the process's). Once
	// handed over the process exits; a failed hand-over turns it back on.
	pauseGC bool
}

// Upgrade hands the server over to a new process, as described above. On
// success the caller must exit at once without closing anything: the new
// process serves the listeners and connections.
func (s *Server) Upgrade(req handoverRequest) error {
	if !s.up.active.CompareAndSwap(false, true) {
		s.up.handovers.WithLabelValues("refused").Inc()
		return errUpgradeUnderWay
	}
	err := s.upgrade(req)
	if err != nil {
		s.up.handovers.WithLabelValues("failed").Inc()
		s.up.active.Store(false)
		return err
	}
	s.up.handovers.WithLabelValues("done").Inc()
	return nil
}

func (s *Server) upgrade(req handoverRequest) (err error) {
	log := s.cfg.Logger
	if req.timeout <= 0 {
		req.timeout = DefaultUpgradeTimeout
	}
	child, err := handover.Start(req.exe, req.args, req.timeout)
	if err != nil {
		return err
	}
	defer child.Close()
	committed := false
	defer func() {
		if !committed {
			child.Kill()
		}
	}()
	pid := child.Pid()
	var haTerm *ha.Term // the term a leader hands over (upgrade_snapshot.go)
	stepDown := false   // the term ended at the go: close what it left open
	if s.ha != nil {
		haTerm = s.ha.BeginHandover()
		defer func() {
			if !committed {
				s.ha.EndHandover()
			}
		}()
		// Deferred before the resumption, so run after it: closeLock
		// waits for every connection to end, which a parked reader or
		// one waiting on the frozen manager never would.
		defer func() {
			if stepDown {
				s.closeLock()
			}
		}()
	}

	// The pause.
	pauseStart := time.Now()
	ph := newPhases(pauseStart)
	if req.pauseGC {
		// The snapshot and its encoding allocate about 70 bytes a lock,
		// all garbage soon: a collection meanwhile (the heap's goal may be
		// near) would only lengthen the pause. GOMEMLIMIT still holds.
		gc := debug.SetGCPercent(-1)
		defer func() {
			if !committed {
				debug.SetGCPercent(gc)
			}
		}()
	}
	p := &pause{gate: make(chan struct{}), conns: make(map[*conn]struct{})}
	var conns []*conn
	defer func() {
		if !committed {
			s.resume(p, conns)
			log.Info("upgrade: resumed serving", "pause", time.Since(pauseStart))
		}
	}()
	conns, err = s.pauseAll(p, pauseStart.Add(min(stopTimeout, req.timeout)), ph)
	if err != nil {
		return err
	}
	st, fds, err := s.handoverDescriptors(req, conns)
	if err != nil {
		return err
	}
	// The connections' descriptors (the last ones) go at once, marked as
	// such: the new process makes its connections of them while this one
	// takes its snapshot.
	split := len(fds) - len(conns)
	if err := child.SendFDs(fds[:split], false); err != nil {
		return err
	}
	if err := child.SendFDs(fds[split:], true); err != nil {
		return err
	}
	ph.mark("descriptors")
	frozen, err := s.snapshot(st, conns, pauseStart, req.timeout)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	ph.mark("snapshot")
	defer func() {
		if !committed {
			close(frozen) // the manager goes on
		}
	}()
	if s.ha != nil {
		if err := s.handoverHA(st, haTerm); err != nil {
			return err
		}
	}
	data := st.Encode(nil)
	ph.mark("encode")
	if err := child.SendState(data, pauseStart); err != nil {
		return err
	}
	ph.mark("send")
	if err := child.AwaitConfirm(time.Now().Add(req.timeout)); err != nil {
		return err
	}
	ph.mark("await_confirm")
	s.up.shutdownKilled(conns)
	defer func() {
		if !committed {
			s.up.handingOff.Store(false)
		}
	}()
	if err := s.sendGo(child, req, haTerm); err != nil {
		// The node's step-down may have left the lock listeners open for
		// the new process, which will not have them.
		stepDown = errors.Is(err, errTermEnded) && haTerm.Ended()
		return err
	}
	ph.mark("go")
	committed = true
	s.up.mu.Lock()
	s.up.heirPid = pid
	s.up.mu.Unlock()
	log.Info("upgrade: handed over; exiting", append([]any{"pid", pid, "new_version", string(child.Version),
		"connections", len(conns), "locks", len(st.Locks), "shared_holds", len(st.Shared),
		"waiters", len(st.Waiters), "state_bytes", len(data), "pause_until_go", time.Since(pauseStart)}, ph.attrs...)...)
	return nil
}

// errTermEnded fails a leader's hand-over at the go.
var errTermEnded = errors.New("the term ended during the hand-over, or had too little time left")

// passHangup sends SIGHUP to the new process a successful hand-over
// started: one came during the hand-over (serveSignals).
func (u *upgrader) passHangup(log *slog.Logger) {
	u.mu.Lock()
	pid := u.heirPid
	u.mu.Unlock()
	if pid <= 0 {
		return
	}
	log.Info("SIGHUP during the hand-over: passed on to the new process", "pid", pid)
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		log.Error("SIGHUP during the hand-over: could not pass it on; send it again", "pid", pid, "err", err)
	}
}

// sendGo writes the new process's pid into the pidfile and tells it to
// serve. A leader's term goes with the go; a standby stops campaigning. On
// error the old process serves on, its pid back in the pidfile.
func (s *Server) sendGo(child *handover.Child, req handoverRequest, haTerm *ha.Term) error {
	if req.pidfile != nil {
		if err := handover.WritePid(req.pidfile, child.Pid()); err != nil {
			return fmt.Errorf("pidfile: %w", err)
		}
	}
	var goMsg []byte
	switch {
	case haTerm != nil:
		// The lease is the new process's from now on; it serves only
		// after the go, which tells it how long the term has left.
		s.ha.HandOff(true)
		var ok bool
		if goMsg, ok = s.ha.GoMessage(haTerm); !ok {
			s.ha.HandOff(false)
			if req.pidfile != nil {
				handover.WritePid(req.pidfile, os.Getpid())
			}
			return errTermEnded
		}
	case s.ha != nil:
		// A standby: it stops campaigning and gives its lease up; the
		// new process campaigns afresh.
		s.ha.Stop()
	}
	if err := child.Go(goMsg); err != nil {
		if req.pidfile != nil {
			handover.WritePid(req.pidfile, os.Getpid())
		}
		return err
	}
	return nil
}

func (o *asyncOutbox) pendingCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pending
}
