package main

import (
	"container/list"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/transport"
	"github.com/glockd/glockd/internal/wire"
)

// conn serves one client. Its goroutine reads commands, has the manager run
// them and writes the replies. While a gw or sgw waits, a second goroutine
// (started only then) delivers the wait's outcome and runs the commands that
// arrived behind it, while the first goroutine goes on reading, so that the
// end of the connection is seen at once, whatever is queued, and the manager
// never waits on a socket.
//
// What one connection can cost is bounded at every step: a batch is at most
// transport.MaxBatch commands; replies are written once maxReplyBuffer bytes
// of them are pending (and the connection is not read meanwhile, so a client
// that does not read stops being served); commands queued behind a wait are kept
// as their raw lines, at most maxQueued bytes, past which the connection is
// closed with wire.QueueFull.
type conn struct {
	srv   *Server
	state *connState
	t     transport.Conn
	cmds  []proto.Command // the reader's batch
	ended chan struct{}   // closed when the reader has seen the connection end
	// parkAt is set by a hand-over that asks the reader to stop (upgrade.go).
	parkAt atomic.Pointer[pause]
	// killed is set by a kill (kill, kill-holder, an eviction, the auth
	// timeout) before it cuts the connection short, so that a hand-over's
	// pause and its resumption never undo it (upgrade.go).
	killed atomic.Bool

	// mu is held by whichever goroutine is running commands or writing.
	mu          sync.Mutex
	b           batch
	waiting     bool            // a wait is pending; later commands are queued
	pending     proto.Command   // the waiting command; its name in pendingName
	pendingName []byte          // kept from wait to wait
	queue       lineQueue       // commands read during the wait, to run after it
	awaiting    goroutineRun    // the wait goroutine (awaitWaits)
	awaitFn     func()          // c.awaitWaits, made once: a go statement then allocates nothing
	drain       []proto.Command // the wait goroutine's commands, parsed from queue
	scratch     []byte          // the wait goroutine's normalised arguments
	now         []proto.Command // out-of-band commands to run at once

	// Asynchronous waits (asyncwait.go): the delivery goroutine
	// (deliverOutcomes) runs while delivering.
	delivering goroutineRun
	deliverFn  func()       // c.deliverOutcomes, made once: a go statement then allocates nothing
	outcomes   []waitResult // outcomes taken from the outbox, for metrics

	// A failed auth is a wait for a timer (auth.go): authTimer runs
	// while its delay does; authFailures counts the failures.
	authTimer    *time.Timer
	authFailures int

	// admitted: Server.serveAdmitted serves it, and finish untracks it
	// and stops authDeadline (-auth-timeout, with -acl-file), if set.
	admitted     bool
	authDeadline *time.Timer

	// Admission (auth.go): unauthElem and evicted are guarded by the
	// server's mu; listedUnauth, by mu, says unauthElem may be set.
	unauthElem   *list.Element
	evicted      bool
	listedUnauth bool

	// What c.queue and c.b.out hold, charged to -max-buffered (limits.go);
	// guarded by mu.
	queueMem, outMem transport.Charge
}

const (
	// maxQueued bounds the bytes of the lines queued behind a wait (each
	// line costs its length plus queuedLineCost).
	maxQueued = 1 << 20
	// maxReplyBuffer is how many bytes of replies a connection builds
	// before it writes them, so that a client that sends many dumps and
	// does not read costs at most this (plus one dump) while its write
	// blocks.
	maxReplyBuffer = 1 << 20
	keptCommands   = 64
	keptReplyBytes = 4 << 10
	keptReplyEnds  = 128
	// keptNameBytes: a waited-for name longer than this is not kept for
	// the next wait (pendingName).
	keptNameBytes = 256
	// dumpOutBuffer is the reply buffer a dump borrows on a stream: a
	// step's lines, at 60 bytes each.
	dumpOutBuffer = 256 << 10
	// dumpPause is how long a dump waits between its steps (see
	// appendDump): a step takes about 0.3 ms on a 2-core EPYC guest.
	dumpPause = 500 * time.Microsecond
	// closeGrace is how long the end of a connection waits for a client
	// that does not read: as long as a transport's Close.
	closeGrace = transport.CloseGrace
)

