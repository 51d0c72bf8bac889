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
	verbAsyncGW    // !gw MS NAME: a wait whose outcome comes out of band
	verbAsyncSGW   // !sgw MS MAX NAME: the same for a semaphore
	verbDW         // dw [NAME]: who waits, in queue order
	numVerbs
)

// verbInfo is a row of the command table.
type verbInfo struct {
	word string // the command word, also the suffix of its counter in q
	// original: one of the original glockd's counters, which q lists from
	// start-up; the others appear once used, because a published client
	// counts q's lines.
	original bool
	// outOfBand: run as soon as it is read, even while a wait is pending,
	// instead of after the commands before it. Its reply starts with "!",
	// as only the outcome lines of !gw and !sgw also do, so that a client
	// can tell it apart from the replies it is waiting for in order. Not
	// counted in q.
	outOfBand bool
	access    access // what an identity needs to run it, with -acl-file
}

// verbs is the command table. lookupVerb, String, q's counters, the access
// check and the dispatcher (runCommand) follow it: TestVerbTable checks that
// they agree. Adding a verb is a row here, a line in runCommand and its
// handler.
var verbs = [numVerbs]verbInfo{
	verbInvalid:    {word: "(invalid)"},
	verbTooLong:    {word: "(too long)"},
	verbG:          {word: "g", original: true, access: accessLock},
	verbR:          {word: "r", original: true, access: accessLock},
	verbI:          {word: "i", original: true, access: accessInspectName},
	verbSG:         {word: "sg", original: true, access: accessLock},
	verbSR:         {word: "sr", original: true, access: accessLock},
	verbSI:         {word: "si", original: true, access: accessInspectName},
	verbMe:         {word: "me", access: accessIdentified},
	verbIam:        {word: "iam", access: accessIdentified},
	verbWho:        {word: "who", access: accessInspect},
	verbD:          {word: "d", original: true, access: accessInspect},
	verbSD:         {word: "sd", original: true, access: accessInspect},
	verbDump:       {word: "dump", original: true, access: accessInspect},
	verbQ:          {word: "q", original: true, access: accessInspect},
	verbGW:         {word: "gw", access: accessLock},
	verbSGW:        {word: "sgw", access: accessLock},
	verbT:          {word: "t", access: accessInspectName},
	verbPing:       {word: "ping", access: accessAnyone},
	verbDL:         {word: "dl", access: accessInspect},
	verbNowPing:    {word: "!ping", outOfBand: true, access: accessAnyone},
	verbNowCancel:  {word: "!cancel", outOfBand: true, access: accessAnyone},
	verbAuth:       {word: "auth", access: accessAnyone},
	verbKill:       {word: "kill", access: accessIdentified},
	verbKillHolder: {word: "kill-holder", access: accessIdentified},
	verbPerms:      {word: "perms", access: accessIdentified},
	// In order like gw (so a pending gw holds them back), but answered
	// only by their outcome line, out of band (asyncwait.go).
	verbAsyncGW:  {word: "!gw", access: accessLock},
	verbAsyncSGW: {word: "!sgw", access: accessLock},
	verbDW:       {word: "dw", access: accessInspect},
}

// access is what an identity needs to run a verb (see admin.go, internal/acl).
type access uint8

const (
	accessAnyone      access = iota // also before auth
	accessIdentified                // any identity (kill checks admin itself)
	accessLock                      // the lock permission and a pattern matching the name
	accessInspectName               // inspect, or a lock pattern matching the name
	accessInspect                   // inspect
)

// String is the command word of a verb, also the suffix of its counter in q.
func (v verb) String() string { return verbs[v].word }

func (v verb) outOfBand() bool { return verbs[v].outOfBand }

// async reports whether the verb is an asynchronous wait, !gw or !sgw.
func (v verb) async() bool { return v == verbAsyncGW || v == verbAsyncSGW }

