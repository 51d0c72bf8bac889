package transport

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"time"
)

var (
	// errMessageTooLarge: a websocket message over MaxMessage, already skipped.
	errMessageTooLarge = errors.New("websocket message too large")
	// errProtocol: a frame that RFC 6455 says fails the connection; the
	// close frame saying so has been sent.
	errProtocol = errors.New("websocket protocol error")
)

// Websocket frame header bits (RFC 6455 §5.2).
const (
	frameFin    = 0x80
	frameRSV    = 0x70
	frameMask   = 0x80 // in the second byte
	frameOpcode = 0x0f
	opCont      = 0x0
	opText      = 0x1
	opBinary    = 0x2
	opClose     = 0x8
	opPing      = 0x9
	opPong      = 0xa

	maxControlPayload  = 125
	closeNormal        = 1000
	closeProtocolError = 1002
)

// frameHeader is what receive needs of a client frame's header.
type frameHeader struct {
	b0      byte  // FIN, RSV and opcode
	masked  bool  // the mask bit
	payload int64 // the payload length; negative when its top bit is set
	key     uint32
}

// receive reads one whole message: a data frame and, when it is fragmented,
// its continuation frames. A message that came in one frame and fits the
// read buffer is unmasked where it lies and left there (t.inPlace says how
// much to discard at the next read); any other is read into t.own. Pings are
// answered, pongs ignored, and a close ends the input (the close frame in
// reply goes out when the connection closes). A message over MaxMessage is
// read to its end and dropped, never buffered, and reported as
// errMessageTooLarge.
func (t *Websocket) receive() error {
	if t.inPlace > 0 {
		t.br.Discard(t.inPlace)
		t.inPlace = 0
	}
	t.own = t.own[:0]
	if t.parker != nil && t.parker.Parked() {
		return os.ErrDeadlineExceeded // a hand-over stops the reader here
	}
	defer t.endMessage()
	limit := int64(MaxMessage(t.maxLine))
	if t.identified != nil && !t.identified.Load() {
		limit = UnauthBuffer
	}
	tooLarge, inMessage := false, false
	for {
		t.midMessage = inMessage
		h, err := t.readHeader()
		if err != nil {
			return err
		}
		t.midMessage = true
		if !validFrame(h, inMessage) {
			return t.failProtocol()
		}
		// What a hand-over stopping the reader now hands over (Unread).
		t.cur, t.inFrame, t.frameStart, t.got = h, true, len(t.own), 0
		switch h.b0 & frameOpcode {
		case opPing, opPong:
			if err := t.control(h); err != nil {
				return err
			}
			t.inFrame = false
			continue
		case opClose:
			return io.EOF
		}
		if !inMessage {
			t.msgOp = h.b0 & frameOpcode
		}
		inMessage = true
		fin := h.b0&frameFin != 0
		n := int(h.payload) // h.payload <= limit after the first test
		switch {
		case tooLarge || h.payload > limit-int64(len(t.own)):
			tooLarge, t.skipping = true, true
			if err := t.discard(h.payload); err != nil {
				return err
			}
		case fin && len(t.own) == 0 && n <= t.br.Size():
			p, err := t.br.Peek(n)
			if err != nil {
				return unexpected(err)
			}
			unmask(p, h.key)
			t.msg, t.inPlace = p, n
			return nil
		default:
			start := len(t.own)
			if !t.mem.Set(int64(start + n)) {
				return ErrOverBudget
			}
			t.own = append(t.own, make([]byte, n)...)
			if err := t.readPayload(t.own[start:]); err != nil {
				return unexpected(err)
			}
			unmask(t.own[start:], h.key)
		}
		t.inFrame, t.fragments = false, true
		if fin {
			if tooLarge {
				return errMessageTooLarge
			}
			t.msg = t.own
			return nil
		}
	}
}

// endMessage clears what receive notes of the message it receives, for a
// hand-over (Unread).
func (t *Websocket) endMessage() {
	t.midMessage, t.fragments, t.inFrame, t.skipping = false, false, false, false
}

// readPayload is io.ReadFull from the read buffer into p, counting the
// bytes read so far in t.got for a hand-over (Unread).
func (t *Websocket) readPayload(p []byte) error {
	for t.got < len(p) {
		n, err := t.br.Read(p[t.got:])
		t.got += n
		if err != nil && t.got < len(p) {
			return err
		}
	}
	return nil
}

