package main

// Verb identifies a command. The zero value is an unknown command or a blank
// line, which the protocol answers with silence.
type Verb uint8

const (
	verbInvalid Verb = iota
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
	verbAsyncGW    // !gw MS NAME: a wait whose outcome comes out of band
	verbAsyncSGW   // !sgw MS MAX NAME: the same for a semaphore
	verbDW         // dw [NAME]: who waits, in queue order
	numVerbs
)

// Info is a row of the command table.
type Info struct {
	Word string // the command word, also the suffix of its counter in q
	// Original: one of the Original glockd's counters, which q lists from
	// start-up; the others appear once used, because a published client
	// counts q's lines.
	Original bool
	// OutOfBand: run as soon as it is read, even while a wait is pending,
	// instead of after the commands before it. Its reply starts with "!",
	// as only the outcome lines of !gw and !sgw also do, so that a client
	// can tell it apart from the replies it is waiting for in order. Not
	// counted in q.
	OutOfBand bool
	Access    Access // what an identity needs to run it, with -acl-file
}

// verbs is the command table. lookupVerb, String, q's counters, the access
// check and the dispatcher (runCommand) follow it: TestVerbTable checks that
// they agree. Adding a verb is a row here, a line in runCommand and its
// handler.
var verbs = [numVerbs]Info{
	verbInvalid:    {Word: "(invalid)"},
	verbTooLong:    {Word: "(too long)"},
	verbG:          {Word: "g", Original: true, Access: accessLock},
	verbR:          {Word: "r", Original: true, Access: accessLock},
	verbI:          {Word: "i", Original: true, Access: accessInspectName},
	verbSG:         {Word: "sg", Original: true, Access: accessLock},
	verbSR:         {Word: "sr", Original: true, Access: accessLock},
	verbSI:         {Word: "si", Original: true, Access: accessInspectName},
	verbMe:         {Word: "me", Access: accessIdentified},
	verbIam:        {Word: "iam", Access: accessIdentified},
	verbWho:        {Word: "who", Access: accessInspect},
	verbD:          {Word: "d", Original: true, Access: accessInspect},
	verbSD:         {Word: "sd", Original: true, Access: accessInspect},
	verbDump:       {Word: "dump", Original: true, Access: accessInspect},
	verbQ:          {Word: "q", Original: true, Access: accessInspect},
	verbGW:         {Word: "gw", Access: accessLock},
	verbSGW:        {Word: "sgw", Access: accessLock},
	verbT:          {Word: "t", Access: accessInspectName},
	verbPing:       {Word: "ping", Access: accessAnyone},
	verbDL:         {Word: "dl", Access: accessInspect},
	verbNowPing:    {Word: "!ping", OutOfBand: true, Access: accessAnyone},
	verbNowCancel:  {Word: "!cancel", OutOfBand: true, Access: accessAnyone},
	verbAuth:       {Word: "auth", Access: accessAnyone},
	verbKill:       {Word: "kill", Access: accessIdentified},
	verbKillHolder: {Word: "kill-holder", Access: accessIdentified},
	verbPerms:      {Word: "perms", Access: accessIdentified},
	// In order like gw (so a pending gw holds them back), but answered
	// only by their outcome line, out of band (asyncwait.go).
	verbAsyncGW:  {Word: "!gw", Access: accessLock},
	verbAsyncSGW: {Word: "!sgw", Access: accessLock},
	verbDW:       {Word: "dw", Access: accessInspect},
}

// Access is what an identity needs to run a verb (see acl.go).
type Access uint8

const (
	accessAnyone      Access = iota // also before auth
	accessIdentified                // any identity (kill checks admin itself)
	accessLock                      // the lock permission and a pattern matching the name
	accessInspectName               // inspect, or a lock pattern matching the name
	accessInspect                   // inspect
)

// String is the command word of a verb, also the suffix of its counter in q.
func (v Verb) String() string { return verbs[v].Word }

func (v Verb) OutOfBand() bool { return verbs[v].OutOfBand }

// Async reports whether the verb is an asynchronous wait, !gw or !sgw.
func (v Verb) Async() bool { return v == verbAsyncGW || v == verbAsyncSGW }

// Original reports whether q lists the verb's counter from start-up.
func (v Verb) Original() bool { return verbs[v].Original }

// lookupVerb maps a command word to its verb. It is a switch on
// string(word), which compiles to comparisons without allocating; it lists
// the words of the table, in its order (TestVerbTable).
func lookupVerb(word []byte) Verb {
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
	case "!gw":
		return verbAsyncGW
	case "!sgw":
		return verbAsyncSGW
	case "dw":
		return verbDW
	}
	return verbInvalid
}

