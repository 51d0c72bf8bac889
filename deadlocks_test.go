package main

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
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
