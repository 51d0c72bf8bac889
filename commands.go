package main

import (
	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/wire"
)

// batch carries the commands a connection has buffered to the manager in one
// request, and their replies back in one buffer, so that a pipelining client
// costs one manager round trip and one write per read.
type batch struct {
	cmds []proto.Command
	next int    // the first command not yet run
	out  []byte // the replies of the commands run
	ends []int  // where each reply ends in out: the websocket sends one message per reply

	// The manager stops early, leaving the reply of cmds[next-1] to the
	// connection, when that command is a dump or has to wait.
	dump        *dump
	waitStarted bool
	// authFailed: cmds[next-1] is an auth that failed, which the
	// connection answers after a delay (auth.go).
	authFailed authOutcome
	// refuseAuth: set by the connection, the auth commands of the batch
	// are refused untried (they came during a failure's delay).
	refuseAuth bool
	// noReply: the command just run has no reply in order, not even an
	// empty websocket message (!gw, !sgw: their outcome comes out of band).
	noReply bool
	// killPending: cmds[next-1] is a kill that the manager answers once
	// its victim's locks are released (admin.go).
	killPending bool
}

// runBatch runs commands until the batch ends or one of them leaves its reply
// unfinished.
func (m *manager) runBatch(c *connState, b *batch) {
	for b.next < len(b.cmds) {
		cmd := &b.cmds[b.next]
		if m.leader != nil && grantsAtOnce(cmd.Verb) && !m.mayGrant() {
			refuseBatch(c, b) // HA: the deadline passed within the batch (fence.go)
			return
		}
		b.next++
		if !m.runCommand(c, cmd, b) {
			break
		}
		if b.noReply {
			b.noReply = false
			continue
		}
		b.ends = append(b.ends, len(b.out))
		if len(b.out) >= maxReplyBuffer {
			break // the connection writes, then sends the rest
		}
	}
	if b.killPending {
		b.killPending = false
		return
	}
	c.answered()
}

// runCommand runs one command, appending its reply to b.out. It returns
// false when the reply is left to the connection (b.dump, b.waitStarted or
// b.authFailed is set).
func (m *manager) runCommand(c *connState, cmd *proto.Command, b *batch) bool {
	switch cmd.Verb {
	case proto.VerbInvalid:
		m.stats.invalid++
		return true
	case proto.VerbTooLong:
		b.out = append(b.out, wire.LineTooLong...)
		return true
	}
	m.stats.commands[cmd.Verb]++
	if m.sec.acl != nil && !cmd.Verb.Async() && m.denied(c, cmd, b) {
		return true
	}
	switch cmd.Verb {
	case proto.VerbG:
		return m.g(c, cmd, b)
	case proto.VerbR:
		return m.r(c, cmd, b)
	case proto.VerbI:
		return m.i(c, cmd, b)
	case proto.VerbSG:
		return m.sg(c, cmd, b)
	case proto.VerbSR:
		return m.sr(c, cmd, b)
	case proto.VerbSI:
		return m.si(c, cmd, b)
	case proto.VerbMe:
		return m.me(c, cmd, b)
	case proto.VerbIam:
		return m.iam(c, cmd, b)
	case proto.VerbWho, proto.VerbD, proto.VerbSD, proto.VerbDump, proto.VerbDL, proto.VerbDW:
		return m.listing(c, cmd, b)
	case proto.VerbQ:
		return m.q(c, cmd, b)
	case proto.VerbGW:
		return m.gw(c, cmd, b)
	case proto.VerbSGW:
		return m.sgw(c, cmd, b)
	case proto.VerbT:
		return m.t(c, cmd, b)
	case proto.VerbPing:
		return m.ping(c, cmd, b)
	case proto.VerbNowPing:
		return m.nowPing(c, cmd, b)
	case proto.VerbNowCancel:
		return m.nowCancel(c, cmd, b)
	case proto.VerbAuth:
		return m.auth(c, cmd, b)
	case proto.VerbKill, proto.VerbKillHolder:
		return m.kill(c, cmd, b)
	case proto.VerbPerms:
		b.out = m.appendPerms(c, b.out)
		return true
	case proto.VerbAsyncGW, proto.VerbAsyncSGW:
		return m.asyncWait(c, cmd, b)
	}
	panic("glockd: no handler for verb " + cmd.Verb.String())
}

