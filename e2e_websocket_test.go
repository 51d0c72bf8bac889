package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/glockd/glockd/internal/transport"
)

// TestWebsocketFragmentedMessage: a websocket message may come in several
// frames (RFC 6455 §5.4: a text frame without FIN, then continuation
// frames). It is still one message: its lines are the commands, and a frame
// boundary inside a line does not cut the line. Browsers seldom fragment,
// but client libraries with streaming writers do.
func TestWebsocketFragmentedMessage(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, "websocket")
	// "g ab\ni ab" as "g a" (text, no FIN), "b\ni" (continuation, no FIN)
	// and " ab" (continuation, FIN); masked with a zero key.
	frame := func(first, fin bool, payload string) []byte {
		b0 := byte(0x00)
		if first {
			b0 = 0x01
		}
		if fin {
			b0 |= 0x80
		}
		return append([]byte{b0, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
	}
	var msg []byte
	msg = append(msg, frame(true, false, "g a")...)
	msg = append(msg, frame(false, false, "b\ni")...)
	msg = append(msg, frame(false, true, " ab")...)
	if _, err := c.nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1 Lock Get Success: ab\n", "1 Lock Is Locked: ab\n"} {
		if got := c.line(); got != want {
			t.Errorf("fragmented message: got %q, want %q", got, want)
		}
	}
	c.expect("ping", "1 pong\n")
	if got, want := c.do("dump"), "map[ab:"+c.name+"]\n"; got != want {
		t.Errorf("dump: %q, want %q", got, want)
	}
}

// wsFrame is a masked client frame (zero key) with any length field.
func wsFrame(b0 byte, payload string) []byte {
	var f []byte
	switch n := len(payload); {
	case n < 126:
		f = []byte{b0, 0x80 | byte(n)}
	case n < 1<<16:
		f = []byte{b0, 0x80 | 126, byte(n >> 8), byte(n)}
	default:
		f = []byte{b0, 0x80 | 127}
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	return append(append(f, 0, 0, 0, 0), payload...)
}

// TestWebsocketFragmentsAndControlFrames: a ping between the fragments of a
// message is answered and does not end the message; a message whose
// fragments add up to more than the biggest message gets one
// "0 Line Too Long" and is skipped; the connection goes on.
func TestWebsocketFragmentsAndControlFrames(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, "websocket")
	var msg []byte
	msg = append(msg, wsFrame(0x01, "g a")...)
	msg = append(msg, wsFrame(0x89, "hi")...) // ping, FIN
	msg = append(msg, wsFrame(0x80, "b")...)
	if _, err := c.nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	if got := c.line(); got != "1 Lock Get Success: ab\n" { // the client skips the pong
		t.Fatalf("message around a ping: %q", got)
	}
	fragment := strings.Repeat("f", 64<<10)
	msg = wsFrame(0x01, fragment)
	for range transport.MaxMessage(srv.cfg.MaxLine)/len(fragment) + 1 {
		msg = append(msg, wsFrame(0x00, fragment)...)
	}
	msg = append(msg, wsFrame(0x80, "\ng evil")...)
	if _, err := c.nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	if got := c.line(); got != "0 Line Too Long\n" {
		t.Fatalf("fragmented message over the limit: %q", got)
	}
	c.expect("ping", "1 pong\n")
	c.expect("i evil", "0 Lock Not Locked: evil\n")
}

