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

	"golang.org/x/net/websocket"
)

// ErrClosed is returned by calls on a Client after Close.
var ErrClosed = errors.New("glockd client: closed")

// Client is one connection to a glockd server. It is safe for concurrent
// use; calls are serialised because the server answers in order.
//
// When a call fails on the connection itself (a network error, or ctx ending
// while a reply is awaited), the reply stream can no longer be matched to
// the commands, so the Client closes the connection, which releases its
// locks, and every later call returns an error. A reply of the wrong form
// does not close it.
type Client struct {
	mu    sync.Mutex
	conn  net.Conn        // deadlines are set on it, Close closes it
	r     *bufio.Reader   // line protocol only
	ws    *websocket.Conn // websocket only; nil on the line protocol
	local net.Addr        // our end of the stream connection
	wbuf  []byte          // reused to encode each exchange's commands
	err   error           // once set, every call returns it
	// closed is apart from err so that Close need not wait for c.mu, held by
	// a call that may be waiting for a reply (a gw) that Close is to cut short.
	closed atomic.Bool

	// A multi-line reply ends where the reply to "i <fence>" starts.
	fenceLine              string
	fenceFree, fenceLocked string
}

// Dial connects to a glockd server. Network is "tcp" (or "tcp4", "tcp6") or
// "unix" with addr a host:port or a socket path, or "ws" with addr a
// websocket URL such as "ws://127.0.0.1:9998/". The context bounds the
// connection set-up only.
func Dial(ctx context.Context, network, addr string) (*Client, error) {
	if network == "ws" {
		return dialWebsocket(ctx, addr)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return New(conn), nil
}

// New returns a Client speaking the line protocol over conn, which it then
// owns.
func New(conn net.Conn) *Client {
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), local: conn.LocalAddr()}
	c.setFence()
	return c
}

func newWebsocket(ws *websocket.Conn, local net.Addr) *Client {
	c := &Client{conn: ws, ws: ws, local: local}
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

// Websocket reports whether the client speaks over a websocket, where every
// command gets exactly one message back, even an unknown one.
func (c *Client) Websocket() bool { return c.ws != nil }

// Close closes the connection; the server then releases the client's locks.
// A call in progress returns an error at once.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.conn.Close()
}

// usable returns why the Client cannot make a call, or nil. c.mu is held.
func (c *Client) usable() error {
	if c.closed.Load() {
		return ErrClosed
	}
	return c.err
}

// checkLine rejects a command that would not travel as one line.
func checkLine(line string) error {
	if strings.ContainsRune(line, '\n') {
		return fmt.Errorf("glockd client: %q: a command cannot contain a newline", line)
	}
	return nil
}
