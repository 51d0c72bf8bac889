package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"
)

// ErrClosed is returned by calls on a Client after Close.
var ErrClosed = errors.New("glockd client: closed")

// defaultGrace bounds how long a wait whose context ended may take to be
// answered after its cancellation before the server is taken for dead.
const defaultGrace = 3 * time.Second

// Client is one connection to a glockd server. It is safe for concurrent
// use: calls from several goroutines are pipelined on the connection, and a
// goroutine of the Client reads every reply and hands it to its call.
//
// The server runs the commands that follow a wait (gw, sgw) only once the
// wait is over, so while a wait is unanswered the Client sends nothing else
// (but its heartbeat and cancellation, which the server answers at once):
// other calls wait their turn, and give it up when their context ends.
//
// When the context of a wait ends first, the wait is cancelled and the
// connection stays open. When the context of any other call ends while its
// reply is awaited, the server is too slow to trust: the Client closes the
// connection, which releases its locks, and every later call returns an
// error. A reply of the wrong form does not close it.
type Client struct {
	conn  net.Conn        // the stream, or the websocket
	r     *bufio.Reader   // line protocol only
	ws    *websocket.Conn // websocket only; nil on the line protocol
	local net.Addr        // our end of the stream connection

	// turn is the right to send commands, a token in a channel so that
	// waiting for it can end with a context. A call holds it while it
	// writes and, if it holds a wait, until the wait is answered.
	turn chan struct{}
	wbuf []byte // reused to encode commands; guarded by turn

	wmu sync.Mutex // one write at a time: commands, heartbeats, cancellations

	// grace bounds the reply to a cancelled wait; see defaultGrace.
	grace time.Duration

	mu        sync.Mutex
	pending   []*inflight // calls sent and not answered in full, oldest first
	unclaimed []string    // replies that came when no call was pending
	arrived   chan struct{}
	pings     []ping                  // heartbeats not yet answered, oldest first
	cancels   int                     // cancellations not yet answered
	cancelled [2]int                  // cancellations answered "!cancel 0" and "!cancel 1"
	waits     map[asyncKey]*asyncWait // !gw and !sgw awaiting their outcome (async.go)
	alive     time.Time               // when the latest command or heartbeat answered was sent
	err       error                   // why the connection ended; set once
	dead      chan struct{}
	// closed is apart from err so that Close is seen at once by every call.
	closed     atomic.Bool
	readerDone chan struct{}

	// A multi-line reply ends where the reply to "i <fence>" starts.
	fenceLine              string
	fenceFree, fenceLocked string
}

// Dial connects to a glockd server, trying addrs in order and returning
// the first connection made. Network is "tcp" (or "tcp4", "tcp6") or "unix"
// with each addr a host:port or a socket path, or "ws" with each addr a
// websocket URL such as "ws://127.0.0.1:9998/" or "wss://host:9998/" (TLS
// with the system's roots; [NewSession] takes a TLS configuration). A host
// name that resolves to several addresses is tried address by address. When
// ctx has a deadline, each address gets a share of the time left. The
// context bounds the connection set-up only.
func Dial(ctx context.Context, network string, addrs ...string) (*Client, error) {
	return dialFirst(ctx, &net.Dialer{}, nil, network, addrs, nil)
}

// New returns a Client speaking the line protocol over conn, which it then
// owns.
func New(conn net.Conn) *Client {
	c := newClient(conn, nil)
	c.r = bufio.NewReaderSize(conn, 64<<10)
	c.local = conn.LocalAddr()
	go c.readLoop()
	return c
}

func newWebsocket(ws *websocket.Conn, local net.Addr) *Client {
	c := newClient(ws, ws)
	c.local = local
	go c.readLoop()
	return c
}

func newClient(conn net.Conn, ws *websocket.Conn) *Client {
	c := &Client{
		conn:       conn,
		ws:         ws,
		turn:       make(chan struct{}, 1),
		grace:      defaultGrace,
		arrived:    make(chan struct{}, 1),
		alive:      time.Now(),
		dead:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	c.setFence()
	return c
}

// setFence picks a lock name that no one else will use, so that "i" on it
// has a reply that cannot be mistaken for a line of a multi-line reply.
func (c *Client) setFence() {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	name := "glockd-client-fence-" + hex.EncodeToString(b[:])
	c.fenceLine = "i " + name
	c.fenceFree = notLocked + name
	c.fenceLocked = isLocked + name
}

// LocalAddr returns the client's end of the connection. For TCP and
// websocket connections its String is the connection name the server
// reports (see [Client.Me]).
func (c *Client) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the address of the server the client is connected to,
// which is worth knowing when it was dialled with several.
func (c *Client) RemoteAddr() net.Addr {
	if c.ws != nil {
		return c.ws.RemoteAddr() // the URL; the stream's peer is below it
	}
	return c.conn.RemoteAddr()
}

// Websocket reports whether the client speaks over a websocket, where every
// command gets exactly one message back, even an unknown one.
func (c *Client) Websocket() bool { return c.ws != nil }

// Close closes the connection; the server then releases the client's locks.
// A call in progress returns [ErrClosed] at once.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		<-c.readerDone
		return nil
	}
	err := c.conn.Close()
	<-c.readerDone
	return err
}

// usable returns why the Client cannot make a call, or nil. c.mu is held.
func (c *Client) usable() error {
	if c.closed.Load() {
		return ErrClosed
	}
	if c.err != nil {
		return fmt.Errorf("glockd client: connection closed after an earlier error: %w", c.err)
	}
	return nil
}

// checkLine rejects a command that would not travel as one line.
func checkLine(line string) error {
	if strings.ContainsRune(line, '\n') {
		return fmt.Errorf("glockd client: %q: a command cannot contain a newline", line)
	}
	return nil
}
