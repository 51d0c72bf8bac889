package main

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// DeadlockMode is what the manager does when a wait closes a cycle of
// waiters: -deadlocks break or report.
type DeadlockMode uint8

const (
	DeadlocksBreak  DeadlockMode = iota // the closing wait ends at once with a Deadlock reply
	DeadlocksReport                     // the cycle is only logged and counted
)

func (d DeadlockMode) String() string {
	if d == DeadlocksReport {
		return "report"
	}
	return "break"
}

// Set parses the -deadlocks flag.
func (d *DeadlockMode) Set(s string) error {
	switch s {
	case "break":
		*d = DeadlocksBreak
	case "report":
		*d = DeadlocksReport
	default:
		return fmt.Errorf("want break or report, not %q", s)
	}
	return nil
}

// Deadlocks: the wait-for graph and the search for cycles in it.
//
// The graph's nodes are connections. A connection with a pending wait points
// at the holders that keep it waiting: the holder of the exclusive lock it
// waits for, or the holders of the shared lock (a full semaphore) it waits
// for. The edges are not stored apart: they are read from the wait queues
// and the lock tables when a search runs, so they are never out of date and
// g, r, sg and sr do nothing to keep them.
//
// A search runs only when the edges change in a way that can close a cycle:
//
//   - a wait starts (waitStarts): the new wait's edges;
//   - a connection that itself waits becomes a holder (holderChanged): the
//     edges of the lock's waiters now point at it. With in-order gw and sgw
//     a connection granted a lock has just finished its only wait, so this
//     costs one test; it is here for waits that run beside other commands
//     (asynchronous waits), where a waiting connection can be granted
//     another lock.
//
// Ending a wait only removes edges, and cannot close a cycle.
//
// A cycle is a deadlock only when nobody in it can ever go on. A connection
// waiting for an exclusive lock goes on when its holder does; one waiting
// for a semaphore goes on when the waiter before it in the queue does (a
// semaphore admits in order) and enough of the holders do to bring the
// count under its MAX (one, when the semaphore is just full), so a cycle
// through a semaphore with a holder outside it is not a deadlock. The search therefore
// reduces the graph: from the connections that wait for nothing, which can
// go on, it marks every wait they can satisfy, until nothing changes; the
// connections left are stuck for good, and the deadlock is those of them
// that the new edges lead back to.
//
// The search is bounded: it examines at most deadlockSearchEdges edges
// (holders of locks waited for). A search that reaches the bound treats
// what it has not seen as able to go on, so it never reports a deadlock
// that is not one; it counts the miss (searchesCut) and logs it.
type deadlocks struct {
	report bool         // -deadlocks report: log and count, do not break
	log    *slog.Logger // cycles are logged whatever -verbose says

	found       uint64 // cycles found (glockd_deadlocks_total)
	searchesCut uint64 // searches that reached deadlockSearchEdges

	// cycles are the deadlocks found with -deadlocks report that are not
	// broken yet: dw marks their waits.
	cycles []*deadlockCycle

	// A search's scratch space, reused: connState.search is the node's
	// place in nodes while connState.searchEpoch is epoch.
	epoch uint64
	nodes []searchNode
	waits []searchWait
	edges []searchEdge
	in    []int32 // edges by the node they lead to: in[nodes[v].inStart:nodes[v].inEnd]
	work  []int32
}

// deadlockSearchEdges bounds the edges one search examines. A chain of
// 10,000 waiters is 10,000 edges; see docs/operating.md for the cost.
const deadlockSearchEdges = 1 << 16

// deadlockCycle is a deadlock found: the waits that are stuck in it, the
// closing one first.
type deadlockCycle struct {
	id    uint64 // its number: found when it was found
	waits []*waiter
}

type searchNode struct {
	conn           *connState
	pending        int32 // waits not yet satisfied; 0: the connection can go on
	inStart, inEnd int32 // its edges in deadlocks.in
	reaches        bool  // stuck, and leads back to the start
}

type searchWait struct {
	w          *waiter
	from       int32 // the waiting node
	need, have int32 // holders that must go on for the wait to end, and those seen to
}

type searchEdge struct{ wait, to int32 }

// blocked reports whether c has a pending wait: its gw or sgw, or any of
// its !gw and !sgw.
func (c *connState) blocked() bool { return c.waiter != nil || len(c.asyncWaits) > 0 }