// The handlers, one per verb (or family of verbs), in the table's order.

func (m *manager) g(c *connState, cmd *proto.Command, b *batch) bool {
	switch m.lock(c, cmd.Name) {
	case lockTaken:
		b.out = proto.AppendReply(b.out, 1, wire.GetSuccess, cmd.Name)
	case lockBusy:
		b.out = proto.AppendReply(b.out, 0, wire.GetFailure, cmd.Name)
	case lockTooMany:
		b.out = proto.AppendReply(b.out, 0, wire.TooManyLocks, cmd.Name)
	}
	return true
}

func (m *manager) r(c *connState, cmd *proto.Command, b *batch) bool {
	b.out = proto.AppendBoolReply(b.out, m.unlock(c, cmd.Name), wire.ReleaseSuccess, wire.ReleaseFailure, cmd.Name)
	return true
}

func (m *manager) i(_ *connState, cmd *proto.Command, b *batch) bool {
	_, held := m.inspect(cmd.Name)
	b.out = proto.AppendBoolReply(b.out, held, wire.IsLocked, wire.NotLocked, cmd.Name)
	return true
}

func (m *manager) sg(c *connState, cmd *proto.Command, b *batch) bool {
	n, res := m.takeShared(c, cmd.Name)
	if res == lockTooMany {
		b.out = proto.AppendReply(b.out, 0, wire.TooManyLocks, cmd.Name)
		return true
	}
	b.out = proto.AppendReply(b.out, uint64(n), wire.SharedGetSuccess, cmd.Name)
	return true
}

func (m *manager) sr(c *connState, cmd *proto.Command, b *batch) bool {
	b.out = proto.AppendBoolReply(b.out, m.sharedUnlock(c, cmd.Name), wire.SharedReleaseSuccess, wire.SharedReleaseFailure, cmd.Name)
	return true
}

func (m *manager) si(_ *connState, cmd *proto.Command, b *batch) bool {
	if n := m.sharedCount(cmd.Name); n > 0 {
		b.out = proto.AppendReply(b.out, uint64(n), wire.SharedIsLocked, cmd.Name)
	} else {
		b.out = proto.AppendReply(b.out, 0, wire.SharedNotLocked, cmd.Name)
	}
	return true
}

func (m *manager) me(c *connState, _ *proto.Command, b *batch) bool {
	b.out = append(b.out, "1 "...)
	b.out = append(b.out, c.name...)
	b.out = append(b.out, ' ')
	b.out = append(b.out, c.displayName()...)
	b.out = append(b.out, '\n')
	return true
}

func (m *manager) iam(c *connState, cmd *proto.Command, b *batch) bool {
	switch {
	case !m.registryEnabled:
		b.out = append(b.out, wire.Disabled...)
	case c.ident != nil:
		// An identity's name is its name: no one may pass for another.
		b.out = append(b.out, wire.PermissionDenied...)
	case len(cmd.Name) == 0:
		m.registry.remove(c)
		b.out = append(b.out, wire.OK...)
	default:
		m.registry.register(c, string(cmd.Name))
		b.out = append(b.out, wire.OK...)
	}
	return true
}

// listing runs who, d, sd, dump, dl and dw: the manager copies a step of
// the table at a time, the connection formats and writes it (dumps.go).
func (m *manager) listing(c *connState, cmd *proto.Command, b *batch) bool {
	if !m.dumpEnabled || (cmd.Verb == proto.VerbWho && !m.registryEnabled) {
		b.out = append(b.out, wire.Disabled...)
		return true
	}
	m.startDump(cmd, b)
	return false
}

func (m *manager) q(_ *connState, _ *proto.Command, b *batch) bool {
	b.out = m.appendStats(b.out)
	return true
}

func (m *manager) t(_ *connState, cmd *proto.Command, b *batch) bool {
	if l, held := m.inspect(cmd.Name); held {
		b.out = proto.AppendReply(b.out, l.token, wire.Token, cmd.Name)
	} else {
		b.out = proto.AppendReply(b.out, 0, wire.NotLocked, cmd.Name)
	}
	return true
}

