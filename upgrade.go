package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/transport"
	"github.com/prometheus/client_golang/prometheus"
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
//     written (a read deadline in the past ends its read; see conn.park).
//     TLS connections are closed (their locks are orphaned).
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

// handoverEnv names the descriptor of the hand-over socket in the new
// process's environment.
const handoverEnv = "GLOCKD_HANDOVER_FD"

// Message kinds on the hand-over link: one byte, then the payload.
const (
	msgHeader  = 'H' // old → new: magic, format
	msgReady   = 'R' // new → old: it reads the format; its version
	msgFDs     = 'F' // old → new: descriptors attached
	msgState   = 'S' // old → new: a chunk of the state
	msgDone    = 'D' // old → new: descriptors and bytes sent, when the pause began
	msgConfirm = 'C' // new → old: built, ready to serve
	msgGo      = 'G' // old → new: serve; the old process exits
	msgError   = 'E' // either way: why not
)

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

	mu        sync.Mutex
	cur       *pause // the current or last pause
	listeners map[string]*pausableListener

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
func (s *Server) pauseAll(p *pause, deadline time.Time) ([]*conn, error) {
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
func captureConn(c *conn, h *connHandover) error {
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
	h.pendingVerb, h.pendingName, h.pendingMS, h.pendingMax, h.queued = "", "", 0, 0, nil
	if !c.waiting {
		return nil
	}
	h.pendingVerb, h.pendingName = c.pending.Verb.String(), string(c.pending.Name)
	h.pendingMS, h.pendingMax = c.pending.MS, c.pending.Max
	q := &c.queue
	for i := q.next; i < len(q.lines); i++ {
		start := int32(0)
		if i > 0 {
			start = q.lines[i-1].end
		}
		h.queued = append(h.queued, queuedLineState{line: string(q.data[start:q.lines[i].end]), tooLong: q.lines[i].tooLong})
	}
	return nil
}

// adoptWait gives an adopted connection its pending gw or sgw and the lines
// queued behind it; serveAdopted starts the goroutine that delivers it.
func (c *conn) adoptWait(h *connHandover) {
	if h.pendingVerb == "" {
		return
	}
	c.waiting = true
	c.pending = proto.Command{Verb: proto.LookupVerb([]byte(h.pendingVerb)), Name: []byte(h.pendingName), MS: h.pendingMS, Max: h.pendingMax}
	for _, q := range h.queued {
		cmd := proto.Command{Verb: proto.VerbTooLong}
		if !q.tooLong {
			cmd = proto.Command{Verb: proto.VerbInvalid, Line: []byte(q.line)} // parsed again when it runs
		}
		c.queue.push(&cmd)
	}
	c.queueMem.Set(int64(c.queue.size()))
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
	cmd, link, newVersion, err := startHeir(req)
	if err != nil {
		return err
	}
	defer link.close()
	committed := false
	defer func() {
		if !committed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	pid := cmd.Process.Pid
	var haTerm *term // the term a leader hands over (upgrade_ha.go)
	if s.ha != nil {
		haTerm = s.ha.beginHandover()
		defer func() {
			if !committed {
				s.ha.handedOff.Store(false)
				s.ha.endHandover()
			}
		}()
	}

	// The pause.
	pauseStart := time.Now()
	p := &pause{gate: make(chan struct{}), conns: make(map[*conn]struct{})}
	var conns []*conn
	defer func() {
		if !committed {
			s.resume(p, conns)
			log.Info("upgrade: resumed serving", "pause", time.Since(pauseStart))
		}
	}()
	conns, err = s.pauseAll(p, pauseStart.Add(min(stopTimeout, req.timeout)))
	if err != nil {
		return err
	}
	st := &handoverState{pidfile: -1, conns: make([]connHandover, len(conns))}
	s.up.mu.Lock()
	st.upgrades, st.closed = s.up.done+1, maps.Clone(s.up.closedCount)
	s.up.mu.Unlock()
	var fds []int // the listeners', connections' and pidfile's own: never closed here
	addFD := func(sc syscall.Conn) (int, error) {
		fd, err := rawFD(sc)
		if err != nil {
			return 0, err
		}
		fds = append(fds, fd)
		return len(fds) - 1, nil
	}
	if req.pidfile != nil {
		if st.pidfile, err = addFD(req.pidfile); err != nil {
			return fmt.Errorf("pidfile: %w", err)
		}
	}
	s.up.mu.Lock()
	ls := s.up.listeners
	s.up.mu.Unlock()
	for kind, l := range ls {
		sc, ok := transport.RawListener(l.Listener).(syscall.Conn)
		if !ok {
			return fmt.Errorf("listener %s has no descriptor", kind)
		}
		i, err := addFD(sc)
		if err != nil {
			return fmt.Errorf("listener %s: %w", kind, err)
		}
		st.listeners = append(st.listeners, listenerState{kind: kind, fd: i, path: l.path})
	}
	states := make([]*connState, len(conns))
	for i, c := range conns {
		nc, _ := handedConn(c)
		fd, err := addFD(nc.(syscall.Conn))
		if err != nil {
			return fmt.Errorf("connection %s: %w", c.state.name, err)
		}
		input, discarding := unreadInput(c)
		st.conns[i] = connHandover{name: c.state.name, transport: c.state.transport, fd: fd,
			input: input, discarding: discarding, authFailures: c.authFailures}
		states[i] = c.state
	}
	// The snapshot, then the manager waits, frozen, until the outcome; the
	// connections' side is checked against it, and a snapshot taken while
	// an outcome was on its way to a connection is taken again.
	var frozen chan struct{} // closed to let the manager go on
	defer func() {
		if !committed && frozen != nil {
			close(frozen)
		}
	}()
	for {
		snapped := make(chan error, 1)
		hold := make(chan struct{})
		s.manager.send(request{kind: requestCall, fn: func(m *manager) {
			err := m.snapshotHandover(st, states)
			snapped <- err
			if err == nil {
				<-hold
			}
		}})
		if err = <-snapped; err == nil {
			frozen = hold
			for i, c := range conns {
				if err = captureConn(c, &st.conns[i]); err != nil {
					break
				}
			}
			if err != nil {
				close(frozen)
				frozen = nil
			}
		}
		if err != errHandoverBusy || time.Since(pauseStart) > req.timeout {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if s.ha != nil {
		if err := s.ha.handoverTerm(st, haTerm); err != nil {
			return err
		}
	}
	data := st.encode(nil)
	snapshotTook := time.Since(pauseStart)

	if err := sendState(link, fds, data, pauseStart); err != nil {
		return err
	}
	if _, err := expect(link, msgConfirm, time.Now().Add(req.timeout)); err != nil {
		return fmt.Errorf("new process %d did not confirm: %w", pid, err)
	}
	if req.pidfile != nil {
		if err := writePid(req.pidfile, pid); err != nil {
			return fmt.Errorf("pidfile: %w", err)
		}
	}
	var goMsg []byte
	switch {
	case haTerm != nil:
		// The lease is the new process's from now on; it serves only
		// after the go, which tells it how long the term has left.
		s.ha.handedOff.Store(true)
		var ok bool
		if goMsg, ok = s.ha.goMessage(haTerm); !ok {
			s.ha.handedOff.Store(false)
			if haTerm.ended() {
				// Its step-down may have left them open for the new
				// process, which will not have them.
				s.ha.closeLock()
			}
			if req.pidfile != nil {
				writePid(req.pidfile, os.Getpid())
			}
			return errors.New("the term ended during the hand-over, or had too little time left")
		}
	case s.ha != nil:
		// A standby: it stops campaigning and gives its lease up; the
		// new process campaigns afresh.
		s.ha.stop()
	}
	if err := link.send(msgGo, goMsg, nil); err != nil {
		if req.pidfile != nil {
			writePid(req.pidfile, os.Getpid())
		}
		return fmt.Errorf("new process %d: %w", pid, err)
	}
	committed = true
	log.Info("upgrade: handed over; exiting", "pid", pid, "new_version", string(newVersion),
		"connections", len(conns), "locks", len(st.locks), "shared_holds", len(st.shared),
		"waiters", len(st.waiters), "state_bytes", len(data), "snapshot", snapshotTook, "pause_until_go", time.Since(pauseStart))
	return nil
}

// startHeir starts the new binary with its end of the link, sends it the
// header and waits until it says it reads the format; it returns the new
// process, the link and its version. On error the process is gone.
func startHeir(req handoverRequest) (*exec.Cmd, *handoverLink, []byte, error) {
	link, theirs, err := newHandoverPair()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.Command(req.exe, req.args...)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, handoverEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, handoverEnv+"=3")
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		link.close()
		return nil, nil, nil, fmt.Errorf("starting %s: %w", req.exe, err)
	}
	fail := func(err error) (*exec.Cmd, *handoverLink, []byte, error) {
		cmd.Process.Kill()
		cmd.Wait()
		link.close()
		return nil, nil, nil, fmt.Errorf("new process %d did not get ready: %w", cmd.Process.Pid, err)
	}
	var header []byte
	header = append(header, handoverMagic...)
	header = binary.AppendUvarint(header, mustFormat())
	if err := link.send(msgHeader, header, nil); err != nil {
		return fail(err)
	}
	version, err := expect(link, msgReady, time.Now().Add(req.timeout))
	if err != nil {
		return fail(err)
	}
	return cmd, link, version, nil
}

// sendState sends the descriptors, then the state in chunks, then the
// message that ends them.
func sendState(link *handoverLink, fds []int, data []byte, pauseStart time.Time) error {
	for sent := 0; sent < len(fds); sent += handoverMaxFDs {
		batch := fds[sent:min(sent+handoverMaxFDs, len(fds))]
		if err := link.send(msgFDs, nil, batch); err != nil {
			return fmt.Errorf("sending descriptors: %w", err)
		}
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), handoverMaxMessage-1)
		if err := link.send(msgState, rest[:n], nil); err != nil {
			return fmt.Errorf("sending the state: %w", err)
		}
		rest = rest[n:]
	}
	var done []byte
	done = binary.AppendUvarint(done, uint64(len(fds)))
	done = binary.AppendUvarint(done, uint64(len(data)))
	done = binary.AppendVarint(done, pauseStart.UnixNano())
	if err := link.send(msgDone, done, nil); err != nil {
		return fmt.Errorf("sending the state: %w", err)
	}
	return nil
}

