package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
)

// request is one command of a call and, once it is answered, its reply.
type request struct {
	line  string
	multi bool     // the reply is zero or more lines with no terminator
	wait  bool     // gw or sgw: the server runs later commands after it
	name  string   // of a wait: its lock's name, normalised, to cancel it by
	lines []string // the reply, one element per line, newlines removed
}

// inflight is one write of commands, awaiting their replies.
type inflight struct {
	reqs []request
	next int           // the request the next reply belongs to
	sent time.Time     // when its write began
	done chan struct{} // closed once every reply is in
	// cancel is set when the caller's context ended: each wait of the call
	// is cancelled when its turn at the server comes.
	cancel bool
	// cancelling counts the cancellations being written. The call is over
	// only once they are out, lest one reach a wait sent after it.
	cancelling sync.WaitGroup
}

// ping is one heartbeat, "!ping", which the server answers "!pong" at once
// even while a wait is pending.
type ping struct {
	sent time.Time
	done chan struct{} // closed on the answer; nil when no one waits for it
}

const (
	pong         = "!pong"
	cancelMissed = "!cancel 0"
	cancelHit    = "!cancel 1"
)

var pingLine = []byte("!ping\n")

// maxUnclaimed bounds the replies kept for Recv: more means a server that
// sends what no one asked for.
const maxUnclaimed = 1 << 16

// aLongTimeAgo is a deadline in the past, to interrupt a blocked read or
// write at once (as net/http does).
var aLongTimeAgo = time.Unix(1, 0)

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

// fail ends the connection after an error, once: every call waiting for a
// reply, and every later call, then returns an error.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		clear(c.pending)
		c.pending = nil
		close(c.dead)
	}
	c.mu.Unlock()
	_ = c.conn.Close()
}

