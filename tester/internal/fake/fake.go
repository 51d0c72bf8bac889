// Package fake is a small glockd written for the tester's own tests: the
// whole protocol over TCP, unix sockets and websockets, kept simple (one
// mutex) rather than fast, with faults that can be switched on to check
// that the conformance suite and the load generator notice them.
package fake

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/glockd/glockd/internal/wire"
	"golang.org/x/net/websocket"
)

// Faults are deliberate departures from the protocol.
type Faults struct {
	SharedCountOffByOne bool // sg reports one holder more than there are
	NoOrphans           bool // a connection's locks outlive it
	DropReply           int  // when > 0, each connection's DropReply-th command gets no reply

	QueueOutOfBand  bool // !ping and !cancel wait behind a pending gw/sgw like any command
	CancelReplyLate bool // "!cancel 1" comes after the cancelled wait's reply, not before
	EOFDropsReplies bool // end of input during a wait closes the connection unanswered
	DetailNoWaiters bool // dl says waiters=0 whoever waits

	AsyncInOrder     bool // !gw and !sgw hold back the commands after them, as gw does
	AsyncCancelQuiet bool // !cancel ends an asynchronous wait without its 0 line
	AsyncWrongToken  bool // a !gw grant reports a token one above the lock's
	AsyncOneAtATime  bool // a !gw or !sgw while another is pending is refused

	NoDeadlocks            bool // a wait that closes a cycle of waiters waits like any other
	WaitersNewestFirst     bool // dw lists each queue newest first
	AsyncDeadlockAsTimeout bool // a !gw or !sgw that closes a cycle gets the 0 line, not the deadlock one
}

// Config says what the server runs with, as glockd's flags do.
type Config struct {
	Dump     bool
	Registry bool
	UnixPath string // "" for no unix socket
	Faults
}

const maxLine = 64 << 10

// Server is a running fake glockd on loopback.
type Server struct {
	cfg   Config
	tcp   net.Listener
	unix  net.Listener
	wsLn  net.Listener
	http  *http.Server
	state *state
	wg    sync.WaitGroup
}

// Start listens on ephemeral loopback ports (and cfg.UnixPath) and serves.
func Start(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, state: newState(cfg)}
	var err error
	if s.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if s.wsLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		s.tcp.Close()
		return nil, err
	}
	if cfg.UnixPath != "" {
		if s.unix, err = net.Listen("unix", cfg.UnixPath); err != nil {
			s.tcp.Close()
			s.wsLn.Close()
			return nil, err
		}
	}
	ws := websocket.Server{
		Handshake: func(*websocket.Config, *http.Request) error { return nil },
		Handler:   s.serveWebsocket,
	}
	s.http = &http.Server{Handler: ws}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.http.Serve(s.wsLn)
	}()
	s.accept(s.tcp, func(c net.Conn) string { return c.RemoteAddr().String() })
	if s.unix != nil {
		n := 0 // only the accept loop touches it
		s.accept(s.unix, func(net.Conn) string {
			n++
			return fmt.Sprintf("unix:%d", n)
		})
	}
	return s, nil
}

// TCPAddr returns the TCP address, host:port.
func (s *Server) TCPAddr() string { return s.tcp.Addr().String() }

// WSURL returns the websocket URL.
func (s *Server) WSURL() string { return "ws://" + s.wsLn.Addr().String() + "/" }

// Close stops the server and ends every connection.
func (s *Server) Close() {
	s.tcp.Close()
	if s.unix != nil {
		s.unix.Close()
	}
	s.http.Close() // not the hijacked websocket connections: closeAll does
	s.state.closeAll()
	s.wg.Wait()
}

func (s *Server) accept(ln net.Listener, name func(net.Conn) string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c := s.state.connect(name(nc), nc)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serveLines(c, nc)
			}()
		}
	}()
}

// item is one line read from a client, or the mark of a line too long.
type item struct {
	line    string
	tooLong bool
}

// input is what a connection's serving goroutine reads: the lines from its
// reader goroutine, and those it took off them during a wait, to run after
// it. Only the serving goroutine touches it.
type input struct {
	items   <-chan item
	backlog []item
	ended   bool               // items is closed: the client sent its last line
	now     func(reply string) // writes a reply at once, after those written before
	discard bool               // close without writing what is left (EOFDropsReplies)
}

