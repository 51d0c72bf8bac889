package main

import (
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/glockd/glockd/internal/handover"
	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/tokens"
	"github.com/glockd/glockd/internal/transport"
)

// The state of a hand-over (upgrade.go) on its way through the two servers:
// the old one's snapshot, taken by its manager while the connections are
// stopped, and, in the new process, the listeners, connections and manager
// state built from it (adopt) before the server starts. internal/handover
// encodes the state and carries it.

// errHandoverBusy is a snapshot put off: long work (orphaning, a
// pending kill) is under way in the manager.
var errHandoverBusy = errors.New("the manager is busy with long work")

// snapshotHandover copies the manager's state for a hand-over; conns are the
// connections handed over, in the order of their indexes. Every connection
// has stopped at a batch boundary, so nothing changes meanwhile but what
// timers and the manager do. Run in the manager.
func (m *manager) snapshotHandover(st *handover.State, conns []*connState) error {
	if len(m.orphaning) > 0 || len(m.sec.kills) > 0 {
		return errHandoverBusy
	}
	if err := m.snapshotTokens(st, len(conns)); err != nil {
		return err
	}
	index := make(map[*connState]int, len(conns))
	for i, c := range conns {
		index[c] = i
	}
	m.now = int64(time.Since(m.start))
	st.Wall = time.Now().UnixNano()
	st.NextToken = m.tokens.Next()
	st.Commands = make(map[string]uint64)
	for v := proto.VerbG; v < proto.NumVerbs; v++ {
		if n := m.stats.commands[v]; n > 0 {
			st.Commands[v.String()] = n
		}
	}
	st.Invalid, st.Orphans, st.SharedOrphans = m.stats.invalid, m.stats.orphans, m.stats.sharedOrphans
	st.RegSeq = m.registry.lastSeq
	for i, c := range conns {
		h := &st.Conns[i]
		h.RegName, h.RegSeq = c.regName, c.regSeq
		if c.ident != nil {
			h.Ident = c.ident.Name
		}
	}
	st.Locks, st.Shared, st.Waiters = make([]handover.Lock, 0, m.exclusive.count), nil, nil
	for ref := m.exclusive.oldest; ref != noRef; {
		l := m.exclusive.record(ref)
		i, ok := index[l.owner]
		if !ok {
			return fmt.Errorf("lock %q is held by %s, which is not handed over", l.name, l.owner.name)
		}
		st.Locks = append(st.Locks, handover.Lock{Name: l.name, Conn: i, Token: l.token, Age: m.now - l.since})
		ref = l.newer
	}
	for ref := m.shared.oldest; ref != noRef; {
		h := m.shared.holder(ref)
		i, ok := index[h.conn]
		if !ok {
			return fmt.Errorf("shared lock %q is held by %s, which is not handed over", m.shared.name(h.lock).name, h.conn.name)
		}
		st.Shared = append(st.Shared, handover.SharedHold{Name: m.shared.name(h.lock).name, Conn: i, Age: m.now - h.since})
		ref = h.newer
	}
	for w := m.waitAges.oldest; w != nil; w = w.newer {
		i, ok := index[w.conn]
		if !ok {
			return fmt.Errorf("a wait for %q is of %s, which is not handed over", w.name, w.conn.name)
		}
		ws := handover.Waiter{Name: w.name, Conn: i, Shared: w.shared, Async: w.async, Max: w.max,
			Remaining: -1, Age: int64(time.Since(w.started))}
		if w.timer != nil {
			ws.Remaining = max(0, int64(time.Until(w.deadline)))
		}
		st.Waiters = append(st.Waiters, ws)
	}
	return nil
}

