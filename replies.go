package main

import "github.com/glockd/glockd/internal/wire"

// The texts of the replies and the functions that format them, in one place.

// Reply texts (internal/wire, shared with the tests' models of the
// protocol). A reply is "<n> <text>: <name>\n" for lock commands.
const (
	textGetSuccess           = wire.GetSuccess
	textGetFailure           = wire.GetFailure
	textGetTimeout           = wire.GetTimeout
	textGetDeadlock          = wire.GetDeadlock
	textReleaseSuccess       = wire.ReleaseSuccess
	textReleaseFailure       = wire.ReleaseFailure
	textIsLocked             = wire.IsLocked
	textNotLocked            = wire.NotLocked
	textToken                = wire.Token
	textSharedGetSuccess     = wire.SharedGetSuccess
	textSharedGetTimeout     = wire.SharedGetTimeout
	textSharedGetDeadlock    = wire.SharedGetDeadlock
	textSharedReleaseSuccess = wire.SharedReleaseSuccess
	textSharedReleaseFailure = wire.SharedReleaseFailure
	textSharedIsLocked       = wire.SharedIsLocked
	textSharedNotLocked      = wire.SharedNotLocked
	textTooManyLocks         = wire.TooManyLocks
	textInvalidArgument      = wire.InvalidArgument
	textPermissionDenied     = wire.PermissionDeniedText
	textNoSuchConnection     = wire.NoSuchConnection
	textKillPending          = wire.KillPending

	replyDisabled         = wire.Disabled
	replyOK               = wire.OK
	replyPong             = wire.Pong
	replyTooLong          = wire.LineTooLong
	replyTooMany          = wire.TooManyConns
	replyQueueFull        = wire.QueueFull
	replyAuthRequired     = wire.AuthRequired
	replyAuthFailure      = wire.AuthFailure
	replyPermissionDenied = wire.PermissionDenied

	replyNowPong        = wire.NowPong
	replyCancelled      = wire.Cancelled
	replyNothingPending = wire.NothingPending
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
func appendWaitReply(out []byte, cmd *Command, res waitResult) []byte {
	switch {
	case cmd.Verb == verbSGW && res.granted:
		return appendReply(out, uint64(res.holders), textSharedGetSuccess, cmd.Name)
	case cmd.Verb == verbSGW && res.deadlock:
		return appendReply(out, 0, textSharedGetDeadlock, cmd.Name)
	case cmd.Verb == verbSGW:
		return appendReply(out, 0, textSharedGetTimeout, cmd.Name)
	case res.deadlock:
		return appendReply(out, 0, textGetDeadlock, cmd.Name)
	}
	return appendBoolReply(out, res.granted, textGetSuccess, textGetTimeout, cmd.Name)
}