// next returns the next line to run, and false once there are none.
func (in *input) next() (item, bool) {
	if len(in.backlog) > 0 {
		it := in.backlog[0]
		in.backlog = in.backlog[1:]
		return it, true
	}
	it, ok := <-in.items
	if !ok {
		in.ended = true
	}
	return it, ok
}

// idle reports whether no line is waiting to run.
func (in *input) idle() bool { return len(in.backlog) == 0 && len(in.items) == 0 }

// serveLines serves the line protocol. A reader goroutine feeds lines to
// this one, so that a disconnect, and an out-of-band verb, is seen while a
// gw waits.
func (s *Server) serveLines(c *conn, nc net.Conn) {
	defer nc.Close()
	items := make(chan item, 64)
	go readLines(nc, items, c.gone)
	w := bufio.NewWriter(nc)
	var wmu sync.Mutex // the outcomes of asynchronous waits are written from their goroutines
	c.in = &input{items: items, now: func(reply string) {
		wmu.Lock()
		defer wmu.Unlock()
		w.WriteString(reply)
		w.Flush()
	}}
	for {
		it, ok := c.in.next()
		if !ok {
			break
		}
		reply, ok := s.reply(c, it)
		if c.in.discard {
			break
		}
		wmu.Lock()
		if ok {
			w.WriteString(reply)
		}
		if c.in.idle() && w.Flush() != nil {
			nc.Close() // ends the reader, which closes items
		}
		wmu.Unlock()
	}
	s.state.endOfInput(c)
	nc.Close()
	for range items { // let the reader end
	}
	s.state.disconnect(c)
}

func readLines(nc net.Conn, items chan<- item, gone chan<- struct{}) {
	defer close(items)
	defer close(gone)
	r := bufio.NewReader(nc)
	var buf []byte
	size := 0 // of the line so far; buf stops growing past the limit
	for {
		b, err := r.ReadSlice('\n')
		size += len(b)
		if size <= maxLine+2 {
			buf = append(buf, b...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r")
		items <- item{line: line, tooLong: size > maxLine+2 || len(line) > maxLine}
		buf, size = buf[:0], 0
	}
}

func (s *Server) serveWebsocket(ws *websocket.Conn) {
	c := s.state.connect(ws.Request().RemoteAddr, ws)
	items := make(chan item, 64)
	go func() {
		defer close(items)
		defer close(c.gone)
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil {
				return
			}
			msg = strings.TrimSuffix(msg, "\n")
			for line := range strings.SplitSeq(msg, "\n") {
				line = strings.TrimSuffix(line, "\r")
				items <- item{line: line, tooLong: len(line) > maxLine}
			}
		}
	}()
	c.in = &input{items: items, now: func(reply string) { _ = websocket.Message.Send(ws, reply) }}
	for {
		it, ok := c.in.next()
		if !ok {
			break
		}
		reply, _ := s.reply(c, it)
		if c.in.discard {
			break
		}
		if c.dropped || c.replied {
			continue
		}
		if websocket.Message.Send(ws, reply) != nil {
			ws.Close() // ends the reader, which closes items
		}
	}
	s.state.endOfInput(c)
	ws.Close()
	for range items { // let the reader end
	}
	s.state.disconnect(c)
}

// reply runs one command and returns its reply, and false for none.
func (s *Server) reply(c *conn, it item) (string, bool) {
	c.n++
	c.dropped = s.cfg.DropReply > 0 && c.n == s.cfg.DropReply
	c.replied = false
	var reply string
	var ok bool
	if it.tooLong {
		reply, ok = wire.LineTooLong, true
	} else {
		reply, ok = s.state.exec(c, it.line)
	}
	if c.dropped {
		return "", false
	}
	return reply, ok
}

// waitUntil returns a channel that fires after ms milliseconds, or never
// for a negative ms.
func waitUntil(ms int) <-chan time.Time {
	if ms < 0 {
		return nil
	}
	return time.After(time.Duration(ms) * time.Millisecond)
}

// UnixPath returns the unix socket path, "" when there is none.
func (s *Server) UnixPath() string { return s.cfg.UnixPath }