func newConn(srv *Server, name, transportName string, t transport.Conn) *conn {
	c := &conn{
		srv:   srv,
		state: newConnState(name, transportName),
		t:     t,
		ended: make(chan struct{}),
	}
	c.awaitFn, c.deliverFn = c.awaitWaits, c.deliverOutcomes
	if srv.needsKill() {
		c.state.kill = func() {
			c.killed.Store(true) // before the deadline: see conn.park
			t.Abort()
			if srv.up.handingOff.Load() { // after killed: see upgrader.shutdownKilled
				shutdownHanded(c)
			}
		}
	}
	c.queueMem.Budget, c.outMem.Budget = &srv.budget, &srv.budget
	limits := transport.Limits{Budget: &srv.budget, Parker: c}
	if srv.cfg.Security.ACLFile != "" {
		// Small buffers until it authenticates (auth.go).
		limits.Identified = &c.state.identified
	}
	t.Bind(limits)
	return c
}

// Parked reports whether a hand-over has asked c's reader to stop
// (upgrade.go).
func (c *conn) Parked() bool { return c.parkAt.Load() != nil }

// Park is conn.park for a websocket reader stopped in the middle of a
// message (transport.Parker).
func (c *conn) Park(err error) bool { return c.park(err) }

// serve runs the connection until it ends, then releases everything it held.
func (c *conn) serve() {
	c.srv.manager.send(request{kind: requestConnect, conn: c.state})
	c.serveInput()
}

// serveInput reads and runs commands until the connection ends, then
// finishes it. A TLS connection that has waited transport.TLSRest for input since it
// last used crypto/tls (transport.ErrRest) goes on waiting on a fresh
// goroutine instead, and this one ends: crypto/tls grew its stack to 8 KiB,
// which the runtime shrinks back to 4 KiB only, and the new goroutine waits
// on the 2 KiB it starts with.
func (c *conn) serveInput() {
	rest := false
	defer c.finishUnlessRested(&rest)
	for {
		cmds, err := c.t.Read(c.cmds[:0])
		if len(cmds) > 0 && !c.runOrQueue(cmds) {
			return
		}
		if err != nil {
			if err == transport.ErrRest {
				rest = true
				go c.serveInput()
			} else if errors.Is(err, io.EOF) {
				c.endOfInput()
			} else if err == transport.ErrOverBudget {
				c.tellOverBudget()
			} else if c.park(err) {
				continue // a hand-over failed: go on (upgrade.go)
			}
			return
		}
		c.cmds = keepCommands(cmds)
	}
}

// finishUnlessRested is serveInput's deferred end: the connection ends
// unless another goroutine serves it now.
func (c *conn) finishUnlessRested(rest *bool) {
	if !*rest {
		c.finish()
	}
}

// finish closes the connection, waits for its wait goroutine, if any, and
// has the manager forget it (and orphan its locks). The wait goroutine must
// be gone first: it may still be running commands for this connection.
// Then, for an admitted connection, it stops the auth timer and has the
// server forget it (Server.serveAdmitted).
func (c *conn) finish() {
	if c.admitted {
		defer c.srv.untrack(c)
		if c.authDeadline != nil {
			defer c.authDeadline.Stop()
		}
	}
	c.t.Close()
	c.mu.Lock()
	done := c.awaiting.done()
	c.mu.Unlock()
	close(c.ended)
	if done != nil {
		<-done
	}
	c.awaitDelivery()
	c.releaseCharges()
	c.srv.manager.send(request{kind: requestDisconnect, conn: c.state})
}

// endOfInput handles a clean end of input (a close, or a shutdown of the
// client's write side: the server cannot tell them apart). A pending wait
// ends at once, as a timeout, and so does any wait among the commands queued
// behind it: a client that has gone must never be granted a lock later. So
// do its asynchronous waits. The replies of everything read before the end,
// and the outcomes of those waits, are still written, as they are without a
// wait, before the connection closes.
func (c *conn) endOfInput() {
	c.srv.manager.send(request{kind: requestEndOfInput, conn: c.state})
	c.mu.Lock()
	c.endAuthDelayLocked()
	done := c.awaiting.done()
	c.mu.Unlock()
	if done != nil {
		<-done
	}
	c.awaitDelivery()
}

// keepCommands empties a batch's slice for the next batch, or drops it when
// a burst made it big: an idle connection keeps a small one. (len, not cap:
// append rounds capacity up to a size class, 67 for 64 commands, and a
// client pipelining 64 would otherwise cost a new slice per batch.)
func keepCommands(cmds []proto.Command) []proto.Command {
	if len(cmds) > keptCommands {
		return nil
	}
	return cmds[:0]
}

