// Package transport is how glockd's connections move bytes: the stream
// transport (TCP, unix, TLS) with its raw non-blocking reads and writes, the
// websocket transport with its frames, the TLS record reader that keeps an
// idle TLS connection cheap, the unix socket's binding, socket options and
// the HTTP connection budget. Each transport turns input into commands
// (internal/proto) and replies into bytes, behind Conn; it knows nothing of
// the server, the manager or the locks.
package transport

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/glockd/glockd/internal/proto"
)

// Conn is how a connection reads commands and writes replies: lines on a
// stream (TCP, unix, TLS) or messages on a websocket.
type Conn interface {
	// Read blocks until input arrives and appends the complete commands in
	// it (up to MaxBatch) to cmds. They alias the transport's buffers until
	// the next Read.
	Read(cmds []proto.Command) ([]proto.Command, error)
	// Write sends the replies in out; ends[i] is where reply i ends. When
	// SplitsReplies, out may end with the first part of a reply that the
	// next Write continues (a dump).
	Write(out []byte, ends []int) error
	// SplitsReplies reports whether a reply may be written in parts: on a
	// stream it may, a websocket message is sent whole.
	SplitsReplies() bool
	Close() error
	// Refuse turns the connection away: it sends reply, if any and if it
	// can within a second, and closes.
	Refuse(reply string)
	// Abort cuts the connection short from another goroutine without
	// blocking: a deadline in the past wakes its blocked Read (and any Write
	// stuck on a client that does not read), and its reader then ends it
	// the usual way. Closing it there instead could block the caller on a
	// TLS close_notify or a websocket close frame.
	Abort()

	// Bind ties the transport to its connection's limits, before the
	// first Read.
	Bind(l Limits)
	// Release gives back what the transport charged to the budget, once
	// its connection's goroutines are done.
	Release()

	// Handover returns the connection under the transport when it can be
	// handed to a new process: a plain TCP or unix connection, or a
	// websocket on one. A TLS connection (websockets under -ws-tls too)
	// cannot: its keys stay here.
	Handover() (net.Conn, bool)
	// Unread is what a stopped reader has read and not yet turned into
	// commands: a partial line, or a websocket's bytes past the last whole
	// message; and whether it is skipping the rest of a too-long line.
	Unread() (input []byte, discarding bool)
}

// Limits are what a transport takes from its connection.
type Limits struct {
	// Budget is -max-buffered, charged for a buffer grown past the pooled
	// one and a websocket message being received; nil charges nothing.
	Budget *Budget
	// Identified is set once the connection has authenticated; until
	// then (with an ACL file, when it is not nil) lines are at most
	// UnauthMaxLine, a websocket message UnauthBuffer, and the read
	// buffer never grows.
	Identified *atomic.Bool
	// Parker tells a websocket reader that a hand-over asked it to stop,
	// and stops it in the middle of a message.
	Parker Parker
}

// A Parker is the connection's side of a hand-over's stop of its reader.
type Parker interface {
	// Parked reports whether a hand-over has asked the reader to stop.
	Parked() bool
	// Park stops the reader, whose read ended with err, if a hand-over
	// asked it to: it reports false at once when none did (err is the
	// connection's end, or a kill's deadline), and true when it may read
	// on, the hand-over having failed.
	Park(err error) bool
}

const (
	// UnauthMaxLine is the longest line of an unauthenticated connection:
	// "auth" and a token of up to 1 KiB.
	UnauthMaxLine = 1<<10 + len("auth ")
	// UnauthBuffer is what an unauthenticated connection may buffer: its
	// read buffer (the pooled one, never grown), or a websocket message,
	// or the lines queued behind a failed auth.
	UnauthBuffer = pooledReadBuffer
)

// abortAt is the deadline Abort sets: long past.
func abortAt() time.Time { return time.Unix(1, 0) }

// Abort: see Conn. A TLS connection is marked first, so that its wait for
// input, which sets and clears read deadlines, does not undo the deadline.
func (t *Stream) Abort() {
	if tc, ok := t.nc.(*TLSConn); ok {
		tc.killed.Store(true) // before the deadline: see TLSConn.waitInput
	}
	t.nc.SetDeadline(abortAt())
}

func (t *Stream) Bind(l Limits) { t.mem.Budget, t.identified = l.Budget, l.Identified }

func (t *Stream) Release() { t.mem.Release() }

func (t *Stream) Handover() (net.Conn, bool) { return t.nc, t.rc != nil }

func (t *Stream) Unread() ([]byte, bool) { return t.buf[t.start:t.end], t.discarding }

// Restore gives a stream handed over from the old process what its reader
// there had read and not run (Unread), after Bind and before the first Read.
// The buffer is the size a reader's grows to for that input alone
// (makeRoom doubles the pooled size until it fits), and one past the
// pooled size is charged to the budget again. Should that go over the
// budget (a -max-buffered lowered across the hand-over), the first Read
// returns ErrOverBudget: the connection ends as one that asked for too much.
func (t *Stream) Restore(input []byte, discarding bool) {
	t.discarding = discarding
	if len(input) == 0 {
		return
	}
	size := pooledReadBuffer
	for size <= len(input) {
		size *= 2
	}
	size = max(min(size, t.maxLine+2), len(input)+1)
	t.buf = make([]byte, size)
	t.end = copy(t.buf, input)
	t.overBudget = size > pooledReadBuffer && !t.mem.Set(int64(size))
}

// Abort: see Conn. The transport is marked first, so that a hand-over
// waiting for the end of a message does not lift the deadline (wsSource).
func (t *Websocket) Abort() {
	t.killed.Store(true)
	t.nc.SetDeadline(abortAt())
}

func (t *Websocket) Bind(l Limits) {
	t.mem.Budget, t.identified, t.parker = l.Budget, l.Identified, l.Parker
}

func (t *Websocket) Release() { t.mem.Release() }

func (t *Websocket) Handover() (net.Conn, bool) {
	_, ok := t.nc.(syscall.Conn)
	return t.nc, ok
}

// Unread: the bytes of the frames after the last whole message. A reader
// stopped in the middle of a message (see wsSource) has consumed part of
// it: that part is given back as frames that the next reader parses as it
// would have the original ones. The fragments already received become one
// fragment (unmasked, so with a zero key); the frame being received, if its
// header was read, is given its header back, with its masking key, and the
// payload read so far, still masked; the rest follows in the buffer and the
// socket.
func (t *Websocket) Unread() ([]byte, bool) {
	p, _ := t.br.Peek(t.br.Buffered())
	if !t.midMessage {
		return p, false
	}
	var b []byte
	if t.fragments {
		prefix := t.own
		if t.inFrame {
			prefix = t.own[:t.frameStart]
		}
		b = appendClientFrameHeader(b, frameHeader{b0: t.msgOp, masked: true, payload: int64(len(prefix))})
		b = append(b, prefix...)
	}
	if t.inFrame {
		b = appendClientFrameHeader(b, t.cur)
		b = append(b, t.own[t.frameStart:t.frameStart+t.got]...)
	}
	return append(b, p...), false
}