// original reports whether q lists the verb's counter from start-up.
func (v verb) original() bool { return verbs[v].original }

// lookupVerb maps a command word to its verb. It is a switch on
// string(word), which compiles to comparisons without allocating; it lists
// the words of the table, in its order (TestVerbTable).
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
	cmds []command
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
		if m.leader != nil && grantsAtOnce(cmd.verb) && !m.mayGrant() {
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
	c.done <- struct{}{}
}

// runCommand runs one command, appending its reply to b.out. It returns
// false when the reply is left to the connection (b.dump, b.waitStarted or
// b.authFailed is set).
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
	if m.sec.acl != nil && !cmd.verb.async() && m.denied(c, cmd, b) {
		return true
	}
	switch cmd.verb {
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
	panic("glockd: no handler for verb " + cmd.verb.String())
}

// The handlers, one per verb (or family of verbs), in the table's order.

func (m *manager) g(c *connState, cmd *command, b *batch) bool {
	switch m.lock(c, cmd.name) {
	case lockTaken:
		b.out = appendReply(b.out, 1, textGetSuccess, cmd.name)
	case lockBusy:
		b.out = appendReply(b.out, 0, textGetFailure, cmd.name)
	case lockTooMany:
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.name)
	}
	return true
}

func (m *manager) r(c *connState, cmd *command, b *batch) bool {
	b.out = appendBoolReply(b.out, m.unlock(c, cmd.name), textReleaseSuccess, textReleaseFailure, cmd.name)
	return true
}

func (m *manager) i(_ *connState, cmd *command, b *batch) bool {
	_, held := m.inspect(cmd.name)
	b.out = appendBoolReply(b.out, held, textIsLocked, textNotLocked, cmd.name)
	return true
}

func (m *manager) sg(c *connState, cmd *command, b *batch) bool {
	n, res := m.takeShared(c, cmd.name)
	if res == lockTooMany {
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.name)
		return true
	}
	b.out = appendReply(b.out, uint64(n), textSharedGetSuccess, cmd.name)
	return true
}

func (m *manager) sr(c *connState, cmd *command, b *batch) bool {
	b.out = appendBoolReply(b.out, m.sharedUnlock(c, cmd.name), textSharedReleaseSuccess, textSharedReleaseFailure, cmd.name)
	return true
}

func (m *manager) si(_ *connState, cmd *command, b *batch) bool {
	if n := m.sharedCount(cmd.name); n > 0 {
		b.out = appendReply(b.out, uint64(n), textSharedIsLocked, cmd.name)
	} else {
		b.out = appendReply(b.out, 0, textSharedNotLocked, cmd.name)
	}
	return true
}

func (m *manager) me(c *connState, _ *command, b *batch) bool {
	b.out = append(b.out, "1 "...)
	b.out = append(b.out, c.name...)
	b.out = append(b.out, ' ')
	b.out = append(b.out, c.displayName()...)
	b.out = append(b.out, '\n')
	return true
}

func (m *manager) iam(c *connState, cmd *command, b *batch) bool {
	switch {
	case !m.registryEnabled:
		b.out = append(b.out, replyDisabled...)
	case c.ident != nil:
		// An identity's name is its name: no one may pass for another.
		b.out = append(b.out, replyPermissionDenied...)
	case len(cmd.name) == 0:
		m.registry.remove(c)
		b.out = append(b.out, replyOK...)
	default:
		m.registry.register(c, string(cmd.name))
		b.out = append(b.out, replyOK...)
	}
	return true
}

// listing runs who, d, sd, dump, dl and dw: the manager copies a step of
// the table at a time, the connection formats and writes it (dumps.go).
func (m *manager) listing(c *connState, cmd *command, b *batch) bool {
	if !m.dumpEnabled || (cmd.verb == verbWho && !m.registryEnabled) {
		b.out = append(b.out, replyDisabled...)
		return true
	}
	m.startDump(cmd, b)
	return false
}

