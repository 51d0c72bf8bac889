package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/net/websocket"
)

// request is one command of an exchange and, once it is done, its reply.
type request struct {
	line  string
	multi bool     // the reply is zero or more lines with no terminator
	lines []string // the reply, one element per line, newlines removed
}

// aLongTimeAgo is a deadline in the past, to interrupt a blocked read or
// write at once (as net/http does).
var aLongTimeAgo = time.Unix(1, 0)

// inlineWrite is the largest batch written before reading replies. A larger
// one is written by another goroutine while the replies are read, since a
// server that cannot send its replies stops reading commands, and a client
// that is still writing would then wait for it forever.
const inlineWrite = 32 << 10

// watch makes I/O on conn end when ctx does: at its deadline, or at once when
// it is cancelled. The returned stop must be called before the next call
// sets its own deadline.
func watch(ctx context.Context, conn net.Conn) (stop func()) {
	dl, _ := ctx.Deadline()
	// The zero time clears any deadline an earlier, cancelled call left.
	_ = conn.SetDeadline(dl)
	if ctx.Done() == nil {
		return func() {}
	}
	done := make(chan struct{})
	stopFunc := context.AfterFunc(ctx, func() {
		_ = conn.SetDeadline(aLongTimeAgo)
		close(done)
	})
	return func() {
		if !stopFunc() {
			<-done
		}
	}
}

// contextError explains a timeout caused by ctx as ctx's error, keeping the
// network error too.
func contextError(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	cause := ctx.Err()
	if cause == nil { // the connection's deadline fired before ctx's timer
		cause = context.DeadlineExceeded
	}
	return fmt.Errorf("%w (%w)", cause, err)
}

// fail closes the connection after an error that leaves the reply stream out
// of step with the commands, and makes every later call fail.
func (c *Client) fail(ctx context.Context, err error) error {
	if c.closed.Load() {
		return ErrClosed
	}
	err = contextError(ctx, err)
	c.err = fmt.Errorf("glockd client: connection closed after an earlier error: %w", err)
	_ = c.conn.Close()
	return err
}

// roundTrip sends reqs in one write and reads their replies in order. On
// an error it returns how many replies had been read in full.
func (c *Client) roundTrip(ctx context.Context, reqs []request) (int, error) {
	for i := range reqs {
		if err := checkLine(reqs[i].line); err != nil {
			return 0, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		return 0, err
	}
	stop := watch(ctx, c.conn)
	defer stop()

	c.wbuf = c.wbuf[:0]
	for i := range reqs {
		c.wbuf = append(c.wbuf, reqs[i].line...)
		c.wbuf = append(c.wbuf, '\n')
		if reqs[i].multi && c.ws == nil {
			c.wbuf = append(c.wbuf, c.fenceLine...)
			c.wbuf = append(c.wbuf, '\n')
		}
	}
	n, err := c.exchange(reqs)
	if err != nil {
		return n, c.fail(ctx, err)
	}
	return n, nil
}

// exchange writes c.wbuf (over a websocket as one message, which the server
// splits into lines) and reads one reply per request.
func (c *Client) exchange(reqs []request) (int, error) {
	if len(c.wbuf) <= inlineWrite {
		if _, err := c.conn.Write(c.wbuf); err != nil {
			return 0, err
		}
		return c.readReplies(reqs)
	}
	written := make(chan error, 1)
	go func() {
		_, err := c.conn.Write(c.wbuf)
		written <- err
	}()
	n, err := c.readReplies(reqs)
	if err != nil {
		_ = c.conn.Close() // the writer may wait for a reader that is gone
	}
	if werr := <-written; err == nil {
		err = werr
	}
	return n, err
}

func (c *Client) readReplies(reqs []request) (int, error) {
	for i := range reqs {
		r := &reqs[i]
		r.lines = r.lines[:0]
		switch {
		case c.ws != nil:
			msg, err := c.readMessage()
			if err != nil {
				return i, err
			}
			r.lines = splitMessage(r.lines, msg)
		case r.multi:
			for {
				line, err := c.readLine()
				if err != nil {
					return i, err
				}
				if line == c.fenceFree || line == c.fenceLocked {
					break
				}
				r.lines = append(r.lines, line)
			}
		default:
			line, err := c.readLine()
			if err != nil {
				return i, err
			}
			r.lines = append(r.lines, line)
		}
	}
	return len(reqs), nil
}

// readLine reads one reply line without its "\n". A "\r" before it is
// dropped too: the original server sent "\r\n" on some replies.
func (c *Client) readLine() (string, error) {
	b, err := c.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) { // a long reply, such as a big dump
		long := append([]byte(nil), b...)
		for errors.Is(err, bufio.ErrBufferFull) {
			b, err = c.r.ReadSlice('\n')
			long = append(long, b...)
		}
		b = long
	}
	if err != nil {
		if len(b) > 0 {
			return "", fmt.Errorf("%w after a partial reply %q", err, b)
		}
		return "", err
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return string(b), nil
}

func (c *Client) readMessage() (string, error) {
	var msg string
	err := websocket.Message.Receive(c.ws, &msg)
	return msg, err
}

// splitMessage appends the lines of a websocket reply to dst. A trailing
// "\n" ends the last line; an empty message has no lines.
func splitMessage(dst []string, msg string) []string {
	msg = strings.TrimSuffix(msg, "\n")
	if msg == "" {
		return dst
	}
	for line := range strings.SplitSeq(msg, "\n") {
		dst = append(dst, strings.TrimSuffix(line, "\r"))
	}
	return dst
}

// Send writes raw command lines, as one write (over a websocket, as one
// message), and reads nothing: read the replies with [Client.Recv]. It is
// for tests of the protocol itself; the typed methods keep replies in step
// with commands, Send and Recv leave that to the caller.
func (c *Client) Send(ctx context.Context, lines ...string) error {
	for _, l := range lines {
		if err := checkLine(l); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		return err
	}
	stop := watch(ctx, c.conn)
	defer stop()
	c.wbuf = c.wbuf[:0]
	for _, l := range lines {
		c.wbuf = append(c.wbuf, l...)
		c.wbuf = append(c.wbuf, '\n')
	}
	if _, err := c.conn.Write(c.wbuf); err != nil {
		return c.fail(ctx, err)
	}
	return nil
}

// Recv reads the next reply line (line protocol) or message (websocket),
// without its final newline. On the line protocol, when ctx ends before any
// byte of a reply has arrived, Recv returns ctx's error and the Client stays
// usable: that is how to check that a command got no reply.
func (c *Client) Recv(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usable(); err != nil {
		return "", err
	}
	stop := watch(ctx, c.conn)
	defer stop()
	if c.ws != nil {
		msg, err := c.readMessage()
		if err != nil {
			return "", c.fail(ctx, err)
		}
		return strings.TrimSuffix(msg, "\n"), nil
	}
	if c.r.Buffered() == 0 {
		// Wait for a byte without consuming one, so a timeout loses nothing.
		if _, err := c.r.Peek(1); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return "", contextError(ctx, err)
			}
			return "", c.fail(ctx, err)
		}
	}
	line, err := c.readLine()
	if err != nil {
		return "", c.fail(ctx, err)
	}
	return line, nil
}