// eachWait calls fn with every pending wait of c: its gw or sgw, and its
// !gw and !sgw. A connection with asynchronous waits pending is taken to
// hold its locks until every one of them has ended, as one that waits in
// order does: the server cannot tell which of its tasks holds what.
func (c *connState) eachWait(fn func(*waiter)) {
	if c.waiter != nil {
		fn(c.waiter)
	}
	for _, w := range c.asyncWaits {
		fn(w)
	}
}

// waitStarts checks the wait w, just queued, for a deadlock it closes. It
// reports whether w must end at once with the deadlock reply (it closes one
// and -deadlocks is break).
func (m *manager) waitStarts(w *waiter) (refuse bool) {
	return m.checkCycle(w)
}

// holderChanged runs when c has become a holder of name (a hand-over, a
// semaphore admission or sg): if c waits for something itself, each waiter
// of name now points at a node with edges of its own, and may close a cycle.
//
// A cycle closed now goes through c, the only node with new edges into it:
// when c itself can go on, none is, and one search settles it. Else each
// waiter of name is checked (a hand-over to a connection that is stuck
// already: rare).
func (m *manager) holderChanged(c *connState, name string, shared bool) {
	if !c.blocked() || m.mayGoOn(c) {
		return
	}
	for _, w := range m.queues(shared)[name].waiting() {
		if !w.resolved && m.checkCycle(w) {
			m.refuseWait(w)
		}
	}
}

// refuseWait ends w, which waited already, with the deadlock reply (or
// outcome line, for !gw and !sgw).
func (m *manager) refuseWait(w *waiter) {
	m.unqueue(w)
	m.tell(w, waitResult{deadlock: true})
}

// checkCycle searches for a deadlock through the wait w; when there is one
// it logs and counts it, and reports whether to break it.
func (m *manager) checkCycle(w *waiter) (breakIt bool) {
	d := &m.deadlocks
	members := m.stuckWith(w)
	if len(members) == 0 {
		return false
	}
	d.found++
	cycle := &deadlockCycle{id: d.found, waits: members}
	d.log.Warn("deadlock", "id", cycle.id, "broken", !d.report, "closing_conn", w.conn.name,
		"closing_lock", w.name, "cycle", cycleDescription{m, cycle})
	if !d.report {
		return true
	}
	for _, x := range members {
		x.cycles++
	}
	d.cycles = append(d.cycles, cycle)
	return false
}

// waitEnds forgets the reported cycles that w was in: one of their waits
// has ended, so they are broken.
func (m *manager) waitEnds(w *waiter) {
	if w.cycles == 0 {
		return
	}
	d := &m.deadlocks
	d.cycles = slices.DeleteFunc(d.cycles, func(c *deadlockCycle) bool {
		if !slices.Contains(c.waits, w) {
			return false
		}
		for _, x := range c.waits {
			x.cycles--
		}
		return true
	})
}

// cycleOf is the id of the oldest reported cycle that w is in, or 0.
func (m *manager) cycleOf(w *waiter) uint64 {
	if w.cycles == 0 {
		return 0
	}
	for _, c := range m.deadlocks.cycles {
		if slices.Contains(c.waits, w) {
			return c.id
		}
	}
	return 0
}

// cycleDescription is a cycle as the log shows it, formatted only when it is
// logged.
type cycleDescription struct {
	m     *manager
	cycle *deadlockCycle
}

func (c cycleDescription) LogValue() slog.Value {
	return slog.StringValue(strings.Join(c.m.describeCycle(c.cycle), "; "))
}

// describeCycle names every connection and lock of a cycle, for the log:
// "unix:2 (bob) waits for x held by unix:1 (alice)".
func (m *manager) describeCycle(c *deadlockCycle) []string {
	in := make(map[*connState]bool, len(c.waits))
	for _, w := range c.waits {
		in[w.conn] = true
	}
	lines := make([]string, 0, len(c.waits))
	for _, w := range c.waits {
		var held []string
		m.eachHolder(w, func(h *connState) {
			if in[h] {
				held = append(held, connLabel(h))
			}
		})
		line := connLabel(w.conn) + " waits for "
		if w.shared {
			line += "shared "
		}
		line += w.name
		if len(held) > 0 {
			line += " held by " + strings.Join(held, ", ")
		}
		if w.shared && w.prev != nil && in[w.prev.conn] {
			line += ", behind " + connLabel(w.prev.conn)
		}
		lines = append(lines, line)
	}
	return lines
}

