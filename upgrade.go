package main

import (
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

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/handover"
	"github.com/glockd/glockd/internal/tokens"
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
// new one and its receiving side are in internal/handover; the pause in
// upgrade_pause.go; the snapshot and restore of the manager's state in
// upgrade_snapshot.go.

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
	if req.timeout <= 0 {
		req.timeout = DefaultUpgradeTimeout
	}
	child, err := handover.Start(req.exe, req.args, req.timeout)
	if err != nil {
		return err
	}
	defer child.Close()
	var undo undoList
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	undo.add(child.Kill)
	var haTerm *ha.Term // the term a leader hands over (handoverHA)
	stepDown := false   // the term ended at the go: close what it left open
	if s.ha != nil {
		haTerm = s.ha.BeginHandover()
		undo.add(s.ha.EndHandover)
		// Added before the resumption, so run after it: closeLock waits
		// for every connection to end, which a parked reader or one
		// waiting on the frozen manager never would.
		undo.add(func() {
			if stepDown {
				s.closeLock()
			}
		})
	}
	sent, err := s.pauseAndSend(req, child, haTerm, &undo)
	if err != nil {
		return err
	}
	if err := child.AwaitConfirm(time.Now().Add(req.timeout)); err != nil {
		return err
	}
	sent.ph.mark("await_confirm")
	s.up.shutdownKilled(sent.conns)
	undo.add(func() { s.up.handingOff.Store(false) })
	if err := s.sendGo(child, req, haTerm); err != nil {
		// The node's step-down may have left the lock listeners open for
		// the new process, which will not have them.
		stepDown = errors.Is(err, errTermEnded) && haTerm.Ended()
		return err
	}
	sent.ph.mark("go")
	s.up.mu.Lock()
	s.up.heirPid = child.Pid()
	s.up.mu.Unlock()
	st := sent.st
	s.cfg.Logger.Info("upgrade: handed over; exiting", append([]any{"pid", child.Pid(), "new_version", string(child.Version),
		"connections", len(sent.conns), "locks", len(st.Locks), "shared_holds", len(st.Shared),
		"waiters", len(st.Waiters), "state_bytes", sent.bytes, "pause_until_go", time.Since(sent.pauseStart)}, sent.ph.attrs...)...)
	return nil
}

// collectorOff turns the garbage collector off, and returns what turns it
// back on, once, however often it is called. GOMEMLIMIT still holds while
// it is off.
func collectorOff() (on func()) {
	gc := debug.SetGCPercent(-1)
	return sync.OnceFunc(func() { debug.SetGCPercent(gc) })
}

// undoList is what a hand-over that fails takes back, last first, as
// deferred calls would, but gathered across upgrade's steps.
type undoList []func()

func (u *undoList) add(f func()) { *u = append(*u, f) }

func (u undoList) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// sentState is what pauseAndSend leaves for the rest of the hand-over.
type sentState struct {
	conns      []*conn // paused, and handed over if it succeeds
	st         *handover.State
	bytes      int // of the state's encoding
	pauseStart time.Time
	ph         *phases
}