func (m *manager) q(_ *connState, _ *command, b *batch) bool {
	b.out = m.appendStats(b.out)
	return true
}

func (m *manager) t(_ *connState, cmd *command, b *batch) bool {
	if l, held := m.inspect(cmd.name); held {
		b.out = appendReply(b.out, l.token, textToken, cmd.name)
	} else {
		b.out = appendReply(b.out, 0, textNotLocked, cmd.name)
	}
	return true
}

func (m *manager) ping(_ *connState, _ *command, b *batch) bool {
	b.out = append(b.out, replyPong...)
	return true
}

func (m *manager) nowPing(_ *connState, _ *command, b *batch) bool {
	b.out = append(b.out, replyNowPong...)
	return true
}

// nowCancel runs !cancel: the pending waits (those for NAME, when one is
// given) end now, as timeouts: the gw or sgw in order, and the asynchronous
// ones, whose outcome lines follow this reply.
func (m *manager) nowCancel(c *connState, cmd *command, b *batch) bool {
	cancelled := false
	if w := c.waiter; w != nil && (len(cmd.name) == 0 || w.name == string(cmd.name)) {
		m.expire(w)
		cancelled = true
	}
	if len(c.asyncWaits) > 0 && m.cancelAsync(c, cmd.name) {
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
func (m *manager) gw(c *connState, cmd *command, b *batch) bool {
	if cmd.bad {
		b.out = appendReply(b.out, 0, textInvalidArgument, cmd.line)
		return true
	}
	res := m.lock(c, cmd.name)
	switch {
	case res == lockTaken:
		b.out = appendReply(b.out, 1, textGetSuccess, cmd.name)
	case res == lockTooMany || c.lockCount() >= m.maxLocksPerConn:
		// At its limit, c could not take the lock it would be handed.
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.name)
	case cmd.ms == 0 || c.inputEnded || c.asyncWaiting(cmd.name, false):
		// A connection does not queue twice for one lock: its gw would
		// only wait for the !gw before it.
		b.out = appendReply(b.out, 0, textGetTimeout, cmd.name)
	case m.wait(c, string(cmd.name), false, 0, cmd.ms, false) == waitRefused:
		// The wait would close a cycle of waiters (deadlocks.go).
		b.out = appendReply(b.out, 0, textGetDeadlock, cmd.name)
	default:
		b.waitStarted = true
		return false
	}
	return true
}

// sgw: a holder slot now if one is free and nobody is queued before c,
// else a place in the queue (or a timeout when MS is 0).
func (m *manager) sgw(c *connState, cmd *command, b *batch) bool {
	if cmd.bad {
		b.out = appendReply(b.out, 0, textInvalidArgument, cmd.line)
		return true
	}
	if n, held := m.sharedHeldBy(c, cmd.name); held {
		b.out = appendReply(b.out, uint64(n), textSharedGetSuccess, cmd.name)
		return true
	}
	switch {
	case c.lockCount() >= m.maxLocksPerConn:
		b.out = appendReply(b.out, 0, textTooManyLocks, cmd.name)
	case int64(m.sharedCount(cmd.name)) < cmd.max && m.sharedQueueEmpty(cmd.name):
		n := m.sharedGrantName(c, cmd.name)
		b.out = appendReply(b.out, uint64(n), textSharedGetSuccess, cmd.name)
	case cmd.ms == 0 || c.inputEnded || c.asyncWaiting(cmd.name, true):
		b.out = appendReply(b.out, 0, textSharedGetTimeout, cmd.name)
	case m.wait(c, string(cmd.name), true, cmd.max, cmd.ms, false) == waitRefused:
		// The wait would close a cycle of waiters (deadlocks.go).
		b.out = appendReply(b.out, 0, textSharedGetDeadlock, cmd.name)
	default:
		b.waitStarted = true
		return false
	}
	return true
}
