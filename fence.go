package main

// The lock manager's side of leadership with -etcd (internal/ha, docs/ha.md):
// the checks before every request (admit, mayServe) and every grant
// (mayGrant), the term's tokens, and the fence that ends the manager's
// serving when the term is over. internal/ha decides and reports the term;
// the manager only reads it.

import (
	"errors"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/tokens"
)

// leadership is the manager's view of the node's leadership.
type leadership struct {
	node *ha.Leadership // the term the node serves; read by any goroutine

	// Owned by the manager goroutine.
	seen    *ha.Term            // the term its token source and fence belong to
	fenced  bool                // seen is over for the manager: it answers nothing more
	dropped map[*connState]bool // connections whose wait the fence dropped
}

// serving reports whether the node may answer now: always without -etcd;
// with it, while a term is current and before its deadline. Any goroutine
// may ask (m.leader is set before the manager runs, and the term is atomic).
func (m *manager) serving() bool {
	if m.leader == nil {
		return true
	}
	t := m.leader.node.Current()
	return t != nil && t.Valid()
}

// admit is the manager's check before a request: a batch runs only while
// this node leads and its deadline is ahead; a disconnect or a wait's expiry
// is handled in any case, but past the deadline it finds no waiter to hand
// a lock to. It reports whether the request may run.
func (m *manager) admit(req request) bool {
	switch req.kind {
	case requestBatch:
		if m.mayServe() {
			return true
		}
		// No reply, not even to the commands before this batch; the
		// step-down closes the connection.
		refuseBatch(req.conn, req.batch)
		return false
	case requestDumpStep:
		if m.mayServe() {
			return true
		}
		// The dump ends here, unfinished; the step-down closes the
		// connection.
		d := req.dump
		d.step, d.cut, d.entries, d.details = nil, true, d.entries[:0], d.details[:0]
		req.conn.answered()
		return false
	case requestWaitExpired:
		m.mayServe()
	case requestDisconnect:
		m.mayServe()
		delete(m.leader.dropped, req.conn)
	case requestEndOfInput:
		m.mayServe()
		// The connection waits for its wait to end before it closes: a
		// wait dropped by the fence ends as a timeout, which grants
		// nothing, to a client that has stopped sending anyway.
		if m.leader.dropped[req.conn] {
			delete(m.leader.dropped, req.conn)
			req.conn.deliver(waitResult{})
		}
	}
	return true
}

// mayGrant is the check before every grant with -etcd: a granting command
// of a batch (g, sg, gw or sgw), a lock handed over to a waiter, an orphan
// passed on. admit checked the deadline before the request, but a request
// can run for a while (a batch of maxBatch commands, a pause of the process
// in the middle of it): the term must still be valid at the moment of each
// grant. Past the deadline it fences the manager, as admit would, and
// reports false: nothing is granted. Always true without -etcd.
func (m *manager) mayGrant() bool {
	l := m.leader
	if l == nil {
		return true
	}
	if t := l.node.Current(); t != nil && t == l.seen && !l.fenced && t.Valid() {
		return true
	}
	m.fence(l.seen)
	return false
}

// grantsAtOnce reports whether a command can grant a lock as it runs.
func grantsAtOnce(v proto.Verb) bool {
	return v == proto.VerbG || v == proto.VerbSG || v == proto.VerbGW || v == proto.VerbSGW || v.Async()
}

// errNotServing ends a connection whose replies came back from the manager
// after the term ended: the connection closes without writing them.
var errNotServing = errors.New("the term ended before the replies were written")

// refuseBatch drops every reply of b, even those of the commands run before
// its deadline passed, and answers it: the connection writes nothing, and
// the step-down closes it. As admit does with a batch past the deadline.
func refuseBatch(c *connState, b *batch) {
	b.next = len(b.cmds)
	b.out, b.ends = b.out[:0], b.ends[:0]
	c.answered()
}

// mayServe reports whether the current term allows serving, takes a new
// term's tokens, and fences the manager when the term is over.
func (m *manager) mayServe() bool {
	l := m.leader
	t := l.node.Current()
	if t != l.seen {
		l.seen, l.fenced = t, false
		if t != nil {
			m.tokens = tokens.NewBlocks(t.First(), t.Want())
		}
	}
	if t == nil || l.fenced || !t.Valid() {
		m.fence(t)
		return false
	}
	ts := &m.tokens
	if ts.Awaiting() {
		select {
		case b := <-t.Blocks():
			ts.Receive(b)
		default:
		}
	}
	if ts.Remaining() < tokens.Reserve && !m.awaitTokens(t) {
		m.fence(t)
		return false
	}
	return true
}

// awaitTokens waits for the next block of tokens, at most until the
// deadline: the one place where the manager waits on etcd, when grants came
// faster than the leader could reserve blocks.
func (m *manager) awaitTokens(t *ha.Term) bool {
	timer := time.NewTimer(time.Until(t.Deadline()))
	defer timer.Stop()
	select {
	case b := <-t.Blocks():
		m.tokens.Receive(b)
		return t.Valid()
	case <-t.Over():
	case <-timer.C:
	}
	return false
}

// fence stops the manager serving for the rest of the term: it forgets every
// waiter without a reply (so that locks orphaned from now on go to nobody),
// drops the term's tokens and tells the node, which closes every connection.
func (m *manager) fence(t *ha.Term) {
	l := m.leader
	if l.fenced {
		return
	}
	l.fenced = true
	m.tokens = tokens.Source{}
	for _, table := range []map[string]*waitQueue{m.waiters, m.sharedWaiters} {
		for name, q := range table {
			for !q.empty() {
				w := q.pop()
				m.finishWait(w)
				if w.async {
					// Its connection is closed with the others.
					w.conn.box.drop()
					continue
				}
				if l.dropped == nil {
					l.dropped = make(map[*connState]bool)
				}
				l.dropped[w.conn] = true
			}
			delete(table, name)
		}
	}
	if t != nil {
		t.End("the lock manager found the deadline passed")
	}
}
