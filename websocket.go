package main

import (
	"bytes"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"
)

// websocketTransport speaks the protocol over websocket messages: each line
// of a message is a command, and each command gets exactly one message back,
// empty where the line protocol would send nothing.
type websocketTransport struct {
	ws      *websocket.Conn
	maxLine int
	msg     []byte
	rest    []byte // the lines of msg not yet parsed
	more    bool   // rest holds at least one more line (maybe empty)
	scratch []byte
	failed  atomic.Bool // a protocol error's close frame has been sent
}

// maxMessage bounds a websocket message: a message over it is answered with
// one "0 Line Too Long" and skipped without being buffered.
func maxMessage(maxLine int) int { return max(maxLine+2, 1<<20) }

func newWebsocketTransport(ws *websocket.Conn, maxLine int) *websocketTransport {
	ws.PayloadType = websocket.TextFrame
	return &websocketTransport{ws: ws, maxLine: maxLine}
}

// keptBuffer is the largest message or scratch buffer that a connection
// keeps between messages: an idle connection returns to its small cost
// whatever it received before.
const keptBuffer = 4 << 10

func (t *websocketTransport) read(cmds []command) ([]command, error) {
	t.scratch = t.scratch[:0]
	if cap(t.scratch) > keptBuffer {
		t.scratch = nil
	}
	if !t.more {
		// The commands of the last read alias t.msg until now, so this is
		// the first moment it may go, and the last before blocking.
		if cap(t.msg) > keptBuffer {
			t.msg = nil
		}
		err := t.receive()
		if err == errMessageTooLarge {
			return append(cmds, command{verb: verbTooLong}), nil
		}
		if err != nil {
			return cmds, err
		}
		// A trailing newline ends the last line; it does not start another.
		t.rest, t.more = bytes.TrimSuffix(t.msg, []byte{'\n'}), true
	}
	for t.more && len(cmds) < maxBatch {
		var line []byte
		line, t.rest, t.more = bytes.Cut(t.rest, []byte{'\n'})
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > t.maxLine {
			cmds = append(cmds, command{verb: verbTooLong})
			continue
		}
		var cmd command
		cmd, t.scratch = parseCommand(line, t.scratch)
		cmds = append(cmds, cmd)
	}
	return cmds, nil
}

func (t *websocketTransport) write(out []byte, ends []int) error {
	start := 0
	for _, end := range ends {
		if _, err := t.ws.Write(out[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// close sends a close frame, but gives up on it quickly: a client that does
// not read must not hold up the end of its connection or a shutdown. The
// deadline also unblocks a write already stuck on such a client.
func (t *websocketTransport) close() error {
	if t.failed.Load() {
		// The close frame is sent; the websocket server closes the socket
		// when the handler returns. The deadline unblocks any write.
		return t.ws.SetDeadline(time.Now())
	}
	t.ws.SetWriteDeadline(time.Now().Add(closeGrace))
	return t.ws.Close()
}

const closeGrace = 250 * time.Millisecond