// handoverDescriptors begins the state of a hand-over with the descriptors
// of the pidfile, the listeners and the stopped connections conns, which it
// returns too, by their index in the state: the connections' are the last
// len(conns). They stay this process's: never closed here.
func (s *Server) handoverDescriptors(req handoverRequest, conns []*conn) (*handover.State, []int, error) {
	st := &handover.State{Pidfile: -1, Conns: make([]handover.Conn, len(conns))}
	s.up.mu.Lock()
	st.Upgrades, st.Closed = s.up.done+1, maps.Clone(s.up.closedCount)
	ls := s.up.listeners
	s.up.mu.Unlock()
	var fds []int
	addFD := func(sc syscall.Conn) (int, error) {
		fd, err := handover.RawFD(sc)
		if err != nil {
			return 0, err
		}
		fds = append(fds, fd)
		return len(fds) - 1, nil
	}
	if req.pidfile != nil {
		var err error
		if st.Pidfile, err = addFD(req.pidfile); err != nil {
			return nil, nil, fmt.Errorf("pidfile: %w", err)
		}
	}
	for kind, l := range ls {
		sc, ok := transport.RawListener(l.Listener).(syscall.Conn)
		if !ok {
			return nil, nil, fmt.Errorf("listener %s has no descriptor", kind)
		}
		i, err := addFD(sc)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %s: %w", kind, err)
		}
		st.Listeners = append(st.Listeners, handover.Listener{Kind: kind, FD: i, Path: l.path})
	}
	for i, c := range conns {
		nc, _ := c.t.Handover()
		fd, err := addFD(nc.(syscall.Conn))
		if err != nil {
			return nil, nil, fmt.Errorf("connection %s: %w", c.state.name, err)
		}
		input, discarding := c.t.Unread()
		st.Conns[i] = handover.Conn{Name: c.state.name, Transport: c.state.transport, FD: fd,
			Input: input, Discarding: discarding, AuthFailures: c.authFailures}
	}
	return st, fds, nil
}

// snapshot has the manager take its snapshot into st, then wait, frozen,
// until the returned channel is closed: the connections' side is checked
// against it, and a snapshot taken while an outcome was on its way to a
// connection is taken again, until timeout since pauseStart, after
// calling again (once or more). On error the manager is not frozen.
func (s *Server) snapshot(st *handover.State, conns []*conn, pauseStart time.Time, timeout time.Duration, again func()) (chan struct{}, error) {
	states := make([]*connState, len(conns))
	for i, c := range conns {
		states[i] = c.state
	}
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
		err := <-snapped
		if err == nil {
			for i, c := range conns {
				if err = captureConn(c, &st.Conns[i]); err != nil {
					break
				}
			}
			if err == nil {
				return hold, nil
			}
			close(hold)
		}
		if err != errHandoverBusy || time.Since(pauseStart) > timeout {
			return nil, err
		}
		again()
		time.Sleep(time.Millisecond)
	}
}

// snapshotTokens puts in st the rest of an -etcd leader's tokens; a
// standby has none, and hands over no connection either.
func (m *manager) snapshotTokens(st *handover.State, conns int) error {
	l := m.leader
	if l == nil {
		return nil
	}
	t := l.node.Current()
	if t == nil {
		if conns > 0 {
			return errors.New("a standby with connections")
		}
		return nil
	}
	switch {
	case !t.Valid() || (t == l.seen && l.fenced):
		return errors.New("the term ended: not leading any more")
	case t != l.seen:
		// Not one request run in this term yet: its first block is
		// untouched.
		first := t.First()
		st.HA = &handover.HA{BlockStart: first.Start, BlockEnd: first.End}
	default:
		ts := &m.tokens
		b := ts.Current()
		if b.End-b.Start < tokens.Reserve && ts.Pending().End > 0 {
			b = ts.Pending() // the rest of the current block is wasted
		}
		st.HA = &handover.HA{BlockStart: b.Start, BlockEnd: b.End}
	}
	return nil
}

