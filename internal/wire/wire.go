// Package wire holds the texts of glockd's replies, in one place for the
// daemon and for every model of the protocol that checks it: the tester's
// suite and fake server, and the daemon's fuzz and chaos tests.
package wire

import (
	"strconv"
	"strings"
)

// Texts of the replies "<n> <text>: <name>".
const (
	GetSuccess           = "Lock Get Success"
	GetFailure           = "Lock Get Failure"
	GetTimeout           = "Lock Get Timeout"
	GetDeadlock          = "Lock Get Deadlock" // gw: the wait would close a cycle of waiters
	ReleaseSuccess       = "Lock Release Success"
	ReleaseFailure       = "Lock Release Failure"
	IsLocked             = "Lock Is Locked"
	NotLocked            = "Lock Not Locked"
	Token                = "Lock Token"
	SharedGetSuccess     = "Shared Lock Get Success"
	SharedGetTimeout     = "Shared Lock Get Timeout"
	SharedGetDeadlock    = "Shared Lock Get Deadlock" // sgw: the wait would close a cycle of waiters
	SharedReleaseSuccess = "Shared Lock Release Success"
	SharedReleaseFailure = "Shared Lock Release Failure"
	SharedIsLocked       = "Shared Lock Is Locked"
	SharedNotLocked      = "Shared Lock Not Locked"
	TooManyLocks         = "Too Many Locks"
	InvalidArgument      = "Invalid Argument"
	PermissionDeniedText = "Permission Denied"
	NoSuchConnection     = "No Such Connection"
	KillPending          = "Kill Pending" // kill's victim not yet released after a second
)

// Replies that are always the same line.
const (
	Disabled         = "0 disabled\n"
	OK               = "1 ok\n"
	Pong             = "1 pong\n"
	LineTooLong      = "0 Line Too Long\n"
	TooManyConns     = "0 Too Many Connections\n"
	QueueFull        = "0 Too Many Queued Commands\n"
	AuthRequired     = "0 Auth Required\n"
	AuthFailure      = "0 Auth Failure\n"
	PermissionDenied = "0 Permission Denied\n"

	// The out-of-band replies: the only replies that are a line starting
	// with "!" and without ": ".
	NowPong        = "!pong\n"
	Cancelled      = "!cancel 1\n"
	NothingPending = "!cancel 0\n"
)

// The verbs of the asynchronous waits, which start their outcome lines.
const (
	AsyncGW  = "!gw"
	AsyncSGW = "!sgw"
)

// AsyncGWOutcome is the line that ends a "!gw MS NAME": "!gw 1 TOKEN NAME"
// when granted, "!gw 0 0 NAME" when not.
func AsyncGWOutcome(granted bool, token uint64, name string) string {
	if !granted {
		token = 0
	}
	return AsyncGW + " " + b2s(granted) + " " + strconv.FormatUint(token, 10) + " " + name + "\n"
}

// AsyncSGWOutcome is the line that ends a "!sgw MS MAX NAME": "!sgw N NAME"
// with N holders including this one, or "!sgw 0 NAME" when not granted.
func AsyncSGWOutcome(holders int, name string) string {
	return AsyncSGW + " " + strconv.Itoa(holders) + " " + name + "\n"
}

// AsyncDeadlock stands where a failed wait's outcome line has its last
// number (the token of "!gw 0 0 NAME", the count of "!sgw 0 NAME") when the
// wait was refused because it would close a cycle of waiters.
const AsyncDeadlock = "deadlock"

// AsyncGWDeadlock is "!gw 0 deadlock NAME": a !gw refused as a deadlock.
func AsyncGWDeadlock(name string) string {
	return AsyncGW + " 0 " + AsyncDeadlock + " " + name + "\n"
}

// AsyncSGWDeadlock is "!sgw deadlock NAME": a !sgw refused as a deadlock.
func AsyncSGWDeadlock(name string) string {
	return AsyncSGW + " " + AsyncDeadlock + " " + name + "\n"
}

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Reply is the line "<n> <text>: <name>\n".
func Reply(n uint64, text, name string) string {
	return strconv.FormatUint(n, 10) + " " + text + ": " + name + "\n"
}

// ReplyLine is Reply without its "\n", as a client reads a line.
func ReplyLine(n uint64, text, name string) string {
	return strconv.FormatUint(n, 10) + " " + text + ": " + name
}

// Line is a reply without its "\n".
func Line(reply string) string { return strings.TrimSuffix(reply, "\n") }
