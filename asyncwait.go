package main

import (
	"cmp"
	"slices"
	"sync"

	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/wire"
)

// Asynchronous waits: "!gw MS NAME" and "!sgw MS MAX NAME". They run in
// order like any command, but have no reply in order: exactly one
// out-of-band line reports the outcome, at once when the lock is free (or the
// wait is refused), else when the wait is granted, times out, is cancelled
// or the input ends. So the commands after them are not held back, and a
// connection may have many pending, one per name and kind, up to
// -max-waits-per-conn. They queue with every other waiter (waiters.go).
//
// The manager puts every outcome in the connection's outbox, in the order it
// decides them; the connection moves them into its replies after each batch
// it runs, and a delivery goroutine, which exists only while asynchronous
// waits are pending, writes those decided in between.

// waitKey names a connection's asynchronous wait: one per name and kind.
type waitKey struct {
	name   string
	shared bool
}

// asyncOutbox carries the outcome lines of a connection's asynchronous waits
// from the manager to the connection. The manager only appends to it, under
// mu, which nothing holds for longer than a copy: it never waits on the
// connection.
type asyncOutbox struct {
	wake chan struct{} // one slot: lines were added, or pending dropped

	mu      sync.Mutex
	out     []byte       // outcome lines not yet taken by the connection
	ends    []int        // where each ends in out
	results []waitResult // the outcomes in out of waits that queued (for metrics)
	grants  int          // grants among the lines in out
	pending int          // waits queued in the manager, outcome still to come
}

// put adds the outcome of a wait on name. queued: the wait had queued, and
// so counted in pending.
func (o *asyncOutbox) put(shared bool, name string, res waitResult, queued bool) {
	o.mu.Lock()
	o.out = appendAsyncOutcome(o.out, shared, name, res)
	o.ends = append(o.ends, len(o.out))
	if res.granted {
		o.grants++
	}
	if queued {
		o.pending--
		o.results = append(o.results, res)
	}
	o.mu.Unlock()
	if queued {
		o.signal()
	}
}

// drop forgets a queued wait that ends without an outcome line (the HA
// fence drops every waiter).
func (o *asyncOutbox) drop() {
	o.mu.Lock()
	o.pending--
	o.mu.Unlock()
	o.signal()
}

func (o *asyncOutbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// appendAsyncOutcome formats "!gw 1 TOKEN NAME", "!gw 0 0 NAME",
// "!sgw N NAME" or "!sgw 0 NAME", or for a wait refused as a deadlock
// "!gw 0 deadlock NAME" or "!sgw deadlock NAME".
func appendAsyncOutcome(out []byte, shared bool, name string, res waitResult) []byte {
	if shared {
		out = append(out, wire.AsyncSGW+" "...)
		switch {
		case res.granted:
			out = proto.AppendUint(out, uint64(res.holders))
		case res.deadlock:
			out = append(out, wire.AsyncDeadlock...)
		default:
			out = append(out, '0')
		}
	} else {
		out = append(out, wire.AsyncGW+" "...)
		switch {
		case res.granted:
			out = append(out, "1 "...)
			out = proto.AppendUint(out, res.token)
		case res.deadlock:
			out = append(out, "0 "+wire.AsyncDeadlock...)
		default:
			out = append(out, "0 0"...)
		}
	}
	out = append(out, ' ')
	out = append(out, name...)
	return append(out, '\n')
}

// outbox returns c's outbox, made on its first asynchronous wait. It is set
// before the batch that made it is answered, so the connection sees it.
func (m *manager) outbox(c *connState) *asyncOutbox {
	if c.box == nil {
		c.box = &asyncOutbox{wake: make(chan struct{}, 1)}
	}
	return c.box
}

// addAsync notes w, which has just queued, as one of c's asynchronous waits.
func (c *connState) addAsync(w *waiter) {
	if c.asyncWaits == nil {
		c.asyncWaits = make(map[waitKey]*waiter)
	}
	c.asyncWaits[waitKey{w.name, w.shared}] = w
	c.box.mu.Lock()
	c.box.pending++
	c.box.mu.Unlock()
}

// asyncWaiting reports whether c has an asynchronous wait pending on name.
func (c *connState) asyncWaiting(name []byte, shared bool) bool {
	if len(c.asyncWaits) == 0 {
		return false
	}
	_, ok := c.asyncWaits[waitKey{string(name), shared}]
	return ok
}

// asyncWait runs !gw and !sgw: the lock at once if it is free (or already
// c's), else a place in its queue; refused at once (the 0 outcome) when
// malformed, not permitted, already waited for by c, at c's limit of locks
// or of waits, with MS 0, or after the end of c's input.
func (m *manager) asyncWait(c *connState, cmd *proto.Command, b *batch) bool {
	b.noReply = true
	shared := cmd.Verb == proto.VerbAsyncSGW
	box := m.outbox(c)
	name := cmd.Name
	refuse := func() { box.put(shared, string(name), waitResult{}, false) }
	if cmd.Bad || c.asyncWaiting(name, shared) ||
		(m.sec.acl != nil && (c.ident == nil || !c.ident.MayLock(name))) {
		refuse()
		return true
	}
	if shared {
		if n, held := m.sharedHeldBy(c, name); held {
			box.put(true, string(name), waitResult{granted: true, holders: n}, false)
			return true
		}
		if c.lockCount() < m.maxLocksPerConn && int64(m.sharedCount(name)) < cmd.Max && m.sharedQueueEmpty(name) {
			n := m.sharedGrantName(c, name)
			box.put(true, string(name), waitResult{granted: true, holders: n}, false)
			return true
		}
	} else if m.lock(c, name) == lockTaken {
		l, _ := m.inspect(name)
		box.put(false, l.name, waitResult{granted: true, holders: 1, token: l.token}, false)
		return true
	}
	if cmd.MS == 0 || c.inputEnded || c.lockCount() >= m.maxLocksPerConn || len(c.asyncWaits) >= m.maxWaitsPerConn {
		refuse()
		return true
	}
	m.wait(c, name, shared, cmd.Max, cmd.MS, true)
	return true
}

// tookShared ends c's !sgw on name, if one is pending, as granted: c has
// just taken the shared lock with sg.
func (m *manager) tookShared(c *connState, name []byte, holders int) {
	if w := c.asyncWaits[waitKey{string(name), true}]; w != nil {
		m.unqueue(w)
		m.tell(w, waitResult{granted: true, holders: holders})
	}
}

// cancelAsync ends c's asynchronous waits on name (every one, when name is
// empty) as timeouts, in the order of their names, and reports whether there
// was any.
func (m *manager) cancelAsync(c *connState, name []byte) bool {
	if len(name) > 0 {
		found := false
		for _, shared := range []bool{false, true} {
			if w := c.asyncWaits[waitKey{string(name), shared}]; w != nil {
				m.expire(w)
				found = true
			}
		}
		return found
	}
	ws := make([]*waiter, 0, len(c.asyncWaits))
	for _, w := range c.asyncWaits {
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b *waiter) int {
		if a.name != b.name {
			return cmp.Compare(a.name, b.name)
		}
		if a.shared == b.shared {
			return 0
		}
		if a.shared {
			return 1
		}
		return -1
	})
	for _, w := range ws {
		m.expire(w)
	}
	return len(ws) > 0
}

