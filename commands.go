package main

import (
	"unicode"
	"unicode/utf8"
)

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

// noWait is the MS of a wait without a time limit.
const noWait = -1

// command is one parsed line. Its byte slices alias the connection's read
// buffer (or its scratch space), so a command is only valid until the
// connection reads again; the manager copies a name before it keeps it.
type command struct {
	verb verb
	name []byte // the normalised argument; for gw/sgw the part after MS (and MAX)
	line []byte // the line without surrounding white space, quoted by "Invalid Argument"
	ms   int64  // gw, sgw: how long to wait, noWait for ever
	max  int64  // sgw: the most holders the shared lock may have
	bad  bool   // gw, sgw: MS or MAX is not a valid integer
}

// parseCommand parses one line (without its "\n"; a "\r" before it goes
// with the surrounding white space). scratch is used when the argument has to
// be rewritten; the returned scratch must be passed to the next call so that
// its space is reused without clobbering earlier commands.
func parseCommand(line, scratch []byte) (command, []byte) {
	var cmd command
	scratch = parseInto(&cmd, line, scratch)
	return cmd, scratch
}

// parseInto is parseCommand writing to *cmd. The stream transport parses
// into its batch with it: a command returned by value is copied through the
// stack, and the reader goroutine's stack has to stay small (see conn).
func parseInto(cmd *command, line, scratch []byte) []byte {
	line = trimSpace(line)
	end := 0
	for end < len(line) && line[end] != ' ' && line[end] != '\t' {
		end++
	}
	*cmd = command{verb: lookupVerb(line[:end]), line: line}
	if cmd.verb == verbInvalid {
		return scratch
	}
	cmd.name, scratch = normaliseArgument(line[end:], scratch)
	switch cmd.verb {
	case verbGW:
		var ok bool
		cmd.ms, cmd.name, ok = cutInteger(cmd.name)
		cmd.bad = !ok || cmd.ms < noWait
	case verbSGW:
		var okMS, okMax bool
		cmd.ms, cmd.name, okMS = cutInteger(cmd.name)
		cmd.max, cmd.name, okMax = cutInteger(cmd.name)
		cmd.bad = !okMS || !okMax || cmd.ms < noWait || cmd.max < 1
	}
	return scratch
}

// cutInteger splits a decimal integer off the front of a normalised argument.
// What follows it (after one space) is the rest; an integer alone leaves the
// empty name, as "g" alone locks "".
func cutInteger(arg []byte) (n int64, rest []byte, ok bool) {
	end := 0
	for end < len(arg) && arg[end] != ' ' {
		end++
	}
	field := arg[:end]
	if end < len(arg) {
		rest = arg[end+1:]
	} else {
		rest = arg[end:]
	}
	neg := len(field) > 0 && field[0] == '-'
	if neg {
		field = field[1:]
	}
	// 18 digits always fit in an int64.
	if len(field) == 0 || len(field) > 18 {
		return 0, rest, false
	}
	for _, c := range field {
		if c < '0' || c > '9' {
			return 0, rest, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, rest, true
}

// normaliseArgument removes leading and trailing white space and collapses
// every inner run of it to one space, with white space as strings.Fields sees
// it. The common argument is already normal and is returned as is.
func normaliseArgument(arg, scratch []byte) ([]byte, []byte) {
	arg = trimSpace(arg)
	if isNormal(arg) {
		return arg, scratch
	}
	start := len(scratch)
	for len(arg) > 0 {
		r, size := rune(arg[0]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(arg)
		}
		if isSpace(r) {
			for len(arg) > 0 {
				r, size = rune(arg[0]), 1
				if r >= utf8.RuneSelf {
					r, size = utf8.DecodeRune(arg)
				}
				if !isSpace(r) {
					break
				}
				arg = arg[size:]
			}
			scratch = append(scratch, ' ')
			continue
		}
		scratch = append(scratch, arg[:size]...)
		arg = arg[size:]
	}
	// Full slice expression: a later append to scratch must not write here.
	return scratch[start:len(scratch):len(scratch)], scratch
}

// isNormal reports whether a trimmed argument is plain ASCII with single
// spaces as its only white space.
func isNormal(arg []byte) bool {
	prevSpace := false
	for _, c := range arg {
		switch {
		case c >= utf8.RuneSelf:
			return false
		case c == ' ':
			if prevSpace {
				return false
			}
			prevSpace = true
		case asciiSpace(c):
			return false
		default:
			prevSpace = false
		}
	}
	return true
}

func asciiSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// isSpace matches unicode.IsSpace, which is what strings.Fields splits on.
func isSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiSpace(byte(r))
	}
	return unicode.IsSpace(r)
}

