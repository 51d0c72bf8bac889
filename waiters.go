package main

import (
	"math"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/wire"
)

// waitResult is how a wait ended: granted, with the holder count for sgw and
// the fencing token for gw, timed out, or refused as a deadlock.
type waitResult struct {
	granted  bool
	deadlock bool // refused: it closed a cycle of waiters (deadlocks.go)
	holders  int
	token    uint64
	waited   time.Duration
	// authFailure: not a wait but a failed auth's delay, ended (auth.go).
	authFailure bool
}

// waiter is a connection queued on a lock by gw, sgw, !gw or !sgw. A
// connection has at most one gw or sgw pending (connState.waiter), because
// the commands after it run after it, and any number of !gw and !sgw, one per
// name and kind (connState.asyncWaits, asyncwait.go). All of them queue
// alike: FIFO per lock, across connections.
type waiter struct {
	conn     *connState
	name     string
	shared   bool
	async    bool // !gw or !sgw: the outcome goes to the connection's outbox
	max      int  // sgw: granted while the lock has fewer holders than this
	timer    *time.Timer
	started  time.Time
	deadline time.Time // when the timer fires; zero without one (a hand-over carries it: upgrade_snapshot.go)
	resolved bool      // granted, timed out or cancelled; the timer's message is then stale
	cycles   int32     // reported deadlocks it is in (-deadlocks report)

	prev, next *waiter
	// older and newer link every waiter in the order they began to wait.
	older, newer *waiter
}

// waiterAges is every waiter in the order they began, so that the longest
// current wait is found without a scan.
type waiterAges struct{ oldest, newest *waiter }

func (a *waiterAges) push(w *waiter) {
	w.older = a.newest
	if a.newest != nil {
		a.newest.newer = w
	} else {
		a.oldest = w
	}
	a.newest = w
}

func (a *waiterAges) remove(w *waiter) {
	if w.older != nil {
		w.older.newer = w.newer
	} else {
		a.oldest = w.newer
	}
	if w.newer != nil {
		w.newer.older = w.older
	} else {
		a.newest = w.older
	}
	w.older, w.newer = nil, nil
}

// waitQueue is a FIFO of waiters that can also drop one from the middle in
// O(1), when it times out or disconnects.
type waitQueue struct {
	name       string // its key in its table, which its waiters share
	head, tail *waiter
	length     int
}

func (q *waitQueue) push(w *waiter) {
	w.prev = q.tail
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.length++
}

func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	q.length--
}

func (q *waitQueue) pop() *waiter {
	w := q.head
	q.remove(w)
	return w
}

func (q *waitQueue) empty() bool { return q.head == nil }

// waiting lists the waiters of q, oldest first; none when q is nil.
func (q *waitQueue) waiting() []*waiter {
	if q == nil {
		return nil
	}
	var list []*waiter
	for w := q.head; w != nil; w = w.next {
		list = append(list, w)
	}
	return list
}

// queues returns the table of waiters that w belongs in.
func (m *manager) queues(shared bool) map[string]*waitQueue {
	if shared {
		return m.sharedWaiters
	}
	return m.waiters
}

// wait queues c for name, unless the wait would close a deadlock that is to
// be broken: then it reports so and c does not wait (an asynchronous wait's
// deadlock outcome is in its outbox already). The timer belongs to
// the manager: expiry arrives as a request, so the manager alone decides
// between grant and timeout and never grants a lock to a waiter that it has
// told about a timeout.
func (m *manager) wait(c *connState, name []byte, shared bool, maxHolders, ms int64, async bool) waitStart {
	table := m.queues(shared)
	q := table[string(name)]
	if q == nil {
		q = &waitQueue{name: string(name)}
		table[q.name] = q
	}
	w := m.spareWaiters.take()
	*w = waiter{conn: c, name: q.name, shared: shared, async: async, max: int(maxHolders), started: time.Now()}
	m.waiterCount++
	q.push(w)
	m.waitAges.push(w)
	if async {
		c.addAsync(w)
	} else {
		c.waiter = w
	}
	if m.waitStarts(w) {
		m.unqueue(w)
		if async {
			m.tell(w, waitResult{deadlock: true})
		}
		return waitRefused
	}
	// An MS too large for a time.Duration (292 years) waits without a limit.
	if ms != proto.NoWait && ms <= math.MaxInt64/int64(time.Millisecond) {
		w.deadline = w.started.Add(time.Duration(ms) * time.Millisecond)
		w.timer = time.AfterFunc(time.Duration(ms)*time.Millisecond, func() { // w is not reused: see waiterPool
			select {
			case m.requests <- request{kind: requestWaitExpired, waiter: w}:
			case <-m.stopped:
			}
		})
	}
	if m.log != nil {
		m.logEvent("wait", c, "lock", w.name, "shared", shared, "ms", ms)
	}
	return waitInQueue
}

