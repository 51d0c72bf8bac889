package main

import (
	"errors"
	"io"
	"time"
)

var (
	// errMessageTooLarge: a websocket message over maxMessage, already skipped.
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
	closeProtocolError = 1002
)

// receive reads one whole message into t.msg: a data frame and, when it is
// fragmented, its continuation frames (websocket.Message.Receive would take
// each fragment for a message). Pings, pongs and close are handled by the
// websocket package as they come. A message over maxMessage is read to its
// end and dropped, never buffered, and reported as errMessageTooLarge.
func (t *websocketTransport) receive() error {
	t.msg = t.msg[:0]
	limit := maxMessage(t.maxLine)
	tooLarge, inMessage := false, false
	for {
		frame, err := t.ws.NewFrameReader()
		if err != nil {
			return err
		}
		// The header is read before HandleFrame, which discards it: it holds
		// FIN, which the frame reader does not otherwise tell.
		header, err := io.ReadAll(frame.HeaderReader())
		if err != nil || len(header) < 2 {
			return io.ErrUnexpectedEOF
		}
		payload := frame.Len() - len(header)
		// The websocket package checks only the masking, and then sends a
		// close frame of its own before ours; it takes a reserved opcode
		// for data and answers any ping, whatever its size.
		if !validFrame(header, payload, inMessage) {
			return t.failProtocol()
		}
		if frame, err = t.ws.HandleFrame(frame); err != nil {
			return err
		}
		if frame == nil {
			continue // a control frame, already answered
		}
		inMessage = true
		// Compared so that a length near 2^63 cannot overflow past the check.
		if tooLarge || payload < 0 || payload > limit-len(t.msg) {
			tooLarge = true
			if _, err := io.Copy(io.Discard, frame); err != nil {
				return err
			}
		} else {
			start := len(t.msg)
			t.msg = append(t.msg, make([]byte, payload)...)
			if _, err := io.ReadFull(frame, t.msg[start:]); err != nil {
				return err
			}
		}
		if header[0]&frameFin != 0 {
			if tooLarge {
				return errMessageTooLarge
			}
			return nil
		}
	}
}

// validFrame applies RFC 6455 §5.1-5.5 to a client frame's header and
// payload length: masked, no RSV bits (no extension is ever negotiated), no
// reserved opcode, continuation frames only inside a fragmented message and
// new data frames only outside one, control frames whole and of at most
// 125 bytes.
func validFrame(header []byte, payload int, inMessage bool) bool {
	b0 := header[0]
	if header[1]&frameMask == 0 || b0&frameRSV != 0 {
		return false
	}
	switch b0 & frameOpcode {
	case opCont:
		return inMessage
	case opText, opBinary:
		return !inMessage
	case opClose, opPing, opPong:
		return b0&frameFin != 0 && payload >= 0 && payload <= maxControlPayload
	default:
		return false
	}
}

// failProtocol sends a close frame with status 1002 and marks the
// connection so that closing it sends no second close frame.
func (t *websocketTransport) failProtocol() error {
	t.failed.Store(true)
	t.ws.SetWriteDeadline(time.Now().Add(closeGrace))
	t.ws.WriteClose(closeProtocolError)
	return errProtocol
}
