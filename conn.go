package main

import (
	"sync"
	"time"
)

// transport is how a connection reads commands and writes replies: lines on
// a stream (TCP, unix) or messages on a websocket.
type transport interface {
	// read blocks until input arrives and appends the complete commands in
	// it (up to maxBatch) to cmds. They alias the transport's buffers until
	// the next read.
	read(cmds []command) ([]command, error)
	// write sends the replies in out; ends[i] is where reply i ends.
	write(out []byte, ends []int) error
	close() error
}

// conn serves one client. Its goroutine reads commands, has the manager run
// them and writes the replies. While a gw or sgw waits, a second goroutine
// (started only then) delivers the wait's outcome and runs the commands that
// arrived behind it, while the first goroutine goes on reading, so that a
// disconnect is seen at once and the manager never waits on a socket.
type conn struct {
	srv   *Server
	state *connState
	t     transport
	cmds  []command     // the reader's batch
	ended chan struct{} // closed when the reader has seen the connection end

	// mu is held by whichever goroutine is running commands or writing.
	mu       sync.Mutex
	b        batch
	waiting  bool          // a wait is pending; later commands are queued
	pending  command       // the waiting command, with its name copied
	queue    []command     // commands read during the wait; lines are copies
	queued   int           // bytes in queue
	waitDone chan struct{} // closed when the current wait goroutine exits
	drain    []command     // the wait goroutine's commands
	scratch  []byte        // the wait goroutine's normalised arguments
}

// maxQueued bounds what is read while a wait is pending (line bytes plus
// queuedCost per command); past it the reader pauses until the wait ends.
const (
	maxQueued    = 1 << 20
	queuedCost   = 128
	keptCommands = 64
)

func newConn(srv *Server, name, transportName string, t transport) *conn {
	return &conn{
		srv:   srv,
		state: newConnState(name, transportName),
		t:     t,
		ended: make(chan struct{}),
	}
}

// serve runs the connection until it ends, then releases everything it held.
func (c *conn) serve() {
	m := c.srv.manager
	m.send(request{kind: requestConnect, conn: c.state})
	defer func() {
		c.t.close()
		c.mu.Lock()
		done := c.waitDone
		c.mu.Unlock()
		close(c.ended)
		if done != nil {
			<-done
		}
		m.send(request{kind: requestDisconnect, conn: c.state})
	}()
	for {
		cmds, err := c.t.read(c.cmds[:0])
		if len(cmds) > 0 && !c.runOrQueue(cmds) {
			return
		}
		if err != nil {
			return
		}
		c.cmds = keepCommands(cmds)
	}
}

// keepCommands empties a batch's slice for the next batch, or drops it when
// a burst made it big: an idle connection keeps a small one. (len, not cap:
// append rounds capacity up to a size class, 67 for 64 commands, and a
// client pipelining 64 would otherwise cost a new slice per batch.)
func keepCommands(cmds []command) []command {
	if len(cmds) > keptCommands {
		return nil
	}
	return cmds[:0]
}

// runOrQueue runs what the reader read, or queues it behind a pending wait.
// It reports false when the connection must end.
func (c *conn) runOrQueue(cmds []command) bool {
	c.mu.Lock()
	if c.waiting {
		full := c.queueBehindWait(cmds)
		c.mu.Unlock()
		if full != nil {
			<-full
		}
		return true
	}
	return c.runLocked(cmds)
}

// runLocked runs cmds and unlocks c.mu even if that panics: net/http recovers
// a panicking websocket handler, and serve's cleanup must not then block on
// the mutex for ever.
func (c *conn) runLocked(cmds []command) bool {
	defer c.mu.Unlock()
	return c.runAndReply(cmds, false) == nil
}

// queueBehindWait queues cmds behind the pending wait. When the queue is
// full it returns a channel to wait on before reading more: the end of the
// wait goroutine. Called with c.mu held. It is kept out of line so that its
// locals do not enlarge runOrQueue's frame on every command: an idle
// connection's goroutine stack stays at the minimum only while the deepest
// path of the reader fits in it.
//
//go:noinline
func (c *conn) queueBehindWait(cmds []command) (full <-chan struct{}) {
	c.enqueue(cmds)
	if c.queued > max(maxQueued, c.srv.cfg.MaxLine) {
		return c.waitDone
	}
	return nil
}

// enqueue keeps copies of commands that must run after the pending wait.
func (c *conn) enqueue(cmds []command) {
	for _, cmd := range cmds {
		line := append([]byte(nil), cmd.line...)
		c.queue = append(c.queue, command{verb: cmd.verb, line: line})
		c.queued += len(line) + queuedCost
	}
}

// runAndReply runs cmds and writes their replies. The wait goroutine calls it
// with inWait set, to send its wait's reply (already in c.b.out) with the
// replies of the commands queued behind it. A command that waits sets
// c.waiting, queues the commands after it and, when the reader is the
// caller, starts the wait goroutine. Called with c.mu held.
func (c *conn) runAndReply(cmds []command, inWait bool) error {
	b := &c.b
	if !inWait {
		b.out, b.ends = b.out[:0], b.ends[:0]
	}
	b.cmds, b.next = cmds, 0
	for b.next < len(cmds) {
		// One latency observation per round trip, not per command: see
		// metrics.batchSeconds.
		start := time.Now()
		c.srv.manager.execute(c.state, b)
		c.srv.metrics.batchSeconds.Observe(time.Since(start).Seconds())
		if b.dump != nil {
			b.out = b.dump.appendTo(b.out)
			b.ends = append(b.ends, len(b.out))
			b.dump = nil
		}
		if b.waiting {
			b.waiting = false
			c.startWait(&cmds[b.next-1], cmds[b.next:], inWait)
			break
		}
	}
	b.cmds = nil
	err := c.t.write(b.out, b.ends)
	if cap(b.out) > 64<<10 {
		b.out = nil // a big dump; do not keep its buffer for an idle connection
	}
	return err
}

// startWait notes the waiting command and queues the commands after it. The
// queue is empty here: it fills only while a wait is pending and is drained
// whole when the wait ends.
func (c *conn) startWait(cmd *command, rest []command, inWait bool) {
	c.pending = *cmd
	c.pending.name = append([]byte(nil), cmd.name...)
	c.enqueue(rest)
	c.waiting = true
	if !inWait {
		c.waitDone = make(chan struct{})
		go c.awaitWaits(c.waitDone)
	}
}

// awaitWaits delivers the outcome of each wait, runs the commands queued
// behind it, and exits when no wait is pending.
func (c *conn) awaitWaits(done chan struct{}) {
	defer close(done)
	for {
		var res waitResult
		select {
		case res = <-c.state.grants:
			c.srv.metrics.observeWait(res)
		case <-c.ended:
			return
		}
		c.mu.Lock()
		c.b.out = appendWaitReply(c.b.out[:0], &c.pending, res)
		c.b.ends = append(c.b.ends[:0], len(c.b.out))
		c.waiting = false
		c.drain = c.drain[:0]
		c.scratch = c.scratch[:0]
		for _, cmd := range c.queue {
			if cmd.verb != verbTooLong {
				cmd, c.scratch = parseCommand(cmd.line, c.scratch)
			}
			c.drain = append(c.drain, cmd)
		}
		c.queue, c.queued = nil, 0
		// A wait among the drained commands sets c.waiting again, and this
		// goroutine goes on with it.
		err := c.runAndReply(c.drain, true)
		waiting := c.waiting
		c.mu.Unlock()
		if err != nil {
			c.t.close()
			return
		}
		if !waiting {
			return
		}
	}
}