// trimSpace removes leading and trailing white space (as isSpace sees it).
func trimSpace(b []byte) []byte {
	for len(b) > 0 {
		if b[0] < utf8.RuneSelf {
			if !asciiSpace(b[0]) {
				break
			}
			b = b[1:]
			continue
		}
		r, size := utf8.DecodeRune(b)
		if !unicode.IsSpace(r) {
			break
		}
		b = b[size:]
	}
	for len(b) > 0 {
		last := b[len(b)-1]
		if last < utf8.RuneSelf {
			if !asciiSpace(last) {
				break
			}
			b = b[:len(b)-1]
			continue
		}
		r, size := utf8.DecodeLastRune(b)
		if !unicode.IsSpace(r) {
			break
		}
		b = b[:len(b)-size]
	}
	return b
}

// Reply texts. A reply is "<n> <text>: <name>\n" for lock commands.
const (
	textGetSuccess           = "Lock Get Success"
	textGetFailure           = "Lock Get Failure"
	textGetTimeout           = "Lock Get Timeout"
	textReleaseSuccess       = "Lock Release Success"
	textReleaseFailure       = "Lock Release Failure"
	textIsLocked             = "Lock Is Locked"
	textNotLocked            = "Lock Not Locked"
	textToken                = "Lock Token"
	textSharedGetSuccess     = "Shared Lock Get Success"
	textSharedGetTimeout     = "Shared Lock Get Timeout"
	textSharedReleaseSuccess = "Shared Lock Release Success"
	textSharedReleaseFailure = "Shared Lock Release Failure"
	textSharedIsLocked       = "Shared Lock Is Locked"
	textSharedNotLocked      = "Shared Lock Not Locked"
	textTooManyLocks         = "Too Many Locks"
	textInvalidArgument      = "Invalid Argument"

	replyDisabled = "0 disabled\n"
	replyOK       = "1 ok\n"
	replyPong     = "1 pong\n"
	replyTooLong  = "0 Line Too Long\n"
	replyTooMany  = "0 Too Many Connections\n"

	replyQueueFull = "0 Too Many Queued Commands\n"

	replyNowPong        = "!pong\n"
	replyCancelled      = "!cancel 1\n"
	replyNothingPending = "!cancel 0\n"
)

// appendReply appends "<n> <text>: <name>\n".
func appendReply(out []byte, n uint64, text string, name []byte) []byte {
	out = appendUint(out, n)
	out = append(out, ' ')
	out = append(out, text...)
	out = append(out, ": "...)
	out = append(out, name...)
	return append(out, '\n')
}

// appendBoolReply is appendReply for the 1/0 answers.
func appendBoolReply(out []byte, ok bool, yes, no string, name []byte) []byte {
	if ok {
		return appendReply(out, 1, yes, name)
	}
	return appendReply(out, 0, no, name)
}

// appendUint is strconv.AppendUint for base 10, kept here so the hot path
// has no dependency on strconv's generality.
func appendUint(out []byte, n uint64) []byte {
	if n < 10 {
		return append(out, byte('0'+n))
	}
	var digits [20]byte
	i := len(digits)
	for n > 0 {
		i--
		digits[i] = byte('0' + n%10)
		n /= 10
	}
	return append(out, digits[i:]...)
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
	case verbD, verbSD, verbDump:
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

// appendWaitReply formats the end of a wait for the command that started it.
func appendWaitReply(out []byte, cmd *command, res waitResult) []byte {
	if cmd.verb == verbSGW {
		if res.granted {
			return appendReply(out, uint64(res.holders), textSharedGetSuccess, cmd.name)
		}
		return appendReply(out, 0, textSharedGetTimeout, cmd.name)
	}
	return appendBoolReply(out, res.granted, textGetSuccess, textGetTimeout, cmd.name)
}