// connLabel is a connection's name, with its iam name when it has one.
func connLabel(c *connState) string {
	if c.regSeq != 0 {
		return c.name + " (" + c.regName + ")"
	}
	return c.name
}

// eachHolder calls fn with each holder that keeps w waiting.
func (m *manager) eachHolder(w *waiter, fn func(*connState)) {
	if !w.shared {
		if l, _, _ := m.exclusive.get([]byte(w.name)); l != nil {
			fn(l.owner)
		}
		return
	}
	if ref := m.shared.findString(w.name); ref != noRef {
		m.shared.eachHolder(ref, func(h *sharedHolder) { fn(h.conn) })
	}
}

// need is how many of the holders of the lock w waits for must go on for w
// to be granted: one for an exclusive lock; for a semaphore, enough to
// bring the count under w's MAX (at least one for the first waiter, which
// waits because the count is at its MAX; maybe none for one behind it,
// which then waits only for the one before it, a wait of its own).
func (m *manager) need(w *waiter) int32 {
	if !w.shared {
		return 1
	}
	holders := 0
	if ref := m.shared.findString(w.name); ref != noRef {
		holders = int(m.shared.name(ref).count)
	}
	return int32(max(0, holders-w.max+1))
}

// node is c's place in the search, added when first seen.
func (d *deadlocks) node(c *connState) int32 {
	if c.searchEpoch == d.epoch {
		return c.search
	}
	c.searchEpoch, c.search = d.epoch, int32(len(d.nodes))
	d.nodes = append(d.nodes, searchNode{conn: c})
	return c.search
}

// stuckWith returns the waits of the connections that can never go on and
// that lead back to w's connection through the waits, w first; nil when w
// closes no deadlock.
func (m *manager) stuckWith(w *waiter) []*waiter {
	d := &m.deadlocks
	defer d.forget()
	start := m.search(w.conn, w.name)
	if d.nodes[start].pending == 0 {
		return nil
	}
	return d.cycleThrough(w, start)
}

// mayGoOn reports whether c, and so every wait for what it holds, can go
// on: whether nothing it waits for is stuck for good.
func (m *manager) mayGoOn(c *connState) bool {
	d := &m.deadlocks
	defer d.forget()
	return d.nodes[m.search(c, "")].pending == 0
}

// search adds everything reachable from c to the scratch space and reduces
// it: afterwards a node's pending is 0 when it can go on. It returns c's
// node. lock names the lock waited for, for the log. The caller calls
// d.forget.
func (m *manager) search(c *connState, lock string) (start int32) {
	d := &m.deadlocks
	d.epoch++
	d.nodes, d.waits, d.edges = d.nodes[:0], d.waits[:0], d.edges[:0]
	start = d.node(c)
	if !d.explore(m, start) {
		d.searchesCut++
		if d.searchesCut&(d.searchesCut-1) == 0 { // the 1st, 2nd, 4th, ...
			d.log.Warn("deadlock search cut short", "edges", deadlockSearchEdges,
				"closing_conn", c.name, "lock", lock, "searches_cut", d.searchesCut)
		}
	}
	d.byTarget()
	// Reduce: the nodes that can go on satisfy the waits on them.
	d.work = d.work[:0]
	for i := range d.nodes {
		if d.nodes[i].pending == 0 {
			d.work = append(d.work, int32(i))
		}
	}
	for len(d.work) > 0 {
		v := d.work[len(d.work)-1]
		d.work = d.work[:len(d.work)-1]
		for _, e := range d.in[d.nodes[v].inStart:d.nodes[v].inEnd] {
			sw := &d.waits[d.edges[e].wait]
			sw.have++
			if sw.have != sw.need {
				continue
			}
			u := sw.from
			if d.nodes[u].pending--; d.nodes[u].pending == 0 {
				d.work = append(d.work, u)
			}
		}
	}
	return start
}

