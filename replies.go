package main

// The texts of the replies and the functions that format them, in one place.

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