// TestWebsocketProtocolErrors: frames that RFC 6455 says to fail the
// connection on get a close frame with status 1002 (protocol error), and
// then the connection ends; the daemon goes on serving others.
func TestWebsocketProtocolErrors(t *testing.T) {
	srv := startServer(t, nil)
	addr := srv.WSAddr().String()
	for _, tt := range []struct {
		name   string
		frames []byte
	}{
		{"reserved data opcode 3", wsFrame(0x83, "g a")},
		{"reserved data opcode 7", wsFrame(0x87, "g a")},
		{"reserved control opcode 0xB", wsFrame(0x8b, "")},
		{"reserved control opcode 0xF", wsFrame(0x8f, "")},
		{"RSV1 without an extension", wsFrame(0xc1, "g a")},
		{"RSV2", wsFrame(0xa1, "g a")},
		{"RSV3", wsFrame(0x91, "g a")},
		{"RSV on a ping", wsFrame(0xc9, "")},
		{"continuation without a start", wsFrame(0x80, "g a")},
		{"unfinished continuation without a start", wsFrame(0x00, "g a")},
		{"text frame inside a fragmented message", append(wsFrame(0x01, "g a"), wsFrame(0x81, "g b")...)},
		{"binary frame inside a fragmented message", append(wsFrame(0x01, "g a"), wsFrame(0x82, "g b")...)},
		{"ping over 125 bytes", wsFrame(0x89, strings.Repeat("p", 126))},
		{"pong over 125 bytes", wsFrame(0x8a, strings.Repeat("p", 200))},
		{"close over 125 bytes", wsFrame(0x88, "\x03\xe8"+strings.Repeat("c", 124))},
		{"fragmented ping", wsFrame(0x09, "hi")},
		{"fragmented close", wsFrame(0x08, "\x03\xe8")},
		{"unmasked frame", []byte{0x81, 0x04, 'p', 'i', 'n', 'g'}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, nc, r := upgrade(t, addr, "")
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("status %d", status)
			}
			if got := wsCommand(t, nc, r, "ping"); got != "1 pong\n" {
				t.Fatalf("before: %q", got)
			}
			if _, err := nc.Write(tt.frames); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(r) // to the end: the server must close
			if err != nil {
				t.Fatalf("the connection did not end: %v (read % x)", err, rest)
			}
			if want := []byte{0x88, 0x02, 0x03, 0xea}; !bytes.Equal(rest, want) {
				t.Fatalf("got % x, want a close frame with 1002: % x", rest, want)
			}
		})
	}
	// The daemon is fine, and has forgotten those connections.
	c := dial(t, srv, "websocket")
	c.expect("ping", "1 pong\n")
	eventually(t, "connections forgotten", func() bool { return c.stat("connections") == 1 })
	if got := c.stat("command_g"); got != 0 {
		t.Fatalf("command_g %d: a frame that should fail ran a command", got)
	}
}

// TestWebsocketControlFramesAtLimit: what RFC 6455 allows still works:
// control frames of 125 bytes, a pong nobody asked for, a ping between
// fragments, and a close, answered with a close.
func TestWebsocketControlFramesAtLimit(t *testing.T) {
	srv := startServer(t, nil)
	status, nc, r := upgrade(t, srv.WSAddr().String(), "")
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	var msg []byte
	msg = append(msg, wsFrame(0x8a, strings.Repeat("u", 125))...) // unsolicited pong
	msg = append(msg, wsFrame(0x01, "pi")...)
	msg = append(msg, wsFrame(0x89, strings.Repeat("p", 125))...)
	msg = append(msg, wsFrame(0x80, "ng")...)
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil || head != [2]byte{0x8a, 125} {
		t.Fatalf("pong header % x (%v)", head, err)
	}
	if _, err := io.CopyN(io.Discard, r, 125); err != nil {
		t.Fatal(err)
	}
	var reply [2 + 7]byte
	if _, err := io.ReadFull(r, reply[:]); err != nil || string(reply[2:]) != "1 pong\n" {
		t.Fatalf("reply % x (%v)", reply, err)
	}
	if _, err := nc.Write(wsFrame(0x88, "\x03\xe8")); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || len(rest) < 2 || rest[0] != 0x88 {
		t.Fatalf("after a close: % x (%v)", rest, err)
	}
}

// maskedFrame is a client frame masked with key, as browsers send them.
func maskedFrame(b0 byte, key [4]byte, payload string) []byte {
	f := wsFrame(b0, payload) // zero key
	start := len(f) - len(payload)
	copy(f[start-4:], key[:])
	for i := range len(payload) {
		f[start+i] ^= key[i%4]
	}
	return f
}

// readServerFrame reads one frame the server sent: its first byte and its
// payload. Server frames are never masked.
func readServerFrame(t *testing.T, r io.Reader) (byte, string) {
	t.Helper()
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		t.Fatalf("frame header: %v", err)
	}
	if head[1]&0x80 != 0 {
		t.Fatalf("a masked server frame: % x", head)
	}
	n := uint64(head[1])
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			t.Fatal(err)
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			t.Fatal(err)
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		t.Fatalf("payload of %d bytes: %v", n, err)
	}
	return head[0], string(payload)
}