func (m *manager) ping(_ *connState, _ *proto.Command, b *batch) bool {
	b.out = append(b.out, wire.Pong...)
	return true
}

func (m *manager) nowPing(_ *connState, _ *proto.Command, b *batch) bool {
	b.out = append(b.out, wire.NowPong...)
	return true
}

// nowCancel runs !cancel: the pending waits (those for NAME, when one is
// given) end now, as timeouts: the gw or sgw in order, and the asynchronous
// ones, whose outcome lines follow this reply.
func (m *manager) nowCancel(c *connState, cmd *proto.Command, b *batch) bool {
	cancelled := false
	if w := c.waiter; w != nil && (len(cmd.Name) == 0 || w.name == string(cmd.Name)) {
		m.expire(w)
		cancelled = true
	}
	if len(c.asyncWaits) > 0 && m.cancelAsync(c, cmd.Name) {
		cancelled = true
	}
	if cancelled {
		b.out = append(b.out, wire.Cancelled...)
	} else {
		b.out = append(b.out, wire.NothingPending...)
	}
	return true
}

// gw: the lock now if it is free (or already c's), else a place in its
// queue, or a timeout at once when MS is 0.
func (m *manager) gw(c *connState, cmd *proto.Command, b *batch) bool {
	if cmd.Bad {
		b.out = proto.AppendReply(b.out, 0, wire.InvalidArgument, cmd.Line)
		return true
	}
	res := m.lock(c, cmd.Name)
	switch {
	case res == lockTaken:
		b.out = proto.AppendReply(b.out, 1, wire.GetSuccess, cmd.Name)
	case res == lockTooMany || c.lockCount() >= m.maxLocksPerConn:
		// At its limit, c could not take the lock it would be handed.
		b.out = proto.AppendReply(b.out, 0, wire.TooManyLocks, cmd.Name)
	case cmd.MS == 0 || c.inputEnded || c.asyncWaiting(cmd.Name, false):
		// A connection does not queue twice for one lock: its gw would
		// only wait for the !gw before it.
		b.out = proto.AppendReply(b.out, 0, wire.GetTimeout, cmd.Name)
	case m.wait(c, cmd.Name, false, 0, cmd.MS, false) == waitRefused:
		// The wait would close a cycle of waiters (deadlocks.go).
		b.out = proto.AppendReply(b.out, 0, wire.GetDeadlock, cmd.Name)
	default:
		b.waitStarted = true
		return false
	}
	return true
}

// sgw: a holder slot now if one is free and nobody is queued before c,
// else a place in the queue (or a timeout when MS is 0).
func (m *manager) sgw(c *connState, cmd *proto.Command, b *batch) bool {
	if cmd.Bad {
		b.out = proto.AppendReply(b.out, 0, wire.InvalidArgument, cmd.Line)
		return true
	}
	if n, held := m.sharedHeldBy(c, cmd.Name); held {
		b.out = proto.AppendReply(b.out, uint64(n), wire.SharedGetSuccess, cmd.Name)
		return true
	}
	switch {
	case c.lockCount() >= m.maxLocksPerConn:
		b.out = proto.AppendReply(b.out, 0, wire.TooManyLocks, cmd.Name)
	case int64(m.sharedCount(cmd.Name)) < cmd.Max && m.sharedQueueEmpty(cmd.Name):
		n := m.sharedGrantName(c, cmd.Name)
		b.out = proto.AppendReply(b.out, uint64(n), wire.SharedGetSuccess, cmd.Name)
	case cmd.MS == 0 || c.inputEnded || c.asyncWaiting(cmd.Name, true):
		b.out = proto.AppendReply(b.out, 0, wire.SharedGetTimeout, cmd.Name)
	case m.wait(c, cmd.Name, true, cmd.Max, cmd.MS, false) == waitRefused:
		// The wait would close a cycle of waiters (deadlocks.go).
		b.out = proto.AppendReply(b.out, 0, wire.SharedGetDeadlock, cmd.Name)
	default:
		b.waitStarted = true
		return false
	}
	return true
}