// deadErr is the error of a call cut short by the end of the connection.
func (c *Client) deadErr() error {
	if c.closed.Load() {
		return ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// endErr is the error of a call when the connection has ended: none if
// its replies were all read first.
func (c *Client) endErr(cl *inflight) error {
	select {
	case <-cl.done:
		return nil
	default:
		return c.deadErr()
	}
}

// takeTurn waits for the right to send commands; see Client.turn.
func (c *Client) takeTurn(ctx context.Context) error {
	select {
	case c.turn <- struct{}{}:
		if err := ctx.Err(); err != nil {
			c.endTurn()
			return err
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.dead:
		return c.deadErr()
	}
}

func (c *Client) endTurn() { <-c.turn }

func hasWait(reqs []request) bool {
	for i := range reqs {
		if reqs[i].wait {
			return true
		}
	}
	return false
}

// start writes reqs as one write (over a websocket, one message, which the
// server splits into lines) and returns the call that awaits their
// replies. The caller holds the turn.
func (c *Client) start(ctx context.Context, reqs []request) (*inflight, error) {
	for i := range reqs {
		if err := checkLine(reqs[i].line); err != nil {
			return nil, err
		}
		reqs[i].lines = reqs[i].lines[:0]
	}
	c.wbuf = c.wbuf[:0]
	for i := range reqs {
		c.wbuf = append(c.wbuf, reqs[i].line...)
		c.wbuf = append(c.wbuf, '\n')
		if reqs[i].multi && c.ws == nil {
			c.wbuf = append(c.wbuf, c.fenceLine...)
			c.wbuf = append(c.wbuf, '\n')
		}
	}
	cl := &inflight{reqs: reqs, done: make(chan struct{})}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if err := c.usable(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	cl.sent = time.Now()
	c.pending = append(c.pending, cl)
	// Replies that came before any call are the stream's next ones.
	for len(c.unclaimed) > 0 && len(c.pending) > 0 {
		reply := c.unclaimed[0]
		c.unclaimed = c.unclaimed[1:]
		c.fill(reply)
	}
	c.mu.Unlock()
	n, err := c.write(ctx, c.wbuf)
	if err == nil {
		return cl, nil
	}
	err = contextError(ctx, err)
	if n == 0 && ctx.Err() != nil {
		// Nothing went out, so the stream is still in step: forget the call.
		c.mu.Lock()
		if k := len(c.pending) - 1; k >= 0 && c.pending[k] == cl {
			c.pending[k] = nil
			c.pending = c.pending[:k]
		}
		c.mu.Unlock()
		return nil, err
	}
	c.fail(err)
	if c.closed.Load() {
		return nil, ErrClosed
	}
	return nil, err
}

// write writes b, ending the write when ctx ends. The caller holds c.wmu.
func (c *Client) write(ctx context.Context, b []byte) (int, error) {
	dl, hasDeadline := ctx.Deadline()
	if !hasDeadline && ctx.Done() == nil {
		return c.conn.Write(b)
	}
	_ = c.conn.SetWriteDeadline(dl)
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = c.conn.SetWriteDeadline(aLongTimeAgo)
		close(done)
	})
	n, err := c.conn.Write(b)
	if !stop() {
		<-done
	}
	_ = c.conn.SetWriteDeadline(time.Time{})
	return n, err
}

// await waits for every reply of cl. When ctx ends first: if finish is
// false, the server is too slow to trust and the connection is failed;
// if it is true, the waits of cl are cancelled and await goes on waiting,
// up to c.grace, for the replies, reporting that ctx was interrupted.
func (c *Client) await(ctx context.Context, cl *inflight, finish bool) (interrupted bool, err error) {
	select {
	case <-cl.done:
		return false, nil
	case <-c.dead:
		return false, c.endErr(cl)
	case <-ctx.Done():
	}
	c.mu.Lock()
	if cl.next == len(cl.reqs) && c.err == nil {
		c.mu.Unlock()
		return false, nil
	}
	if !finish {
		c.mu.Unlock()
		err := fmt.Errorf("%w awaiting a reply", ctx.Err())
		c.fail(err)
		if c.closed.Load() {
			return true, ErrClosed
		}
		return true, err
	}
	cl.cancel = true
	name, ok := c.nextWait(cl)
	if ok {
		// On another goroutine: a server that stopped reading would block
		// the write, and the timer below is what gives up on it.
		goWait(&cl.cancelling, func() { c.cancelWait(name) })
	}
	c.mu.Unlock()
	defer cl.cancelling.Wait()
	t := time.NewTimer(c.grace)
	defer t.Stop()
	select {
	case <-cl.done:
		return true, nil
	case <-c.dead:
		return true, c.endErr(cl)
	case <-t.C:
		err := fmt.Errorf("glockd client: no reply within %v of cancelling a wait: %w", c.grace, ctx.Err())
		c.fail(err)
		return true, err
	}
}

// nextWait returns the name of the first wait of cl not yet answered,
// counting the cancellation about to be sent for it. Only one call with
// waits is in flight at a time and the commands before its first
// unanswered wait do not wait, so that wait is the one the server holds,
// or the one it will hold once it has read the lines already sent. c.mu is
// held.
func (c *Client) nextWait(cl *inflight) (string, bool) {
	for i := cl.next; i < len(cl.reqs); i++ {
		if cl.reqs[i].wait {
			c.cancels++
			return cl.reqs[i].name, true
		}
	}
	return "", false
}

// cancelWait sends "!cancel NAME", which the server acts on at once. The
// name keeps it from ending a later wait if this one is answered meanwhile.
func (c *Client) cancelWait(name string) {
	line := []byte(withArg("!cancel", name) + "\n")
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.conn.Write(line); err != nil {
		c.fail(err)
	}
}

// heartbeat sends "!ping"; done, unless nil, is closed on its answer.
func (c *Client) heartbeat(done chan struct{}) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if err := c.usable(); err != nil {
		c.mu.Unlock()
		return err
	}
	c.pings = append(c.pings, ping{sent: time.Now(), done: done})
	c.mu.Unlock()
	if _, err := c.conn.Write(pingLine); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

// pingWait sends a heartbeat and waits for its answer.
func (c *Client) pingWait(ctx context.Context) error {
	done := make(chan struct{})
	if err := c.heartbeat(done); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("glockd client: no answer to !ping: %w", ctx.Err())
	case <-c.dead:
		return c.deadErr()
	}
}

// lastAlive returns when the latest command or heartbeat that has been
// answered was sent: the server was serving the connection at some time
// after it.
func (c *Client) lastAlive() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.alive
}

// roundTrip sends reqs in one write and waits for their replies. It
// returns how many replies were read in full, and whether ctx ended while
// the replies of waits were awaited (they were then cancelled).
func (c *Client) roundTrip(ctx context.Context, reqs []request) (n int, interrupted bool, err error) {
	if err := c.takeTurn(ctx); err != nil {
		return 0, false, err
	}
	waits := hasWait(reqs)
	cl, err := c.start(ctx, reqs)
	if err != nil || !waits {
		c.endTurn()
	} else {
		defer c.endTurn()
	}
	if err != nil {
		return 0, false, err
	}
	interrupted, err = c.await(ctx, cl, waits)
	c.mu.Lock()
	n = cl.next
	c.mu.Unlock()
	return n, interrupted, err
}