// waiterPool keeps ended waiters for reuse, so that a steady stream of
// waits (a lock handed down a queue) allocates nothing. A waiter with a
// timer is never reused: its timer's message may still be on its way,
// naming it. One without is used after it ends only within the manager's
// step that ended it (a grant goes on to look for deadlocks through it), so
// it is retired then, and free for reuse from the next request on.
type waiterPool struct {
	retired []*waiter // ended in the current step
	spare   []*waiter // free
}

// spareWaiters bounds the waiters kept free: what a burst ends beyond it
// is left to the collector.
const spareWaiters = 256

func (p *waiterPool) take() *waiter {
	if n := len(p.spare); n > 0 {
		w := p.spare[n-1]
		p.spare = p.spare[:n-1]
		return w
	}
	return new(waiter)
}

func (p *waiterPool) retire(w *waiter) {
	if w.timer == nil {
		p.retired = append(p.retired, w)
	}
}

// recycle frees the waiters retired in the step just over; the manager
// calls it between steps.
func (p *waiterPool) recycle() {
	for _, w := range p.retired {
		if len(p.spare) == spareWaiters {
			break
		}
		*w = waiter{}
		p.spare = append(p.spare, w)
	}
	clear(p.retired)
	p.retired = p.retired[:0]
	if cap(p.retired) > spareWaiters {
		p.retired = nil
	}
}

// waitStart is what became of a wait: queued, or refused because it would
// close a deadlock.
type waitStart bool

const (
	waitInQueue waitStart = false
	waitRefused waitStart = true
)

// unqueue takes w out of its queue and forgets it. When w headed a shared
// queue, the new head may fit where w did not: it is admitted now, not when
// the count next drops.
func (m *manager) unqueue(w *waiter) {
	table := m.queues(w.shared)
	q := table[w.name]
	wasHead := q.head == w
	q.remove(w)
	if q.empty() {
		delete(table, w.name)
	}
	m.finishWait(w)
	if w.shared && wasHead {
		m.admitSharedWaiters(w.name)
	}
}

// finishWait marks w as over, so that its timer's message, if already sent,
// is ignored.
func (m *manager) finishWait(w *waiter) {
	w.resolved = true
	m.waitEnds(w)
	m.waitAges.remove(w)
	if w.async {
		delete(w.conn.asyncWaits, waitKey{w.name, w.shared})
	} else {
		w.conn.waiter = nil
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	m.spareWaiters.retire(w)
	m.waiterCount--
}

// resolve ends a waiter already taken out of its queue and tells its
// connection how.
func (m *manager) resolve(w *waiter, res waitResult) {
	m.finishWait(w)
	m.tell(w, res)
}

// tell tells the connection how its wait w ended. grants has room for one
// result and a connection has one gw or sgw at a time; an asynchronous
// wait's outcome goes to the outbox, which only appends: this never blocks
// the manager.
func (m *manager) tell(w *waiter, res waitResult) {
	res.waited = time.Since(w.started)
	if w.async {
		w.conn.box.put(w.shared, w.name, res, true)
		return
	}
	w.conn.deliver(res)
}

func (m *manager) expire(w *waiter) {
	if w.resolved {
		return
	}
	m.unqueue(w)
	m.logEvent("wait timeout", w.conn, "lock", w.name, "shared", w.shared)
	m.tell(w, waitResult{})
}

// mayTake reports whether w's connection has room for the lock it waits
// for. A gw or sgw checked that when it began, but the connection's !gw and
// !sgw may have been granted since; a waiter without room is told no, as on
// a timeout, and the next one is served.
func (m *manager) mayTake(w *waiter) bool {
	if w.conn.lockCount() < m.maxLocksPerConn {
		return true
	}
	m.resolve(w, waitResult{})
	return false
}

// popWaiter removes the oldest waiter of name from table.
func popWaiter(table map[string]*waitQueue, q *waitQueue, name string) *waiter {
	w := q.pop()
	if q.empty() {
		delete(table, name)
	}
	return w
}

// appendWaitReply formats the end of a wait for the command that started it.
func appendWaitReply(out []byte, cmd *proto.Command, res waitResult) []byte {
	switch {
	case cmd.Verb == proto.VerbSGW && res.granted:
		return proto.AppendReply(out, uint64(res.holders), wire.SharedGetSuccess, cmd.Name)
	case cmd.Verb == proto.VerbSGW && res.deadlock:
		return proto.AppendReply(out, 0, wire.SharedGetDeadlock, cmd.Name)
	case cmd.Verb == proto.VerbSGW:
		return proto.AppendReply(out, 0, wire.SharedGetTimeout, cmd.Name)
	case res.deadlock:
		return proto.AppendReply(out, 0, wire.GetDeadlock, cmd.Name)
	}
	return proto.AppendBoolReply(out, res.granted, wire.GetSuccess, wire.GetTimeout, cmd.Name)
}
