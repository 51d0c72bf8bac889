package main

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/proto"
)

// deadlockPromptly bounds how long the reply to a wait that closes a cycle
// may take. The search runs in the manager as the wait starts, so the reply
// comes in one round trip (well under a millisecond measured, see
// docs/operating.md); the bound is generous for a loaded machine and -race.
const deadlockPromptly = 2 * time.Second

// timedDo runs cmd and returns its reply and how long it took.
func timedDo(c *client, cmd string) (string, time.Duration) {
	c.t.Helper()
	start := time.Now()
	reply := c.do(cmd)
	return reply, time.Since(start)
}

// expectPending fails if c has a reply to read within a short while: its
// wait must still be pending.
func expectPending(t *testing.T, srv *Server, c *client, waiting int) {
	t.Helper()
	if n := waiters(t, srv); n != waiting {
		t.Fatalf("%d waiters, want %d", n, waiting)
	}
	c.nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 1)
	var err error
	if c.ws != nil {
		_, err = c.ws.Read(buf)
	} else {
		_, err = c.r.Read(buf)
	}
	if err == nil {
		t.Fatalf("%s: a reply while its wait should be pending: %q...", c.name, buf)
	}
	if !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("%s: %v", c.name, err)
	}
}

// TestDeadlockRing: n connections each hold a lock and wait for the next
// one's; the wait that closes the ring gets the Deadlock reply at once and
// keeps its own lock, the others still wait, and a release unwinds the ring
// in order. Over every transport, for rings of 2, 3 and 10.
func TestDeadlockRing(t *testing.T) {
	for _, tr := range transports {
		for _, n := range []int{2, 3, 10} {
			t.Run(fmt.Sprintf("%s/%d", tr, n), func(t *testing.T) {
				srv := startServer(t, nil)
				cs := make([]*client, n)
				for i := range cs {
					cs[i] = dial(t, srv, tr)
					cs[i].expect(fmt.Sprintf("g L%d", i), fmt.Sprintf("1 Lock Get Success: L%d\n", i))
				}
				for i := 0; i < n-1; i++ {
					queue(t, srv, cs[i], fmt.Sprintf("gw -1 L%d", i+1))
				}
				last := cs[n-1]
				reply, took := timedDo(last, "gw -1 L0")
				if reply != "0 Lock Get Deadlock: L0\n" {
					t.Fatalf("closing gw: %q", reply)
				}
				t.Logf("deadlock reply after %v", took)
				if took > deadlockPromptly {
					t.Fatalf("deadlock reply after %v", took)
				}
				// The closing connection keeps what it holds and can go on.
				last.expect("d L"+fmt.Sprint(n-1), fmt.Sprintf("L%d: %s\n", n-1, last.name))
				expectPending(t, srv, cs[n-2], n-1)
				if got := last.stat("locks"); got != n {
					t.Fatalf("locks: %d, want %d", got, n)
				}
				last.expect(fmt.Sprintf("r L%d", n-1), fmt.Sprintf("1 Lock Release Success: L%d\n", n-1))
				for i := n - 2; i >= 0; i-- {
					if got, want := cs[i].line(), fmt.Sprintf("1 Lock Get Success: L%d\n", i+1); got != want {
						t.Fatalf("conn %d: %q, want %q", i, got, want)
					}
					cs[i].expect(fmt.Sprintf("r L%d", i), fmt.Sprintf("1 Lock Release Success: L%d\n", i))
				}
				if n := waiters(t, srv); n != 0 {
					t.Fatalf("%d waiters left", n)
				}
				if s := snapshot(t, srv); s.deadlocks != 1 {
					t.Fatalf("deadlocks: %d, want 1", s.deadlocks)
				}
			})
		}
	}
}