// runOrQueue runs what the reader read, or queues it behind a pending wait.
// It reports false when the connection must end.
func (c *conn) runOrQueue(cmds []proto.Command) bool {
	c.mu.Lock()
	if c.waiting {
		return c.queueLocked(cmds)
	}
	return c.runLocked(cmds)
}

// queueLocked is queueBehindWait, unlocking c.mu even if it panics (see
// runLocked).
func (c *conn) queueLocked(cmds []proto.Command) bool {
	defer c.mu.Unlock()
	return c.queueBehindWait(cmds)
}

// runLocked runs cmds and unlocks c.mu even if that panics: net/http recovers
// a panicking websocket handler, and serve's cleanup must not then block on
// the mutex for ever.
func (c *conn) runLocked(cmds []proto.Command) bool {
	defer c.mu.Unlock()
	return c.runAndReply(cmds, false) == nil
}

// queueBehindWait queues cmds behind the pending wait, but runs the
// out-of-band ones at once. It reports false, after telling the client, when
// the queue is over its limit: the connection then ends, so that its reader
// never stops watching the socket. Called with c.mu held. It is kept out of
// line so that its locals do not enlarge runOrQueue's frame on every command
// (see the idle-stack rule in docs/design.md).
//
//go:noinline
func (c *conn) queueBehindWait(cmds []proto.Command) bool {
	if now := c.queueAfterWait(cmds); len(now) > 0 && c.runAndReply(now, false) != nil {
		return false
	}
	if c.queue.size() > c.maxQueued() {
		c.t.Write([]byte(wire.QueueFull), []int{len(wire.QueueFull)})
		return false
	}
	if !c.queueMem.Set(int64(c.queue.size())) {
		c.srv.metrics.overBudget.Inc()
		c.t.Write([]byte(wire.QueueFull), []int{len(wire.QueueFull)})
		return false
	}
	return true
}

// runAndReply runs cmds and writes their replies, after whatever c.b.out
// already holds (the wait goroutine puts its wait's reply there). Replies are
// written whenever maxReplyBuffer bytes of them are pending. A command that
// waits sets c.waiting and leaves the commands after it to run after the
// wait: queued, or when inWait (they come from the queue) left in it; the
// out-of-band ones among them run at once. Called with c.mu held.
func (c *conn) runAndReply(cmds []proto.Command, inWait bool) error {
	b := &c.b
	b.cmds, b.next = cmds, 0
	for b.next < len(b.cmds) {
		// One latency observation per round trip, not per command: see
		// metrics.batchSeconds.
		start := time.Now()
		c.srv.manager.execute(c.state, b)
		c.srv.metrics.batchSeconds.Observe(time.Since(start).Seconds())
		if c.state.box != nil {
			if _, err := c.takeOutcomes(); err != nil {
				return err
			}
		}
		if c.listedUnauth {
			c.noteIdentified()
		}
		if b.dump != nil {
			if err := c.appendDump(); err != nil {
				return err
			}
		}
		if cap(b.out) > keptReplyBytes {
			if err := c.chargeReplies(); err != nil {
				return err
			}
		}
		if b.authFailed != authOK {
			b.cmds, b.next = c.failAuth(&b.cmds[b.next-1], b.cmds[b.next:], inWait), 0
		}
		if b.waitStarted {
			b.waitStarted = false
			b.cmds, b.next = c.startWait(&b.cmds[b.next-1], b.cmds[b.next:], inWait), 0
			if err := c.chargeQueue(); err != nil {
				return err
			}
		}
		if len(b.out) >= maxReplyBuffer {
			if err := c.flush(); err != nil {
				return err
			}
		}
	}
	b.cmds = nil
	return c.flush()
}