func (o *asyncOutbox) pendingCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pending
}

func mustFormat() uint64 {
	f, err := strconv.ParseUint(handoverFormat, 10, 64)
	if err != nil {
		panic("handoverFormat is not a number: " + handoverFormat)
	}
	return f
}

func writePid(f *os.File, pid int) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0)
	return err
}

// expect receives one message of kind, or says why not.
func expect(link *handoverLink, kind byte, deadline time.Time) ([]byte, error) {
	got, payload, fds, err := link.receive(deadline)
	closeFDs(fds)
	switch {
	case err != nil:
		return nil, err
	case got == msgError:
		return nil, errors.New(string(payload))
	case got != kind:
		return nil, fmt.Errorf("message %q, want %q", got, kind)
	}
	return payload, nil
}

// heir is the new process's side of a hand-over: the link, the state and
// the descriptors received.
type heir struct {
	link       *handoverLink
	st         *handoverState
	fds        []int
	pauseStart time.Time
}

// receiveHandover is what a process started for a hand-over does first: it
// checks the format, says it is ready, and receives the descriptors and the
// state.
func receiveHandover(fdText string) (*heir, error) {
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", handoverEnv, fdText, err)
	}
	link, err := openHandoverLink(fd)
	if err != nil {
		return nil, err
	}
	h := &heir{link: link}
	header, err := expect(link, msgHeader, time.Time{})
	if err != nil {
		link.close()
		return nil, fmt.Errorf("hand-over header: %w", err)
	}
	rest, ok := strings.CutPrefix(string(header), handoverMagic)
	format, n := binary.Uvarint([]byte(rest))
	if !ok || n <= 0 || !formatVersionOK(format) {
		err := fmt.Errorf("the old process hands over state format %d; this binary reads format %s only", format, handoverFormat)
		h.fail(err)
		return nil, err
	}
	if err := link.send(msgReady, []byte(readBuildInfo().Version), nil); err != nil {
		link.close()
		return nil, err
	}
	var data []byte
	for {
		kind, payload, fds, err := link.receive(time.Time{})
		if err != nil {
			closeFDs(h.fds)
			link.close()
			return nil, fmt.Errorf("receiving the state: %w", err)
		}
		h.fds = append(h.fds, fds...)
		switch kind {
		case msgFDs:
		case msgState:
			data = append(data, payload...)
		case msgDone:
			d := decoder{b: payload}
			nfds, nbytes, start := d.uvarint(), d.uvarint(), d.varint()
			if d.err != nil || nfds != uint64(len(h.fds)) || nbytes != uint64(len(data)) {
				err := fmt.Errorf("hand-over incomplete: %d descriptors and %d bytes of %d and %d", len(h.fds), len(data), nfds, nbytes)
				h.fail(err)
				return nil, err
			}
			h.pauseStart = time.Unix(0, start)
			if h.st, err = decodeHandoverState(data, len(h.fds)); err != nil {
				h.fail(err)
				return nil, err
			}
			return h, nil
		default:
			err := fmt.Errorf("unexpected hand-over message %q", kind)
			h.fail(err)
			return nil, err
		}
	}
}

