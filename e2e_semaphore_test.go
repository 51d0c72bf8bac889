package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/proto"
)

// snapshot asks the manager for its counters.
func snapshot(t testing.TB, srv *Server) statsSnapshot {
	t.Helper()
	s, ok := srv.manager.askStats(10 * time.Second)
	if !ok {
		t.Fatal("manager does not answer")
	}
	return s
}

// sendSGW sends an sgw and returns once the manager has run it, whether it
// was granted at once or queued: unlike queue, it does not care which, so it
// cannot hang when another waiter leaves at the same moment.
func sendSGW(t testing.TB, srv *Server, c *client, cmd string) {
	t.Helper()
	before := snapshot(t, srv).commands[proto.VerbSGW]
	c.send(cmd + "\n")
	eventually(t, "ran: "+cmd, func() bool { return snapshot(t, srv).commands[proto.VerbSGW] > before })
}

// TestSemaphoreQueueMovesWhenHeadLeaves: when the first waiter of a shared
// queue leaves (timeout or disconnect), the waiters behind it are checked at
// once; before, the second waiter here waited its full time although it fit.
func TestSemaphoreQueueMovesWhenHeadLeaves(t *testing.T) {
	for _, how := range []string{"timeout", "disconnect"} {
		t.Run(how, func(t *testing.T) {
			srv := startServer(t, nil)
			holder, head, next := dial(t, srv, "tcp"), dial(t, srv, "unix"), dial(t, srv, "websocket")
			holder.expect("sg S", "1 Shared Lock Get Success: S\n")
			if how == "timeout" {
				queue(t, srv, head, "sgw 300 1 S")
			} else {
				queue(t, srv, head, "sgw -1 1 S")
			}
			// Without a limit of its own: on the old code it would wait
			// for ever and the read below fail.
			sendSGW(t, srv, next, "sgw -1 5 S")
			if how == "timeout" {
				if got := head.line(); got != "0 Shared Lock Get Timeout: S\n" {
					t.Fatalf("head: %q", got)
				}
			} else {
				head.close()
			}
			if got := next.line(); got != "2 Shared Lock Get Success: S\n" {
				t.Fatalf("next waiter: %q", got)
			}
			holder.expect("sd S", "S: "+holder.name+"\nS: "+next.name+"\n")
			if n := waiters(t, srv); n != 0 {
				t.Fatalf("%d waiters left", n)
			}
		})
	}
}

// TestSemaphoreMiddleLeaves: a waiter that leaves from the middle of the
// queue changes nothing for the head, which still blocks those behind it.
func TestSemaphoreMiddleLeaves(t *testing.T) {
	srv := startServer(t, nil)
	holder, head, middle, tail := dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("sg S", "1 Shared Lock Get Success: S\n")
	queue(t, srv, head, "sgw -1 1 S")
	queue(t, srv, middle, "sgw -1 1 S")
	queue(t, srv, tail, "sgw -1 9 S") // fits, but strict FIFO: behind head
	middle.close()
	eventually(t, "middle left", func() bool { return waiters(t, srv) == 2 })
	holder.expect("sd S", "S: "+holder.name+"\n")
	holder.expect("sr S", "1 Shared Lock Release Success: S\n")
	if got := head.line(); got != "1 Shared Lock Get Success: S\n" {
		t.Fatalf("head: %q", got)
	}
	if got := tail.line(); got != "2 Shared Lock Get Success: S\n" {
		t.Fatalf("tail: %q", got)
	}
}

// semClient is the model's view of one connection.
type semClient struct {
	c       *client
	waiting bool
	holds   bool
	max     int
}

// semModel is the semaphore as the protocol describes it: holders in the
// order they took the lock, waiters in strict FIFO order, the head admitted
// while it fits.
type semModel struct {
	t        *testing.T
	srv      *Server
	rng      *rand.Rand
	checker  *client
	clients  []*semClient
	holders  []*semClient
	queue    []*semClient
	admitted []*semClient // granted by the last step, their replies unread
	conns    int

	history []string // the steps so far, shown when the test fails

	// What the run exercised, so that a change that makes it trivial shows.
	timeouts, waiterDisconnects, admittedOnLeave int
}