// TestDeadlockSemaphore: a full semaphore whose holders each wait for a
// lock its waiter holds. While one holder is free it is no deadlock (that
// holder may release); once every holder waits, the closing wait gets the
// Deadlock reply: sgw's own, when the sgw closes it.
func TestDeadlockSemaphore(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			a, b, c := dial(t, srv, tr), dial(t, srv, tr), dial(t, srv, tr)
			a.expect("sgw 0 2 S", "1 Shared Lock Get Success: S\n")
			b.expect("sgw 0 2 S", "2 Shared Lock Get Success: S\n")
			c.expect("g Z", "1 Lock Get Success: Z\n")
			queue(t, srv, a, "gw -1 Z") // a waits for c; b is free
			if got := b.do("sgw 0 2 S"); got != "2 Shared Lock Get Success: S\n" {
				t.Fatalf("b: %q", got)
			}
			// c waits for a slot: a waits for c, but b may release.
			queue(t, srv, c, "sgw -1 2 S")
			// Now b waits for c too: nobody can go on.
			reply, took := timedDo(b, "gw -1 Z")
			if reply != "0 Lock Get Deadlock: Z\n" {
				t.Fatalf("b: %q", reply)
			}
			t.Logf("deadlock reply after %v", took)
			expectPending(t, srv, c, 2)
			// b gives its slot up: c gets it, and a gets Z when c lets go.
			b.expect("sr S", "1 Shared Lock Release Success: S\n")
			if got := c.line(); got != "2 Shared Lock Get Success: S\n" {
				t.Fatalf("c: %q", got)
			}
			c.expect("r Z", "1 Lock Release Success: Z\n")
			if got := a.line(); got != "1 Lock Get Success: Z\n" {
				t.Fatalf("a: %q", got)
			}
			a.expect("r Z", "1 Lock Release Success: Z\n")

			// The sgw closes it: both holders wait for c's lock.
			c.expect("sr S", "1 Shared Lock Release Success: S\n")
			b.expect("sgw 0 2 S", "2 Shared Lock Get Success: S\n")
			c.expect("g Z", "1 Lock Get Success: Z\n")
			queue(t, srv, a, "gw -1 Z")
			queue(t, srv, b, "gw -1 Z")
			reply, _ = timedDo(c, "sgw -1 2 S")
			if reply != "0 Shared Lock Get Deadlock: S\n" {
				t.Fatalf("c: %q", reply)
			}
			expectPending(t, srv, a, 2)
			if s := snapshot(t, srv); s.deadlocks != 2 {
				t.Fatalf("deadlocks: %d, want 2", s.deadlocks)
			}
		})
	}
}

// TestDeadlockNearMisses: waits that look like a cycle but are not, because
// one side's wait ended a moment before, by timeout or by !cancel.
func TestDeadlockNearMisses(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			a, b := dial(t, srv, tr), dial(t, srv, tr)
			a.expect("g X", "1 Lock Get Success: X\n")
			b.expect("g Y", "1 Lock Get Success: Y\n")

			a.expect("gw 20 Y", "0 Lock Get Timeout: Y\n")
			queue(t, srv, b, "gw -1 X") // not a deadlock: a no longer waits
			a.expect("r X", "1 Lock Release Success: X\n")
			if got := b.line(); got != "1 Lock Get Success: X\n" {
				t.Fatalf("b: %q", got)
			}
			b.expect("r X", "1 Lock Release Success: X\n")

			a.expect("g X", "1 Lock Get Success: X\n")
			queue(t, srv, a, "gw -1 Y")
			a.send("!cancel\n")
			if got := a.line(); got != "!cancel 1\n" {
				t.Fatalf("a: %q", got)
			}
			if got := a.line(); got != "0 Lock Get Timeout: Y\n" {
				t.Fatalf("a: %q", got)
			}
			queue(t, srv, b, "gw -1 X")
			a.expect("r X", "1 Lock Release Success: X\n")
			if got := b.line(); got != "1 Lock Get Success: X\n" {
				t.Fatalf("b: %q", got)
			}
			if s := snapshot(t, srv); s.deadlocks != 0 {
				t.Fatalf("deadlocks: %d, want 0", s.deadlocks)
			}
		})
	}
}

// TestDeadlockAfterHandOver: the edges follow a hand-over. Before it, a's
// wait for Y would close a cycle through X's old holder; after it X is c's,
// which waits for nothing, so a waits; and c's wait for Y then closes the
// cycle c → b → c through the lock c was handed.
func TestDeadlockAfterHandOver(t *testing.T) {
	srv := startServer(t, nil)
	a, b, c := dial(t, srv, "tcp"), dial(t, srv, "unix"), dial(t, srv, "websocket")
	a.expect("g X", "1 Lock Get Success: X\n")
	b.expect("g Y", "1 Lock Get Success: Y\n")
	queue(t, srv, c, "gw -1 X")
	queue(t, srv, b, "gw -1 X") // b waits behind c
	a.expect("r X", "1 Lock Release Success: X\n")
	if got := c.line(); got != "1 Lock Get Success: X\n" {
		t.Fatalf("c: %q", got)
	}
	queue(t, srv, a, "gw -1 Y") // a → b → c, and c waits for nothing
	if got := c.do("gw -1 Y"); got != "0 Lock Get Deadlock: Y\n" {
		t.Fatalf("c: %q", got)
	}
	expectPending(t, srv, b, 2)
	c.expect("r X", "1 Lock Release Success: X\n")
	if got := b.line(); got != "1 Lock Get Success: X\n" {
		t.Fatalf("b: %q", got)
	}
}

