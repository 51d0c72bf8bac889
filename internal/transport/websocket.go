package transport

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"golang.org/x/net/websocket"
)

// Websocket speaks the protocol over websocket messages: each line
// of a message is a command, and each command gets exactly one message back,
// empty where the line protocol would send nothing.
//
// golang.org/x/net/websocket does the handshake; after it, frames are read
// and written here, on the connection the handshake hijacked: the package
// writes one frame per Write, with a flush (a system call) each, and copies
// and unmasks a byte at a time. All of a batch's reply frames go out in one
// write, and a message that arrived whole is unmasked where it lies in the
// read buffer and parsed there.
type Websocket struct {
	nc      net.Conn      // the hijacked connection
	br      *bufio.Reader // the handshake's reader: it may hold the first frames
	maxLine int

	// Read side, used by the reader goroutine only.
	msg     []byte // the current message: in br's buffer or in own
	own     []byte // the message buffer, for messages not read in place
	inPlace int    // bytes of br's buffer that msg uses, to discard at the next read
	rest    []byte // the lines of msg not yet parsed
	more    bool   // rest holds at least one more line (maybe empty)
	scratch []byte
	// identified, with an ACL file: until it is set, a message is at most
	// UnauthBuffer bytes (Limits.Identified).
	identified *atomic.Bool
	// mem charges the message buffer (own) to -max-buffered.
	mem Charge
	// A hand-over stops the reader (Limits.Parker): between messages, or
	// in the middle of one (see wsSource), where what it consumed of the
	// message is handed over as frames again (Unread). midMessage says part
	// of a message or frame has been consumed; fragments, that data frames
	// of the message, the first with opcode msgOp, have been read whole
	// into own (own[:frameStart] while inFrame); inFrame, that the header
	// cur has been consumed and got bytes of its payload read into
	// own[frameStart:]; skipping, that the message is too large and being
	// skipped, which cannot be handed over: the reader then reads on until
	// the message's end.
	parker     Parker
	midMessage bool
	fragments  bool
	inFrame    bool
	skipping   bool
	msgOp      byte
	cur        frameHeader
	frameStart int
	got        int
	// killed is set by a kill before its deadline (Abort), so that a
	// hand-over waiting for the message's end does not lift it (wsSource).
	killed atomic.Bool

	// wmu orders every write to nc: the replies, written by whichever
	// goroutine runs commands, and the reader's pongs and close frames.
	wmu       sync.Mutex
	wbuf      []byte // frames being written
	closeSent bool   // a close frame is out: nothing more may follow it
}

// MaxMessage bounds a websocket message: a message over it is answered with
// one "0 Line Too Long" and skipped without being buffered.
func MaxMessage(maxLine int) int { return max(maxLine+2, 1<<20) }

// NewWebsocket reads the frames after pending, the bytes already
// read past the handshake, from nc.
func NewWebsocket(nc net.Conn, pending []byte, maxLine int) *Websocket {
	t := &Websocket{nc: nc, maxLine: maxLine}
	src := io.Reader(wsSource{t})
	if len(pending) > 0 {
		src = io.MultiReader(bytes.NewReader(bytes.Clone(pending)), src)
	}
	t.br = bufio.NewReaderSize(src, wsReadBuffer)
	return t
}

// wsReadBuffer is the size of a websocket's read buffer, as net/http's.
const wsReadBuffer = 4 << 10

// wsSource reads a websocket's bytes from its connection. A hand-over stops
// the reader with a read deadline. Between messages the error goes up to
// the connection's reader, which stops there (receive checks before the
// next message, too); in the middle of a message, where returning the error
// would lose what was consumed of it, the reader stops here, and Unread
// hands that part over. A message being skipped as too large cannot be:
// there the deadline is lifted and the reader stops once the message has
// ended. A kill's deadline is never lifted.
type wsSource struct{ t *Websocket }

func (s wsSource) Read(p []byte) (int, error) {
	for {
		n, err := s.t.nc.Read(p)
		if n > 0 || !s.t.midMessage || s.t.parker == nil || s.t.killed.Load() || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if s.t.skipping {
			if !s.t.parker.Parked() {
				return n, err
			}
			s.t.nc.SetReadDeadline(time.Time{})
			continue
		}
		if !s.t.parker.Park(err) {
			return n, err
		}
		// The hand-over failed; it cleared the deadline: read on.
	}
}

// hijackRecorder passes the websocket package's Hijack on and keeps what it
// returns: the connection and the reader that has read the handshake.
type hijackRecorder struct {
	http.ResponseWriter
	nc  net.Conn
	brw *bufio.ReadWriter
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("websocket: the connection cannot be hijacked")
	}
	nc, brw, err := hj.Hijack()
	h.nc, h.brw = nc, brw
	return nc, brw, err
}