// pauseAndSend stops the listeners and the connections at a batch
// boundary, sends the descriptors, freezes the manager on its snapshot and
// sends the state. What it does, undo takes back if the hand-over fails.
func (s *Server) pauseAndSend(req handoverRequest, child *handover.Child, haTerm *ha.Term, undo *undoList) (*sentState, error) {
	pauseStart := time.Now()
	out := &sentState{pauseStart: pauseStart, ph: newPhases(pauseStart)}
	gcOn := func() {}
	if req.pauseGC {
		// The snapshot and its encoding allocate about 70 bytes a lock,
		// all garbage soon: a collection meanwhile (the heap's goal may be
		// near) would only lengthen the pause. GOMEMLIMIT still holds.
		// A snapshot taken again (a connection was busy) leaves its
		// predecessor's garbage: collection goes back on then, or the
		// retries would fill the heap until the timeout.
		gcOn = collectorOff()
		undo.add(gcOn)
	}
	p := &pause{gate: make(chan struct{}), conns: make(map[*conn]struct{})}
	undo.add(func() {
		s.resume(p, out.conns)
		s.cfg.Logger.Info("upgrade: resumed serving", "pause", time.Since(pauseStart))
	})
	var err error
	if out.conns, err = s.pauseAll(p, pauseStart.Add(min(stopTimeout, req.timeout)), out.ph); err != nil {
		return nil, err
	}
	st, fds, err := s.handoverDescriptors(req, out.conns)
	if err != nil {
		return nil, err
	}
	// The connections' descriptors (the last ones) go at once, marked as
	// such: the new process makes its connections of them while this one
	// takes its snapshot.
	split := len(fds) - len(out.conns)
	if err := child.SendFDs(fds[:split], false); err != nil {
		return nil, err
	}
	if err := child.SendFDs(fds[split:], true); err != nil {
		return nil, err
	}
	out.ph.mark("descriptors")
	frozen, err := s.snapshot(st, out.conns, pauseStart, req.timeout, gcOn)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	out.ph.mark("snapshot")
	undo.add(func() { close(frozen) }) // the manager goes on
	if s.ha != nil {
		if err := s.handoverHA(st, haTerm); err != nil {
			return nil, err
		}
	}
	data := st.Encode(nil)
	out.ph.mark("encode")
	if err := child.SendState(data, pauseStart); err != nil {
		return nil, err
	}
	out.ph.mark("send")
	out.st, out.bytes = st, len(data)
	return out, nil
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

// Hand-overs to a new binary under -etcd: the glue between the hand-over's
// state (internal/handover) and the node's term, which internal/ha hands
// over and resumes (internal/ha/handover.go says how).

// handoverHA fills in the state what the new process needs to resume the
// term t, the one BeginHandover returned; the manager's snapshot put the
// rest of its tokens in st.HA.
func (s *Server) handoverHA(st *handover.State, t *ha.Term) error {
	switch {
	case t == nil && st.HA != nil:
		return errors.New("the node began serving during the hand-over")
	case t == nil:
		return nil
	case st.HA == nil:
		return errors.New("the term ended during the hand-over")
	}
	r, err := s.ha.Handover(t)
	if err != nil {
		return err
	}
	h := st.HA
	h.Lease, h.TTL, h.Key, h.Rev = r.Lease, int64(r.TTL/time.Second), r.Key, r.Rev
	h.Left, h.Elections = int64(r.Left), r.Elections
	return nil
}

// adoptHA takes over the old process's term, if it led: the term is the
// manager's before the manager runs, so that the adopted connections and
// waiters are served by it. Called by adopt, before Start.
func (s *Server) adoptHA(st *handover.State) error {
	switch {
	case st.HA == nil && s.ha == nil:
		return nil
	case st.HA != nil && s.ha == nil:
		return errors.New("the old process leads an -etcd group and this one has no -etcd: restart instead")
	case st.HA == nil:
		if len(st.Conns) > 0 {
			return errors.New("the old process serves clients without -etcd and this one has -etcd: restart instead")
		}
		return nil // a standby: this process campaigns afresh
	}
	h := st.HA
	return s.ha.Adopt(ha.Resume{
		Lease: h.Lease, TTL: time.Duration(h.TTL) * time.Second, Key: h.Key, Rev: h.Rev,
		Block: tokens.Block{Start: h.BlockStart, End: h.BlockEnd}, Left: time.Duration(h.Left), Elections: h.Elections,
	})
}

// startResumed sets the resumed term's deadline from the go message,
// received at at; without one the term is over at once.
func (s *Server) startResumed(goMsg []byte, at time.Time) {
	if s.ha != nil {
		s.ha.StartResumed(goMsg, at)
	}
}