func (m *semModel) remove(list []*semClient, c *semClient) []*semClient {
	return slices.DeleteFunc(list, func(x *semClient) bool { return x == c })
}

// admit grants from the head of the queue while the head fits.
func (m *semModel) admit() {
	for len(m.queue) > 0 && len(m.holders) < m.queue[0].max {
		w := m.queue[0]
		m.queue = m.queue[1:]
		w.waiting, w.holds = false, true
		m.holders = append(m.holders, w)
		m.admitted = append(m.admitted, w)
	}
}

// readAdmitted reads the grant of each waiter the last step admitted, with
// the holder count it was admitted at.
func (m *semModel) readAdmitted(what string) {
	m.t.Helper()
	for _, w := range m.admitted {
		n := slices.Index(m.holders, w) + 1
		if got, want := w.c.line(), fmt.Sprintf("%d Shared Lock Get Success: S\n", n); got != want {
			m.t.Fatalf("after %s: waiter %s got %q, want %q", what, w.c.name, got, want)
		}
	}
	m.admitted = m.admitted[:0]
}

// check compares the server's holders (in order) and queue length with the
// model's.
func (m *semModel) check(what string) {
	m.t.Helper()
	var want strings.Builder
	for _, h := range m.holders {
		want.WriteString("S: " + h.c.name + "\n")
	}
	if got := m.checker.do("sd S"); got != want.String() {
		m.t.Fatalf("after %s: sd S = %q, want %q", what, got, want.String())
	}
	if got := waiters(m.t, m.srv); got != len(m.queue) {
		m.t.Fatalf("after %s: %d waiters, want %d", what, got, len(m.queue))
	}
}

func (m *semModel) dial() *semClient {
	c := &semClient{c: dial(m.t, m.srv, transports[m.rng.IntN(len(transports))])}
	m.conns++
	return c
}

// idle picks a connected client that is not waiting, or nil.
func (m *semModel) idle(except *semClient) *semClient {
	var idle []*semClient
	for _, c := range m.clients {
		if !c.waiting && c != except {
			idle = append(idle, c)
		}
	}
	if len(idle) == 0 {
		return nil
	}
	return idle[m.rng.IntN(len(idle))]
}

func (m *semModel) grantReply() string {
	return fmt.Sprintf("%d Shared Lock Get Success: S\n", len(m.holders))
}

// sgw runs an sgw on c with the model deciding the outcome; a queued one
// is left pending.
func (m *semModel) sgw(c *semClient, ms string, maxHolders int) {
	m.t.Helper()
	cmd := fmt.Sprintf("sgw %s %d S", ms, maxHolders)
	switch {
	case c.holds:
		c.c.expect(cmd, m.grantReply())
	case len(m.queue) == 0 && len(m.holders) < maxHolders:
		c.holds = true
		m.holders = append(m.holders, c)
		c.c.expect(cmd, m.grantReply())
	case ms == "0":
		c.c.expect(cmd, "0 Shared Lock Get Timeout: S\n")
	default:
		c.waiting, c.max = true, maxHolders
		m.queue = append(m.queue, c)
		sendSGW(m.t, m.srv, c.c, cmd)
	}
}