// TestDeadlockReport: with -deadlocks report the cycle is logged once,
// naming every connection (with its iam name) and lock, and counted; every
// wait goes on, dw marks the cycle until one of its waits ends.
func TestDeadlockReport(t *testing.T) {
	var logs syncBuffer
	srv := startServer(t, func(c *Config) {
		c.Deadlocks = DeadlocksReport
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	a, b := dial(t, srv, "tcp"), dial(t, srv, "unix")
	a.expect("iam alice", "1 ok\n")
	a.expect("g X", "1 Lock Get Success: X\n")
	b.expect("g Y", "1 Lock Get Success: Y\n")
	queue(t, srv, a, "gw -1 Y")
	queue(t, srv, b, "gw 60000 X")
	eventually(t, "the cycle logged", func() bool { return strings.Contains(logs.String(), "deadlock") })
	log := logs.String()
	for _, want := range []string{
		"broken=false",
		b.name + " waits for X held by " + a.name + " (alice)",
		a.name + " (alice) waits for Y held by " + b.name,
	} {
		if !strings.Contains(log, want) {
			t.Fatalf("log lacks %q:\n%s", want, log)
		}
	}
	if n := strings.Count(log, "msg=deadlock"); n != 1 {
		t.Fatalf("%d deadlock lines:\n%s", n, log)
	}
	c := dial(t, srv, "websocket")
	dw := c.do("dw")
	for _, want := range []string{"X: " + b.name + " queued_ms=", "Y: alice queued_ms="} {
		if !strings.Contains(dw, want) || !strings.Contains(dw, "deadlock=1") {
			t.Fatalf("dw lacks %q or the cycle:\n%s", want, dw)
		}
	}
	if s := snapshot(t, srv); s.deadlocks != 1 || s.waiters != 2 {
		t.Fatalf("deadlocks %d waiters %d, want 1 and 2", s.deadlocks, s.waiters)
	}
	expectSamples(t, scrape(t, srv.WSAddr().String()), map[string]float64{"glockd_deadlocks_total": 1})
	// q keeps the original's keys: the count is a metric only.
	if q := c.do("q"); strings.Contains(q, "deadlock") {
		t.Fatalf("q: %q", q)
	}
	b.send("!cancel\n")
	if got := b.line(); got != "!cancel 1\n" {
		t.Fatalf("b: %q", got)
	}
	if got := b.line(); got != "0 Lock Get Timeout: X\n" {
		t.Fatalf("b: %q", got)
	}
	if dw := c.do("dw"); strings.Contains(dw, "deadlock=") {
		t.Fatalf("dw still shows the broken cycle:\n%s", dw)
	}
}

// TestDeadlockModel runs random g, r, gw -1, sgw -1, sr, !cancel and
// disconnects by a few clients over every transport, one at a time, against
// a model of the lock tables, the FIFO queues and semaphore admission. The
// model finds deadlocks its own way (by repeated passes to a fixpoint, where
// the manager uses a worklist over a graph it explores) and must agree with
// the server on every verdict: each wait is granted, queued or refused as a
// deadlock exactly when the model says so, and every hand-over reaches the
// waiter the model expects.
func TestDeadlockModel(t *testing.T) {
	const steps = 600 // under a second
	srv := startServer(t, nil)
	md := &deadlockModel{t: t, srv: srv, rng: rand.New(rand.NewPCG(26, 1)),
		holder: map[string]*modelClient{}, queue: map[string][]*modelClient{},
		semHolders: map[string][]*modelClient{}, semQueue: map[string][]*modelClient{}}
	for i := range 6 {
		md.clients = append(md.clients, md.dial(transports[i%len(transports)]))
	}
	for range steps {
		md.step()
		if t.Failed() {
			break
		}
	}
	t.Logf("%d steps: %d grants on the spot, %d waits queued, %d hand-overs, %d deadlocks refused",
		steps, md.counts.granted, md.counts.queued, md.counts.handedOver, md.counts.deadlocks)
	if md.counts.deadlocks < 5 || md.counts.handedOver < 20 {
		t.Errorf("too few deadlocks (%d) or hand-overs (%d): the test did not test much", md.counts.deadlocks, md.counts.handedOver)
	}
	if s := snapshot(t, srv); s.deadlocks != uint64(md.counts.deadlocks) {
		t.Errorf("glockd_deadlocks_total %d, the model refused %d", s.deadlocks, md.counts.deadlocks)
	}
}

var (
	modelLocks = []string{"x0", "x1", "x2", "x3"}
	modelSems  = []string{"s0", "s1"}
)

type modelClient struct {
	*client
	transport string
	waiting   string // the lock it waits for, or ""
	shared    bool   // ... by sgw
	max       int    // sgw's MAX
}

type deadlockModel struct {
	t       *testing.T
	srv     *Server
	rng     *rand.Rand
	clients []*modelClient

	holder     map[string]*modelClient   // exclusive locks
	queue      map[string][]*modelClient // their waiters, oldest first
	semHolders map[string][]*modelClient // shared locks, in the order taken
	semQueue   map[string][]*modelClient

	counts struct{ granted, queued, handedOver, deadlocks int }
}

// String shows the model's state, for a failure.
func (md *deadlockModel) String() string {
	var b strings.Builder
	stuck := md.stuck()
	for _, c := range md.clients {
		fmt.Fprintf(&b, "%s: waits for %q (shared %v, max %d), stuck %v\n", c.name, c.waiting, c.shared, c.max, stuck[c])
	}
	for x, h := range md.holder {
		fmt.Fprintf(&b, "%s held by %s, queue %d\n", x, h.name, len(md.queue[x]))
	}
	for s, hs := range md.semHolders {
		for _, h := range hs {
			fmt.Fprintf(&b, "%s held by %s\n", s, h.name)
		}
	}
	for s, q := range md.semQueue {
		for _, w := range q {
			fmt.Fprintf(&b, "%s waited for by %s\n", s, w.name)
		}
	}
	return b.String()
}

func (md *deadlockModel) dial(tr string) *modelClient {
	return &modelClient{client: dial(md.t, md.srv, tr), transport: tr}
}

// stuck is the model's verdict: the clients that can never go on, found by
// passes over every client until one changes nothing. A client that waits
// for nothing can go on; one waiting for an exclusive lock when its holder
// can; one waiting for a semaphore when the waiter before it in the queue
// can, and enough holders can to bring the count under its MAX.
func (md *deadlockModel) stuck() map[*modelClient]bool {
	free := map[*modelClient]bool{}
	for changed := true; changed; {
		changed = false
		for _, c := range md.clients {
			if free[c] {
				continue
			}
			ok := false
			switch {
			case c.waiting == "":
				ok = true
			case !c.shared:
				ok = free[md.holder[c.waiting]]
			default:
				// After the waiter before it, and once enough holders
				// can go on to bring the count under its MAX.
				q := md.semQueue[c.waiting]
				if i := slices.Index(q, c); i > 0 && !free[q[i-1]] {
					break
				}
				n := 0
				for _, h := range md.semHolders[c.waiting] {
					if free[h] {
						n++
					}
				}
				ok = n >= len(md.semHolders[c.waiting])-c.max+1
			}
			if ok {
				free[c], changed = true, true
			}
		}
	}
	stuck := map[*modelClient]bool{}
	for _, c := range md.clients {
		if !free[c] {
			stuck[c] = true
		}
	}
	return stuck
}

func (md *deadlockModel) idle() []*modelClient {
	var idle []*modelClient
	for _, c := range md.clients {
		if c.waiting == "" {
			idle = append(idle, c)
		}
	}
	return idle
}

func (md *deadlockModel) step() {
	t := md.t
	idle := md.idle()
	op := md.rng.IntN(100)
	if len(idle) == 0 || op >= 90 {
		// Someone waiting gives up, or a client goes away.
		c := md.clients[md.rng.IntN(len(md.clients))]
		if c.waiting != "" && md.rng.IntN(3) > 0 {
			md.cancel(c)
			return
		}
		md.disconnect(c)
		return
	}
	c := idle[md.rng.IntN(len(idle))]
	x := modelLocks[md.rng.IntN(len(modelLocks))]
	s := modelSems[md.rng.IntN(len(modelSems))]
	switch {
	case op < 25:
		if h := md.holder[x]; h == nil || h == c {
			c.expect("g "+x, "1 Lock Get Success: "+x+"\n")
			md.holder[x] = c
		} else {
			c.expect("g "+x, "0 Lock Get Failure: "+x+"\n")
		}
	case op < 50:
		if h := md.holder[x]; h == nil || h == c {
			c.expect("gw -1 "+x, "1 Lock Get Success: "+x+"\n")
			md.holder[x] = c
			md.counts.granted++
			return
		}
		c.waiting, c.shared = x, false
		if md.stuck()[c] {
			c.waiting = ""
			c.expect("gw -1 "+x, "0 Lock Get Deadlock: "+x+"\n")
			md.counts.deadlocks++
			return
		}
		queue(t, md.srv, c.client, "gw -1 "+x)
		md.queue[x] = append(md.queue[x], c)
		md.counts.queued++
	case op < 65:
		if md.holder[x] == c {
			c.expect("r "+x, "1 Lock Release Success: "+x+"\n")
			md.release(x)
		} else {
			c.expect("r "+x, "0 Lock Release Failure: "+x+"\n")
		}
	case op < 80:
		maxHolders := 1 + md.rng.IntN(2)
		holders := md.semHolders[s]
		cmd := fmt.Sprintf("sgw -1 %d %s", maxHolders, s)
		switch {
		case slices.Contains(holders, c):
			c.expect(cmd, fmt.Sprintf("%d Shared Lock Get Success: %s\n", len(holders), s))
			return
		case len(holders) < maxHolders && len(md.semQueue[s]) == 0:
			md.semHolders[s] = append(holders, c)
			c.expect(cmd, fmt.Sprintf("%d Shared Lock Get Success: %s\n", len(holders)+1, s))
			md.counts.granted++
			return
		}
		c.waiting, c.shared, c.max = s, true, maxHolders
		md.semQueue[s] = append(md.semQueue[s], c)
		if md.stuck()[c] {
			c.waiting = ""
			md.semQueue[s] = md.semQueue[s][:len(md.semQueue[s])-1]
			c.expect(cmd, "0 Shared Lock Get Deadlock: "+s+"\n")
			md.counts.deadlocks++
			return
		}
		queue(t, md.srv, c.client, cmd)
		md.counts.queued++
	default:
		if i := slices.Index(md.semHolders[s], c); i >= 0 {
			c.expect("sr "+s, "1 Shared Lock Release Success: "+s+"\n")
			md.semHolders[s] = slices.Delete(md.semHolders[s], i, i+1)
			md.admit(s)
		} else {
			c.expect("sr "+s, "0 Shared Lock Release Failure: "+s+"\n")
		}
	}
	if len(md.stuck()) > 0 {
		t.Fatalf("after op %d the model has a deadlock left standing:\n%s", op, md)
	}
}

// release hands x to its oldest waiter, who must be told.
func (md *deadlockModel) release(x string) {
	delete(md.holder, x)
	q := md.queue[x]
	if len(q) == 0 {
		return
	}
	w := q[0]
	md.queue[x] = q[1:]
	md.holder[x], w.waiting = w, ""
	if got := w.line(); got != "1 Lock Get Success: "+x+"\n" {
		md.t.Fatalf("%s, handed %s: %q", w.name, x, got)
	}
	md.counts.handedOver++
}

// admit grants s to its oldest waiters while the oldest one's MAX allows.
func (md *deadlockModel) admit(s string) {
	for q := md.semQueue[s]; len(q) > 0 && len(md.semHolders[s]) < q[0].max; q = md.semQueue[s] {
		w := q[0]
		md.semQueue[s] = q[1:]
		md.semHolders[s] = append(md.semHolders[s], w)
		w.waiting = ""
		want := fmt.Sprintf("%d Shared Lock Get Success: %s\n", len(md.semHolders[s]), s)
		if got := w.line(); got != want {
			md.t.Fatalf("%s, admitted to %s: %q, want %q", w.name, s, got, want)
		}
		md.counts.handedOver++
	}
}

// unwait takes c out of the queue it is in.
func (md *deadlockModel) unwait(c *modelClient) {
	if c.shared {
		q := md.semQueue[c.waiting]
		head := q[0] == c
		md.semQueue[c.waiting] = slices.DeleteFunc(q, func(w *modelClient) bool { return w == c })
		if head {
			md.admit(c.waiting)
		}
	} else {
		md.queue[c.waiting] = slices.DeleteFunc(md.queue[c.waiting], func(w *modelClient) bool { return w == c })
	}
	c.waiting = ""
}

func (md *deadlockModel) cancel(c *modelClient) {
	lock, shared := c.waiting, c.shared
	c.send("!cancel\n")
	if got := c.line(); got != "!cancel 1\n" {
		md.t.Fatalf("%s: !cancel: %q", c.name, got)
	}
	want := "0 Lock Get Timeout: " + lock + "\n"
	if shared {
		want = "0 Shared Lock Get Timeout: " + lock + "\n"
	}
	if got := c.line(); got != want {
		md.t.Fatalf("%s: after !cancel: %q, want %q", c.name, got, want)
	}
	md.unwait(c)
}

// disconnect ends c and replaces it: its wait ends, its locks are handed on.
func (md *deadlockModel) disconnect(c *modelClient) {
	before := snapshot(md.t, md.srv).connections
	c.close()
	eventually(md.t, "the end of "+c.name+" processed", func() bool { return snapshot(md.t, md.srv).connections < before })
	if c.waiting != "" {
		md.unwait(c)
	}
	for _, x := range modelLocks {
		if md.holder[x] == c {
			md.release(x)
		}
	}
	for _, s := range modelSems {
		if i := slices.Index(md.semHolders[s], c); i >= 0 {
			md.semHolders[s] = slices.Delete(md.semHolders[s], i, i+1)
			md.admit(s)
		}
	}
	i := slices.Index(md.clients, c)
	md.clients[i] = md.dial(c.transport)
}

// BenchmarkDeadlockSearch measures the search that a wait start runs, in
// the manager, with 10,000 waiters in its way (docs/operating.md):
//
//   - chain: 10,000 connections, each holding a lock and waiting for the
//     next one's; a new wait for the first lock explores all of them and
//     finds no deadlock (the last one waits for nothing);
//   - ring: the same chain closed by its last connection's wait for the
//     first lock, which is refused (with the log line formatted, or not);
//   - semaphore: 10,000 holders of a semaphore, each waiting for a lock
//     that a connection holds; its sgw for the semaphore closes a
//     deadlock through all of them and is refused;
//   - queue: 10,000 waiters for one lock; one more explores only its
//     holder.
func BenchmarkDeadlockSearch(b *testing.B) {
	const n = 10000
	name := func(i int) string { return "L" + fmt.Sprint(i) }
	chain := func(m *manager, closed bool) []*connState {
		cs := make([]*connState, n)
		for i := range cs {
			cs[i] = newConnState(fmt.Sprintf("c:%d", i), "tcp")
			m.lock(cs[i], []byte(name(i)))
		}
		for i := 0; i < n-1; i++ {
			m.wait(cs[i], []byte(name(i+1)), false, 0, proto.NoWait, false)
		}
		return cs
	}
	b.Run("chain", func(b *testing.B) {
		m := newManager(Config{}.withDefaults())
		chain(m, false)
		x := newConnState("x", "tcp")
		for b.Loop() {
			if m.wait(x, []byte(name(0)), false, 0, proto.NoWait, false) != waitInQueue {
				b.Fatal("refused")
			}
			m.unqueue(x.waiter)
			m.spareWaiters.recycle() // between steps, as manager.handle does
		}
	})
	for _, logged := range []bool{false, true} {
		b.Run(fmt.Sprintf("ring/logged=%v", logged), func(b *testing.B) {
			cfg := Config{}
			if logged {
				cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			}
			m := newManager(cfg.withDefaults())
			last := chain(m, true)[n-1]
			for b.Loop() {
				if m.wait(last, []byte(name(0)), false, 0, proto.NoWait, false) != waitRefused {
					b.Fatal("not refused")
				}
				m.spareWaiters.recycle()
			}
		})
	}
	b.Run("semaphore", func(b *testing.B) {
		m := newManager(Config{}.withDefaults())
		w := newConnState("w", "tcp")
		m.lock(w, []byte("Z"))
		for i := range n {
			h := newConnState(fmt.Sprintf("h:%d", i), "tcp")
			m.sharedGrantName(h, []byte("S"))
			m.wait(h, []byte("Z"), false, 0, proto.NoWait, false)
		}
		for b.Loop() {
			if m.wait(w, []byte("S"), true, n, proto.NoWait, false) != waitRefused {
				b.Fatal("not refused")
			}
			m.spareWaiters.recycle()
		}
	})
	b.Run("queue", func(b *testing.B) {
		m := newManager(Config{}.withDefaults())
		m.lock(newConnState("holder", "tcp"), []byte("Q"))
		for i := range n {
			m.wait(newConnState(fmt.Sprintf("w:%d", i), "tcp"), []byte("Q"), false, 0, proto.NoWait, false)
		}
		x := newConnState("x", "tcp")
		for b.Loop() {
			m.wait(x, []byte("Q"), false, 0, proto.NoWait, false)
			m.unqueue(x.waiter)
			m.spareWaiters.recycle() // between steps, as manager.handle does
		}
	})
}

// TestDeadlockNewHolderThatWaits drives the manager directly into what
// in-order waits cannot reach over the wire, and asynchronous waits will: a
// connection that waits is made a holder, and so closes a cycle through a
// waiter of the lock it was given, whose wait is then refused with the
// deadlock result.
func TestDeadlockNewHolderThatWaits(t *testing.T) {
	m := newManager(Config{}.withDefaults())
	p, q, r := newConnState("p", "tcp"), newConnState("q", "tcp"), newConnState("r", "tcp")
	m.lock(q, []byte("M"))
	m.takeShared(r, []byte("L"))
	if m.wait(q, []byte("L"), true, 1, proto.NoWait, false) != waitInQueue { // q waits for r, who waits for nothing
		t.Fatal("q's sgw refused")
	}
	if m.wait(p, []byte("M"), false, 0, proto.NoWait, false) != waitInQueue { // p waits for q
		t.Fatal("p's gw refused")
	}
	// p, waiting, becomes a holder of L: q now needs p to leave L too.
	m.takeShared(p, []byte("L"))
	select {
	case res := <-q.grants:
		if !res.deadlock || res.granted {
			t.Fatalf("q's wait ended with %+v, want the deadlock result", res)
		}
	default:
		t.Fatal("q's wait, which the new holder closed into a cycle, goes on")
	}
	if q.waiter != nil || p.waiter == nil || m.deadlocks.found != 1 {
		t.Fatalf("after: q waits %v, p waits %v, deadlocks %d; want false, true, 1", q.waiter != nil, p.waiter != nil, m.deadlocks.found)
	}
}

// asyncQueue sends an asynchronous wait, which has no reply in order, and
// waits until the server counts waiting waiters.
func asyncQueue(t *testing.T, srv *Server, c *client, cmd string, waiting int) {
	t.Helper()
	c.send(cmd + "\n")
	waitersQueued(t, srv, waiting, c.name+": "+cmd)
}

// TestDeadlockAsync: cycles through asynchronous waits, over every
// transport. A holds X and B holds Y; A waits for Y with !gw; then B's wait
// for X closes the cycle: a gw gets "0 Lock Get Deadlock: X", a !gw the
// outcome "!gw 0 deadlock X", an sgw or !sgw on a full semaphore the
// shared forms. A still waits, and gets Y when B releases it.
func TestDeadlockAsync(t *testing.T) {
	for _, tr := range transports {
		for _, closing := range []string{"gw", "!gw", "sgw", "!sgw"} {
			t.Run(tr+"/"+closing, func(t *testing.T) {
				srv := startServer(t, nil)
				a, b := dial(t, srv, tr), dial(t, srv, tr)
				lock, want := "X", map[string]string{
					"gw":   "0 Lock Get Deadlock: X\n",
					"!gw":  "!gw 0 deadlock X\n",
					"sgw":  "0 Shared Lock Get Deadlock: X\n",
					"!sgw": "!sgw deadlock X\n",
				}[closing]
				if strings.HasSuffix(closing, "sgw") {
					a.expect("sg X", "1 Shared Lock Get Success: X\n")
				} else {
					a.expect("g X", "1 Lock Get Success: X\n")
				}
				b.expect("g Y", "1 Lock Get Success: Y\n")
				asyncQueue(t, srv, a, "!gw -1 Y", 1)
				cmd := closing + " -1 "
				if strings.HasSuffix(closing, "sgw") {
					cmd += "1 "
				}
				cmd += lock
				var reply string
				var took time.Duration
				if strings.HasPrefix(closing, "!") {
					// No reply in order: the outcome line, out of band.
					start := time.Now()
					b.send(cmd + "\n")
					reply, took = b.line(), time.Since(start)
				} else {
					reply, took = timedDo(b, cmd)
				}
				if reply != want {
					t.Fatalf("b: %s: %q, want %q", cmd, reply, want)
				}
				t.Logf("%s refused after %v", closing, took)
				if took > deadlockPromptly {
					t.Fatalf("refused after %v", took)
				}
				// b goes on, with what it holds; a still waits.
				b.expect("i Y", "1 Lock Is Locked: Y\n")
				expectPending(t, srv, a, 1)
				if s := snapshot(t, srv); s.deadlocks != 1 {
					t.Fatalf("deadlocks: %d, want 1", s.deadlocks)
				}
				b.expect("r Y", "1 Lock Release Success: Y\n")
				asyncToken(t, a.line(), "Y")
			})
		}
	}
}

// TestDeadlockAsyncHandOver: a hand-over closes a cycle. A holds X and
// waits asynchronously for Y (held by B) and Z (held by C); B waits for Z
// behind A. No cycle yet: C waits for nothing. C releases Z, which goes to
// A: B's wait for Z now waits for A, which waits for B, and B's gw gets
// the Deadlock reply at once. A keeps Z and still waits for Y, which B's
// release then hands it.
func TestDeadlockAsyncHandOver(t *testing.T) {
	for _, kind := range []string{"gw", "!gw"} {
		t.Run(kind, func(t *testing.T) {
			srv := startServer(t, nil)
			a, b, c := dial(t, srv, "tcp"), dial(t, srv, "unix"), dial(t, srv, "websocket")
			a.expect("g X", "1 Lock Get Success: X\n")
			b.expect("g Y", "1 Lock Get Success: Y\n")
			c.expect("g Z", "1 Lock Get Success: Z\n")
			asyncQueue(t, srv, a, "!gw -1 Z", 1)
			asyncQueue(t, srv, a, "!gw -1 Y", 2)
			want := "0 Lock Get Deadlock: Z\n"
			if kind == "gw" {
				queue(t, srv, b, "gw -1 Z")
			} else {
				asyncQueue(t, srv, b, "!gw -1 Z", 3)
				want = "!gw 0 deadlock Z\n"
			}
			c.expect("r Z", "1 Lock Release Success: Z\n")
			asyncToken(t, a.line(), "Z")
			if got := b.line(); got != want {
				t.Fatalf("b: %q, want %q", got, want)
			}
			expectPending(t, srv, a, 1)
			if s := snapshot(t, srv); s.deadlocks != 1 {
				t.Fatalf("deadlocks: %d, want 1", s.deadlocks)
			}
			b.expect("r Y", "1 Lock Release Success: Y\n")
			asyncToken(t, a.line(), "Y")
		})
	}
}

// TestDeadlockAsyncNewSharedHolder: a connection that waits asynchronously
// and takes a shared lock with sg becomes a holder that a semaphore's
// waiter waits for, closing a cycle; and a connection whose own !sgw waits
// for the semaphore it takes with sg is granted, not taken to wait for
// itself.
func TestDeadlockAsyncNewSharedHolder(t *testing.T) {
	srv := startServer(t, nil)
	a, b, e := dial(t, srv, "tcp"), dial(t, srv, "unix"), dial(t, srv, "tcp")
	e.expect("sg S", "1 Shared Lock Get Success: S\n")
	b.expect("g Y", "1 Lock Get Success: Y\n")
	asyncQueue(t, srv, a, "!gw -1 Y", 1) // a waits for b
	queue(t, srv, b, "sgw -1 1 S")       // b waits for e
	a.expect("sg S", "2 Shared Lock Get Success: S\n")
	// b now waits for e and a, and a for b.
	if got := b.line(); got != "0 Shared Lock Get Deadlock: S\n" {
		t.Fatalf("b: %q", got)
	}
	expectPending(t, srv, a, 1)
	b.expect("r Y", "1 Lock Release Success: Y\n")
	asyncToken(t, a.line(), "Y")

	// Its own !sgw on the semaphore it takes.
	c := dial(t, srv, "unix")
	asyncQueue(t, srv, c, "!sgw -1 1 S", 1)
	c.send("sg S\n")
	got := []string{c.line(), c.line()}
	slices.Sort(got)
	if want := []string{"!sgw 3 S\n", "3 Shared Lock Get Success: S\n"}; !slices.Equal(got, want) {
		t.Fatalf("c: %q, want %q", got, want)
	}
	if s := snapshot(t, srv); s.deadlocks != 1 {
		t.Fatalf("deadlocks: %d, want 1", s.deadlocks)
	}
}