// restoreHandover fills a new manager, not yet running, with the state; conns
// are the connections' new states, by index.
func (m *manager) restoreHandover(st *handover.State, conns []*connState) error {
	m.now = int64(time.Since(m.start))
	// What passed since the snapshot, by the wall clock (the monotonic
	// clocks of two processes cannot be compared); never negative.
	gap := max(0, time.Now().UnixNano()-st.Wall)
	// With -etcd the tokens come from the term's block (fence.go).
	if m.leader == nil {
		m.tokens.Raise(st.NextToken)
	}
	for v := proto.VerbG; v < proto.NumVerbs; v++ {
		m.stats.commands[v] = st.Commands[v.String()]
	}
	m.stats.invalid, m.stats.orphans, m.stats.sharedOrphans = st.Invalid, st.Orphans, st.SharedOrphans
	m.registry.lastSeq = st.RegSeq
	for i, h := range st.Conns {
		c := conns[i]
		if h.RegSeq != 0 {
			c.regName, c.regSeq = h.RegName, h.RegSeq
			m.registry.members[c] = struct{}{}
		}
		if h.Ident != "" && m.sec.acl != nil {
			if id := m.sec.acl.ByName(h.Ident); id != nil {
				c.ident = id
				c.identified.Store(true)
			}
		}
	}
	if err := m.restoreLocks(st, conns, gap); err != nil {
		return err
	}
	return m.restoreWaiters(st, conns, gap)
}

// restoreLocks fills the exclusive and shared tables from the state; gap
// is the time the hand-over took, by which every grant is older.
func (m *manager) restoreLocks(st *handover.State, conns []*connState, gap int64) error {
	// The records first, in their order of grant (the slab's and the
	// holders' lists' order too), then the index, sized at once.
	m.exclusive.reserve(len(st.Locks))
	held := make([]int, len(conns))
	for _, l := range st.Locks {
		held[l.Conn]++
	}
	for i, c := range conns {
		c.held = make([]lockRef, 0, held[i])
	}
	refs := make([]lockRef, len(st.Locks))
	for i, l := range st.Locks {
		rec, ref := m.exclusive.insertUnindexed(l.Name)
		c := conns[l.Conn]
		rec.owner, rec.token, rec.index = c, l.Token, uint32(len(c.held))
		m.exclusive.age(ref, m.now-l.Age-gap)
		c.held = append(c.held, ref)
		refs[i] = ref
	}
	if dup := m.exclusive.indexAll(refs); dup != nil {
		return fmt.Errorf("lock %q handed over twice", dup.name)
	}
	for _, h := range st.Shared {
		c := conns[h.Conn]
		ref := m.shared.findString(h.Name)
		if ref == noRef {
			ref = m.shared.addName(h.Name, uint32(maphash.String(m.shared.seed, h.Name)>>32))
		} else if m.shared.heldBy(c, ref) != noRef {
			return fmt.Errorf("shared lock %q handed over twice for one connection", h.Name)
		}
		m.shared.addHolder(c, ref, m.now-h.Age-gap)
	}
	return nil
}

// restoreWaiters queues the waits of the state again, in their order, with
// the time they had left less gap.
func (m *manager) restoreWaiters(st *handover.State, conns []*connState, gap int64) error {
	for _, ws := range st.Waiters {
		ms := int64(proto.NoWait)
		if ws.Remaining >= 0 {
			// Rounded up: a wait never ends before its original time.
			left := max(0, time.Duration(ws.Remaining-gap))
			ms = int64((left + time.Millisecond - 1) / time.Millisecond)
		}
		c := conns[ws.Conn]
		if ws.Async {
			m.outbox(c)
		} else if c.waiter != nil {
			return fmt.Errorf("connection %s handed over with two waits pending", c.name)
		}
		// The old process let this wait stand, so it closes no cycle to
		// break; under -deadlocks report a standing cycle is found (logged,
		// counted) again.
		if m.wait(c, []byte(ws.Name), ws.Shared, int64(ws.Max), ms, ws.Async) == waitRefused {
			return fmt.Errorf("the wait of %s for %q would close a deadlock", c.name, ws.Name)
		}
		w := c.waiter
		if ws.Async {
			w = c.asyncWaits[waitKey{ws.Name, ws.Shared}]
		}
		w.started = time.Now().Add(-time.Duration(ws.Age + gap))
	}
	return nil
}

