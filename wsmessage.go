package main

import (
	"errors"
	"io"
)

// errMessageTooLarge: a websocket message over maxMessage, already skipped.
var errMessageTooLarge = errors.New("websocket message too large")

// Websocket frame header bits (RFC 6455 §5.2).
const (
	frameFin    = 0x80
	frameOpcode = 0x0f
	opText      = 0x1
	opBinary    = 0x2
)

// receive reads one whole message into t.msg: a data frame and, when it is
// fragmented, its continuation frames (websocket.Message.Receive would take
// each fragment for a message). Pings, pongs and close are handled by the
// websocket package as they come. A message over maxMessage is read to its
// end and dropped, never buffered, and reported as errMessageTooLarge.
func (t *websocketTransport) receive() error {
	t.msg = t.msg[:0]
	limit := maxMessage(t.maxLine)
	tooLarge := false
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
		if frame, err = t.ws.HandleFrame(frame); err != nil {
			return err
		}
		if frame == nil {
			continue // a control frame, already answered
		}
		if op := header[0] & frameOpcode; op == opText || op == opBinary {
			// A new message: a fragmented one before it was never finished.
			t.msg, tooLarge = t.msg[:0], false
		}
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