// batch carries the commands a connection has buffered to the manager in one
// request, and their replies back in one buffer, so that a pipelining client
// costs one manager round trip and one write per read.
type batch struct {
	cmds []Command
	next int    // the first command not yet run
	out  []byte // the replies of the commands run
	ends []int  // where each reply ends in out: the websocket sends one message per reply

	// The manager stops early, leaving the reply of cmds[next-1] to the
	// connection, when that command is a dump or has to wait.
	dump        *dump
	waitStarted bool
	// authFailed: cmds[next-1] is an auth that failed, which the
	// connection answers after a delay (authlimit.go).
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
			refuseBatch(c, b) // HA: the deadline passed within the batch (leader.go)
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
	c.done <- struct{}{}
}

// runCommand runs one command, appending its reply to b.out. It returns
// false when the reply is left to the connection (b.dump, b.waitStarted or
// b.authFailed is set).
func (m *manager) runCommand(c *connState, cmd *Command, b *batch) bool {
	switch cmd.Verb {
	case verbInvalid:
		m.stats.invalid++
		return true
	case verbTooLong:
		b.out = append(b.out, replyTooLong...)
		return true
	}
	m.stats.commands[cmd.Verb]++
	if m.sec.acl != nil && !cmd.Verb.Async() && m.denied(c, cmd, b) {
		return true
	}
	switch cmd.Verb {
	case verbG:
		return m.g(c, cmd, b)
	case verbR:
		return m.r(c, cmd, b)
	case verbI:
		return m.i(c, cmd, b)
	case verbSG:
		return m.sg(c, cmd, b)
	case verbSR:
		return m.sr(c, cmd, b)
	case verbSI:
		return m.si(c, cmd, b)
	case verbMe:
		return m.me(c, cmd, b)
	case verbIam:
		return m.iam(c, cmd, b)
	case verbWho, verbD, verbSD, verbDump, verbDL, verbDW:
		return m.listing(c, cmd, b)
	case verbQ:
		return m.q(c, cmd, b)
	case verbGW:
		return m.gw(c, cmd, b)
	case verbSGW:
		return m.sgw(c, cmd, b)
	case verbT:
		return m.t(c, cmd, b)
	case verbPing:
		return m.ping(c, cmd, b)
	case verbNowPing:
		return m.nowPing(c, cmd, b)
	case verbNowCancel:
		return m.nowCancel(c, cmd, b)
	case verbAuth:
		return m.auth(c, cmd, b)
	case verbKill, verbKillHolder:
		return m.kill(c, cmd, b)
	case verbPerms:
		b.out = m.appendPerms(c, b.out)
		return true
	case verbAsyncGW, verbAsyncSGW:
		return m.asyncWait(c, cmd, b)
	}
	panic("glockd: no handler for verb " + cmd.Verb.String())
}

// The handlers, one per verb (or family of verbs), in the table's order.

func (m *manager) g(c *connState, cmd *Command, b *batch) bool {
	switch m.lock(c, cmd.Name) {
	case lockTaken:
		b.out = appendReply(b.out, 1, textGetSuccess, cmd.Name)
	case lockBusy:
		b.out = appendReply(b.out, 0, textGetFailure, cmd.Name)
	case lockTooMany:
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.Name)
	}
	return true
}

func (m *manager) r(c *connState, cmd *Command, b *batch) bool {
	b.out = appendBoolReply(b.out, m.unlock(c, cmd.Name), textReleaseSuccess, textReleaseFailure, cmd.Name)
	return true
}

func (m *manager) i(_ *connState, cmd *Command, b *batch) bool {
	_, held := m.inspect(cmd.Name)
	b.out = appendBoolReply(b.out, held, textIsLocked, textNotLocked, cmd.Name)
	return true
}

func (m *manager) sg(c *connState, cmd *Command, b *batch) bool {
	n, res := m.takeShared(c, cmd.Name)
	if res == lockTooMany {
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.Name)
		return true
	}
	b.out = appendReply(b.out, uint64(n), textSharedGetSuccess, cmd.Name)
	return true
}

func (m *manager) sr(c *connState, cmd *Command, b *batch) bool {
	b.out = appendBoolReply(b.out, m.sharedUnlock(c, cmd.Name), textSharedReleaseSuccess, textSharedReleaseFailure, cmd.Name)
	return true
}

func (m *manager) si(_ *connState, cmd *Command, b *batch) bool {
	if n := m.sharedCount(cmd.Name); n > 0 {
		b.out = appendReply(b.out, uint64(n), textSharedIsLocked, cmd.Name)
	} else {
		b.out = appendReply(b.out, 0, textSharedNotLocked, cmd.Name)
	}
	return true
}

func (m *manager) me(c *connState, _ *Command, b *batch) bool {
	b.out = append(b.out, "1 "...)
	b.out = append(b.out, c.name...)
	b.out = append(b.out, ' ')
	b.out = append(b.out, c.displayName()...)
	b.out = append(b.out, '\n')
	return true
}