// adopt builds the server's listeners, connections and manager state from
// the hand-over, before Start. The descriptors are the server's from then
// on; on error none is left open.
func (s *Server) adopt(h *handover.Heir, ph *phases) (err error) {
	st := h.State
	if ha := st.HA; ha != nil && ha.BlockEnd > tokens.Max+1 {
		return fmt.Errorf("hand-over state: token block [%d, %d)", ha.BlockStart, ha.BlockEnd)
	}
	files := h.Files()
	early, earlyErrs := h.TakeConns()
	defer func() {
		for _, nc := range early {
			nc.Close() // made of a descriptor the state names for no connection
		}
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
				nc, _ := c.t.Handover()
				nc.Close() // not c.t.close: no websocket close frame
			}
			s.up.inherited, s.up.adopted = nil, nil
		}
	}()
	if err := s.adoptListeners(st, files); err != nil {
		return err
	}
	states, err := s.adoptConns(st, files, early, earlyErrs)
	if err != nil {
		return err
	}
	ph.mark("adopt_conns")
	if err := s.adoptHA(st); err != nil {
		return err
	}
	if err := s.manager.restoreHandover(st, states); err != nil {
		return err
	}
	ph.mark("restore")
	s.up.done = st.Upgrades
	s.up.handovers.WithLabelValues("done").Add(float64(st.Upgrades))
	for transport, n := range st.Closed {
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
		s.connsWG.Add(1)
	}
	return nil
}

// adoptListeners makes the listeners of the hand-over, kept for Start to
// take by their kind; the files they come from are closed and cleared.
func (s *Server) adoptListeners(st *handover.State, files []*os.File) error {
	s.up.inherited = make(map[string]net.Listener)
	for _, ls := range st.Listeners {
		if files[ls.FD] == nil {
			return fmt.Errorf("listener %s: descriptor %d handed over twice, or as a connection's", ls.Kind, ls.FD)
		}
		l, err := net.FileListener(files[ls.FD])
		files[ls.FD].Close()
		files[ls.FD] = nil
		if err != nil {
			return fmt.Errorf("listener %s: %w", ls.Kind, err)
		}
		if ul, ok := l.(*net.UnixListener); ok && ls.Path != "" {
			if l, err = transport.AdoptUnix(ul, ls.Path); err != nil {
				ul.Close()
				return fmt.Errorf("unix socket %s: %w", ls.Path, err)
			}
		}
		s.up.inherited[ls.Kind] = l
	}
	return nil
}

// adoptConns makes the connections of the hand-over, with their unread
// input and pending waits, and returns their states by index; the files
// they come from are closed and cleared.
func (s *Server) adoptConns(st *handover.State, files []*os.File, early map[int]net.Conn, earlyErrs map[int]error) ([]*connState, error) {
	ncs, err := fileConns(st, files, early, earlyErrs)
	if err != nil {
		return nil, err
	}
	states := make([]*connState, len(st.Conns))
	for i, ch := range st.Conns {
		nc := ncs[i]
		var t transport.Conn
		var stream *transport.Stream
		if ch.Transport == "websocket" {
			t = transport.NewWebsocket(nc, ch.Input, s.cfg.MaxLine)
		} else {
			stream = transport.NewStream(nc, s.cfg.MaxLine, &s.readBuffers)
			t = stream
		}
		c := newConn(s, ch.Name, ch.Transport, t)
		if stream != nil {
			stream.Restore(ch.Input, ch.Discarding) // charged once bound to the budget
		}
		c.authFailures = ch.AuthFailures
		c.adoptWait(&st.Conns[i])
		s.up.adopted = append(s.up.adopted, c)
		states[i] = c.state
		if seq, ok := strings.CutPrefix(ch.Name, "unix:"); ok {
			if n, err := strconv.Atoi(seq); err == nil {
				s.up.unixSeqStart = max(s.up.unixSeqStart, n)
			}
		}
	}
	return states, nil
}