// readLoop reads every reply and hands it to the heartbeat, the
// cancellations, the oldest call awaiting one, or Recv, in that order.
func (c *Client) readLoop() {
	defer close(c.readerDone)
	for {
		var reply string
		var err error
		if c.ws != nil {
			reply, err = c.readMessage()
		} else {
			reply, err = c.readLine()
		}
		if err != nil {
			c.fail(err)
			return
		}
		if strings.TrimSuffix(reply, "\n") == tooManyConnections {
			// The server's refusal at admission; it closes the connection.
			c.fail(fmt.Errorf("glockd client: the server refused the connection: %w", ErrTooManyConnections))
			return
		}
		c.mu.Lock()
		switch {
		case c.outOfBand(reply):
		case len(c.pending) > 0:
			c.fill(reply)
		case len(c.unclaimed) < maxUnclaimed:
			c.unclaimed = append(c.unclaimed, strings.TrimSuffix(reply, "\n"))
			select {
			case c.arrived <- struct{}{}:
			default:
			}
		default:
			c.mu.Unlock()
			c.fail(fmt.Errorf("glockd client: over %d replies to no command", maxUnclaimed))
			return
		}
		c.mu.Unlock()
	}
}

// outOfBand takes a reply to a heartbeat or a cancellation, which the
// server sends at once rather than in order, and the outcome of an
// asynchronous wait. One that was not asked for (sent with Send) is left to
// the stream. c.mu is held.
func (c *Client) outOfBand(reply string) bool {
	reply = strings.TrimSuffix(reply, "\n")
	if strings.HasPrefix(reply, "!gw ") || strings.HasPrefix(reply, "!sgw ") {
		return c.asyncOutcome(reply)
	}
	switch reply {
	case pong:
		if len(c.pings) == 0 {
			return false
		}
		p := c.pings[0]
		c.pings[0] = ping{}
		c.pings = c.pings[1:]
		if p.sent.After(c.alive) {
			c.alive = p.sent
		}
		if p.done != nil {
			close(p.done)
		}
		return true
	case cancelMissed, cancelHit:
		if c.cancels == 0 {
			return false
		}
		c.cancels--
		if strings.HasPrefix(reply, cancelHit) {
			c.cancelled[1]++
		} else {
			c.cancelled[0]++
		}
		return true
	}
	return false
}

// fill adds reply to the oldest call awaiting one. When that completes a
// wait of a call whose waits are being cancelled, it cancels the call's
// next wait. c.mu is held.
func (c *Client) fill(reply string) {
	cl := c.pending[0]
	r := &cl.reqs[cl.next]
	switch {
	case c.ws != nil:
		r.lines = splitMessage(r.lines, reply)
	case r.multi:
		if reply != c.fenceFree && reply != c.fenceLocked {
			r.lines = append(r.lines, reply)
			return
		}
	default:
		r.lines = append(r.lines, reply)
	}
	cl.next++
	if r.wait && cl.cancel {
		if name, ok := c.nextWait(cl); ok {
			// Not on this goroutine: a write may wait for the server,
			// which may wait for this goroutine to read.
			goWait(&cl.cancelling, func() { c.cancelWait(name) })
		}
	}
	if cl.next == len(cl.reqs) {
		c.pending[0] = nil
		c.pending = c.pending[1:]
		if cl.sent.After(c.alive) {
			c.alive = cl.sent
		}
		close(cl.done)
	}
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
	for {
		line, rest, more := strings.Cut(msg, "\n")
		dst = append(dst, strings.TrimSuffix(line, "\r"))
		if !more {
			return dst
		}
		msg = rest
	}
}

// Send writes raw command lines, as one write (over a websocket, as one
// message), and reads nothing: read the replies with [Client.Recv]. It is
// for tests of the protocol itself; the typed methods keep replies in step
// with commands, Send and Recv leave that to the caller. A reply that comes
// while a typed call awaits one is that call's.
func (c *Client) Send(ctx context.Context, lines ...string) error {
	for _, l := range lines {
		if err := checkLine(l); err != nil {
			return err
		}
	}
	if err := c.takeTurn(ctx); err != nil {
		return err
	}
	defer c.endTurn()
	c.wbuf = c.wbuf[:0]
	for _, l := range lines {
		c.wbuf = append(c.wbuf, l...)
		c.wbuf = append(c.wbuf, '\n')
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	err := c.usable()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if n, err := c.write(ctx, c.wbuf); err != nil {
		err = contextError(ctx, err)
		if n > 0 || ctx.Err() == nil {
			c.fail(err)
		}
		return err
	}
	return nil
}

// Recv returns the next reply line (line protocol) or message (websocket)
// that no typed call has taken, without its final newline. When ctx ends
// before one comes, Recv returns ctx's error and the Client stays usable:
// that is how to check that a command got no reply.
func (c *Client) Recv(ctx context.Context) (string, error) {
	for {
		c.mu.Lock()
		if len(c.unclaimed) > 0 {
			reply := c.unclaimed[0]
			c.unclaimed = c.unclaimed[1:]
			c.mu.Unlock()
			return reply, nil
		}
		err := c.usable()
		c.mu.Unlock()
		if err != nil {
			return "", err
		}
		select {
		case <-c.arrived:
		case <-c.dead:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}