// TestWebsocketMaskedMessages: messages masked with a key that is not zero,
// of every length around the 8 bytes that unmasking takes at a time, as
// one frame, fragmented, and dribbled a byte per write, so that the server
// unmasks and reads them in every way it has; each command's reply is a
// text frame of its own, with lengths that take each of the three header
// forms (a dump of 70,000 bytes needs the 64-bit one).
func TestWebsocketMaskedMessages(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.MaxLocksPerConn = 10000 })
	status, nc, r := upgrade(t, srv.WSAddr().String(), "")
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for n := 1; n <= 20; n++ {
		name := strings.Repeat("n", n)
		writeAll(t, nc, maskedFrame(0x81, key, "g "+name+"\ni "+name))
		for _, want := range []string{"1 Lock Get Success: " + name + "\n", "1 Lock Is Locked: " + name + "\n"} {
			if b0, got := readServerFrame(t, r); b0 != 0x81 || got != want {
				t.Fatalf("name of %d bytes: frame %#x %q, want 0x81 %q", n, b0, got, want)
			}
		}
	}
	// Fragmented, each fragment with its own key, and a byte per write.
	msg := append(maskedFrame(0x01, key, "r nnn\nr n"), maskedFrame(0x80, [4]byte{1, 2, 3, 4}, "nn\nx")...)
	for i := range msg {
		writeAll(t, nc, msg[i:i+1])
	}
	for _, want := range []string{"1 Lock Release Success: nnn\n", "0 Lock Release Failure: nnn\n", ""} {
		if _, got := readServerFrame(t, r); got != want {
			t.Fatalf("fragmented: %q, want %q", got, want)
		}
	}
	// Long names: a dump whose reply is 126 to 65,535 bytes, then over it.
	var cmds strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&cmds, "g %031d\n", i)
	}
	writeAll(t, nc, maskedFrame(0x81, key, cmds.String()))
	for range 2000 {
		readServerFrame(t, r)
	}
	writeAll(t, nc, maskedFrame(0x81, key, "d\nping"))
	if b0, got := readServerFrame(t, r); b0 != 0x81 || len(got) < 1<<16 || !strings.HasSuffix(got, "\n") {
		t.Fatalf("dump: frame %#x of %d bytes", b0, len(got))
	}
	if _, got := readServerFrame(t, r); got != "1 pong\n" {
		t.Fatalf("after the dump: %q", got)
	}
	writeAll(t, nc, maskedFrame(0x81, key, "q"))
	if _, got := readServerFrame(t, r); len(got) < 126 || !strings.Contains(got, "locks: 2019") {
		t.Fatalf("q: %d bytes: %q", len(got), got)
	}
}

// TestWebsocketPingDuringWait: while a gw waits, the reader answers pings
// and the wait's goroutine writes the grant; their frames must not mix.
func TestWebsocketPingDuringWait(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	holder.expect("g x", "1 Lock Get Success: x\n")
	status, nc, r := upgrade(t, srv.WSAddr().String(), "")
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	key := [4]byte{9, 8, 7, 6}
	writeAll(t, nc, maskedFrame(0x81, key, "gw 10000 x\nping"))
	pings := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			if _, err := nc.Write(maskedFrame(0x89, key, "p"+strconv.Itoa(i))); err != nil {
				return
			}
			if i == 100 {
				holder.expect("r x", "1 Lock Release Success: x\n")
			}
		}
	}()
	var replies []string
	for len(replies) < 2 || pings < 200 {
		switch b0, payload := readServerFrame(t, r); b0 {
		case 0x8a:
			if want := "p" + strconv.Itoa(pings); payload != want {
				t.Fatalf("pong %q, want %q", payload, want)
			}
			pings++
		case 0x81:
			replies = append(replies, payload)
		default:
			t.Fatalf("frame %#x %q", b0, payload)
		}
	}
	<-done
	if replies[0] != "1 Lock Get Success: x\n" || replies[1] != "1 pong\n" {
		t.Fatalf("replies %q", replies)
	}
}