// cycleThrough returns, after a search from w's connection (start) that
// left it stuck, the waits of the stuck connections that lead back to it, w
// first; nil when they do not lead back to it.
func (d *deadlocks) cycleThrough(w *waiter, start int32) []*waiter {
	// The deadlock: the stuck nodes that lead back to start, found
	// backwards from it.
	d.nodes[start].reaches = true
	d.work = append(d.work[:0], start)
	closes := false
	for len(d.work) > 0 {
		v := d.work[len(d.work)-1]
		d.work = d.work[:len(d.work)-1]
		for _, e := range d.in[d.nodes[v].inStart:d.nodes[v].inEnd] {
			u := d.waits[d.edges[e].wait].from
			if u == start {
				closes = true // start leads back to itself
			}
			if d.nodes[u].pending > 0 && !d.nodes[u].reaches {
				d.nodes[u].reaches = true
				d.work = append(d.work, u)
			}
		}
	}
	if !closes {
		return nil // stuck behind a deadlock found before (-deadlocks report)
	}
	// A waiter's waits (for the holders, and for the waiter before it in
	// a semaphore's queue) are recorded one after the other, and start's
	// first of all.
	members := []*waiter{w}
	for _, sw := range d.waits {
		if d.nodes[sw.from].reaches && sw.have < sw.need && sw.w != members[len(members)-1] {
			members = append(members, sw.w)
		}
	}
	return members
}

// explore adds everything reachable from start to the search, depth first,
// and reports whether it saw all of it. A node is expanded once. At the
// bound the search stops: the nodes not expanded have no waits recorded,
// and the wait whose holders were being listed is dropped, so that what
// was not seen counts as able to go on.
func (d *deadlocks) explore(m *manager, start int32) (complete bool) {
	d.work = append(d.work[:0], start)
	for len(d.work) > 0 {
		v := d.work[len(d.work)-1]
		d.work = d.work[:len(d.work)-1]
		cut := false
		d.nodes[v].conn.eachWait(func(x *waiter) {
			if cut {
				return
			}
			// A semaphore's waiter is admitted only after the one
			// before it in the queue: that is a wait of its own.
			if x.shared && x.prev != nil {
				first, wi := len(d.edges), int32(len(d.waits))
				if !d.endWait(x, v, 1, first, d.addEdge(wi, x.prev.conn)) {
					cut = true
					return
				}
			}
			need := m.need(x)
			if need == 0 {
				return
			}
			first, wi := len(d.edges), int32(len(d.waits))
			complete := true
			m.eachHolder(x, func(h *connState) {
				if complete && !d.addEdge(wi, h) {
					complete = false
				}
			})
			if !d.endWait(x, v, need, first, complete) {
				cut = true
			}
		})
		if cut {
			return false
		}
	}
	return true
}

// addEdge records that the wait wi (the next in d.waits) needs h to go on,
// and reports false, recording nothing, when the bound is reached. It is
// called for each holder in turn (no callback: a closure passed through a
// function value would be allocated at every wait's search).
func (d *deadlocks) addEdge(wi int32, h *connState) bool {
	if len(d.edges) >= deadlockSearchEdges {
		return false
	}
	seen := h.searchEpoch == d.epoch
	to := d.node(h)
	d.edges = append(d.edges, searchEdge{wait: wi, to: to})
	if !seen {
		d.work = append(d.work, to)
	}
	return true
}

// endWait records the wait w of node v, which needs need of the nodes that
// the edges from first on lead to; when complete is false (an edge was
// refused at the bound) it drops those edges instead, records nothing and
// reports false.
func (d *deadlocks) endWait(w *waiter, v, need int32, first int, complete bool) bool {
	if !complete {
		d.edges = d.edges[:first]
		return false
	}
	d.waits = append(d.waits, searchWait{w: w, from: v, need: need})
	d.nodes[v].pending++
	return true
}

// byTarget lists the edges by the node they lead to: the edges into v are
// in[nodes[v].inStart:nodes[v].inEnd].
func (d *deadlocks) byTarget() {
	for _, e := range d.edges {
		d.nodes[e.to].inEnd++
	}
	var sum int32
	for i := range d.nodes {
		n := &d.nodes[i]
		n.inStart, sum = sum, sum+n.inEnd
		n.inEnd = n.inStart
	}
	d.in = slices.Grow(d.in[:0], len(d.edges))[:len(d.edges)]
	for i, e := range d.edges {
		n := &d.nodes[e.to]
		d.in[n.inEnd] = int32(i)
		n.inEnd++
	}
}

// forget drops the references a search's scratch space holds, so that it
// does not keep ended connections alive.
func (d *deadlocks) forget() {
	clear(d.nodes)
	clear(d.waits)
	d.nodes, d.waits = d.nodes[:0], d.waits[:0]
	if cap(d.edges) > 4096 {
		d.nodes, d.waits, d.edges, d.in, d.work = nil, nil, nil, nil, nil
	}
}