func (m *manager) iam(c *connState, cmd *Command, b *batch) bool {
	switch {
	case !m.registryEnabled:
		b.out = append(b.out, replyDisabled...)
	case c.ident != nil:
		// An identity's name is its name: no one may pass for another.
		b.out = append(b.out, replyPermissionDenied...)
	case len(cmd.Name) == 0:
		m.registry.remove(c)
		b.out = append(b.out, replyOK...)
	default:
		m.registry.register(c, string(cmd.Name))
		b.out = append(b.out, replyOK...)
	}
	return true
}

// listing runs who, d, sd, dump, dl and dw: the manager copies a step of
// the table at a time, the connection formats and writes it (dumps.go).
func (m *manager) listing(c *connState, cmd *Command, b *batch) bool {
	if !m.dumpEnabled || (cmd.Verb == verbWho && !m.registryEnabled) {
		b.out = append(b.out, replyDisabled...)
		return true
	}
	m.startDump(cmd, b)
	return false
}

func (m *manager) q(_ *connState, _ *Command, b *batch) bool {
	b.out = m.appendStats(b.out)
	return true
}

func (m *manager) t(_ *connState, cmd *Command, b *batch) bool {
	if l, held := m.inspect(cmd.Name); held {
		b.out = appendReply(b.out, l.token, textToken, cmd.Name)
	} else {
		b.out = appendReply(b.out, 0, textNotLocked, cmd.Name)
	}
	return true
}

func (m *manager) ping(_ *connState, _ *Command, b *batch) bool {
	b.out = append(b.out, replyPong...)
	return true
}

func (m *manager) nowPing(_ *connState, _ *Command, b *batch) bool {
	b.out = append(b.out, replyNowPong...)
	return true
}

// nowCancel runs !cancel: the pending waits (those for NAME, when one is
// given) end now, as timeouts: the gw or sgw in order, and the asynchronous
// ones, whose outcome lines follow this reply.
func (m *manager) nowCancel(c *connState, cmd *Command, b *batch) bool {
	cancelled := false
	if w := c.waiter; w != nil && (len(cmd.Name) == 0 || w.name == string(cmd.Name)) {
		m.expire(w)
		cancelled = true
	}
	if len(c.asyncWaits) > 0 && m.cancelAsync(c, cmd.Name) {
		cancelled = true
	}
	if cancelled {
		b.out = append(b.out, replyCancelled...)
	} else {
		b.out = append(b.out, replyNothingPending...)
	}
	return true
}

// gw: the lock now if it is free (or already c's), else a place in its
// queue, or a timeout at once when MS is 0.
func (m *manager) gw(c *connState, cmd *Command, b *batch) bool {
	if cmd.Bad {
		b.out = appendReply(b.out, 0, textInvalidArgument, cmd.Line)
		return true
	}
	res := m.lock(c, cmd.Name)
	switch {
	case res == lockTaken:
		b.out = appendReply(b.out, 1, textGetSuccess, cmd.Name)
	case res == lockTooMany || c.lockCount() >= m.maxLocksPerConn:
		// At its limit, c could not take the lock it would be handed.
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.Name)
	case cmd.MS == 0 || c.inputEnded || c.asyncWaiting(cmd.Name, false):
		// A connection does not queue twice for one lock: its gw would
		// only wait for the !gw before it.
		b.out = appendReply(b.out, 0, textGetTimeout, cmd.Name)
	case m.wait(c, string(cmd.Name), false, 0, cmd.MS, false) == waitRefused:
		// The wait would close a cycle of waiters (deadlocks.go).
		b.out = appendReply(b.out, 0, textGetDeadlock, cmd.Name)
	default:
		b.waitStarted = true
		return false
	}
	return true
}

// sgw: a holder slot now if one is free and nobody is queued before c,
// else a place in the queue (or a timeout when MS is 0).
func (m *manager) sgw(c *connState, cmd *Command, b *batch) bool {
	if cmd.Bad {
		b.out = appendReply(b.out, 0, textInvalidArgument, cmd.Line)
		return true
	}
	if n, held := m.sharedHeldBy(c, cmd.Name); held {
		b.out = appendReply(b.out, uint64(n), textSharedGetSuccess, cmd.Name)
		return true
	}
	switch {
	case c.lockCount() >= m.maxLocksPerConn:
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.Name)
	case int64(m.sharedCount(cmd.Name)) < cmd.Max && m.sharedQueueEmpty(cmd.Name):
		n := m.sharedGrantName(c, cmd.Name)
		b.out = appendReply(b.out, uint64(n), textSharedGetSuccess, cmd.Name)
	case cmd.MS == 0 || c.inputEnded || c.asyncWaiting(cmd.Name, true):
		b.out = appendReply(b.out, 0, textSharedGetTimeout, cmd.Name)
	case m.wait(c, string(cmd.Name), true, cmd.Max, cmd.MS, false) == waitRefused:
		// The wait would close a cycle of waiters (deadlocks.go).
		b.out = appendReply(b.out, 0, textSharedGetDeadlock, cmd.Name)
	default:
		b.waitStarted = true
		return false
	}
	return true
}