// takePidfile takes the pidfile's descriptor out of the hand-over, if the
// old process had one: its flock is this process's from now on.
func (h *heir) takePidfile() *os.File {
	i := h.st.pidfile
	if i < 0 || h.fds[i] < 0 {
		return nil
	}
	f := os.NewFile(uintptr(h.fds[i]), "pidfile")
	h.fds[i] = -1
	return f
}

// fail tells the old process why not, and gives everything up.
func (h *heir) fail(err error) {
	h.link.send(msgError, []byte(err.Error()), nil)
	closeFDs(h.fds)
	h.fds = nil
	h.link.close()
}

// adopt builds the server's listeners, connections and manager state from
// the hand-over, before Start. The descriptors are the server's from then
// on; on error none is left open.
func (s *Server) adopt(h *heir) (err error) {
	st := h.st
	files := make([]*os.File, len(h.fds))
	for i, fd := range h.fds {
		if fd >= 0 {
			files[i] = os.NewFile(uintptr(fd), "handover")
		}
	}
	h.fds = nil
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close() // the listeners and connections hold duplicates
			}
		}
		if err != nil {
			for _, l := range s.up.inherited {
				transport.RawListener(l).Close()
			}
			for _, c := range s.up.adopted {
				nc, _ := handedConn(c)
				nc.Close() // not c.t.close: no websocket close frame
			}
			s.up.inherited, s.up.adopted = nil, nil
		}
	}()
	s.up.inherited = make(map[string]net.Listener)
	for _, ls := range st.listeners {
		l, err := net.FileListener(files[ls.fd])
		files[ls.fd].Close()
		files[ls.fd] = nil
		if err != nil {
			return fmt.Errorf("listener %s: %w", ls.kind, err)
		}
		if ul, ok := l.(*net.UnixListener); ok && ls.path != "" {
			if l, err = transport.AdoptUnix(ul, ls.path); err != nil {
				ul.Close()
				return fmt.Errorf("unix socket %s: %w", ls.path, err)
			}
		}
		s.up.inherited[ls.kind] = l
	}
	states := make([]*connState, len(st.conns))
	for i, ch := range st.conns {
		nc, err := net.FileConn(files[ch.fd])
		files[ch.fd].Close() // FileConn made its own duplicate: one descriptor a connection at a time
		files[ch.fd] = nil
		if err != nil {
			return fmt.Errorf("connection %s: %w", ch.name, err)
		}
		var t transport.Conn
		if ch.transport == "websocket" {
			t = transport.NewWebsocket(nc, ch.input, s.cfg.MaxLine)
		} else {
			st := transport.NewStream(nc, s.cfg.MaxLine, &s.readBuffers)
			st.Restore(ch.input, ch.discarding)
			t = st
		}
		c := newConn(s, ch.name, ch.transport, t)
		c.authFailures = ch.authFailures
		c.adoptWait(&st.conns[i])
		s.up.adopted = append(s.up.adopted, c)
		states[i] = c.state
		if seq, ok := strings.CutPrefix(ch.name, "unix:"); ok {
			if n, err := strconv.Atoi(seq); err == nil {
				s.up.unixSeqStart = max(s.up.unixSeqStart, n)
			}
		}
	}
	if err := s.adoptHA(st); err != nil {
		return err
	}
	if err := s.manager.restoreHandover(st, states); err != nil {
		return err
	}
	s.up.done = st.upgrades
	s.up.handovers.WithLabelValues("done").Add(float64(st.upgrades))
	for transport, n := range st.closed {
		s.up.noteClosed(transport, n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	acl := s.cfg.Security.ACLFile != ""
	for _, c := range s.up.adopted {
		s.conns[c] = struct{}{}
		s.live++
		if acl && !c.state.identified.Load() {
			c.unauthElem = s.unauth.list.PushBack(c)
			c.listedUnauth = true
		}
		s.wg.Add(1)
	}
	return nil
}

// serveAdopted serves the connections adopted from the old process; Start
// calls it with s.mu held, once the listeners are open.
func (s *Server) serveAdopted() {
	for _, c := range s.up.adopted {
		if c.waiting {
			c.waitDone = make(chan struct{})
			go c.awaitWaits(c.waitDone)
		}
		if box := c.state.box; box != nil && box.pendingCount() > 0 {
			c.delivering = true
			c.deliverDone = make(chan struct{})
			go c.deliverOutcomes(c.deliverDone)
		}
		go s.serveAdmitted(c)
	}
	s.up.adopted = nil
	for kind, l := range s.up.inherited { // not configured any more
		s.cfg.Logger.Warn("upgrade: closing a listener the new configuration does not have", "listener", kind)
		transport.RawListener(l).Close()
	}
	s.up.inherited = nil
}

// confirm tells the old process the server is built, and waits for its go,
// which it returns with the time it arrived. An error means the old process
// goes on serving: this one must exit without touching anything it was
// handed.
func (h *heir) confirm() ([]byte, time.Time, error) {
	defer h.link.close()
	if err := h.link.send(msgConfirm, nil, nil); err != nil {
		return nil, time.Time{}, err
	}
	goMsg, err := expect(h.link, msgGo, time.Time{})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("the old process kept serving: %w", err)
	}
	return goMsg, time.Now(), nil
}