// appendDump formats the dump the manager began, a step at a time: on a
// stream each step is written, after the replies before it, before the
// next is asked for. A dump then holds one step, whatever the size of the
// table, and a client that reads it slowly holds up its own dump only (the
// write waits, and the manager copies nothing meanwhile). A websocket sends
// a reply as one message: there the steps are formatted one after the other
// and the whole dump is written at the end.
//
// Between two steps the dump pauses (dumpPause): with dumps running back to
// back on a busy core, some goroutine is always runnable, and Go then looks
// for network input only from its monitor thread, every 10 ms, so other
// clients' commands would wait that long to be read. The pause leaves the
// scheduler idle moments, when it polls the network at once.
func (c *conn) appendDump() error {
	b := &c.b
	d := b.dump
	b.dump = nil
	defer c.srv.manager.releaseDump(d)
	if c.t.SplitsReplies() && cap(b.out) < dumpOutBuffer {
		// A buffer for a step's lines, from the server's pool: dumps
		// in a loop then make next to no garbage (flush gives it back).
		p, _ := c.srv.dumpBuffers.Get().(*[dumpOutBuffer]byte)
		if p == nil {
			p = new([dumpOutBuffer]byte)
		}
		b.out = append(p[:0], b.out...)
	}
	for {
		b.out = d.appendStep(b.out)
		// A step's lines are pending replies for -max-buffered: names as
		// long as -max-line make a step big, and a websocket keeps every
		// step until the dump's end (limits.go).
		if cap(b.out) > keptReplyBytes {
			if err := c.chargeReplies(); err != nil {
				return err
			}
		}
		if d.done() {
			break
		}
		if c.t.SplitsReplies() {
			// The batch's replies before the dump may hold grants:
			// written under the same check as flush's.
			if err := c.writePending(); err != nil {
				return err
			}
		}
		time.Sleep(dumpPause)
		c.srv.manager.dumpStep(c.state, d)
	}
	if d.cut {
		// The manager stopped serving (-etcd): no more replies.
		b.out, b.ends, b.next = b.out[:0], b.ends[:0], len(b.cmds)
		return nil
	}
	b.ends = append(b.ends, len(b.out))
	return nil
}

// writePending writes the pending replies and empties the buffers, keeping
// their memory. With -etcd, once the term has ended it closes the
// connection instead: the manager ran the commands before (a pause, say),
// and their grants must not be announced (fence.go).
func (c *conn) writePending() error {
	b := &c.b
	err := errNotServing
	if c.srv.manager.serving() {
		err = c.t.Write(b.out, b.ends)
	} else {
		c.t.Close()
	}
	b.out, b.ends = b.out[:0], b.ends[:0]
	return err
}

// flush writes the pending replies and empties the buffers, giving back big
// ones: an idle connection keeps small buffers whatever it did before.
func (c *conn) flush() error {
	b := &c.b
	err := c.writePending()
	if cap(b.out) > keptReplyBytes {
		if cap(b.out) == dumpOutBuffer {
			c.srv.dumpBuffers.Put((*[dumpOutBuffer]byte)(b.out[:dumpOutBuffer]))
		}
		b.out = nil
	}
	if cap(b.ends) > keptReplyEnds {
		b.ends = nil
	}
	if c.outMem.Held() > 0 {
		c.outMem.Set(int64(cap(b.out)))
	}
	return err
}

// startWait notes the waiting command and keeps the commands after it for
// when the wait ends: the reader queues them, the wait goroutine leaves them
// in the queue they came from. It returns the out-of-band commands among
// them, to run now.
func (c *conn) startWait(cmd *proto.Command, rest []proto.Command, inWait bool) []proto.Command {
	c.pendingName = append(c.pendingName[:0], cmd.Name...)
	c.pending = *cmd
	c.pending.Name = c.pendingName
	c.waiting = true
	if inWait {
		c.queue.unread(len(rest))
		return nil
	}
	now := c.queueAfterWait(rest)
	c.awaiting.running = true
	go c.awaitFn()
	return now
}

// queueAfterWait queues cmds to run after the pending wait, all but the
// out-of-band ones, which it returns: they run at once.
func (c *conn) queueAfterWait(cmds []proto.Command) (now []proto.Command) {
	c.now = c.now[:0]
	for i := range cmds {
		if cmds[i].Verb.OutOfBand() {
			c.now = append(c.now, cmds[i])
			continue
		}
		c.queue.push(&cmds[i])
	}
	return c.now
}