// fileConns returns the connections of the hand-over by index: the ones
// the new process made as their descriptors came (early, taken out of it;
// earlyErrs says why one could not be made), and the others made of their
// files, which are closed and cleared. Each takes a handful of system calls
// (the duplicate FileConn makes, the poller's registration, its addresses,
// the file's close), so those run on every CPU. On error none is left open.
func fileConns(st *handover.State, files []*os.File, early map[int]net.Conn, earlyErrs map[int]error) ([]net.Conn, error) {
	used := make([]bool, len(files))
	var fromFiles []int
	for i, ch := range st.Conns {
		_, made := early[ch.FD]
		if used[ch.FD] || (files[ch.FD] == nil && !made && earlyErrs[ch.FD] == nil) {
			return nil, fmt.Errorf("connection %s: descriptor %d handed over twice", ch.Name, ch.FD)
		}
		used[ch.FD] = true
		if !made && earlyErrs[ch.FD] == nil {
			fromFiles = append(fromFiles, i)
		}
	}
	ncs := make([]net.Conn, len(st.Conns))
	errs := make([]error, len(st.Conns))
	for i, ch := range st.Conns {
		if nc, ok := early[ch.FD]; ok {
			ncs[i] = nc
			delete(early, ch.FD)
		}
		errs[i] = earlyErrs[ch.FD]
	}
	workers := max(1, min(runtime.GOMAXPROCS(0), len(fromFiles)/64))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for k := w; k < len(fromFiles); k += workers {
				i := fromFiles[k]
				fd := st.Conns[i].FD
				ncs[i], errs[i] = net.FileConn(files[fd])
				files[fd].Close() // FileConn made its own duplicate: one descriptor a connection at a time
				files[fd] = nil
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, nc := range ncs {
				if nc != nil {
					nc.Close()
				}
			}
			return nil, fmt.Errorf("connection %s: %w", st.Conns[i].Name, err)
		}
	}
	return ncs, nil
}

// serveAdopted serves the connections adopted from the old process; Start
// calls it with s.mu held, once the listeners are open. The manager runs
// already, so a wait goroutine may run the commands queued behind its gw at
// once, and start the delivery of !gw outcomes itself: the delivery is
// started first, so that the wait goroutine sees it (and c.mu is not taken
// here: a batch takes s.mu under it, in noteIdentified).
func (s *Server) serveAdopted() {
	for _, c := range s.up.adopted {
		if box := c.state.box; box != nil && box.undelivered() {
			box.signal() // outcomes decided before it ran are written at once
			c.delivering.running = true
			go c.deliverFn()
		}
		if c.waiting {
			c.awaiting.running = true
			go c.awaitFn()
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

// adoptWait gives an adopted connection its pending gw or sgw and the lines
// queued behind it; serveAdopted starts the goroutine that delivers it.
func (c *conn) adoptWait(h *handover.Conn) {
	if h.PendingVerb == "" {
		return
	}
	c.waiting = true
	c.pending = proto.Command{Verb: proto.LookupVerb([]byte(h.PendingVerb)), Name: []byte(h.PendingName), MS: h.PendingMS, Max: h.PendingMax}
	for _, q := range h.Queued {
		cmd := proto.Command{Verb: proto.VerbTooLong}
		if !q.TooLong {
			cmd = proto.Command{Verb: proto.VerbInvalid, Line: []byte(q.Line)} // parsed again when it runs
		}
		c.queue.push(&cmd)
	}
	c.queueMem.Set(int64(c.queue.size()))
}
