package main

// verb identifies a command. The zero value is an unknown command or a blank
// line, which the protocol answers with silence.
type verb uint8

const (
	verbInvalid verb = iota
	verbTooLong      // a line over -max-line; not a command a client can type
	verbG
	verbR
	verbI
	verbSG
	verbSR
	verbSI
	verbMe
	verbIam
	verbWho
	verbD
	verbSD
	verbDump
	verbQ
	verbGW
	verbSGW
	verbT
	verbPing
	verbDL
	verbNowPing    // !ping: answered at once, even while a wait is pending
	verbNowCancel  // !cancel [NAME]: ends the pending wait at once
	verbAuth       // auth TOKEN: identifies the connection (with -acl-file)
	verbKill       // kill CONN: closes a connection (admin)
	verbKillHolder // kill-holder NAME: closes the holder of a lock (admin)
	verbPerms      // perms: what the connection's identity may do
	numVerbs
)

// outOfBand reports whether the verb is run as soon as it is read, even
// while a wait is pending, instead of after the commands before it. Its
// reply starts with "!", which no other reply does, so that a client can
// tell it apart from the replies it is waiting for in order.
func (v verb) outOfBand() bool { return v == verbNowPing || v == verbNowCancel }

// String is the command word of a verb, also the suffix of its counter in q.
func (v verb) String() string {
	switch v {
	case verbG:
		return "g"
	case verbR:
		return "r"
	case verbI:
		return "i"
	case verbSG:
		return "sg"
	case verbSR:
		return "sr"
	case verbSI:
		return "si"
	case verbMe:
		return "me"
	case verbIam:
		return "iam"
	case verbWho:
		return "who"
	case verbD:
		return "d"
	case verbSD:
		return "sd"
	case verbDump:
		return "dump"
	case verbQ:
		return "q"
	case verbGW:
		return "gw"
	case verbSGW:
		return "sgw"
	case verbT:
		return "t"
	case verbPing:
		return "ping"
	case verbDL:
		return "dl"
	case verbNowPing:
		return "!ping"
	case verbNowCancel:
		return "!cancel"
	case verbAuth:
		return "auth"
	case verbKill:
		return "kill"
	case verbKillHolder:
		return "kill-holder"
	case verbPerms:
		return "perms"
	case verbTooLong:
		return "(too long)"
	}
	return "(invalid)"
}

// lookupVerb maps a command word to its verb. The switch on string(word)
// compiles to comparisons without allocating.
func lookupVerb(word []byte) verb {
	switch string(word) {
	case "g":
		return verbG
	case "r":
		return verbR
	case "i":
		return verbI
	case "sg":
		return verbSG
	case "sr":
		return verbSR
	case "si":
		return verbSI
	case "me":
		return verbMe
	case "iam":
		return verbIam
	case "who":
		return verbWho
	case "d":
		return verbD
	case "sd":
		return verbSD
	case "dump":
		return verbDump
	case "q":
		return verbQ
	case "gw":
		return verbGW
	case "sgw":
		return verbSGW
	case "t":
		return verbT
	case "ping":
		return verbPing
	case "dl":
		return verbDL
	case "!ping":
		return verbNowPing
	case "!cancel":
		return verbNowCancel
	case "auth":
		return verbAuth
	case "kill":
		return verbKill
	case "kill-holder":
		return verbKillHolder
	case "perms":
		return verbPerms
	}
	return verbInvalid
}

// batch carries the commands a connection has buffered to the manager in one
// request, and their replies back in one buffer, so that a pipelining client
// costs one manager round trip and one write per read.
type batch struct {
	cmds []command
	next int    // the first command not yet run
	out  []byte // the replies of the commands run
	ends []int  // where each reply ends in out: the websocket sends one message per reply

	// The manager stops early, leaving the reply of cmds[next-1] to the
	// connection, when that command is a dump or has to wait.
	dump    *dump
	waiting bool
	// dumpPending: the dump is copied in steps, and the manager answers
	// the batch when it is complete.
	dumpPending bool
	// authFailed: cmds[next-1] is an auth with a wrong token, which the
	// connection answers after a delay.
	authFailed bool
}

// runBatch runs commands until the batch ends or one of them leaves its reply
// unfinished.
func (m *manager) runBatch(c *connState, b *batch) {
	for b.next < len(b.cmds) {
		cmd := &b.cmds[b.next]
		b.next++
		if !m.runCommand(c, cmd, b) {
			break
		}
		b.ends = append(b.ends, len(b.out))
		if len(b.out) >= maxReplyBuffer {
			break // the connection writes, then sends the rest
		}
	}
	if b.dumpPending {
		b.dumpPending = false
		return
	}
	c.done <- struct{}{}
}