// readHeader reads a frame header. An end of input before it is io.EOF, in
// it io.ErrUnexpectedEOF.
func (t *Websocket) readHeader() (frameHeader, error) {
	p, err := t.br.Peek(2)
	if err != nil {
		if len(p) > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frameHeader{}, err
	}
	h := frameHeader{b0: p[0], masked: p[1]&frameMask != 0, payload: int64(p[1] &^ frameMask)}
	ext := 0 // bytes of extended payload length
	switch h.payload {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	size := 2 + ext
	if h.masked {
		size += 4
	}
	if p, err = t.br.Peek(size); err != nil {
		return frameHeader{}, unexpected(err)
	}
	switch ext {
	case 2:
		h.payload = int64(binary.BigEndian.Uint16(p[2:]))
	case 8:
		h.payload = int64(binary.BigEndian.Uint64(p[2:]))
	}
	if h.masked {
		h.key = binary.LittleEndian.Uint32(p[size-4:])
	}
	t.br.Discard(size)
	return h, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// control answers a ping with a pong of the same payload, and skips a pong.
func (t *Websocket) control(h frameHeader) error {
	n := int(h.payload) // at most maxControlPayload: validFrame checked it
	p, err := t.br.Peek(n)
	if err != nil {
		return unexpected(err)
	}
	if h.b0&frameOpcode == opPing {
		unmask(p, h.key)
		if err := t.writeControl(opPong, p); err != nil {
			return err
		}
	}
	t.br.Discard(n)
	return nil
}

// discard skips n bytes of payload without buffering them.
func (t *Websocket) discard(n int64) error {
	for n > 0 {
		step := int(min(n, 1<<30))
		if _, err := t.br.Discard(step); err != nil {
			return unexpected(err)
		}
		n -= int64(step)
	}
	return nil
}

// unmask applies a client frame's masking key (RFC 6455 §5.3), eight bytes
// at a time; key holds the key's four bytes in little-endian order.
func unmask(p []byte, key uint32) {
	k8 := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k8)
	}
	for ; i < len(p); i++ {
		p[i] ^= byte(key >> (8 * (i & 3)))
	}
}

// validFrame applies RFC 6455 §5.1-5.5 to a client frame's header: masked,
// no RSV bits (no extension is ever negotiated), a payload length whose top
// bit is clear, no reserved opcode, continuation frames only inside a
// fragmented message and new data frames only outside one, control frames
// whole and of at most 125 bytes.
func validFrame(h frameHeader, inMessage bool) bool {
	if !h.masked || h.b0&frameRSV != 0 || h.payload < 0 {
		return false
	}
	switch h.b0 & frameOpcode {
	case opCont:
		return inMessage
	case opText, opBinary:
		return !inMessage
	case opClose, opPing, opPong:
		return h.b0&frameFin != 0 && h.payload <= maxControlPayload
	default:
		return false
	}
}

// failProtocol sends a close frame with status 1002, after which nothing
// more is sent.
func (t *Websocket) failProtocol() error {
	t.nc.SetWriteDeadline(time.Now().Add(CloseGrace))
	t.writeControl(opClose, closeStatus(closeProtocolError))
	return errProtocol
}

// closeStatus is a close frame's payload: the status code alone.
func closeStatus(code uint16) []byte { return binary.BigEndian.AppendUint16(nil, code) }

// appendClientFrameHeader appends the header h of a client frame, as
// readHeader read it; with a payload length of 126 or more it takes the
// shortest form, which readHeader accepts whatever form the client used.
func appendClientFrameHeader(b []byte, h frameHeader) []byte {
	i := len(b)
	b = appendFrameHeader(b, h.b0, int(h.payload))
	if !h.masked {
		return b
	}
	b[i+1] |= frameMask
	return binary.LittleEndian.AppendUint32(b, h.key)
}

// appendFrameHeader appends the header of an unmasked server frame.
func appendFrameHeader(b []byte, b0 byte, n int) []byte {
	switch {
	case n <= 125:
		return append(b, b0, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(b, b0, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, b0, 127), uint64(n))
	}
}