// awaitWaits delivers the outcome of each wait, runs the commands queued
// behind it, and exits when no wait is pending, or when the connection ends.
func (c *conn) awaitWaits() {
	for {
		var res waitResult
		select {
		case res = <-c.state.grants:
			if !res.authFailure {
				c.srv.metrics.observeWait(res)
			}
		case <-c.ended:
			c.mu.Lock()
			c.awaiting.stop()
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		var err error
		switch {
		case res.granted && !c.srv.manager.serving():
			// A grant made before this node's leadership ended (a
			// pause, with -etcd) is not announced after it.
			err = errNotServing
		case res.authFailure:
			err = c.answerAuthFailure()
		default:
			c.b.out = appendWaitReply(c.b.out, &c.pending, res)
			c.b.ends = append(c.b.ends, len(c.b.out))
			c.pending = proto.Command{}
			c.waiting = false
			err = c.runQueue()
		}
		if !c.waiting {
			c.b.refuseAuth = false
			c.queue.release()
			c.queueMem.Release()
			c.drain, c.scratch = nil, nil
			if cap(c.pendingName) > keptNameBytes {
				c.pendingName = nil
			}
		}
		stop := err != nil || !c.waiting
		if stop {
			c.awaiting.stop()
		}
		c.mu.Unlock()
		if err != nil {
			c.t.Close()
		}
		if stop {
			return
		}
	}
}

// goroutineRun tracks one of a connection's goroutines that run only at
// times (the wait goroutine, the !gw delivery): whether it runs, and a
// channel closed when it exits, made only when something waits for that
// (the end of input, finish, a shutdown), so that starting one allocates
// nothing. Guarded by conn.mu.
type goroutineRun struct {
	running bool
	over    chan struct{}
}

// stop notes that the goroutine exits, and wakes whoever waits for that.
func (r *goroutineRun) stop() {
	r.running = false
	if r.over != nil {
		close(r.over)
		r.over = nil
	}
}

// done returns a channel closed when the goroutine exits; nil when it does
// not run. For the wait goroutine that is once the pending gw or sgw, and
// any begun by the commands queued behind it, have been answered and their
// replies written, or their delivery has failed, or the connection has
// ended.
func (r *goroutineRun) done() chan struct{} {
	if !r.running {
		return nil
	}
	if r.over == nil {
		r.over = make(chan struct{})
	}
	return r.over
}

// runQueue runs the commands queued behind the wait that has just ended, up
// to transport.MaxBatch at a time, until the queue is empty or one of them waits.
// Called with c.mu held.
func (c *conn) runQueue() error {
	for {
		c.drain, c.scratch = c.queue.pop(c.drain[:0], c.scratch[:0], transport.MaxBatch)
		if len(c.drain) == 0 {
			return c.flush()
		}
		if err := c.runAndReply(c.drain, true); err != nil || c.waiting {
			return err
		}
	}
}

// lineQueue holds the commands read while a wait is pending as the lines
// they came from, so that a queued command costs its length and a few bytes,
// whatever its kind; they are parsed again when they run.
type lineQueue struct {
	data  []byte // the lines, one after the other
	lines []queuedLine
	next  int // the first line not yet run
}

type queuedLine struct {
	end     int32 // where the line ends in data
	tooLong bool  // the line was over -max-line: only its reply is kept
}

// queuedLineCost is what a queued line costs beyond its bytes.
const queuedLineCost = 8

func (q *lineQueue) push(cmd *proto.Command) {
	if cmd.Verb != proto.VerbTooLong {
		q.data = append(q.data, cmd.Line...)
	}
	q.lines = append(q.lines, queuedLine{end: int32(len(q.data)), tooLong: cmd.Verb == proto.VerbTooLong})
}

// size is what the queue costs now.
func (q *lineQueue) size() int { return len(q.data) + queuedLineCost*len(q.lines) }

// pop parses up to n queued lines into cmds, with scratch for their
// normalised arguments. They alias q.data until the next push.
func (q *lineQueue) pop(cmds []proto.Command, scratch []byte, n int) ([]proto.Command, []byte) {
	for ; n > 0 && q.next < len(q.lines); n-- {
		start := int32(0)
		if q.next > 0 {
			start = q.lines[q.next-1].end
		}
		l := q.lines[q.next]
		q.next++
		if l.tooLong {
			cmds = append(cmds, proto.Command{Verb: proto.VerbTooLong})
			continue
		}
		var cmd proto.Command
		cmd, scratch = proto.Parse(q.data[start:l.end], scratch)
		cmds = append(cmds, cmd)
	}
	return cmds, scratch
}

// unread puts the last n popped lines back: they follow a command that
// waits. The lines already run are dropped, so that what is read during the
// new wait is measured against the limit with only what is still pending.
func (q *lineQueue) unread(n int) {
	q.next -= n
	if q.next == 0 {
		return
	}
	start := q.lines[q.next-1].end
	q.data = q.data[:copy(q.data, q.data[start:])]
	q.lines = q.lines[:copy(q.lines, q.lines[q.next:])]
	for i := range q.lines {
		q.lines[i].end -= start
	}
	q.next = 0
}

// release empties the queue, giving back its memory.
func (q *lineQueue) release() { *q = lineQueue{} }
