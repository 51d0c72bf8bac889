package transport

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// clientFrame is a masked client frame.
func clientFrame(b0 byte, key uint32, payload string) []byte {
	b := appendClientFrameHeader(nil, frameHeader{b0: b0, masked: true, payload: int64(len(payload)), key: key})
	start := len(b)
	b = append(b, payload...)
	unmask(b[start:], key) // masking is its own inverse
	return b
}

// stopAsked is a Parker for a hand-over that asks the reader to stop; a
// reader stopped in the middle of a message reports on parked and waits.
type stopAsked struct {
	asked   atomic.Bool
	parked  chan struct{}
	release chan struct{}
}

func (p *stopAsked) Parked() bool { return p.asked.Load() }

func (p *stopAsked) Park(err error) bool {
	if !p.asked.Load() || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	p.parked <- struct{}{}
	<-p.release
	return false
}

// TestWebsocketHandoverMidMessage: a websocket reader stopped by a hand-over
// in the middle of a message, wherever it is in it (a frame's payload read
// in place or into the message buffer, fragments received and a frame header
// or a ping between them), hands over what it consumed (Unread): a new
// reader on the same connection, given those bytes, reads the whole message
// once the client sends the rest.
func TestWebsocketHandoverMidMessage(t *testing.T) {
	big := make([]byte, 6000)
	for i := range big {
		big[i] = 'a' + byte(i%26)
	}
	line := "g " + string(big) + "\n"
	frag := func(fin bool, op byte, key uint32, payload string) []byte {
		if fin {
			op |= frameFin
		}
		return clientFrame(op, key, payload)
	}
	join := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	for _, tc := range []struct {
		name  string
		input []byte // the client's whole input
		cut   int    // sent before the stop
		want  []string
	}{
		{"one frame, in place", frag(true, opText, 0x01020304, "g a\ng b\n"), 9, []string{"a", "b"}},
		{"one frame, long", frag(true, opText, 0x0a0b0c0d, line), 3000, []string{string(big)}},
		{"fragments, then a payload", join(frag(false, opText, 7, "g fir"), frag(false, opCont, 9, "st\ng se"), frag(true, opCont, 0x11223344, "cond\n")), 32, []string{"first", "second"}},
		{"fragments, then a header", join(frag(false, opText, 7, "g fir"), frag(true, opCont, 0x55667788, "st\n")), 12, []string{"first"}},
		{"fragments, then a ping", join(frag(false, opText, 7, "g fir"), frag(true, opPing, 3, "ping!"), frag(true, opCont, 5, "st\n")), 19, []string{"first"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := loopback(t)
			p := &stopAsked{parked: make(chan struct{}), release: make(chan struct{})}
			old := NewWebsocket(srv, nil, 1<<16)
			old.Bind(Limits{Parker: p})
			done := make(chan error, 1)
			go func() {
				_, err := old.Read(nil)
				done <- err
			}()
			defer func() { close(p.release); <-done }()
			if _, err := cli.Write(tc.input[:tc.cut]); err != nil {
				t.Fatal(err)
			}
			// The reader has taken what was sent from the socket.
			deadline := time.Now().Add(10 * time.Second)
			for inKernel(t, srv) > 0 {
				if time.Now().After(deadline) {
					t.Fatal("the reader did not read")
				}
				time.Sleep(5 * time.Millisecond)
			}
			p.asked.Store(true)
			srv.SetReadDeadline(abortAt())
			select {
			case <-p.parked:
			case err := <-done:
				t.Fatalf("the reader ended: %v, want it stopped mid-message", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the reader did not stop")
			}
			if !old.midMessage {
				t.Fatal("the reader stopped between messages")
			}
			unread, _ := old.Unread()
			srv.SetReadDeadline(time.Time{})
			heir := NewWebsocket(srv, unread, 1<<16)
			heir.Bind(Limits{})
			if _, err := cli.Write(tc.input[tc.cut:]); err != nil {
				t.Fatal(err)
			}
			var got []string
			for len(got) < len(tc.want) {
				cmds, err := heir.Read(nil)
				if err != nil {
					t.Fatalf("the heir's read: %v (got %q)", err, got)
				}
				got = appendNames(got, cmds)
			}
			for i := range tc.want {
				if got[i] != tc.want[i] {
					t.Fatalf("command %d: %.40q, want %.40q", i, got[i], tc.want[i])
				}
			}
			if tc.name == "fragments, then a ping" {
				// The pong was sent by the heir, once.
				var b [16]byte
				cli.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := cli.Read(b[:])
				if err != nil || n != 7 || b[0] != frameFin|opPong || string(b[2:7]) != "ping!" {
					t.Fatalf("the pong: % x %v", b[:n], err)
				}
			}
		})
	}
}

// inKernel is how many bytes wait in nc's socket, not yet read.
func inKernel(t *testing.T, nc net.Conn) int {
	t.Helper()
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}