// step runs one random operation and checks the server against the model.
func (m *semModel) step() {
	m.t.Helper()
	op := m.rng.IntN(100)
	c := m.idle(nil)
	var what string
	switch {
	case c == nil || op < 10: // disconnect anyone, waiting or not
		c = m.clients[m.rng.IntN(len(m.clients))]
		what = "disconnect of " + c.c.name
		c.c.close()
		m.conns--
		eventually(m.t, what, func() bool { return snapshot(m.t, m.srv).connections == m.conns })
		before := len(m.holders)
		if c.waiting {
			m.waiterDisconnects++
			m.queue = m.remove(m.queue, c)
		}
		if c.holds {
			m.holders = m.remove(m.holders, c)
			before--
		}
		m.admit()
		if c.waiting {
			m.admittedOnLeave += len(m.holders) - before
		}
		m.clients[slices.Index(m.clients, c)] = m.dial()
	case op < 25:
		what = "sg by " + c.c.name
		if !c.holds {
			c.holds = true
			m.holders = append(m.holders, c)
		}
		c.c.expect("sg S", m.grantReply())
	case op < 45:
		what = "sr by " + c.c.name
		if !c.holds {
			c.c.expect("sr S", "0 Shared Lock Release Failure: S\n")
			break
		}
		c.holds = false
		m.holders = m.remove(m.holders, c)
		m.admit()
		c.c.expect("sr S", "1 Shared Lock Release Success: S\n")
	case op < 80:
		ms := []string{"0", "-1", "60000"}[m.rng.IntN(3)]
		maxHolders := 1 + m.rng.IntN(4)
		what = fmt.Sprintf("sgw %s %d by %s", ms, maxHolders, c.c.name)
		m.sgw(c, ms, maxHolders)
	default:
		m.timeoutRound(c)
		what = "timeout round"
	}
	m.history = append(m.history, what)
	m.readAdmitted(what)
	m.check(what)
}

// timeoutRound queues x with a short timeout and others behind it, then
// lets x time out. Only waits without a limit join meanwhile: whether each
// arrives before or after x leaves, the state that follows is the same
// (arriving after x, it is granted at once exactly when the queue x left
// would have admitted it), so the test does not depend on timing.
func (m *semModel) timeoutRound(x *semClient) {
	m.t.Helper()
	maxHolders := 1 + m.rng.IntN(4)
	if x.holds || (len(m.queue) == 0 && len(m.holders) < maxHolders) {
		m.sgw(x, "-1", maxHolders) // would be granted at once: not a timeout round
		return
	}
	sendSGW(m.t, m.srv, x.c, fmt.Sprintf("sgw %d %d S", 1+m.rng.IntN(30), maxHolders))
	x.waiting, x.max = true, maxHolders
	m.queue = append(m.queue, x)
	for range m.rng.IntN(4) {
		if y := m.idle(x); y != nil && !y.holds {
			maxY := 1 + m.rng.IntN(6)
			y.waiting, y.max = true, maxY
			m.queue = append(m.queue, y)
			sendSGW(m.t, m.srv, y.c, fmt.Sprintf("sgw -1 %d S", maxY))
		}
	}
	// Nothing ahead of x leaves and the count only grows meanwhile, so x
	// cannot be granted: it times out.
	if got := x.c.line(); got != "0 Shared Lock Get Timeout: S\n" {
		m.t.Fatalf("timed waiter %s: %q", x.c.name, got)
	}
	x.waiting = false
	m.timeouts++
	before := len(m.holders)
	m.queue = m.remove(m.queue, x)
	m.admit()
	m.admittedOnLeave += len(m.holders) - before
}

// TestSemaphoreModel runs random sg, sr, sgw (granted, queued, timing out at
// once or later) and disconnects of holders and waiters on one name, and
// after every step compares the server's holders, their order, its queue
// and every reply with a model of the semaphore.
func TestSemaphoreModel(t *testing.T) {
	steps := 300
	if testing.Short() {
		steps = 60
	}
	var timeouts, waiterDisconnects, admittedOnLeave int
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			srv := startServer(t, nil)
			m := &semModel{t: t, srv: srv, rng: rand.New(rand.NewPCG(seed, 5))}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("last steps:\n%s", strings.Join(m.history[max(0, len(m.history)-10):], "\n"))
				}
			})
			m.checker = dial(t, srv, "tcp")
			m.conns = 1
			for range 6 {
				m.clients = append(m.clients, m.dial())
			}
			for range steps {
				m.step()
			}
			timeouts += m.timeouts
			waiterDisconnects += m.waiterDisconnects
			admittedOnLeave += m.admittedOnLeave
		})
	}
	t.Logf("%d timeouts and %d disconnects of waiters; %d waiters admitted when a waiter ahead left",
		timeouts, waiterDisconnects, admittedOnLeave)
	if !t.Failed() && !testing.Short() && (timeouts == 0 || waiterDisconnects == 0 || admittedOnLeave == 0) {
		t.Fatal("the run did not exercise a waiter leaving")
	}
}