// ServeWebsocket has the websocket package answer the upgrade request,
// with handshake checking it, and once the handshake is done calls serve
// with the connection it hijacked and its transport.
func ServeWebsocket(w http.ResponseWriter, r *http.Request, handshake func(*websocket.Config, *http.Request) error, maxLine int, serve func(*websocket.Conn, *Websocket)) {
	h := &hijackRecorder{ResponseWriter: w}
	ws := websocket.Server{Handshake: handshake, Handler: func(ws *websocket.Conn) {
		ws.PayloadType = websocket.TextFrame
		pending, _ := h.brw.Reader.Peek(h.brw.Reader.Buffered())
		serve(ws, NewWebsocket(h.nc, pending, maxLine))
	}}
	ws.ServeHTTP(h, r)
}

// keptBuffer is the largest message, scratch or frame buffer that a
// connection keeps between messages: an idle connection returns to its small
// cost whatever it received or sent before.
const keptBuffer = 4 << 10

// Read returns the commands of the lines of a message, up to MaxBatch of
// them: the rest of a longer message comes with the next Read, and the next
// message is received only once all of its lines have been returned.
func (t *Websocket) Read(cmds []proto.Command) ([]proto.Command, error) {
	t.scratch = t.scratch[:0]
	if cap(t.scratch) > keptBuffer {
		t.scratch = nil
	}
	if !t.more {
		// The commands of the last read alias t.msg until now, so this is
		// the first moment it may go, and the last before blocking.
		t.msg = nil
		if cap(t.own) > keptBuffer {
			t.own = nil
			t.mem.Release()
		}
		err := t.receive()
		if err == errMessageTooLarge {
			return append(cmds, proto.Command{Verb: proto.VerbTooLong}), nil
		}
		if err != nil {
			return cmds, err
		}
		// A trailing newline ends the last line; it does not start another.
		t.rest, t.more = bytes.TrimSuffix(t.msg, []byte{'\n'}), true
	}
	for t.more && len(cmds) < MaxBatch {
		var line []byte
		line, t.rest, t.more = bytes.Cut(t.rest, []byte{'\n'})
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > t.maxLine {
			cmds = append(cmds, proto.Command{Verb: proto.VerbTooLong})
			continue
		}
		cmds = append(cmds, proto.Command{})
		t.scratch = proto.ParseInto(&cmds[len(cmds)-1], line, t.scratch)
	}
	return cmds, nil
}

// Write sends each reply as a text message, all of them in one write.
func (t *Websocket) Write(out []byte, ends []int) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.closeSent {
		return net.ErrClosed
	}
	buf := t.wbuf[:0]
	start := 0
	var err error
	for _, end := range ends {
		reply := out[start:end]
		start = end
		buf = appendFrameHeader(buf, frameFin|opText, len(reply))
		if len(reply) <= bigReply {
			buf = append(buf, reply...)
			continue
		}
		// A dump is written from where it lies, not copied.
		bufs := net.Buffers{buf, reply}
		if _, err = bufs.WriteTo(t.nc); err != nil {
			break
		}
		buf = buf[:0]
	}
	if err == nil && len(buf) > 0 {
		_, err = t.nc.Write(buf)
	}
	if cap(buf) > keptBuffer {
		buf = nil
	}
	t.wbuf = buf
	return err
}

// bigReply is the size over which a reply is not copied into the frame
// buffer.
const bigReply = 16 << 10

// writeControl sends a control frame, unless a close frame has gone before
// it. Called from the reader goroutine.
func (t *Websocket) writeControl(opcode byte, payload []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.writeControlLocked(opcode, payload)
}

func (t *Websocket) writeControlLocked(opcode byte, payload []byte) error {
	if t.closeSent {
		return net.ErrClosed
	}
	t.closeSent = opcode == opClose
	t.wbuf = append(appendFrameHeader(t.wbuf[:0], frameFin|opcode, len(payload)), payload...)
	_, err := t.nc.Write(t.wbuf)
	return err
}

// SplitsReplies is false: a reply is one message, whose frame header gives
// its length before it (golang.org/x/net/websocket's Message.Receive, which
// our client uses, reads one frame, so a reply is never fragmented).
func (t *Websocket) SplitsReplies() bool { return false }

// Refuse sends reply as a message, with a deadline, and closes.
func (t *Websocket) Refuse(reply string) {
	if reply != "" {
		t.nc.SetWriteDeadline(time.Now().Add(time.Second))
		t.Write([]byte(reply), []int{len(reply)})
	}
	t.Close()
}

// Close sends a close frame, unless one has been sent, and closes the
// connection; but it gives up on the frame quickly: a client that does not
// read must not hold up the end of its connection or a shutdown. The
// deadline also unblocks a write already stuck on such a client.
func (t *Websocket) Close() error {
	t.nc.SetWriteDeadline(time.Now().Add(CloseGrace))
	t.wmu.Lock()
	if !t.closeSent {
		t.writeControlLocked(opClose, closeStatus(closeNormal))
	}
	t.wmu.Unlock()
	return t.nc.Close()
}

// CloseGrace is how long closing a connection tries to send a websocket
// close frame or a TLS close_notify to a client that does not read.
const CloseGrace = 250 * time.Millisecond