// runCommand executes one command and appends its reply to b.out. It returns false
// when the reply is left to the connection (b.dump or b.waiting is set).
func (m *manager) runCommand(c *connState, cmd *command, b *batch) bool {
	switch cmd.verb {
	case verbInvalid:
		m.stats.invalid++
		return true
	case verbTooLong:
		b.out = append(b.out, replyTooLong...)
		return true
	}
	m.stats.commands[cmd.verb]++
	if m.sec.acl != nil && m.denied(c, cmd, b) {
		return true
	}
	out := b.out
	switch cmd.verb {
	case verbG:
		ok, full := m.lock(c, cmd.name)
		if full {
			out = appendReply(out, 0, textTooManyLocks, cmd.name)
		} else {
			out = appendBoolReply(out, ok, textGetSuccess, textGetFailure, cmd.name)
		}
	case verbR:
		out = appendBoolReply(out, m.unlock(c, cmd.name), textReleaseSuccess, textReleaseFailure, cmd.name)
	case verbI:
		_, held := m.inspect(cmd.name)
		out = appendBoolReply(out, held, textIsLocked, textNotLocked, cmd.name)
	case verbSG:
		n, full := m.sharedLock(c, cmd.name)
		if full {
			out = appendReply(out, 0, textTooManyLocks, cmd.name)
		} else {
			out = appendReply(out, uint64(n), textSharedGetSuccess, cmd.name)
		}
	case verbSR:
		out = appendBoolReply(out, m.sharedUnlock(c, cmd.name), textSharedReleaseSuccess, textSharedReleaseFailure, cmd.name)
	case verbSI:
		if n := m.sharedCount(cmd.name); n > 0 {
			out = appendReply(out, uint64(n), textSharedIsLocked, cmd.name)
		} else {
			out = appendReply(out, 0, textSharedNotLocked, cmd.name)
		}
	case verbMe:
		out = append(out, "1 "...)
		out = append(out, c.name...)
		out = append(out, ' ')
		out = append(out, c.displayName()...)
		out = append(out, '\n')
	case verbIam:
		switch {
		case !m.registryEnabled:
			out = append(out, replyDisabled...)
		case c.ident != nil:
			// An identity's name is its name: no one may pass for another.
			out = append(out, replyPermissionDenied...)
		case len(cmd.name) == 0:
			m.registry.remove(c)
			out = append(out, replyOK...)
		default:
			m.registry.register(c, string(cmd.name))
			out = append(out, replyOK...)
		}
	case verbWho:
		if !m.dumpEnabled || !m.registryEnabled {
			out = append(out, replyDisabled...)
			break
		}
		b.dumpPending = m.startDump(c, cmd, b)
		return false
	case verbD, verbSD, verbDump, verbDL:
		if !m.dumpEnabled {
			out = append(out, replyDisabled...)
			break
		}
		b.dumpPending = m.startDump(c, cmd, b)
		return false
	case verbQ:
		out = m.appendStats(out)
	case verbGW:
		if cmd.bad {
			out = appendReply(out, 0, textInvalidArgument, cmd.line)
			break
		}
		return m.getWait(c, cmd, b)
	case verbSGW:
		if cmd.bad {
			out = appendReply(out, 0, textInvalidArgument, cmd.line)
			break
		}
		return m.sharedGetWait(c, cmd, b)
	case verbT:
		if l, held := m.inspect(cmd.name); held {
			out = appendReply(out, l.token, textToken, cmd.name)
		} else {
			out = appendReply(out, 0, textNotLocked, cmd.name)
		}
	case verbPing:
		out = append(out, replyPong...)
	case verbNowPing:
		out = append(out, replyNowPong...)
	case verbNowCancel:
		if w := c.waiter; w != nil && (len(cmd.name) == 0 || w.name == string(cmd.name)) {
			m.expire(w)
			out = append(out, replyCancelled...)
		} else {
			out = append(out, replyNothingPending...)
		}
	case verbAuth:
		return m.auth(c, cmd, b)
	case verbKill, verbKillHolder:
		out = m.kill(c, cmd, out)
	case verbPerms:
		out = m.appendPerms(c, out)
	}
	b.out = out
	return true
}

// getWait runs gw: the lock now if it is free (or already c's), else a
// place in its queue, or a timeout at once when MS is 0.
func (m *manager) getWait(c *connState, cmd *command, b *batch) bool {
	ok, full := m.lock(c, cmd.name)
	switch {
	case ok:
		b.out = appendReply(b.out, 1, textGetSuccess, cmd.name)
	case full || c.lockCount() >= m.maxLocksPerConn:
		// At its limit, c could not take the lock it would be handed.
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.name)
	case cmd.ms == 0 || c.inputEnded:
		b.out = appendReply(b.out, 0, textGetTimeout, cmd.name)
	default:
		m.wait(c, string(cmd.name), false, 0, cmd.ms)
		b.waiting = true
		return false
	}
	return true
}

// sharedGetWait runs sgw: a holder slot now if one is free and nobody is
// queued before c, else a place in the queue (or a timeout when MS is 0).
func (m *manager) sharedGetWait(c *connState, cmd *command, b *batch) bool {
	if h := c.sharedHeld[string(cmd.name)]; h != nil {
		b.out = appendReply(b.out, uint64(h.lock.count), textSharedGetSuccess, cmd.name)
		return true
	}
	switch {
	case c.lockCount() >= m.maxLocksPerConn:
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.name)
	case int64(m.sharedCount(cmd.name)) < cmd.max && m.sharedQueueEmpty(cmd.name):
		n := m.sharedGrant(c, string(cmd.name))
		b.out = appendReply(b.out, uint64(n), textSharedGetSuccess, cmd.name)
	case cmd.ms == 0 || c.inputEnded:
		b.out = appendReply(b.out, 0, textSharedGetTimeout, cmd.name)
	default:
		m.wait(c, string(cmd.name), true, cmd.max, cmd.ms)
		b.waiting = true
		return false
	}
	return true
}