// takeOutcomes moves the outcome lines in the outbox after the replies in
// c.b, and starts the delivery goroutine if waits remain pending and it does
// not run. It reports how many remain pending. A grant is not announced once
// this node's leadership (with -etcd) has ended: the connection closes
// instead, as for a gw (awaitWaits). Called with c.mu held; kept out of line
// for the idle-stack rule (docs/design.md).
//
//go:noinline
func (c *conn) takeOutcomes() (pending int, err error) {
	o := c.state.box
	o.mu.Lock()
	base := len(c.b.out)
	c.b.out = append(c.b.out, o.out...)
	for _, e := range o.ends {
		c.b.ends = append(c.b.ends, base+e)
	}
	grants := o.grants
	pending = o.pending
	c.outcomes = append(c.outcomes[:0], o.results...)
	o.out, o.ends, o.results, o.grants = o.out[:0], o.ends[:0], o.results[:0], 0
	if cap(o.out) > keptReplyBytes {
		// A burst of outcomes (many waits ending at once) gives its
		// memory back, as the reply buffers do.
		o.out, o.ends, o.results = nil, nil, nil
	}
	o.mu.Unlock()
	for _, res := range c.outcomes {
		c.srv.metrics.observeWait(res)
	}
	if grants > 0 && !c.srv.manager.serving() {
		return pending, errNotServing
	}
	if pending > 0 && !c.delivering.running {
		c.delivering.running = true
		go c.deliverFn()
	}
	return pending, nil
}

// deliverOutcomes writes the outcomes of asynchronous waits decided while
// the connection runs no batch, and exits once none is pending, or when the
// connection ends.
func (c *conn) deliverOutcomes() {
	wake := c.state.box.wake
	for {
		select {
		case <-wake:
		case <-c.ended:
			c.mu.Lock()
			c.delivering.stop()
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		pending, err := c.takeOutcomes()
		if err == nil && cap(c.b.out) > keptReplyBytes {
			err = c.chargeReplies() // -max-buffered (limits.go)
		}
		if err == nil && len(c.b.ends) > 0 {
			err = c.flush()
		}
		if err != nil || pending == 0 {
			c.delivering.stop()
		}
		c.mu.Unlock()
		if err != nil {
			c.t.Close()
			return
		}
		if pending == 0 {
			return
		}
	}
}

// awaitDelivery waits until the delivery goroutine, if any, has exited.
func (c *conn) awaitDelivery() {
	c.mu.Lock()
	done := c.delivering.done()
	c.mu.Unlock()
	if done != nil {
		<-done
	}
}

// undelivered reports whether outcomes are still to come or not yet
// written: a restored connection's delivery starts then (serveAdopted).
func (o *asyncOutbox) undelivered() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pending > 0 || len(o.out) > 0
}
